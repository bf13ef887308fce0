"""
What every measurement script shares: timing, statistics, process snapshots, and the JSON line a
worker prints for the orchestrator (`run.py`).

The workers run as the unprivileged user (``nobody``) under ``setpriv``; each prints exactly one
JSON object as its last line of output.
"""

from __future__ import annotations

import array
import json
import os
import random
import socket
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence

__all__ = [
    "emit",
    "median",
    "percentile",
    "summarize",
    "open_fd_count",
    "rss_kib",
    "child_pids",
    "thread_count",
    "snapshot",
    "interleaved_order",
    "time_call",
    "raw_helper",
    "cgroup_v2",
]


def emit(value: Dict[str, Any]) -> None:
    """Print VALUE as the worker's result: one JSON line on stdout."""
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def median(values: Sequence[float]) -> float:
    """The median of VALUES (NaN when empty)."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The FRACTION (0..1) percentile of VALUES, nearest-rank (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summarize(samples_ns: Sequence[int]) -> Dict[str, Any]:
    """Median, p10, p90 and count of SAMPLES_NS (nanoseconds), in milliseconds."""
    millis = [sample / 1e6 for sample in samples_ns]
    return {
        "median_ms": median(millis),
        "p10_ms": percentile(millis, 0.10),
        "p90_ms": percentile(millis, 0.90),
        "runs": len(millis),
    }


def open_fd_count() -> int:
    """How many descriptors this process has open (listing /proc/self/fd opens one more)."""
    return len(os.listdir("/proc/self/fd")) - 1


def rss_kib() -> int:
    """This process's resident set size, in KiB (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def thread_count() -> int:
    """How many threads this process has."""
    return len(os.listdir("/proc/self/task"))


def child_pids() -> List[int]:
    """The pids of this process's children, zombies included."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(entry))
    return found


def snapshot(done: int) -> Dict[str, int]:
    """Open fds, RSS, children and threads now, after DONE iterations."""
    return {
        "done": done,
        "fds": open_fd_count(),
        "rss_kib": rss_kib(),
        "children": len(child_pids()),
        "threads": thread_count(),
    }


def cgroup_v2() -> str:
    """This process's cgroup in the v2 hierarchy (the ``0::`` line of /proc/self/cgroup)."""
    with open("/proc/self/cgroup") as cgroups:
        for line in cgroups:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    return ""


def interleaved_order(names: Sequence[str], round_number: int) -> List[str]:
    """
    The order to run NAMES in, in round ROUND_NUMBER: a random order, drawn afresh each round from
    a generator seeded with the round number (so a run is reproducible), so that every variant
    runs first, last and right after every other variant equally often on the average. (A
    rotation does not do that: in a rotated list a variant only ever follows its two list
    neighbours, which gave (a)'s rows very different neighbours: one always came after a process
    spawn, another never.)
    """
    order = list(names)
    random.Random(round_number).shuffle(order)
    return order


def time_call(function: Callable[[], Any]) -> int:
    """Nanoseconds FUNCTION takes (its result is discarded)."""
    start = time.perf_counter_ns()
    function()
    return time.perf_counter_ns() - start


def free_ports(candidates: Iterable[int], count: int, host: str = "127.0.0.1") -> List[int]:
    """COUNT ports of CANDIDATES that TCP can bind on HOST now (root needed below 1024)."""
    import socket

    found = []
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports among the candidates on {host}")


def raw_helper(
    helper: str, specs: Sequence[str], environment: Mapping[str, str]
) -> Callable[[], List[socket.socket]]:
    """
    The helper run for SPECS with the least Python around it (``socketpair``, ``posix_spawn``,
    ``waitpid``, one ``recvmsg``, no checks): what ``procket_twisted`` adds is the rest.
    """
    argv = [helper, "v1", *specs]
    control = socket.CMSG_SPACE(len(specs) * array.array("i").itemsize)
    expected = f"ok {len(specs)}\n".encode()

    def run() -> List[socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours:
            with theirs:
                actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), fd) for fd in (0, 1, 2)]
                pid = os.posix_spawn(helper, argv, environment, file_actions=actions)
            _, status = os.waitpid(pid, 0)
            data, ancillary, _, _ = ours.recvmsg(64, control)
        fds = array.array("i")
        for _, _, payload in ancillary:
            fds.frombytes(payload)
        sockets = [socket.socket(fileno=fd) for fd in fds]
        if status != 0 or data != expected or len(sockets) != len(specs):
            for sock in sockets:
                sock.close()
            raise RuntimeError(f"raw helper run failed: {status} {data!r}")
        return sockets

    return run
