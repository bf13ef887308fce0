"""
ping, in Twisted, as an ordinary user: ICMP (or ICMPv6) echo over a raw socket that the procket
helper opens (``procket:raw:icmp``, ``procket:raw6:icmpv6``). It prints what iputils' ``ping``
prints, round-trip times and statistics included:

    python examples/ping.py 127.0.0.1 -c 3
    python examples/ping.py ::1 -c 3 -i 0.2 -W 2

The helper's policy must allow raw sockets for ICMP and ICMPv6, with a line such as
``allow kind=raw proto=1,58`` (see docs/policy.md). Replies are matched by the echo identifier (this
process's id), as ping does: a raw socket sees every ICMP message that arrives. For IPv6 the kernel
computes the ICMPv6 checksum, and the hop limit comes from the transport's ``receivedHopLimit``.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import signal
import socket
import struct
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol

from procket_twisted.endpoints import datagramEndpointFromString

ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_ICMPV6_FILTER = 1  # ICMP6_FILTER, at level IPPROTO_ICMPV6


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of DATA."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, identifier: int, sequence: int, size: int) -> bytes:
    """An echo request with SIZE bytes of data: a timestamp, then bytes counting up, as ping's."""
    now = time.time()
    stamp = struct.pack("=qq", int(now), int(now % 1 * 1e6))
    data = (stamp + bytes(range(len(stamp), 256)) * (size // 240 + 1))[:size]
    header = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, identifier, sequence)
    if family == socket.AF_INET6:
        return header + data  # the kernel computes the ICMPv6 checksum (it covers the IPv6 header)
    return header[:2] + struct.pack("!H", checksum(header + data)) + header[4:] + data


def millis(seconds: float) -> str:
    """A round-trip time as ping prints it: 3 significant decimals below 1 ms, fewer above."""
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


class Pinger(DatagramProtocol):
    """Sends the echo requests, prints each reply and, at the end, the statistics."""

    def __init__(self, reactor: Any, options: argparse.Namespace, family: int, address: str):
        self.reactor = reactor
        self.options = options
        self.family = family
        self.address = address
        self.identifier = os.getpid() & 0xFFFF
        self.sent: Dict[int, float] = {}  # sequence -> when sent (monotonic)
        self.times: List[float] = []
        self.received: set = set()
        self.duplicates = 0
        self.errors = 0
        self.started: Optional[float] = None
        self.done: defer.Deferred[int] = defer.Deferred()
        self.loop: Optional[task.LoopingCall] = None
        self.deadline: Any = None

    def startProtocol(self) -> None:
        host, size = self.options.host, self.options.size
        if self.family == socket.AF_INET:
            print(f"PING {host} ({self.address}) {size}({size + 28}) bytes of data.", flush=True)
        else:
            print(f"PING {host}({self.address}) {size} data bytes", flush=True)
        if self.family == socket.AF_INET6:
            # Let only echo replies through (the kernel filters; the identifier is checked here).
            blocked = [0xFFFFFFFF] * 8
            blocked[ECHO_REPLY[self.family] >> 5] &= ~(1 << (ECHO_REPLY[self.family] & 31))
            try:
                self.transport.getHandle().setsockopt(
                    socket.IPPROTO_ICMPV6, _ICMPV6_FILTER, struct.pack("=8I", *blocked)
                )
            except OSError:
                pass
        self.loop = task.LoopingCall(self.send)
        self.loop.clock = self.reactor
        self.loop.start(self.options.interval, now=True).addErrback(self.fail)

    def fail(self, failure: Any) -> None:
        print(f"ping: {failure.getErrorMessage()}", file=sys.stderr)
        self.finish(2)

    def send(self) -> None:
        sequence = len(self.sent) + 1
        if self.started is None:
            self.started = time.monotonic()
        packet = echo_request(self.family, self.identifier, sequence & 0xFFFF, self.options.size)
        self.sent[sequence & 0xFFFF] = time.monotonic()
        try:
            self.transport.write(packet, (self.address, 0))
        except OSError as problem:
            self.errors += 1
            print(f"ping: sendmsg: {problem.strerror}", file=sys.stderr)
        if self.options.count and len(self.sent) >= self.options.count:
            assert self.loop is not None
            self.loop.stop()
            self.deadline = self.reactor.callLater(self.options.timeout, self.finish)

    def datagramReceived(self, packet: bytes, address: Tuple[str, int]) -> None:
        now = time.monotonic()
        if self.family == socket.AF_INET:
            header = (packet[0] & 0x0F) * 4
            ttl: Optional[int] = packet[8]
            message = packet[header:]
        else:
            ttl, message = self.transport.receivedHopLimit, packet
        if len(message) < 8:
            return
        kind, _, _, identifier, sequence = struct.unpack("!BBHHH", message[:8])
        if kind != ECHO_REPLY[self.family] or identifier != self.identifier:
            return  # another program's, or our own request looped back
        if sequence not in self.sent:
            return
        if self.family == socket.AF_INET and checksum(message):
            print(f"{len(message)} bytes from {self.source(address[0])}: (BAD CHECKSUM!)")
            return
        elapsed = now - self.sent[sequence]
        duplicate = sequence in self.received
        if duplicate:
            self.duplicates += 1
        else:
            self.received.add(sequence)
            self.times.append(elapsed)
        print(
            f"{len(message)} bytes from {self.source(address[0])}: icmp_seq={sequence} "
            f"ttl={ttl} time={millis(elapsed)} ms" + (" (DUP!)" if duplicate else ""),
            flush=True,
        )
        if self.options.count and len(self.received) >= self.options.count:
            self.finish()

    def source(self, host: str) -> str:
        """The replying host, as ping names it: the name given, with the address, if any."""
        if self.options.host != self.address and host == self.address:
            return f"{self.options.host} ({host})"
        return host

    def finish(self, code: Optional[int] = None) -> None:
        """Print the statistics (once) and end with ping's exit code."""
        if self.done.called:
            return
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        transmitted, received = len(self.sent), len(self.received)
        elapsed = time.monotonic() - (self.started or time.monotonic())
        loss = (transmitted - received) * 100.0 / transmitted if transmitted else 0.0
        summary = f"{transmitted} packets transmitted, {received} received"
        if self.duplicates:
            summary += f", +{self.duplicates} duplicates"
        if self.errors:
            summary += f", +{self.errors} errors"
        print(f"\n--- {self.options.host} ping statistics ---")
        print(f"{summary}, {loss:g}% packet loss, time {int(elapsed * 1000)}ms")
        if self.times:
            times = [t * 1000 for t in self.times]
            average = sum(times) / len(times)
            deviation = math.sqrt(max(sum(t * t for t in times) / len(times) - average**2, 0))
            print(
                f"rtt min/avg/max/mdev = {min(times):.3f}/{average:.3f}/{max(times):.3f}/"
                f"{deviation:.3f} ms",
                flush=True,
            )
        self.done.callback(code if code is not None else (0 if received else 1))


def resolve(host: str) -> Tuple[int, str]:
    """The address family and address to ping for HOST (a name is looked up before the reactor
    runs, where blocking harms nothing)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (socket.AF_INET if literal.version == 4 else socket.AF_INET6), str(literal)
    try:
        found = socket.getaddrinfo(host, None, 0, socket.SOCK_RAW)
    except socket.gaierror as problem:
        print(f"ping: {host}: {problem.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    family, _, _, _, sockaddr = found[0]
    return family, str(sockaddr[0])


def arguments(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ping", description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("-c", dest="count", type=int, default=0, help="stop after COUNT replies")
    parser.add_argument("-i", dest="interval", type=float, default=1.0, help="seconds between")
    parser.add_argument("-W", dest="timeout", type=float, default=10.0,
                        help="seconds to wait for the last reply")  # fmt: skip
    parser.add_argument("-s", dest="size", type=int, default=56, help="data bytes per request")
    options = parser.parse_args(argv)
    if options.count < 0 or options.interval < 0.002 or options.timeout <= 0:
        parser.error("-c must be at least 1, -i at least 0.002 and -W more than 0")
    if not 16 <= options.size <= 65000:
        parser.error("-s must be from 16 to 65000")
    return options


async def main(reactor: Any, argv: List[str]) -> None:
    options = arguments(argv)
    family, address = resolve(options.host)
    description = "procket:raw:icmp" if family == socket.AF_INET else "procket:raw6:icmpv6"
    pinger = Pinger(reactor, options, family, address)
    try:
        port = await datagramEndpointFromString(reactor, description).listen(pinger)
    except CannotListenError as problem:
        print(f"ping: {problem.socketError}", file=sys.stderr)
        raise SystemExit(2) from None
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(pinger.finish))
    code = await pinger.done
    await port.stopListening()
    raise SystemExit(code)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
