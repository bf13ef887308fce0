"""
The benchmark suite's driver (run by ``scripts/benchmark``, as root): picks free ports, runs each
measurement (as the unprivileged user where it must), judges the targets, prints the table and
writes ``results.json``, ``results.md`` and ``benchmark.png`` to the output directory.

    python benchmarks/run.py --helper H --sudo-helper S --noop N --setuid-noop N2 --site DIR
        [--quick] [--only a,b,c,d,e] [--profile] [--output DIR]
        [--grant-cgroup CHILD] [--grant-dir DIR]

For (a) it applies a kernel grant (`cgroup_grant.KernelGrant`) for the unprivileged user and the
two grant ports to a child cgroup it creates (CHILD, by default a new one under the cgroup v2
mount), runs (a)'s worker and its two peers inside that cgroup, and removes the grant, its
directory (DIR) and the cgroup when (a) is over, also when it failed or on SIGTERM.

Every target is a ratio of two things measured in the same run (or a bound on lateness over the
idle reactor's, or on growth over a baseline), never an absolute time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pwd
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from cgroup_grant import KernelGrant, cgroup2_mount
from common import free_ports
from report import judge, markdown_report, text_report, write_chart
from spawn_cost import ROOT_PEER_ROWS, USER_PEER_ROWS

HERE = os.path.dirname(os.path.abspath(__file__))
AUTHBIND_BYPORT = "/etc/authbind/byport"
#: Ports the suite may use: below 512 (authbind's helper refuses the others), and away from the
#: 600-1000 range the test suite and the demo pick from, in case they run at the same time.
PRIVILEGED_CANDIDATES = range(100, 512)
HIGH_CANDIDATES = range(28080, 28280)
#: The environment of every worker.
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}

#: Run sizes: the full run (a few minutes) and --quick (well under a minute).
SIZES = {
    "full": {
        "spawn_rounds": 1000,
        "spawn_warmup": 30,
        "sudo_every": 5,
        "batch_rounds": 400,
        "stall_repeat": 7,
        "web_rounds": 12,
        "web_seconds": 2,
        "soak_iterations": 10000,
        "soak_warmup": 200,
        "profile_runs": 1000,
    },
    "quick": {
        "spawn_rounds": 150,
        "spawn_warmup": 10,
        "sudo_every": 5,
        "batch_rounds": 60,
        "stall_repeat": 1,
        "web_rounds": 2,
        "web_seconds": 1,
        "soak_iterations": 1000,
        "soak_warmup": 100,
        "profile_runs": 200,
    },
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helper", required=True, help="the helper installed setuid root")
    parser.add_argument("--sudo-helper", required=True, help="the helper installed for sudo -n")
    parser.add_argument("--noop", required=True, help="a static do-nothing program")
    parser.add_argument(
        "--setuid-noop",
        required=True,
        help="a static do-nothing program, built like the helper, setuid root",
    )
    parser.add_argument("--musl-noop", help="the static do-nothing program built with musl")
    parser.add_argument("--site", required=True, help="a directory with index.html, for (d)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--quick", action="store_true", help="fewer runs, for development")
    parser.add_argument("--only", default="a,b,c,d,e", help="which measurements, e.g. a,b")
    parser.add_argument("--profile", action="store_true", help="also profile one helper run")
    parser.add_argument("--user", default="nobody", help="the unprivileged user")
    parser.add_argument("--python", default=sys.executable, help="a python every user can run")
    parser.add_argument(
        "--grant-cgroup",
        help="the child cgroup to create for (a)'s kernel grant (default: a new one under the "
        "cgroup v2 mount); removed when (a) is over",
    )
    parser.add_argument(
        "--grant-dir",
        help="a directory to create for the grant's policy and bpffs (default: a new temporary "
        "one); removed when (a) is over",
    )
    return parser.parse_args()


def machine() -> Dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata as m; "
            "print(m.version('twisted'), m.version('procket-twisted'))",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": versions[0] if versions else "?",
        "procket_twisted": versions[1] if len(versions) > 1 else "?",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


def cpu_times() -> List[int]:
    """The machine's total and idle jiffies."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return [sum(fields), fields[3] + fields[4]]


