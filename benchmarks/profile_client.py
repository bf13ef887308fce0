"""
The Python side of the profile, run as the unprivileged user:

- ``listen``: cProfile of many ``procket_twisted.listen`` calls: the functions that cost the most
  time of their own, and how the wall time splits between waiting for the helper (``poll``,
  ``waitpid``, and ``posix_spawn``, which returns only once the child has executed the helper)
  and the Python around it;
- ``reactor``: how long each helper start blocks the reactor when an endpoint asks the helper for
  a socket (the pacer's job: find the helper, build its argv, ``socketpair``, ``posix_spawn``,
  watch its pidfd), with no other port open and with 100 ports open, and where that time goes
  (cProfile of the job).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any, Dict, List, Optional

from common import emit, median

HOST = "127.0.0.1"
#: Calls whose time is the helper's (or the kernel's), not the Python client's.
WAITS = ("poll", "posix_spawn", "waitpid")


def top_functions(profile: cProfile.Profile, calls: int, count: int = 12) -> List[Dict[str, Any]]:
    """The COUNT functions with the most time of their own, per call of the profiled thing."""
    stats = pstats.Stats(profile)
    rows = []
    table: Dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # not in the stubs
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in table.items():
        where = name if filename == "~" else f"{filename.rsplit('/', 1)[-1]}:{line}({name})"
        rows.append(
            {
                "function": where,
                "calls_per_run": ncalls / calls,
                "own_us": tottime / calls * 1e6,
                "cumulative_us": cumtime / calls * 1e6,
            }
        )
    rows.sort(key=lambda row: row["own_us"], reverse=True)
    return rows[:count]


def profile_listen(helper: str, port: int, runs: int) -> Dict[str, Any]:
    """cProfile of RUNS blocking listen calls, and their wall time without the profiler."""
    import procket_twisted

    def once() -> None:
        procket_twisted.listen(port, ip=HOST, direct=False, progname=[helper]).close()

    for _ in range(20):
        once()
    walls = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        once()
        walls.append(time.perf_counter_ns() - start)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(runs):
        once()
    profile.disable()
    top = top_functions(profile, runs, 40)
    profiled_total = sum(row["own_us"] for row in top_functions(profile, runs, 10_000))
    waiting = sum(row["own_us"] for row in top if any(word in row["function"] for word in WAITS))
    return {
        "runs": runs,
        "wall_median_us": median(walls) / 1e3,
        "profiled_us_per_run": profiled_total,
        "waiting_us_per_run": waiting,
        "top": top[:12],
    }


def profile_reactor(helper: str, ports: List[int], runs: int) -> Dict[str, Any]:
    """How long a helper start blocks the reactor, with 0 and len(PORTS) - 1 other ports open."""
    from twisted.internet import defer, task
    from twisted.internet.protocol import Factory, Protocol

    from procket_twisted._twisted import reactor_client as _reactor_client
    from procket_twisted.endpoints import ProcketServerEndpoint

    result: Dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        original = _reactor_client._HelperRun._spawn
        durations: List[int] = []
        profile: Optional[cProfile.Profile] = None

        def timed_start(*arguments: Any, **keywords: Any) -> Any:
            if profile is not None:
                profile.enable()
            start = time.perf_counter_ns()
            try:
                return original(*arguments, **keywords)
            finally:
                durations.append(time.perf_counter_ns() - start)
                if profile is not None:
                    profile.disable()

        _reactor_client._HelperRun._spawn = timed_start  # type: ignore[method-assign]
        factory = Factory.forProtocol(Protocol)

        def endpoint(port: int) -> Any:
            return ProcketServerEndpoint(
                reactor, port, interface=HOST, progname=[helper], direct=False
            )

        async def acquire_and_release() -> None:
            listening = await endpoint(ports[0]).listen(factory)
            await listening.stopListening()

        for held_count in (0, len(ports) - 1):
            held = [await endpoint(port).listen(factory) for port in ports[1 : 1 + held_count]]
            profile = None
            durations.clear()
            for _ in range(runs):  # timed without the profiler
                await acquire_and_release()
            timed = list(durations)
            profile = cProfile.Profile()
            for _ in range(runs):
                await acquire_and_release()
            result[f"{held_count}_open"] = {
                "start_median_us": median(timed) / 1e3,
                "start_max_us": max(timed) / 1e3,
                "top": top_functions(profile, runs, 6),
            }
            for port in held:
                await port.stopListening()

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as end:  # react always exits; the result is filled in by then
        if end.code:
            raise
    return result


def main() -> None:
    """Profile, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helper", required=True)
    parser.add_argument("--ports", required=True, help="101 comma-separated free ports")
    parser.add_argument("--runs", type=int, default=500)
    arguments = parser.parse_args()
    ports = [int(port) for port in arguments.ports.split(",")]
    emit(
        {
            "listen": profile_listen(arguments.helper, ports[0], arguments.runs),
            "reactor": profile_reactor(arguments.helper, ports, max(20, arguments.runs // 10)),
        }
    )


if __name__ == "__main__":
    main()
