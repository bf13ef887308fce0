"""
Measurement (d): the data path. Two ``twistd web`` servers run as the unprivileged user and serve
the same directory: one on a privileged port adopted from the helper (``--listen
procket:tcp:PORT``), one on a high port that Twisted binds itself with ``listenTCP`` (``--listen
tcp:HIGHPORT``). ``wrk`` loads one at a time with the same threads, connections and duration, in
rounds that alternate which goes first. Run as root (it starts the servers with ``setpriv``);
prints one JSON line.
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
    arguments: argparse.Namespace, listen: str, log: str, environment: Dict[str, str]
) -> subprocess.Popen:
    """twistd -n web --listen LISTEN --path SITE, as the unprivileged user."""
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
        "--listen",
        listen,
        "--path",
        arguments.site,
        "--logfile",
        "/dev/null",
    ]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **environment}
    return subprocess.Popen(command, cwd="/", env=env, stdout=subprocess.DEVNULL)


def wait_until_serving(process: subprocess.Popen, port: int, log: str) -> None:
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


def server_uid(process: subprocess.Popen) -> int:
    """The real uid of the server (setpriv execs twistd in place)."""
    with open(f"/proc/{process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Uid:"))


def run_wrk(arguments: argparse.Namespace, port: int, seconds: int) -> Dict[str, Any]:
    """One wrk run against PORT; its requests per second and error counts."""
    command = [
        arguments.wrk,
        f"-t{arguments.threads}",
        f"-c{arguments.connections}",
        f"-d{seconds}s",
        f"http://{HOST}:{port}/{PAGE}",
    ]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stdout}{finished.stderr}")
    output = finished.stdout
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
    arguments = parser.parse_args()

    logs = tempfile.mkdtemp(prefix="procket-bench-web-")
    os.chmod(logs, 0o777)
    servers = {
        "adopted": (
            f"procket:tcp:{arguments.port}:interface={HOST}",
            arguments.port,
            {"PROCKET_HELPER": arguments.helper},
        ),
        "native": (f"tcp:{arguments.high_port}:interface={HOST}", arguments.high_port, {}),
    }
    processes: Dict[str, subprocess.Popen] = {}
    try:
        for name, (listen, port, environment) in servers.items():
            log = os.path.join(logs, f"{name}.log")
            processes[name] = start_server(arguments, listen, log, environment)
            wait_until_serving(processes[name], port, log)
        uids = {name: server_uid(process) for name, process in processes.items()}
        for _, port, _ in servers.values():  # warm both up
            run_wrk(arguments, port, 1)
        runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in servers}
        for round_number in range(arguments.rounds):
            order = ["adopted", "native"] if round_number % 2 == 0 else ["native", "adopted"]
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