def busy_percent(before: List[int], after: List[int]) -> float:
    """How busy all CPUs were between two `cpu_times` readings, in percent."""
    total = after[0] - before[0]
    return 100.0 * (1 - (after[1] - before[1]) / total) if total else float("nan")


class Runner:
    """Runs the measurement scripts, as root or as the unprivileged user."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        entry = pwd.getpwnam(arguments.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def command(
        self, script: str, options: List[str], as_user: bool, inside: Optional[KernelGrant]
    ) -> List[str]:
        """SCRIPT with OPTIONS, as the user or root, in the cgroup of INSIDE when given."""
        command = [self.arguments.python, os.path.join(HERE, script), *options]
        if as_user:
            command = [
                "setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        return command if inside is None else inside.enter_command(command)

    def start(
        self,
        script: str,
        options: List[str],
        as_user: bool,
        inside: Optional[KernelGrant],
        pass_fds: Tuple[int, ...],
    ) -> "subprocess.Popen[str]":
        """
        Start SCRIPT as the user or root (in the cgroup of INSIDE), its output discarded but for
        errors.
        """
        return subprocess.Popen(
            self.command(script, options, as_user, inside),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
            env=ENVIRONMENT,
            pass_fds=pass_fds,
        )

    def run(
        self,
        script: str,
        options: List[str],
        as_user: bool = True,
        inside: Optional[KernelGrant] = None,
        pass_fds: Tuple[int, ...] = (),
    ) -> Dict[str, Any]:
        """Run SCRIPT with OPTIONS (in the cgroup of INSIDE); return its last line's JSON."""
        command = self.command(script, options, as_user, inside)
        before = cpu_times()
        finished = subprocess.run(
            command, capture_output=True, text=True, cwd="/", env=ENVIRONMENT, pass_fds=pass_fds
        )
        if finished.returncode != 0:
            raise RuntimeError(
                f"{script} failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}"
            )
        lines = finished.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"{script} printed nothing:\n{finished.stderr}")
        result: Dict[str, Any] = json.loads(lines[-1])
        result["cpu_busy_percent"] = busy_percent(before, cpu_times())
        return result


def authbind_permit(port: int, user: str) -> Optional[str]:
    """Let USER bind PORT through authbind (a byport file); return the file to remove later."""
    path = os.path.join(AUTHBIND_BYPORT, str(port))
    if os.path.exists(path):
        return None
    os.makedirs(AUTHBIND_BYPORT, exist_ok=True)
    with open(path, "w"):
        pass
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, 0o500)
    return path


def pick_ports() -> Dict[str, Any]:
    """Free privileged ports for every measurement (none in use by another), and a high one."""
    taken = (
        {int(name) for name in os.listdir(AUTHBIND_BYPORT) if name.isdigit()}
        if (os.path.isdir(AUTHBIND_BYPORT))
        else set()
    )
    candidates = [port for port in PRIVILEGED_CANDIDATES if port not in taken]
    low = free_ports(candidates, 103)
    return {
        "spawn": low[0:5],  # listen, reactor, sudo, authbind, raw helper
        "grant": low[5:7],  # kernel grant: listen, in-process bind
        "root": low[7:9],  # in-process bind, listen as root
        "batch": low[0:64],
        "stall": low[0:100],
        "web": low[100],
        "soak": low[101],
        "high": free_ports(HIGH_CANDIDATES, 1)[0],
    }


def spawn_options(
    arguments: argparse.Namespace,
    size: Dict[str, Any],
    ports: Dict[str, Any],
    peers: Dict[str, int],
) -> List[str]:
    """The options of (a)'s worker (PEERS: its ends of the peers' sockets, by option)."""
    return [
        "--helper",
        arguments.helper,
        "--sudo-helper",
        arguments.sudo_helper,
        "--noop",
        arguments.noop,
        "--setuid-noop",
        arguments.setuid_noop,
        *(["--musl-noop", arguments.musl_noop] if arguments.musl_noop else []),
        "--ports",
        ",".join(map(str, ports["spawn"])),
        *(item for option, descriptor in peers.items() for item in (option, str(descriptor))),
        "--rounds",
        str(size["spawn_rounds"]),
        "--warmup",
        str(size["spawn_warmup"]),
        "--sudo-every",
        str(size["sudo_every"]),
    ]


