"""
Measurement (e): a soak. As the unprivileged user, acquire and release a privileged listening
socket many times, and take open fds, RSS, children (zombies included) and threads at checkpoints:

- ``blocking``: ``procket_twisted.listen(port, ip="127.0.0.1", direct=False)``, then ``close()``;
- ``reactor``: ``ProcketServerEndpoint(...).listen(factory)`` on a running reactor, then
  ``stopListening()``.

The first ``--warmup`` iterations of each settle caches and lazily created objects; the snapshot
after them is the baseline every later checkpoint is compared with. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List

from common import emit, snapshot

HOST = "127.0.0.1"


def main() -> None:
    """Soak both ways, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helper", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--iterations", type=int, default=10000, help="for each way")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--checkpoints", type=int, default=10)
    arguments = parser.parse_args()

    from twisted.internet import defer, task
    from twisted.internet.protocol import Factory, Protocol

    import procket_twisted
    from procket_twisted.endpoints import ProcketServerEndpoint

    progname = [arguments.helper]
    every = max(1, arguments.iterations // arguments.checkpoints)
    result: Dict[str, Any] = {"iterations": arguments.iterations, "warmup": arguments.warmup}

    def blocking_once() -> None:
        procket_twisted.listen(arguments.port, ip=HOST, direct=False, progname=progname).close()

    async def reactor_once(reactor: Any) -> None:
        endpoint = ProcketServerEndpoint(
            reactor, arguments.port, interface=HOST, progname=progname, direct=False
        )
        port = await endpoint.listen(Factory.forProtocol(Protocol))
        stopped = port.stopListening()
        if stopped is not None:
            await stopped

    async def soak(name: str, once: Any) -> None:
        points: List[Dict[str, int]] = [snapshot(0)]
        started = time.monotonic()
        for _ in range(arguments.warmup):
            await once()
        baseline = snapshot(0)
        for done in range(1, arguments.iterations + 1):
            await once()
            if done % every == 0 or done == arguments.iterations:
                points.append(snapshot(done))
        elapsed = time.monotonic() - started
        last = points[-1]
        result[name] = {
            "start": points[0],
            "baseline": baseline,
            "checkpoints": points[1:],
            "end": last,
            "seconds": elapsed,
            "growth": {key: last[key] - baseline[key] for key in baseline if key != "done"},
            "max_over_baseline": {
                key: max(point[key] for point in points[1:]) - baseline[key]
                for key in baseline
                if key != "done"
            },
        }

    async def run(reactor: Any) -> None:
        async def blocking() -> None:
            blocking_once()

        await soak("blocking", blocking)
        await soak("reactor", lambda: reactor_once(reactor))
        emit(result)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
