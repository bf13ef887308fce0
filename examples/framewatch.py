"""
Watch the frames on an interface, as an ordinary user: one line per frame, tcpdump-style.

    python examples/framewatch.py lo                  # every frame on loopback
    python examples/framewatch.py eth0 --ethertype ip --count 10

The helper opens a packet socket (AF_PACKET) for the ethertype on the interface and hands it over;
the PacketPort delivers each frame with its link-layer address. The helper's policy must allow it:

    allow user=UID kind=packet ethertype=0x3 device=lo     # framewatch.py lo (every ethertype)
"""

import argparse
import ipaddress
import struct
import sys

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol

from procket_twisted.endpoints import packetEndpointFromString

NAMES = {0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6"}
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6"}
DIRECTIONS = {0: "In", 1: "B", 2: "M", 3: "P", 4: "Out"}  # PACKET_HOST ... PACKET_OUTGOING


def describe(frame: bytes, ethertype: int) -> str:
    """The frame's network-layer summary, as tcpdump would say it."""
    payload = frame[14:]
    if ethertype == 0x0800 and len(payload) >= 20:
        source, destination = (str(ipaddress.IPv4Address(payload[i : i + 4])) for i in (12, 16))
        return f"{source} > {destination}: {PROTOCOLS.get(payload[9], payload[9])}"
    if ethertype == 0x86DD and len(payload) >= 40:
        source, destination = (str(ipaddress.IPv6Address(payload[i : i + 16])) for i in (8, 24))
        return f"{source} > {destination}: {PROTOCOLS.get(payload[6], payload[6])}"
    return NAMES.get(ethertype, f"ethertype 0x{ethertype:04x}")


class FramePrinter(DatagramProtocol):
    """Prints a line per frame; ``done`` fires after COUNT frames (0: never)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.done: defer.Deferred = defer.Deferred()

    def datagramReceived(self, frame: bytes, address) -> None:
        ethertype = struct.unpack("!H", frame[12:14])[0] if len(frame) >= 14 else address.protocol
        direction = DIRECTIONS.get(address.packetType, "?")
        print(f"{address.device} {direction} {describe(frame, ethertype)}, "
              f"length {len(frame)}", flush=True)  # fmt: skip
        self.seen += 1
        if self.count and self.seen >= self.count:
            self.done.callback(None)


async def watch(reactor, options) -> int:
    printer = FramePrinter(options.count)
    description = f"procket:packet:{options.ethertype}:device={options.device}"
    try:
        port = await packetEndpointFromString(reactor, description).listen(printer)
    except CannotListenError as error:
        print(f"framewatch: {error.socketError}", file=sys.stderr)
        return 2
    print(f"framewatch: listening on {options.device}, ethertype {options.ethertype}", flush=True)
    await printer.done
    await port.stopListening()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("device")
    parser.add_argument("--ethertype", default="all", help="all (default), ip, ipv6, arp or 0x...")
    parser.add_argument("--count", type=int, default=0, help="stop after this many frames")
    options = parser.parse_args()

    async def run(reactor) -> None:
        await task.deferLater(reactor, 0)  # in the running reactor
        code = await watch(reactor, options)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