def peer_rows(ports: Dict[str, Any]) -> Dict[str, Tuple[bool, str]]:
    """
    (a)'s two peers, by the worker's option for its socket: whether it runs as the user, and what
    it serves (--serve): the user peer the kernel-grant rows on the grant's ports, the root peer
    root's rows.
    """

    def serve(names: Tuple[str, ...], numbers: List[int]) -> str:
        return ",".join(f"{name}={port}" for name, port in zip(names, numbers))

    return {
        "--user-peer": (True, serve(USER_PEER_ROWS, ports["grant"])),
        "--root-peer": (False, serve(ROOT_PEER_ROWS, ports["root"])),
    }


def run_with_peers(
    runner: Runner,
    arguments: argparse.Namespace,
    size: Dict[str, Any],
    ports: Dict[str, Any],
    grant: KernelGrant,
) -> Dict[str, Any]:
    """
    (a)'s worker as the user and its two peers (the user's and root's), all in GRANT's cgroup,
    each peer connected to the worker by a socket pair; a peer exits when the worker's end closes
    (and is killed if it does not).
    """
    ours: Dict[str, socket.socket] = {}
    peers: Dict[str, "subprocess.Popen[str]"] = {}
    try:
        for option, (as_user, serve) in peer_rows(ports).items():
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours[option] = mine
            with theirs:
                peer_options = ["--peer", str(theirs.fileno()), "--serve", serve]
                peers[option] = runner.start(
                    "spawn_cost.py", peer_options, as_user, grant, (theirs.fileno(),)
                )
        descriptors = {option: sock.fileno() for option, sock in ours.items()}
        options = spawn_options(arguments, size, ports, descriptors)
        user = runner.run(
            "spawn_cost.py", options, inside=grant, pass_fds=tuple(descriptors.values())
        )
    except RuntimeError as error:  # the worker failed: say why its peers did, too
        raise RuntimeError(f"{error}\n{_stop_peers(ours, peers)}") from None
    except BaseException:
        _stop_peers(ours, peers)
        raise
    failures = _stop_peers(ours, peers)
    if failures:
        raise RuntimeError(failures)
    return user


def _stop_peers(ours: Dict[str, socket.socket], peers: Dict[str, "subprocess.Popen[str]"]) -> str:
    """Close our ends of the peers' sockets, wait for the peers to exit; how any failed."""
    for sock in ours.values():
        sock.close()  # the peer reads the end of the stream and exits
    failures = []
    for option, peer in peers.items():
        _, errors = stop(peer)
        if peer.returncode != 0:
            failures.append(f"the peer of (a) for {option} failed ({peer.returncode}):\n{errors}")
    return "\n".join(failures)


def stop(process: "subprocess.Popen[str]", seconds: float = 10) -> Tuple[str, str]:
    """Wait SECONDS for PROCESS (ours) to exit, then kill it; its output."""
    try:
        return process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def measure_spawn(
    runner: Runner, arguments: argparse.Namespace, size: Dict[str, Any], ports: Dict[str, Any]
) -> Dict[str, Any]:
    """
    (a): with a kernel grant for the user at the grant ports, in a child cgroup made for it, the
    user's worker and its two peers (which time the kernel-grant rows and root's rows when the
    worker asks), all inside that cgroup; the grant and the cgroup are removed when all are done
    or one failed.
    """
    grant = KernelGrant(runner.uid, ports["grant"], arguments.grant_cgroup, arguments.grant_dir)
    with grant:
        user = run_with_peers(runner, arguments, size, ports, grant)
        expected = "/" + os.path.relpath(str(grant.cgroup), str(cgroup2_mount()))
        if user["cgroup"] != expected:
            raise RuntimeError(f"(a) ran in the cgroup {user['cgroup']}, not {grant.cgroup}")
    return {"a": user, "a_grant": grant.report}


def _terminated(number: int, _: Any) -> None:
    """SIGTERM: exit through the clean-ups (the grant, the cgroup, the authbind permission)."""
    raise SystemExit(128 + number)


