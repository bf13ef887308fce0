"""
Where the time of one ``procket_twisted.listen`` goes (``run.py --profile``; run as root).

- ``syscalls``: ``strace -f`` of one call as the unprivileged user (after a warm-up call), split
  into the client's own syscalls, the spawned child's before it executes the helper (glibc's
  ``posix_spawn`` resetting signal dispositions), and the helper's after;
- ``perf_stat``: ``perf stat`` software counters per run (CPU time of parent and child, page faults,
  context switches), from a loop of N runs minus a loop of none, for the static no-op and for the
  helper. perf does not follow a process into a setuid-root binary, so the helper counted here is
  a copy without the setuid bit, run with ``CAP_NET_BIND_SERVICE`` as an ambient capability (the
  same code path, minus the uid switch);
- ``page_faults``: ``perf record -e page-faults`` of that copy: which functions take the faults;
- ``callgrind``: ``valgrind --tool=callgrind`` instruction counts of that copy and of the no-op;
- ``client``: ``profile_client.py`` as the unprivileged user (cProfile of the Python side, and how
  long each helper start blocks the reactor).

A tool that is missing is skipped and said so. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import socket
import subprocess
import tempfile
from typing import Any, Dict, List

from common import emit

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
START_MARK = "/procket-profile-start"
END_MARK = "/procket-profile-end"
SYSCALL = re.compile(r"^(\d+)\s+(?:\d+:\d+:\d+\.\d+\s+)?([a-z_0-9]+)\(")
SPEC = "kind=tcp,family=inet,addr=127.0.0.1,port={port}"

#: A loop run under perf stat: ARGV is PROGRAM RUNS [PORT]; a helper gets a channel and is read.
LOOP = """
import array, os, socket, sys
program, runs = sys.argv[1], int(sys.argv[2])
environment = dict(os.environ)
for _ in range(runs):
    if len(sys.argv) > 3:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [program, "v1", "kind=tcp,family=inet,addr=127.0.0.1,port=" + sys.argv[3]]
        actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), fd) for fd in (0, 1, 2)]
        pid = os.posix_spawn(program, argv, environment, file_actions=actions)
        theirs.close()
        os.waitpid(pid, 0)
        data, ancillary, _, _ = ours.recvmsg(64, socket.CMSG_SPACE(4))
        assert data == b"ok 1\\n", data
        os.close(array.array("i", ancillary[0][2])[0])
        ours.close()
    else:
        pid = os.posix_spawn(program, [program], environment)
        os.waitpid(pid, 0)
