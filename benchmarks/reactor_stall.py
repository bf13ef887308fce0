"""
Measurement (c): does acquiring privileged ports stall the reactor?

A 1 ms ``LoopingCall`` records when it runs; its lateness is how much longer than 1 ms the gap
since its previous run was (0 when on time). Measured on a real reactor, as the unprivileged user,
while 100 listening ports on 127.0.0.1 are acquired through endpoints, in three ways:

- ``sequential``: ``ProcketServerEndpoint(...).listen`` 100 times, each after the previous one
  fired (one helper run each);
- ``concurrent``: the 100 ``listen`` calls started at once, then ``gatherResults`` (100 helpers
  in flight);
- ``batch``: ``acquireEndpoints`` with the 100 requests (one helper run), then ``listen`` on each
  endpoint, one per reactor turn (adopting 100 ports in one turn is Twisted's own cost, shown by
  ``native``);

and, for context (no target), while Twisted itself binds 100 ports with ``listenTCP`` (port 0, no
privilege) in one reactor turn: ``native``. Each scenario is repeated; a run's window lasts from
its start until 10 ms after its last port listens. After each run the ports are closed, and once
the reactor has had 50 ms to settle, an **idle window** of the same length follows, in which
nothing happens but the ticks: the scenario's idle reactor, measured in the same process at
nearly the same moment. Reported per scenario: the median over its runs of each run's worst
lateness, the same for its idle windows (what the target compares), and every lateness pooled;
and all the idle windows pooled. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Dict, List, Tuple

from common import emit, median, percentile

INTERVAL = 0.001
HOST = "127.0.0.1"


class Ticker:
    """A 1 ms LoopingCall that records the monotonic time of every run."""

    def __init__(self, reactor: Any) -> None:
        from twisted.internet.task import LoopingCall

        self.times: List[float] = []
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def _tick(self) -> None:
        self.times.append(time.monotonic())

    def start(self) -> None:
        """Start ticking."""
        self._loop.start(INTERVAL, now=True)

    def stop(self) -> None:
        """Stop ticking."""
        self._loop.stop()

    def lateness_ms(self, start: float, end: float) -> List[float]:
        """Lateness (ms) of every run in the window from START to END."""
        return lateness_ms(self.times, start, end)


def lateness_ms(times: List[float], start: float, end: float) -> List[float]:
    """Lateness (ms) of every tick at TIMES (a 1 ms timer's) in the window from START to END."""
    found = []
    for previous, current in zip(times, times[1:]):
        if start < current <= end:
            found.append(max(0.0, (current - previous - INTERVAL) * 1000))
    return found


def sleep(reactor: Any, seconds: float) -> Any:
    """A Deferred that fires after SECONDS."""
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


def summarize_lateness(values: List[float]) -> Dict[str, Any]:
    """Worst, p99 and median lateness, and how many runs they cover."""
    return {
        "worst_ms": max(values) if values else float("nan"),
        "p99_ms": percentile(values, 0.99),
        "median_ms": median(values),
        "ticks": len(values),
    }


def run_statistics(windows: List[List[float]]) -> Dict[str, Any]:
    """The lateness of WINDOWS (each run's, or each idle window's), pooled and per window."""
    pooled = [value for window in windows for value in window]
    return dict(
        summarize_lateness(pooled),
        median_run_worst_ms=median([max(window, default=0.0) for window in windows]),
        runs=len(windows),
    )


async def idle_window(reactor: Any, ticker: Ticker, seconds: float) -> List[float]:
    """The lateness of every tick while the reactor does nothing else for SECONDS."""
    start = time.monotonic()
    await sleep(reactor, seconds)
    return ticker.lateness_ms(start, time.monotonic())


def stall_arguments(description: str) -> argparse.Namespace:
    """The command line of a (c) script: `--helper`, `--ports` (a list of ints), `--repeat`."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--helper", required=True)
    parser.add_argument("--ports", required=True, help="100 comma-separated free ports")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    arguments = parser.parse_args()
    arguments.ports = [int(port) for port in arguments.ports.split(",")]
    return arguments


def stall_result(
    runs: Dict[str, List[List[float]]],
    idles: Dict[str, List[List[float]]],
    durations: Dict[str, List[float]],
) -> Dict[str, Any]:
    """
    What a (c) script reports from each scenario's RUNS, the IDLES windows after them and the
    DURATIONS of its runs: the idle windows pooled, each scenario's statistics, every sample.
    """
    every_idle = [window for windows in idles.values() for window in windows]
    samples = {name: sum(windows, []) for name, windows in runs.items()}
    samples["idle"] = sum(every_idle, [])
    return {
        "idle": run_statistics(every_idle),
        "scenarios": {
            name: dict(
                run_statistics(runs[name]),
                duration_ms=median(durations[name]),
                idle_median_run_worst_ms=run_statistics(idles[name])["median_run_worst_ms"],
            )
            for name in runs
        },
        "samples_ms": samples,
    }


def main() -> None:
    """Measure, print the JSON result."""
    arguments = stall_arguments(__doc__)
    ports = arguments.ports

    from twisted.internet import defer, task
    from twisted.internet.protocol import Factory, Protocol

    from procket_twisted import SocketRequest
    from procket_twisted.endpoints import ProcketServerEndpoint, acquireEndpoints

    factory = Factory.forProtocol(Protocol)
    progname = [arguments.helper]

    def endpoint(reactor: Any, port: int) -> Any:
        return ProcketServerEndpoint(reactor, port, interface=HOST, progname=progname, direct=False)

    async def sequential(reactor: Any) -> List[Any]:
        listening = []
        for port in ports:
            listening.append(await endpoint(reactor, port).listen(factory))
        return listening

    async def concurrent(reactor: Any) -> List[Any]:
        pending = [endpoint(reactor, port).listen(factory) for port in ports]
        return list(await defer.gatherResults(pending, consumeErrors=True))

    async def batch(reactor: Any) -> List[Any]:
        requests = [SocketRequest(port, ip=HOST) for port in ports]
        endpoints = await acquireEndpoints(reactor, requests, progname=progname, direct=False)
        listening = []
        for adopted in endpoints:
            await sleep(reactor, 0)  # one adoption per reactor turn
            listening.append(await adopted.listen(factory))
        return listening

    async def native(reactor: Any) -> List[Any]:
        return [reactor.listenTCP(0, factory, interface=HOST) for _ in ports]

    scenarios: Dict[str, Callable[[Any], Any]] = {
        "sequential": sequential,
        "concurrent": concurrent,
        "batch": batch,
        "native": native,
    }
    result: Dict[str, Any] = {"ports": len(ports), "interval_ms": INTERVAL * 1000}
    durations: Dict[str, List[float]] = {name: [] for name in scenarios}

    async def measure(reactor: Any, ticker: Ticker, name: str) -> Tuple[List[float], List[float]]:
        """One run of scenario NAME, then its idle window: (run's lateness, idle's lateness)."""
        start = time.monotonic()
        listening = await scenarios[name](reactor)
        durations[name].append((time.monotonic() - start) * 1000)
        await sleep(reactor, 0.01)  # a stall right at the end shows in the next tick
        end = time.monotonic()
        this_run = ticker.lateness_ms(start, end)
        got = sorted(port.getHost().port for port in listening)
        if name != "native" and got != sorted(ports):
            raise RuntimeError(f"{name}: listening on {got}")
        await defer.gatherResults([port.stopListening() for port in listening])
        await sleep(reactor, 0.05)
        return this_run, await idle_window(reactor, ticker, end - start)

    async def run(reactor: Any) -> None:
        ticker = Ticker(reactor)
        ticker.start()
        await sleep(reactor, 0.2)  # let the ticker settle
        runs: Dict[str, List[List[float]]] = {name: [] for name in scenarios}
        idles: Dict[str, List[List[float]]] = {name: [] for name in scenarios}
        for _ in range(arguments.repeat):
            for name in scenarios:
                this_run, idle = await measure(reactor, ticker, name)
                runs[name].append(this_run)
                idles[name].append(idle)
        ticker.stop()
        emit(dict(result, **stall_result(runs, idles, durations)))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
