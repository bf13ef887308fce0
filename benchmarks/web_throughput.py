"""
Measurement (d): the data path. ``twistd web`` runs as the unprivileged user and serves the same
directory on two ports: a privileged port adopted from the helper (``--listen procket:tcp:PORT``)
and a high port that Twisted binds itself with ``listenTCP`` (``--listen tcp:HIGHPORT``).

With ``--together`` (what ``run.py`` uses) one twistd serves both ports and, in each round, two
``wrk`` runs with the same threads, connections and duration load both ports at the same time: the
two ports then share one process, one reactor and the same moment of the machine, so their ratio
isolates the port itself (paired ratios within about 1% of each other on a 2-CPU VM, against
about 15% when two servers are loaded in turn). Without it, one twistd per port, loaded one at a
time in rounds that alternate which goes first. Run as root (it starts the servers with
``setpriv``); prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Dict, List

from common import emit, median

HOST = "127.0.0.1"
PAGE = "index.html"


def start_server(
    arguments: argparse.Namespace, listens: List[str], log: str, environment: Dict[str, str]
) -> "subprocess.Popen[bytes]":
    """twistd -n web --listen LISTEN... --path SITE, as the unprivileged user."""
    twistd = os.path.join(os.path.dirname(arguments.python), "twistd")
    command = [
        "setpriv",
        f"--reuid={arguments.user}",
        f"--regid={arguments.group}",
        "--clear-groups",
        "--",
        twistd,
        "-n",
        "--pidfile=",
        f"--logfile={log}",
        "web",
        *(part for listen in listens for part in ("--listen", listen)),
        "--path",
        arguments.site,
        "--logfile",
        "/dev/null",
    ]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **environment}
    return subprocess.Popen(command, cwd="/", env=env, stdout=subprocess.DEVNULL)


def wait_until_serving(process: "subprocess.Popen[bytes]", port: int, log: str) -> None:
    """Wait until the server answers a GET with 200; fail with its log if it dies or hangs."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/{PAGE}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            with open(log) as stream:
                raise RuntimeError(f"twistd on port {port} did not serve:\n{stream.read()}")
        time.sleep(0.1)


def server_uid(process: "subprocess.Popen[bytes]") -> int:
    """The real uid of the server (setpriv execs twistd in place)."""
    with open(f"/proc/{process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Uid:"))


def wrk_command(arguments: argparse.Namespace, port: int, seconds: int) -> List[str]:
    """The wrk command that loads PORT for SECONDS."""
    return [
        arguments.wrk,
        f"-t{arguments.threads}",
        f"-c{arguments.connections}",
        f"-d{seconds}s",
        f"http://{HOST}:{port}/{PAGE}",
    ]


def run_wrk(arguments: argparse.Namespace, port: int, seconds: int) -> Dict[str, Any]:
    """One wrk run against PORT; its requests per second and error counts."""
    return run_wrks(arguments, [port], seconds)[0]


def run_wrks(arguments: argparse.Namespace, ports: List[int], seconds: int) -> List[Dict[str, Any]]:
    """One wrk per port of PORTS, all at the same time; each one's requests per second and errors."""
    commands = [wrk_command(arguments, port, seconds) for port in ports]
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    return [
        wrk_result(command, *process.communicate(), process.returncode)
        for command, process in zip(commands, running)
    ]


def wrk_result(command: List[str], output: str, errors_text: str, status: int) -> Dict[str, Any]:
    """What one wrk run reported: requests per second and error counts."""
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output}{errors_text}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(found.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def main() -> None:
    """Start both servers, load them in alternating rounds, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the venv's python (its twistd is used)")
    parser.add_argument("--helper", required=True)
    parser.add_argument("--site", required=True, help="the directory to serve (with index.html)")
    parser.add_argument("--port", type=int, required=True, help="the privileged port")
    parser.add_argument("--high-port", type=int, required=True, help="the port for tcp:")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (each loads both once)")
    parser.add_argument("--seconds", type=int, default=2, help="wrk duration per run (whole)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--user", default="nobody")
    parser.add_argument("--group", default="nogroup")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument(
        "--together",
        action="store_true",
        help="one twistd serving both ports, both loaded at the same time in each round",
    )
    arguments = parser.parse_args()

    logs = tempfile.mkdtemp(prefix="procket-bench-web-")
    os.chmod(logs, 0o777)
    servers = {
        "adopted": (f"procket:tcp:{arguments.port}:interface={HOST}", arguments.port),
        "native": (f"tcp:{arguments.high_port}:interface={HOST}", arguments.high_port),
    }
    environment = {"PROCKET_HELPER": arguments.helper}
    # Separately: one twistd per port. Together: one twistd serving both ports.
    groups = {"both": list(servers)} if arguments.together else {name: [name] for name in servers}
    processes: Dict[str, "subprocess.Popen[bytes]"] = {}
    try:
        for group, names in groups.items():
            log = os.path.join(logs, f"{group}.log")
            listens = [servers[name][0] for name in names]
            processes[group] = start_server(arguments, listens, log, environment)
            for name in names:
                wait_until_serving(processes[group], servers[name][1], log)
        uids = {group: server_uid(process) for group, process in processes.items()}
        for _, port in servers.values():  # warm both up
            run_wrk(arguments, port, 1)
        runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in servers}
        for round_number in range(arguments.rounds):
            order = ["adopted", "native"] if round_number % 2 == 0 else ["native", "adopted"]
            if arguments.together:
                ports = [servers[name][1] for name in order]
                measured = run_wrks(arguments, ports, arguments.seconds)
                for name, run in zip(order, measured):
                    runs[name].append(run)
                continue
            for name in order:
                runs[name].append(run_wrk(arguments, servers[name][1], arguments.seconds))
        rps = {name: [run["rps"] for run in values] for name, values in runs.items()}
        paired = [adopted / native for adopted, native in zip(rps["adopted"], rps["native"])]
        emit(
            {
                "rps": rps,
                "median_rps": {name: median(values) for name, values in rps.items()},
                "paired_ratios": paired,
                "median_paired_ratio": median(paired),
                "errors": {
                    name: sum(run["non_2xx"] for run in values) for name, values in runs.items()
                },
                "server_uids": uids,
                "wrk": f"wrk -t{arguments.threads} -c{arguments.connections} "
                f"-d{arguments.seconds}s",
                "rounds": arguments.rounds,
                "together": arguments.together,
            }
        )
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