"""


class Profiler:
    """Runs the profiling tools as root against commands run as the unprivileged user."""

    def __init__(self, arguments: argparse.Namespace, work: str) -> None:
        self.arguments = arguments
        self.work = work
        self.environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

    def as_user(self, *extra: str, capability: bool = False) -> List[str]:
        """The setpriv prefix that runs a command as the unprivileged user."""
        command = [
            "setpriv",
            f"--reuid={self.arguments.user}",
            f"--regid={self.arguments.group}",
            "--clear-groups",
        ]
        if capability:
            command += ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
        return command + list(extra) + ["--"]

    def run(self, command: List[str], **keywords: Any) -> "subprocess.CompletedProcess[str]":
        """Run COMMAND from /, with a minimal environment, capturing its output."""
        return subprocess.run(
            command, capture_output=True, text=True, cwd="/", env=self.environment, **keywords
        )


def capable_copy(helper: str, work: str) -> str:
    """A copy of HELPER without the setuid bit, with its policy beside it (root-owned, 755)."""
    directory = os.path.join(work, "capable")
    os.mkdir(directory, 0o755)
    copy = os.path.join(directory, "procket-helper")
    shutil.copyfile(helper, copy)
    os.chmod(copy, 0o755)
    policy = os.path.join(os.path.dirname(helper), "policy")
    if os.path.exists(policy):
        shutil.copyfile(policy, os.path.join(directory, "policy"))
        os.chmod(os.path.join(directory, "policy"), 0o644)
    return copy


def syscalls(profiler: Profiler, helper: str, port: int) -> Dict[str, Any]:
    """strace -f of one listen call: syscall counts of the client, the child, the helper."""
    if shutil.which("strace") is None:
        return {"skipped": "strace is not installed"}
    code = (
        "import os, procket_twisted\n"
        f"once = lambda: procket_twisted.listen({port}, ip='{HOST}', direct=False, "
        f"progname=['{helper}']).close()\n"
        f"once(); os.path.exists('{START_MARK}'); once(); os.path.exists('{END_MARK}')\n"
    )
    trace = os.path.join(profiler.work, "strace.txt")
    finished = profiler.run(
        ["strace", "-f", "-o", trace, *profiler.as_user(), profiler.arguments.python, "-c", code]
    )
    if finished.returncode != 0:
        return {"skipped": f"strace run failed: {finished.stderr[-300:]}"}
    with open(trace) as stream:
        lines = stream.read().splitlines()
    start = next(i for i, line in enumerate(lines) if START_MARK in line)
    end = next(i for i, line in enumerate(lines) if END_MARK in line)
    client_pid = lines[start].split()[0]
    counts: Dict[str, "collections.Counter[str]"] = {
        "client": collections.Counter(),
        "child_before_exec": collections.Counter(),
        "helper": collections.Counter(),
    }
    executed = set()
    for line in lines[start + 1 : end]:
        found = SYSCALL.match(line)
        if found is None:
            continue
        pid, name = found.groups()
        if pid == client_pid:
            counts["client"][name] += 1
        elif name == "execve" or pid in executed:
            executed.add(pid)
            counts["helper"][name] += 1
        else:
            counts["child_before_exec"][name] += 1
    return {
        part: {"total": sum(counter.values()), "by_name": dict(counter.most_common())}
        for part, counter in counts.items()
    }


def perf_stat(profiler: Profiler, capable: str, port: int, runs: int) -> Dict[str, Any]:
    """Per-run software counters of the no-op and the helper (copy), by difference of loops."""
    if shutil.which("perf") is None:
        return {"skipped": "perf is not installed"}
    events = "task-clock,page-faults,context-switches"
    targets = {"static no-op": [profiler.arguments.noop], "helper": [capable, str(port)]}
    found: Dict[str, Any] = {}
    for name, target in targets.items():
        totals = []
        for count in (0, runs):
            command = [
                "perf",
                "stat",
                "-x",
                ",",
                "-e",
                events,
                *profiler.as_user(capability=True),
                profiler.arguments.python,
                "-c",
                LOOP,
                target[0],
                str(count),
                *target[1:],
            ]
            finished = profiler.run(command)
            if finished.returncode != 0:
                return {"skipped": f"perf stat failed: {finished.stderr[-300:]}"}
            values = {}
            for line in finished.stderr.splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[2] in events.split(","):
                    try:
                        values[fields[2]] = float(fields[0])
                    except ValueError:
                        return {"skipped": f"perf cannot count {fields[2]} here: {line}"}
            totals.append(values)
        found[name] = {
            "cpu_us": (totals[1]["task-clock"] - totals[0]["task-clock"]) / runs * 1000,
            "page_faults": (totals[1]["page-faults"] - totals[0]["page-faults"]) / runs,
            "context_switches": (totals[1]["context-switches"] - totals[0]["context-switches"])
            / runs,
        }
    return {"runs": runs, "per_run": found}


def page_faults(profiler: Profiler, capable: str, port: int) -> Dict[str, Any]:
    """Which functions of the helper take its page faults (perf record, 50 runs)."""
    if shutil.which("perf") is None:
        return {"skipped": "perf is not installed"}
    data = os.path.join(profiler.work, "faults.data")
    command = [
        "perf",
        "record",
        "-q",
        "-e",
        "page-faults",
        "-c",
        "1",
        "-o",
        data,
        *profiler.as_user(capability=True),
        profiler.arguments.python,
        "-c",
        LOOP,
        capable,
        "50",
        str(port),
    ]
    finished = profiler.run(command)
    if finished.returncode != 0:
        return {"skipped": f"perf record failed: {finished.stderr[-300:]}"}
    report = profiler.run(
        [
            "perf",
            "report",
            "-i",
            data,
            "--comm",
            "procket-helper",
            "--sort",
            "sym",
            "--stdio",
            "-F",
            "sample,sym",
        ]
    )
    rows: List[Dict[str, Any]] = []
    for line in report.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            rows.append({"faults_per_run": int(fields[0]) / 50, "symbol": fields[-1]})
    rows.sort(key=lambda row: row["faults_per_run"], reverse=True)
    return {"top": rows[:8], "total_per_run": sum(row["faults_per_run"] for row in rows)}


def callgrind(profiler: Profiler, capable: str, port: int) -> Dict[str, Any]:
    """Instruction counts (Ir) of one helper run and of one no-op run, with the top functions."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        return {"skipped": "valgrind is not installed"}
    found: Dict[str, Any] = {}
    output_directory = os.path.join(profiler.work, "callgrind")
    os.mkdir(output_directory, 0o777)
    os.chmod(output_directory, 0o777)
    for name, argv in (
        ("helper", [capable, "v1", SPEC.format(port=port)]),
        ("static no-op", [profiler.arguments.noop]),
    ):
        output = os.path.join(output_directory, name.replace(" ", "-") + ".out")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            command = [
                *profiler.as_user(capability=True),
                "valgrind",
                "--tool=callgrind",
                f"--log-file={output}.log",
                f"--callgrind-out-file={output}",
                *argv,
            ]
            finished = profiler.run(command, stdin=theirs)
            reply = ours.recv(4096, socket.MSG_DONTWAIT) if name == "helper" else b""
        if finished.returncode != 0 or not os.path.exists(output):
            return {"skipped": f"callgrind failed: {finished.stderr[-300:]} {reply!r}"}
        annotated = profiler.run(["callgrind_annotate", output]).stdout
        total = re.search(r"([\d,]+)\s+(?:\([\d.]+%\)\s+)?PROGRAM TOTALS", annotated)
        top = []
        for line in annotated.splitlines():
            row = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+\S*?:(\S+)", line)
            if row and "PROGRAM TOTALS" not in line:
                top.append(
                    {
                        "function": row.group(3),
                        "instructions": int(row.group(1).replace(",", "")),
                        "percent": float(row.group(2)),
                    }
                )
        found[name] = {
            "instructions": int(total.group(1).replace(",", "")) if total else None,
            "top": top[:6],
        }
    return found


