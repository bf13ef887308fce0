"""
ping, in Twisted, as an ordinary user, with the least privilege that works. It prints what iputils'
``ping`` prints, round-trip times and statistics included:

    python examples/ping.py 127.0.0.1 -c 3
    python examples/ping.py ::1 -c 3 -i 0.2 -W 2
    python examples/ping.py -v 127.0.0.1 -c 1    # and, on stderr, which socket it uses

Which socket, and why:

1. An ICMP echo socket of its own (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``, or
   ``AF_INET6`` and ``IPPROTO_ICMPV6``), with no helper at all, where the kernel allows one: Linux
   does when one of the process's groups lies in ``net.ipv4.ping_group_range`` (per network
   namespace; it governs ICMPv6 too). Such a socket can only send echo requests and receive
   their replies, so this path asks for nothing. It tries to create the socket rather than read
   the sysctl, so that the kernel decides. The kernel sets the echo identifier (the socket's
   port: it is bound first, to know it), computes the checksum, delivers to this socket only the
   replies with its identifier, and gives IPv4 replies without their IP header.
2. Otherwise (socket() fails with EACCES or EPERM, or the kernel has no such sockets): a raw
   socket that the procket helper opens (``procket:raw:icmp``, ``procket:raw6:icmpv6``). That is a
   bigger grant (its holder may set IP_HDRINCL and send any IPv4 packet), which the helper's
   policy must give with a line such as ``allow kind=raw proto=1,58`` (procket-twisted policy prints the format); the
   default policy refuses it, and ping says so. Replies are matched by the echo identifier (this
   process's id), as ping does: a raw socket sees every ICMP message that arrives.

Both are served by the same transport (``adoptRawSocket``'s `RawPort`, which takes datagram
sockets too), which reports each packet's TTL or hop limit (IP_RECVTTL, IPV6_RECVHOPLIMIT) as
``receivedHopLimit``; ping prints it as ``ttl=``. (Twisted's ``adoptDatagramPort`` takes an ICMP
echo socket as well, but reads with recvfrom, so the TTL would be lost.) The path is printed only
with ``-v``, on stderr, so that standard output stays exactly ping's; unlike iputils' ``-v``,
which also prints more on standard output, this one changes nothing else.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import math
import os
import signal
import socket
import struct
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol

from procket_twisted.endpoints import adoptRawSocket, datagramEndpointFromString

ECHO_REQUEST: Dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: Dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
ICMP: Dict[int, int] = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
WILDCARD: Dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
#: The helper's raw sockets, the fallback.
HELPER_ENDPOINTS: Dict[int, str] = {
    socket.AF_INET: "procket:raw:icmp",
    socket.AF_INET6: "procket:raw6:icmpv6",
}
#: What socket() fails with where this process may not have an ICMP echo socket: its groups lie
#: outside net.ipv4.ping_group_range (EACCES; EPERM elsewhere), or the kernel has none.
REFUSED = {errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT,
           errno.EAFNOSUPPORT}  # fmt: skip
_ICMPV6_FILTER = 1  # ICMP6_FILTER, at level IPPROTO_ICMPV6

SocketFactory = Callable[[int, int, int], socket.socket]


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of DATA."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
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


def icmp_message(packet: bytes, header_included: bool) -> bytes:
    """
    The ICMP message in PACKET, which starts with its IPv4 header when HEADER_INCLUDED (what a
    raw IPv4 socket receives); an ICMP echo socket and an ICMPv6 socket give the message alone.
    """
    return packet[(packet[0] & 0x0F) * 4 :] if header_included and packet else packet


def echo_socket(family: int, create: SocketFactory = socket.socket) -> socket.socket:
    """
    An ICMP echo socket of FAMILY, made by CREATE, bound so that its port (the echo identifier,
    which the kernel writes into every request) is known.

    @raise OSError: as socket() fails: with an errno in REFUSED where the kernel does not give
        this process such a socket.
    """
    sock = create(family, socket.SOCK_DGRAM, ICMP[family])
    try:
        sock.bind((WILDCARD[family], 0))
    except BaseException:
        sock.close()
        raise
    return sock


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

    transport: Any  # a RawPort: write, getHandle, receivedHopLimit

    def __init__(self, reactor: Any, options: argparse.Namespace, family: int, address: str):
        self.reactor = reactor
        self.options = options
        self.family = family
        self.address = address
        self.identifier = os.getpid() & 0xFFFF  # on an echo socket, its port (startProtocol)
        self.on_echo_socket = False  # whether the transport's socket is an ICMP echo socket
        self.sent: Dict[int, float] = {}  # sequence -> when sent (monotonic)
        self.times: List[float] = []
        self.received: Set[int] = set()
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
        handle = self.transport.getHandle()
        if handle.type == socket.SOCK_DGRAM:
            self.on_echo_socket = True
            self.identifier = handle.getsockname()[1]
        elif self.family == socket.AF_INET6:
            # A raw socket: let only echo replies through (the kernel filters; the identifier is
            # checked here). An echo socket gets nothing but the replies to its own requests.
            blocked = [0xFFFFFFFF] * 8
            blocked[ECHO_REPLY[self.family] >> 5] &= ~(1 << (ECHO_REPLY[self.family] & 31))
            try:
                handle.setsockopt(
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
        ttl: Optional[int] = self.transport.receivedHopLimit
        message = icmp_message(packet, self.family == socket.AF_INET and not self.on_echo_socket)
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
    parser.add_argument("-v", dest="verbose", action="store_true",
                        help="say on stderr which socket is used, and why")  # fmt: skip
    options = parser.parse_args(argv)
    if options.count < 0 or options.interval < 0.002 or options.timeout <= 0:
        parser.error("-c must be at least 1, -i at least 0.002 and -W more than 0")
    if not 16 <= options.size <= 65000:
        parser.error("-s must be from 16 to 65000")
    return options


async def listen(reactor: Any, pinger: Pinger, create: SocketFactory = socket.socket) -> Any:
    """
    Serve PINGER from an ICMP echo socket of its own where the kernel allows one, else from a raw
    socket that the procket helper opens; with -v, say which on stderr.

    @return: the listening port.
    @raise CannotListenError: when the helper cannot give the raw socket (its policy refuses...).
    @raise OSError: when the echo socket fails otherwise (too many open files...).
    """
    verbose = pinger.options.verbose
    try:
        sock = echo_socket(pinger.family, create)
    except OSError as problem:
        if problem.errno not in REFUSED:
            raise
        description = HELPER_ENDPOINTS[pinger.family]
        if verbose:
            print(f"ping: no ICMP echo socket ({problem.strerror}): a raw socket from the procket "
                  f"helper ({description})", file=sys.stderr)  # fmt: skip
        return await datagramEndpointFromString(reactor, description).listen(pinger)
    if verbose:
        print(f"ping: an ICMP echo socket, identifier {sock.getsockname()[1]}: no helper",
              file=sys.stderr)  # fmt: skip
    return adoptRawSocket(reactor, sock, pinger)


async def main(reactor: Any, argv: List[str]) -> None:
    options = arguments(argv)
    family, address = resolve(options.host)
    pinger = Pinger(reactor, options, family, address)
    try:
        port = await listen(reactor, pinger)
    except CannotListenError as problem:
        print(f"ping: {problem.socketError}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as problem:
        print(f"ping: socket: {problem.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(pinger.finish))
    code = await pinger.done
    await port.stopListening()
    raise SystemExit(code)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
