"""
A tiny userspace host on a TUN interface: answers ping for an address behind it, as an ordinary user.

    python examples/tunping.py                          # tunping0, 10.213.0.1/30, up
    ping -c 3 10.213.0.2                                # answered by this program
    python examples/tunping.py --name tunping1 --address 10.9.9.1/24 --answer 10.9.9.7

The helper creates the interface (owned by this user, with its address, up) and hands over its
descriptor; Twisted's ``TuntapPort`` reads the IP packets the kernel routes into it. A
``TunnelIPProtocol`` (``twisted.pair``'s IP protocol, fit for TUN) passes ICMP to the responder,
which writes echo replies back into the interface. The interface goes away when this stops.

The helper's policy must allow it, naming the interface and the network, for example
``allow user=UID kind=tun device=tunping0 addr=10.213.0.0/24`` (a tun grant always names its
interfaces: their holder could make them outlive it).
"""

import argparse
import ipaddress
import os
import socket
import struct

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.pair.raw import IRawDatagramProtocol
from zope.interface import implementer

from procket_twisted.endpoints import TunnelIPProtocol, tunEndpointFromString

ICMP = 1
ECHO_REPLY, ECHO_REQUEST = 0, 8


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of DATA."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_packet(source: str, destination: str, protocol: int, payload: bytes, ident: int) -> bytes:
    """An IPv4 packet (no options, TTL 64) carrying PAYLOAD."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, protocol, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


@implementer(IRawDatagramProtocol)
class EchoResponder(AbstractDatagramProtocol):
    """Answers ICMP echo requests sent to ADDRESS, through the IP protocol's transport."""

    def __init__(self, ip: TunnelIPProtocol, address: str, count: int, done: defer.Deferred):
        self.ip = ip
        self.address = address
        self.left = count
        self.done = done

    def addProto(self, num, proto):  # IRawDatagramProtocol; nothing sits above ICMP here
        raise NotImplementedError("nothing sits on top of this responder")

    def datagramReceived(
        self, data, partial, source, dest, protocol, version, ihl, tos, tot_len,
        fragment_id, fragment_offset, dont_fragment, more_fragments, ttl,
    ):  # fmt: skip
        if dest != self.address or partial or more_fragments or fragment_offset:
            return
        if len(data) < 8 or data[0] != ECHO_REQUEST or checksum(data) != 0:
            return
        ident, sequence = struct.unpack("!HH", data[4:8])
        reply = struct.pack("!BBH", ECHO_REPLY, 0, 0) + data[4:]
        reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
        self.ip.transport.write(ipv4_packet(dest, source, ICMP, reply, fragment_id))
        print(f"echo reply to {source}: {len(data)} bytes, id={ident} seq={sequence}", flush=True)
        self.left -= 1
        if self.left == 0:
            self.done.callback(None)


async def serve(reactor, options) -> None:
    network = ipaddress.ip_interface(options.address)
    answer = options.answer or str(network.ip + 1)
    if ipaddress.ip_address(answer) not in network.network or answer == str(network.ip):
        raise SystemExit(f"tunping: {answer} must be another address of {network.network}")
    endpoint = tunEndpointFromString(
        reactor, f"procket:tun:{options.name}:address={network}:up=yes"
    )
    done: defer.Deferred = defer.Deferred()
    ip = TunnelIPProtocol()
    ip.addProto(ICMP, EchoResponder(ip, answer, options.count, done))
    try:
        port = await endpoint.listen(ip)
    except CannotListenError as failure:
        raise SystemExit(f"tunping: cannot create the interface: {failure.socketError}") from None
    interface = port.getHost().name.decode()
    print(
        f"tunping: {interface} is up with {network}, as uid {os.getuid()}; answering ping for "
        f"{answer}: try ping -c 3 {answer}",
        flush=True,
    )
    await done  # forever, unless --count
    await port.stopListening()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--name", default="tunping0", help="the interface's name (tunping0)")
    parser.add_argument("--address", default="10.213.0.1/30", help="its address and prefix")
    parser.add_argument("--answer", help="the address to answer for (default: the next one)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many replies")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(serve(reactor, options)))


if __name__ == "__main__":
    main()