def main() -> None:
    """Profile, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="a python every user can run")
    parser.add_argument("--helper", required=True)
    parser.add_argument("--noop", required=True)
    parser.add_argument("--ports", required=True, help="101 comma-separated free ports")
    parser.add_argument("--user", default="nobody")
    parser.add_argument("--group", default="nogroup")
    parser.add_argument("--runs", type=int, default=1000, help="runs for perf stat and cProfile")
    arguments = parser.parse_args()
    ports = arguments.ports.split(",")
    port = int(ports[0])

    work = tempfile.mkdtemp(prefix="procket-profile-")
    os.chmod(work, 0o755)
    try:
        profiler = Profiler(arguments, work)
        capable = capable_copy(arguments.helper, work)
        result: Dict[str, Any] = {
            "syscalls": syscalls(profiler, arguments.helper, port),
            "perf_stat": perf_stat(profiler, capable, port, arguments.runs),
            "page_faults": page_faults(profiler, capable, port),
            "callgrind": callgrind(profiler, capable, port),
        }
        client = profiler.run(
            [
                *profiler.as_user(),
                arguments.python,
                os.path.join(HERE, "profile_client.py"),
                "--helper",
                arguments.helper,
                "--ports",
                arguments.ports,
                "--runs",
                str(max(100, arguments.runs // 2)),
            ]
        )
        if client.returncode != 0:
            result["client"] = {"skipped": f"profile_client.py failed: {client.stderr[-500:]}"}
        else:
            import json

            result["client"] = json.loads(client.stdout.strip().splitlines()[-1])
        emit(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