def main() -> int:
    """Run what was asked, report, and exit 0 when every target judged passes."""
    arguments = _arguments()
    signal.signal(signal.SIGTERM, _terminated)
    if os.geteuid() != 0:
        print("run.py: run it as root (through scripts/benchmark)", file=sys.stderr)
        return 2
    size = SIZES["quick" if arguments.quick else "full"]
    only = set(arguments.only.split(","))
    runner = Runner(arguments)
    ports = pick_ports()
    results: Dict[str, Any] = {
        "machine": machine(),
        "mode": "quick" if arguments.quick else "full",
        "ports": ports,
        "user": arguments.user,
    }
    started = time.monotonic()
    whole = cpu_times()
    permit = authbind_permit(ports["spawn"][3], arguments.user)
    try:
        if "a" in only:
            print("== (a) one privileged socket", flush=True)
            results.update(measure_spawn(runner, arguments, size, ports))
        if "b" in only:
            print("== (b) several sockets per helper run", flush=True)
            results["b"] = runner.run(
                "batch_cost.py",
                [
                    "--helper",
                    arguments.helper,
                    "--ports",
                    ",".join(map(str, ports["batch"])),
                    "--rounds",
                    str(size["batch_rounds"]),
                ],
            )
        if "c" in only:
            print("== (c) reactor responsiveness", flush=True)
            stall_options = [
                "--helper",
                arguments.helper,
                "--ports",
                ",".join(map(str, ports["stall"])),
                "--repeat",
                str(size["stall_repeat"]),
            ]
            results["c"] = runner.run("reactor_stall.py", stall_options)
            print("== (c) on asyncio: the event loop's responsiveness (procket_twisted.aio)")
            results["c_aio"] = runner.run("aio_stall.py", stall_options)
        if "d" in only:
            print("== (d) data path: twistd web, adopted port against listenTCP", flush=True)
            group = pwd.getpwnam(arguments.user).pw_gid
            results["d"] = runner.run(
                "web_throughput.py",
                [
                    "--python",
                    arguments.python,
                    "--helper",
                    arguments.helper,
                    "--site",
                    arguments.site,
                    "--port",
                    str(ports["web"]),
                    "--high-port",
                    str(ports["high"]),
                    "--rounds",
                    str(size["web_rounds"]),
                    "--seconds",
                    str(size["web_seconds"]),
                    "--together",
                    "--user",
                    arguments.user,
                    "--group",
                    str(group),
                ],
                as_user=False,
            )
        if "e" in only:
            print("== (e) soak", flush=True)
            results["e"] = runner.run(
                "soak.py",
                [
                    "--helper",
                    arguments.helper,
                    "--port",
                    str(ports["soak"]),
                    "--iterations",
                    str(size["soak_iterations"]),
                    "--warmup",
                    str(size["soak_warmup"]),
                ],
            )
        if arguments.profile:
            print("== profile of one helper run", flush=True)
            results["profile"] = runner.run(
                "profile_helper.py",
                [
                    "--python",
                    arguments.python,
                    "--helper",
                    arguments.helper,
                    "--noop",
                    arguments.noop,
                    "--ports",
                    ",".join(map(str, ports["stall"] + [ports["web"]])),
                    "--user",
                    arguments.user,
                    "--group",
                    str(pwd.getpwnam(arguments.user).pw_gid),
                    "--runs",
                    str(size["profile_runs"]),
                ],
                as_user=False,
            )
    finally:
        if permit is not None:
            os.unlink(permit)
    results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["machine"]["cpu_busy_percent"] = busy_percent(whole, cpu_times())
    results["seconds"] = time.monotonic() - started
    results["targets"] = judge(results)

    os.makedirs(arguments.output, exist_ok=True)
    with open(os.path.join(arguments.output, "results.json"), "w") as stream:
        json.dump(results, stream, indent=1)
    with open(os.path.join(arguments.output, "results.md"), "w") as stream:
        stream.write(markdown_report(results))
    chart = os.path.join(arguments.output, "benchmark.png")
    write_chart(results, chart)
    print(text_report(results))
    print(f"wrote {arguments.output}/results.json, results.md and benchmark.png")
    return 0 if all(target["pass"] for target in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
