"""
Measurement (b): several sockets per helper run. Times ``listen_many`` of 1, 8 and 64 listening TCP
sockets on 127.0.0.1 (``direct=False``, so every one goes through the helper), interleaved
round-robin with alternating order, as the unprivileged user. In the same rounds, the context
rows: the helper for 1 and 64 sockets with the least Python around it (`common.raw_helper`:
``socketpair``, ``posix_spawn``, ``waitpid``, one ``recvmsg``, a socket object per descriptor,
no checks of what arrives), what the helper and the kernel cost per socket on their own, and the
yardstick of (b)'s target. The cost of an extra socket (`extra_socket_us`) is paired by round:
for N sockets, the median over the rounds of (the N-socket call - the 1-socket call of the same
round) / (N - 1), so that drift from one round to the next cancels; (b)'s target (report.py)
compares listen_many's at 64 with the context rows' at 64. Every socket is closed after each
call, outside the timed part. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import socket
from typing import Callable, Dict, List

from common import emit, interleaved_order, median, raw_helper, summarize, time_call

HOST = "127.0.0.1"
SIZES = (1, 8, 64)
RAW_SIZES = (1, 64)


def extra_socket_us(samples: Dict[str, List[int]], prefix: str = "") -> Dict[str, float]:
    """
    What each socket beyond the first costs (us), for every size of SAMPLES named PREFIX + N:
    the median over rounds of (N sockets - 1 socket, same round) / (N - 1).
    """
    one = samples[f"{prefix}1"]
    found = {}
    for name, values in samples.items():
        if name.startswith(prefix) and name[len(prefix) :].isdigit() and name != f"{prefix}1":
            size = int(name[len(prefix) :])
            found[str(size)] = median([(n - o) / 1e3 / (size - 1) for n, o in zip(values, one)])
    return found


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
    names = [str(size) for size in SIZES] + [f"raw {size}" for size in RAW_SIZES]
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

    raw = {
        f"raw {size}": raw_helper(
            arguments.helper,
            [f"kind=tcp,family=inet,addr={HOST},port={port}" for port in ports[:size]],
            {},
        )
        for size in RAW_SIZES
    }

    def raw_acquirer(name: str) -> Callable[[], None]:
        def acquire() -> None:
            opened.extend(raw[name]())

        return acquire

    for round_number in range(-arguments.warmup, arguments.rounds):
        for name in interleaved_order(names, round_number):
            size = int(name.split()[-1])
            call = raw_acquirer(name) if name.startswith("raw") else acquirer(size)
            elapsed = time_call(call)
            if round_number == -arguments.warmup:
                got = sorted(sock.getsockname()[1] for sock in opened)
                if got != sorted(ports[:size]):
                    raise RuntimeError(f"{name} sockets: got ports {got}")
            for sock in opened:
                sock.close()
            opened.clear()
            if round_number >= 0:
                samples[name].append(elapsed)
    emit(
        {
            "sizes": {
                name: summarize(values) for name, values in samples.items() if name.isdigit()
            },
            "raw_sizes": {
                name.split()[-1]: summarize(values)
                for name, values in samples.items()
                if not name.isdigit()
            },
            "extra_socket_us": extra_socket_us(samples),
            "raw_extra_socket_us": extra_socket_us(samples, "raw "),
            "samples_ms": {name: [v / 1e6 for v in values] for name, values in samples.items()},
        }
    )


if __name__ == "__main__":
    main()
