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

and, for context (no target), on the idle reactor and while Twisted itself binds 100 ports with
``listenTCP`` (port 0, no privilege) in one reactor turn: ``native``. Each scenario is repeated;
the ports are closed between repetitions, outside the measured window. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Dict, List

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
        found = []
        for previous, current in zip(self.times, self.times[1:]):
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


def windows_worst(samples: List[float], windows: int) -> float:
    """
    The median over WINDOWS equal windows of SAMPLES (the idle reactor's, in order) of each
    window's worst: the idle figure to set beside a scenario's median of its runs' worst.
    """
    size = len(samples) // windows if windows > 0 else 0
    if size == 0:
        return float("nan")
    return median([max(samples[at * size : (at + 1) * size]) for at in range(windows)])


def main() -> None:
    """Measure, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helper", required=True)
    parser.add_argument("--ports", required=True, help="100 comma-separated free ports")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--idle-seconds", type=float, default=1.0)
    arguments = parser.parse_args()
    ports = [int(port) for port in arguments.ports.split(",")]

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

    async def run(reactor: Any) -> None:
        ticker = Ticker(reactor)
        ticker.start()
        await sleep(reactor, 0.2)  # let the ticker settle
        start = time.monotonic()
        await sleep(reactor, arguments.idle_seconds)
        idle = ticker.lateness_ms(start, time.monotonic())
        lateness: Dict[str, List[float]] = {name: [] for name in scenarios}
        run_worst: Dict[str, List[float]] = {name: [] for name in scenarios}
        durations: Dict[str, List[float]] = {name: [] for name in scenarios}
        for _ in range(arguments.repeat):
            for name, scenario in scenarios.items():
                start = time.monotonic()
                listening = await scenario(reactor)
                end = time.monotonic()
                await sleep(reactor, 0.01)  # a stall right at the end shows in the next tick
                this_run = ticker.lateness_ms(start, time.monotonic())
                lateness[name].extend(this_run)
                run_worst[name].append(max(this_run, default=0.0))
                durations[name].append((end - start) * 1000)
                got = sorted(port.getHost().port for port in listening)
                if name != "native" and got != sorted(ports):
                    raise RuntimeError(f"{name}: listening on {got}")
                await defer.gatherResults([port.stopListening() for port in listening])
                await sleep(reactor, 0.05)
        ticker.stop()
        result["idle"] = dict(
            summarize_lateness(idle),
            median_run_worst_ms=windows_worst(idle, arguments.repeat),
        )
        result["scenarios"] = {
            name: dict(
                summarize_lateness(values),
                duration_ms=median(durations[name]),
                median_run_worst_ms=median(run_worst[name]),
                runs=len(run_worst[name]),
            )
            for name, values in lateness.items()
        }
        result["samples_ms"] = dict(lateness, idle=idle)
        emit(result)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
