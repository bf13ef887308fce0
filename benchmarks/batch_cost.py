"""
Measurement (b): several sockets per helper run. Times ``listen_many`` of 1, 8 and 64 listening TCP
sockets on 127.0.0.1 (``direct=False``, so every one goes through the helper), interleaved
round-robin with alternating order, as the unprivileged user. Every socket is closed after each
call, outside the timed part. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import socket
from typing import Callable, Dict, List

from common import emit, interleaved_order, summarize, time_call

HOST = "127.0.0.1"
SIZES = (1, 8, 64)


def main() -> None:
    """Measure, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helper", required=True)
    parser.add_argument("--ports", required=True, help="64 comma-separated free ports")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    arguments = parser.parse_args()

    import procket_twisted
    from procket_twisted import SocketRequest

    ports = [int(port) for port in arguments.ports.split(",")]
    if len(ports) < max(SIZES):
        raise SystemExit(f"need {max(SIZES)} ports, got {len(ports)}")
    requests = {size: [SocketRequest(port, ip=HOST) for port in ports[:size]] for size in SIZES}
    names = [str(size) for size in SIZES]
    samples: Dict[str, List[int]] = {name: [] for name in names}
    opened: List[socket.socket] = []

    def acquirer(size: int) -> Callable[[], None]:
        def acquire() -> None:
            opened.extend(
                procket_twisted.listen_many(
                    requests[size], progname=[arguments.helper], direct=False
                )
            )

        return acquire

    for round_number in range(-arguments.warmup, arguments.rounds):
        for name in interleaved_order(names, round_number):
            elapsed = time_call(acquirer(int(name)))
            if round_number == -arguments.warmup:
                got = sorted(sock.getsockname()[1] for sock in opened)
                if got != sorted(ports[: int(name)]):
                    raise RuntimeError(f"{name} sockets: got ports {got}")
            for sock in opened:
                sock.close()
            opened.clear()
            if round_number >= 0:
                samples[name].append(elapsed)
    emit(
        {
            "sizes": {name: summarize(values) for name, values in samples.items()},
            "samples_ms": {name: [v / 1e6 for v in values] for name, values in samples.items()},
        }
    )


if __name__ == "__main__":
    main()
