"""
Measurement (c), on asyncio: does acquiring privileged ports through ``procket_twisted.aio`` make
the event loop late?

A 1 ms timer (``loop.call_later``, re-armed at every run) records when it runs; its lateness is
how much longer than 1 ms the gap since its previous run was. Measured as the unprivileged user,
on the default asyncio loop and on uvloop's when it is installed, while 100 listening ports on
127.0.0.1 are acquired through the setuid helper (``direct=False``), in three ways:

- ``aio_sequential``: ``await aio.listen(port)`` 100 times, one after another (a helper run
  each);
- ``aio_concurrent``: the 100 ``aio.listen`` started at once, then ``asyncio.gather``;
- ``aio_batch``: ``await aio.listen_many`` of the 100 (one helper run).

As in ``reactor_stall.py``, each run's window lasts until 10 ms after its last socket arrived,
and after each run (its sockets closed, 50 ms to settle) an idle window of the same length
follows, in which the loop runs nothing but the timer. Prints one JSON line: per loop, what
``reactor_stall.py`` prints for the reactor.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Coroutine, Dict, List, Tuple

from common import emit
from reactor_stall import HOST, INTERVAL, lateness_ms, stall_arguments, stall_result


class LoopTicker:
    """A 1 ms timer on an asyncio loop that records the monotonic time of every run."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.times: List[float] = []
        self._loop = loop
        self._handle: Any = None

    def _tick(self) -> None:
        self.times.append(time.monotonic())
        self._handle = self._loop.call_later(INTERVAL, self._tick)

    def start(self) -> None:
        """Start ticking."""
        self._tick()

    def stop(self) -> None:
        """Stop ticking."""
        self._handle.cancel()


def measure_loop(
    loop: asyncio.AbstractEventLoop, helper: str, ports: List[int], repeat: int
) -> Dict[str, Any]:
    """Every scenario REPEAT times on LOOP, each followed by its idle window."""
    from procket_twisted import SocketRequest, aio

    progname = [helper]

    async def sequential() -> List[Any]:
        return [await aio.listen(port, ip=HOST, progname=progname, direct=False) for port in ports]

    async def concurrent() -> List[Any]:
        pending = [aio.listen(port, ip=HOST, progname=progname, direct=False) for port in ports]
        return list(await asyncio.gather(*pending))

    async def batch() -> List[Any]:
        requests = [SocketRequest(port, ip=HOST) for port in ports]
        return list(await aio.listen_many(requests, progname=progname, direct=False))

    scenarios: Dict[str, Callable[[], Coroutine[Any, Any, List[Any]]]] = {
        "aio_sequential": sequential,
        "aio_concurrent": concurrent,
        "aio_batch": batch,
    }
    durations: Dict[str, List[float]] = {name: [] for name in scenarios}
    ticker = LoopTicker(loop)

    async def one_run(name: str) -> Tuple[List[float], List[float]]:
        start = time.monotonic()
        sockets = await scenarios[name]()
        durations[name].append((time.monotonic() - start) * 1000)
        await asyncio.sleep(0.01)  # a stall right at the end shows in the next tick
        end = time.monotonic()
        this_run = lateness_ms(ticker.times, start, end)
        got = sorted(sock.getsockname()[1] for sock in sockets)
        for sock in sockets:
            sock.close()
        if got != sorted(ports):
            raise RuntimeError(f"{name}: listening on {got}")
        await asyncio.sleep(0.05)
        idle_start = time.monotonic()
        await asyncio.sleep(end - start)
        return this_run, lateness_ms(ticker.times, idle_start, time.monotonic())

    async def run() -> Dict[str, Any]:
        ticker.start()
        await asyncio.sleep(0.2)  # let the timer settle
        runs: Dict[str, List[List[float]]] = {name: [] for name in scenarios}
        idles: Dict[str, List[List[float]]] = {name: [] for name in scenarios}
        for _ in range(repeat):
            for name in scenarios:
                this_run, idle = await one_run(name)
                runs[name].append(this_run)
                idles[name].append(idle)
        ticker.stop()
        return stall_result(runs, idles, durations)

    return loop.run_until_complete(run())


def main() -> None:
    """Measure on each loop, print the JSON result."""
    arguments = stall_arguments(__doc__)
    ports = arguments.ports
    makers: Dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:
        pass  # reported as absent
    else:
        makers["uvloop"] = uvloop.new_event_loop
    result: Dict[str, Any] = {"ports": len(ports), "interval_ms": INTERVAL * 1000, "loops": {}}
    for name, make in makers.items():
        loop = make()
        try:
            result["loops"][name] = measure_loop(loop, arguments.helper, ports, arguments.repeat)
        finally:
            loop.close()
    emit(result)


if __name__ == "__main__":
    main()
