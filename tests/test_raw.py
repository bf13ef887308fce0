"""
Raw IP sockets in Twisted.

Without privilege: `RawPort` on a fake reactor (UDP sockets stand in for raw ones where only the
receive path matters, a stub socket records what is sent), `RawEndpoint` with the helper replaced,
the ``procket:raw`` endpoint strings, and ``examples/ping.py``'s statistics on a clock, its parsing
and its choice of socket. With CAP_NET_RAW in this process (root): `RawPort` on real ICMP and ICMPv6
sockets. As nobody against the setuid helper: ICMP echo over 127.0.0.1 and ::1 through the endpoint
strings on the real reactor, and what the policy refuses. As nobody in private network namespaces:
``examples/ping.py`` against the real ``ping``, on an ICMP echo socket with no helper and on the
helper's raw socket.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, List, Optional, Tuple
from unittest import SkipTest

from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import (
    CannotListenError,
    ConnectionDone,
    InvalidAddressError,
    MessageLengthError,
)
from twisted.internet.interfaces import IAddress, IListeningPort, IReadDescriptor, ISystemHandle
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import procket_twisted.endpoints
from procket_twisted import DEFAULT_TIMEOUT, PolicyDeniedError, RawRequest
from procket_twisted._client.direct import has_capability
from procket_twisted._client.options import CAP_NET_RAW
from procket_twisted._twisted.endpoints import _HelperEndpoint
from procket_twisted._twisted.raw import _host
from procket_twisted.endpoints import (
    IDatagramServerEndpoint,
    RawAddress,
    RawEndpoint,
    RawPort,
    adoptRawSocket,
    datagramEndpointFromString,
    datagramService,
)

from .support import (
    REQUIRE_VARIABLE,
    TEST_GID,
    TEST_UID,
    examples_directory,
    install_prefix,
    ipv6_loopback,
    run_unprivileged,
    skip_unless_privileged,
)

LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


class FakeReactor(task.Clock):
    """A clock that also records the readers added and removed (``IReactorFDSet``'s half)."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set = set()

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)


class Recorder(DatagramProtocol):
    """Records each packet, its address and the hop limit the transport reported meanwhile."""

    def __init__(self) -> None:
        self.received: List[Tuple[bytes, Tuple[str, int], Optional[int]]] = []
        self.starts = 0
        self.stops = 0

    def startProtocol(self) -> None:
        self.starts += 1

    def stopProtocol(self) -> None:
        self.stops += 1

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr, self.transport.receivedHopLimit))


class StubRawSocket:
    """Stands in for a raw socket on the send path: records ``sendto`` or raises ERROR."""

    type = socket.SOCK_RAW
    proto = 1

    def __init__(self, family: int = socket.AF_INET, error: Optional[OSError] = None) -> None:
        self.family = socket.AddressFamily(family)
        self.error = error
        self.sent: List[Tuple[bytes, Any]] = []
        self.closed = False

    def sendto(self, data: bytes, address: Any) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, address))
        return len(data)

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *arguments: Any) -> None:
        pass

    def fileno(self) -> int:
        return -1 if self.closed else 99

    def close(self) -> None:
        self.closed = True


def udpPair(testcase: SynchronousTestCase, family: int) -> Tuple[socket.socket, socket.socket]:
    """A UDP socket bound on the loopback address of FAMILY, and a sender with hop limit 33."""
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((LOOPBACK[family], 0))
    sender = socket.socket(family, socket.SOCK_DGRAM)
    testcase.addCleanup(sender.close)
    testcase.addCleanup(receiver.close)
    if family == socket.AF_INET:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
    else:
        sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 33)
    return receiver, sender


def waitReadable(sock: Any) -> None:
    """Wait (5 s at most) until SOCK has something to read."""
    select.select([sock], [], [], 5)


def checksum(data: bytes) -> int:
    """The Internet checksum of DATA."""
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echoRequest(family: int, identifier: int, sequence: int = 1) -> bytes:
    """An ICMP (or ICMPv6, checksum left to the kernel) echo request."""
    kind = 8 if family == socket.AF_INET else 128
    body = struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + b"procket-raw-test"
    if family == socket.AF_INET6:
        return body
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


class RawPortTests(SynchronousTestCase):
    """RawPort's receive path, lifecycle and send path, on a fake reactor."""

    def port(
        self, family: int = socket.AF_INET, maxPacketSize: int = 65535
    ) -> Tuple[RawPort, Recorder, FakeReactor, socket.socket]:
        """A listening RawPort over a UDP socket, and its protocol, reactor and sender."""
        if family == socket.AF_INET6 and not ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")
        receiver, sender = udpPair(self, family)
        reactor, protocol = FakeReactor(), Recorder()
        port = RawPort(receiver, protocol, maxPacketSize, reactor)
        port.startListening()
        sender.connect(receiver.getsockname()[:2])
        return port, protocol, reactor, sender

    def test_interfaces(self) -> None:
        """A RawPort is an IListeningPort, an IReadDescriptor and an ISystemHandle."""
        port, _, _, _ = self.port()
        verifyObject(IListeningPort, port)
        verifyObject(IReadDescriptor, port)
        verifyObject(ISystemHandle, port)
        self.assertIs(port.getHandle(), port.socket)
        self.assertEqual(port.fileno(), port.socket.fileno())

    def test_start_listening(self) -> None:
        """startListening connects the protocol, makes the socket non-blocking, adds a reader."""
        port, protocol, reactor, _ = self.port()
        self.assertIs(protocol.transport, port)
        self.assertEqual(protocol.starts, 1)
        self.assertEqual(reactor.readers, {port})
        self.assertFalse(port.socket.getblocking())
        self.assertRaises(RuntimeError, port.startListening)

    def test_delivers_host_and_hop_limit_ipv4(self) -> None:
        """Each IPv4 datagram arrives as (packet, (host, 0)), with its TTL during delivery."""
        port, protocol, _, sender = self.port()
        sender.send(b"one")
        sender.send(b"two")
        waitReadable(port.socket)
        port.doRead()
        self.assertEqual(
            protocol.received, [(b"one", ("127.0.0.1", 0), 33), (b"two", ("127.0.0.1", 0), 33)]
        )
        self.assertIsNone(port.receivedHopLimit)

    def test_delivers_host_and_hop_limit_ipv6(self) -> None:
        """An IPv6 datagram arrives as (packet, ("::1", 0)), with its hop limit."""
        port, protocol, _, sender = self.port(socket.AF_INET6)
        sender.send(b"six")
        waitReadable(port.socket)
        port.doRead()
        self.assertEqual(protocol.received, [(b"six", ("::1", 0), 33)])

    def test_nothing_waiting(self) -> None:
        """doRead with nothing to read delivers nothing and raises nothing."""
        port, protocol, _, _ = self.port()
        port.doRead()
        self.assertEqual(protocol.received, [])

    def test_truncates_to_max_packet_size(self) -> None:
        """A packet longer than maxPacketSize is delivered truncated, as recvfrom would."""
        port, protocol, _, sender = self.port(maxPacketSize=4)
        sender.send(b"123456")
        waitReadable(port.socket)
        port.doRead()
        self.assertEqual([packet for packet, _, _ in protocol.received], [b"1234"])

    def test_protocol_error_is_logged(self) -> None:
        """An exception in datagramReceived is logged; the next packet is still delivered."""
        port, protocol, _, sender = self.port()
        seen: List[bytes] = []

        def fragile(packet: bytes, address: Any) -> None:
            seen.append(packet)
            if packet == b"bad":
                raise ZeroDivisionError("bad packet")

        protocol.datagramReceived = fragile  # type: ignore[method-assign]
        sender.send(b"bad")
        sender.send(b"good")
        waitReadable(port.socket)
        port.doRead()
        self.assertEqual(seen, [b"bad", b"good"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIsNone(port.receivedHopLimit)

    def test_stop_from_datagram_received(self) -> None:
        """A protocol that stops listening in datagramReceived gets no further packet."""
        port, protocol, reactor, sender = self.port()
        stopped: List[defer.Deferred[None]] = []

        def once(packet: bytes, address: Any) -> None:
            protocol.received.append((packet, address, None))
            stopped.append(port.stopListening())

        protocol.datagramReceived = once  # type: ignore[method-assign]
        sender.send(b"first")
        sender.send(b"second")
        waitReadable(port.socket)
        port.doRead()
        self.assertEqual([packet for packet, _, _ in protocol.received], [b"first"])
        self.assertEqual(reactor.readers, set())
        reactor.advance(0)
        self.successResultOf(stopped[0])
        self.assertEqual(port.fileno(), -1)

    def test_stop_listening(self) -> None:
        """
        stopListening removes the reader at once; in the next reactor turn it stops the
        protocol, closes the socket and fires every Deferred it returned. Later calls succeed.
        """
        port, protocol, reactor, _ = self.port()
        first, second = port.stopListening(), port.stopListening()
        self.assertEqual(reactor.readers, set())
        self.assertNoResult(first)
        self.assertEqual(protocol.stops, 0)
        reactor.advance(0)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual((protocol.stops, protocol.transport, port.fileno()), (1, None, -1))
        self.successResultOf(port.stopListening())
        self.assertEqual(protocol.stops, 1)

    def test_connection_lost_at_shutdown(self) -> None:
        """connectionLost (the reactor's, at shutdown) closes once, even while stopping."""
        port, protocol, reactor, _ = self.port()
        stopping = port.stopListening()
        port.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopping)
        reactor.advance(0)
        port.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((protocol.stops, port.fileno()), (1, -1))

    def test_stop_before_start(self) -> None:
        """A port never started stops at once, and cannot start afterwards."""
        receiver, _ = udpPair(self, socket.AF_INET)
        port = RawPort(receiver, Recorder(), reactor=FakeReactor())
        self.successResultOf(port.stopListening())
        self.assertRaises(RuntimeError, port.startListening)

    def test_get_host(self) -> None:
        """getHost is a RawAddress: family, bound address, protocol number (not a UDP port)."""
        port, _, _, _ = self.port()
        host = port.getHost()
        verifyObject(IAddress, host)
        self.assertEqual(host, RawAddress("inet", "127.0.0.1", port.socket.proto))
        self.assertEqual(host.type, "RAW")

    def test_broadcast(self) -> None:
        """setBroadcastAllowed sets SO_BROADCAST, getBroadcastAllowed reads it back."""
        port, _, _, _ = self.port()
        self.assertFalse(port.getBroadcastAllowed())
        port.setBroadcastAllowed(True)
        self.assertTrue(port.getBroadcastAllowed())

    def test_refuses_other_sockets(self) -> None:
        """A Unix socket, a TCP socket or a bad maxPacketSize is a ValueError."""
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (left, right, tcp, udp):
            self.addCleanup(sock.close)
        for sock in (left, tcp):
            self.assertRaises(ValueError, RawPort, sock, Recorder(), reactor=FakeReactor())
        for size in (0, 65536, True, "8192", 1.5):
            error = self.assertRaises(ValueError, RawPort, udp, Recorder(), size, FakeReactor())
            self.assertIn("maxPacketSize", str(error))

    def test_adopt_raw_socket(self) -> None:
        """adoptRawSocket starts listening; when it cannot, it closes the socket."""
        receiver, _ = udpPair(self, socket.AF_INET)
        reactor = FakeReactor()
        port = adoptRawSocket(reactor, receiver, Recorder())
        self.assertEqual(reactor.readers, {port})
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.assertRaises(ValueError, adoptRawSocket, reactor, other, Recorder(), 0)
        self.assertEqual(other.fileno(), -1)

    def stubPort(self, sock: StubRawSocket) -> RawPort:
        port = RawPort(sock, Recorder(), reactor=FakeReactor())  # type: ignore[arg-type]
        port.startListening()
        return port

    def test_write(self) -> None:
        """write sends to (host, 0), given as datagramReceived gives it or as a host alone."""
        sock = StubRawSocket()
        port = self.stubPort(sock)
        port.write(b"ping", ("127.0.0.1", 0))
        port.write(b"pong", "10.1.2.3")
        self.assertEqual(sock.sent, [(b"ping", ("127.0.0.1", 0)), (b"pong", ("10.1.2.3", 0))])
        six = StubRawSocket(socket.AF_INET6)
        port = self.stubPort(six)
        port.write(b"six", ("fe80::1%2", 0))
        self.assertEqual(six.sent, [(b"six", ("fe80::1%2", 0))])

    def test_write_refuses_names_and_other_families(self) -> None:
        """A host name (never looked up) or an address of the other family is refused."""
        sock = StubRawSocket()
        port = self.stubPort(sock)
        for host in ("localhost", "::1", "", "127.0.0.1.1"):
            self.assertRaises(InvalidAddressError, port.write, b"x", (host, 0))
        self.assertRaises(InvalidAddressError, self.stubPort(StubRawSocket(10)).write, b"x",
                          "127.0.0.1")  # fmt: skip
        self.assertEqual(sock.sent, [])

    def test_write_errors(self) -> None:
        """EMSGSIZE is MessageLengthError, as for UDP; other errors are raised as they are."""
        port = self.stubPort(StubRawSocket(error=OSError(errno.EMSGSIZE, "too long")))
        self.assertRaises(MessageLengthError, port.write, b"x" * 70000, ("127.0.0.1", 0))
        port = self.stubPort(StubRawSocket(error=OSError(errno.ENOBUFS, "no buffer space")))
        error = self.assertRaises(OSError, port.write, b"x", ("127.0.0.1", 0))
        self.assertEqual(error.errno, errno.ENOBUFS)

    def test_scoped_source(self) -> None:
        """A link-local source keeps its scope, so that a reply can be written back to it."""
        self.assertEqual(_host(("fe80::1", 0, 0, 2)), "fe80::1%2")
        self.assertEqual(_host(("fe80::1%lo", 0, 0, 1)), "fe80::1%lo")
        self.assertEqual(_host(("::1", 0, 0, 0)), "::1")
        self.assertEqual(_host(("127.0.0.1", 0)), "127.0.0.1")


class RealRawSocketTests(SynchronousTestCase):
    """RawPort on real raw sockets, opened in this process (it needs CAP_NET_RAW, as root)."""

    def setUp(self) -> None:
        if not has_capability(CAP_NET_RAW):
            raise SkipTest("needs CAP_NET_RAW in this process")

    def echo(self, family: int) -> Tuple[RawPort, List[Tuple[bytes, Any, Optional[int]]]]:
        """Send ourselves an echo request with hop limit 42; return what the port delivered
        until the reply arrived."""
        if family == socket.AF_INET6 and not ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")
        sock = socket.socket(family, socket.SOCK_RAW, 1 if family == socket.AF_INET else 58)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 42)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 42)
        protocol = Recorder()
        port = adoptRawSocket(FakeReactor(), sock, protocol)
        self.addCleanup(port.connectionLost)
        identifier = os.getpid() & 0xFFFF
        port.write(echoRequest(family, identifier), (LOOPBACK[family], 0))
        reply = 0 if family == socket.AF_INET else 129
        for _ in range(50):
            waitReadable(sock)
            port.doRead()
            if any(self.icmp(family, packet)[:1] == bytes([reply])
                   and self.icmp(family, packet)[4:6] == struct.pack("!H", identifier)
                   for packet, _, _ in protocol.received):  # fmt: skip
                break
        return port, protocol.received

    def icmp(self, family: int, packet: bytes) -> bytes:
        return packet[(packet[0] & 15) * 4 :] if family == socket.AF_INET else packet

    def mine(self, family: int, received: List[Any], kind: int) -> Tuple[bytes, Any, Any]:
        identifier = struct.pack("!H", os.getpid() & 0xFFFF)
        for packet, address, hop in received:
            message = self.icmp(family, packet)
            if message[0] == kind and message[4:6] == identifier:
                return packet, address, hop
        self.fail(f"no ICMP type {kind} with our identifier among {received}")

    def test_icmp_echo_ipv4(self) -> None:
        """
        IPv4: packets come with their IP header, as the kernel gives them; our looped-back
        request carries TTL 42 both in its header and in receivedHopLimit; getHost names ICMP.
        """
        port, received = self.echo(socket.AF_INET)
        request, address, hop = self.mine(socket.AF_INET, received, 8)
        self.assertEqual((request[0] >> 4, request[9], request[8], hop), (4, 1, 42, 42))
        self.assertEqual(address, ("127.0.0.1", 0))
        reply, _, hop = self.mine(socket.AF_INET, received, 0)
        self.assertEqual(reply[8], hop)
        self.assertEqual(port.getHost(), RawAddress("inet", "0.0.0.0", 1))

    def test_icmpv6_echo_ipv6(self) -> None:
        """
        IPv6: packets come without the IPv6 header (the ICMPv6 type is the first byte); the
        kernel computed the checksum (the reply came); the hop limit comes from the kernel.
        """
        port, received = self.echo(socket.AF_INET6)
        request, address, hop = self.mine(socket.AF_INET6, received, 128)
        self.assertEqual((request[0], hop, address), (128, 42, ("::1", 0)))
        self.assertNotEqual(request[2:4], b"\0\0")  # the kernel filled the checksum in
        reply, _, hop = self.mine(socket.AF_INET6, received, 129)
        self.assertIsInstance(hop, int)
        self.assertEqual(port.getHost(), RawAddress("inet6", "::", 58))


class RawEndpointTests(SynchronousTestCase):
    """RawEndpoint with the helper replaced at the `_HelperEndpoint._acquire` seam."""

    def setUp(self) -> None:
        self.calls: List[Any] = []
        self.result: Any = None
        self.reactor = FakeReactor()

        def acquire(reactor: Any, requests: Any, **options: Any) -> defer.Deferred[Any]:
            self.calls.append((reactor, list(requests), options))
            result = self.result() if callable(self.result) else self.result
            return result  # type: ignore[no-any-return]

        # Not self.patch: it would restore the bare function, not the staticmethod.
        original = _HelperEndpoint.__dict__["_acquire"]
        _HelperEndpoint._acquire = staticmethod(acquire)
        self.addCleanup(setattr, _HelperEndpoint, "_acquire", original)

    def udp(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.addCleanup(sock.close)
        return sock

    def test_interface(self) -> None:
        """RawEndpoint provides IDatagramServerEndpoint."""
        verifyObject(IDatagramServerEndpoint, RawEndpoint(self.reactor, "icmp"))

    def test_listen(self) -> None:
        """listen asks for the RawRequest, with the helper options, and serves a RawPort."""
        self.result = lambda: defer.succeed([self.udp()])
        endpoint = RawEndpoint(self.reactor, "icmp", "127.0.0.1", 1500, progname="/x/helper",
                               timeout=2.5, direct=False, mark=7)  # fmt: skip
        protocol = Recorder()
        port = self.successResultOf(endpoint.listen(protocol))
        self.assertIsInstance(port, RawPort)
        self.assertIs(protocol.transport, port)
        self.assertEqual(port.maxPacketSize, 1500)
        self.assertEqual(self.reactor.readers, {port})
        [(reactor, requests, options)] = self.calls
        self.assertIs(reactor, self.reactor)
        self.assertEqual(requests, [RawRequest("icmp", "127.0.0.1", mark=7)])
        self.assertEqual(options, {"progname": "/x/helper", "timeout": 2.5, "direct": False})

    def test_listen_again(self) -> None:
        """Each listen asks the helper again, for a new socket."""
        self.result = lambda: defer.succeed([self.udp()])
        endpoint = RawEndpoint(self.reactor, 17)
        first = self.successResultOf(endpoint.listen(Recorder()))
        second = self.successResultOf(endpoint.listen(Recorder()))
        self.assertEqual(len(self.calls), 2)
        self.assertIsNot(first, second)

    def test_refused_is_cannot_listen(self) -> None:
        """A refusal fails listen with CannotListenError(address, protocol number, error)."""
        refusal = PolicyDeniedError("the helper refused raw udp (17)", errno=errno.EACCES,
                                    step="policy")  # fmt: skip
        self.result = defer.fail(refusal)
        failure = self.failureResultOf(
            RawEndpoint(self.reactor, "udp", "127.0.0.1").listen(Recorder()), CannotListenError
        )
        self.assertEqual(
            (failure.value.interface, failure.value.port, failure.value.socketError),
            ("127.0.0.1", 17, refusal),
        )
        self.result = defer.fail(refusal)
        failure = self.failureResultOf(RawEndpoint(self.reactor, 1).listen(Recorder()))
        self.assertEqual((failure.value.interface, failure.value.port), ("", 1))

    def test_other_errors_pass(self) -> None:
        """An error that is not the helper's passes through unchanged."""
        self.result = defer.fail(RuntimeError("bug"))
        self.failureResultOf(RawEndpoint(self.reactor, 1).listen(Recorder()), RuntimeError)

    def test_unusable_socket_is_closed(self) -> None:
        """A socket the port cannot serve fails listen and is closed."""
        stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.result = defer.succeed([stream])
        self.failureResultOf(RawEndpoint(self.reactor, 1).listen(Recorder()), ValueError)
        self.assertEqual(stream.fileno(), -1)

    def test_bad_arguments(self) -> None:
        """Bad arguments are ValueErrors at once, header_included on IPv6 among them."""
        for arguments, options in [
            (("ping",), {}),
            ((0,), {}),
            ((256,), {}),
            (("icmpv6",), {"headerIncluded": True}),
            ((17, "::1"), {"headerIncluded": True}),
            ((1,), {"family": "inet6", "headerIncluded": True}),
            ((1, "localhost"), {}),
            ((1, None, 0), {}),
            ((1, None, 65536), {}),
            ((1,), {"family": "unix"}),
        ]:
            self.assertRaises(ValueError, RawEndpoint, self.reactor, *arguments, **options)

    def test_repr(self) -> None:
        """The repr says what the endpoint asks for."""
        self.assertEqual(repr(RawEndpoint(self.reactor, "icmpv6", "::1")),
                         "<RawEndpoint raw icmpv6 (58) over inet6 on ::1>")  # fmt: skip


class RawStringTests(SynchronousTestCase):
    """``procket:raw`` and ``procket:raw6`` in datagramEndpointFromString."""

    def parse(self, description: str) -> RawEndpoint:
        endpoint = datagramEndpointFromString(MemoryReactor(), description)
        self.assertIsInstance(endpoint, RawEndpoint)
        return endpoint  # type: ignore[return-value]

    def assertParses(self, description: str, request: RawRequest, size: int = 65535) -> None:
        endpoint = self.parse(description)
        self.assertEqual(endpoint._raw, request)
        self.assertEqual(endpoint._maxPacketSize, size)

    def test_forms(self) -> None:
        """The protocol by name or number; an interface; IP_HDRINCL; raw6 for IPv6."""
        self.assertParses("procket:raw:icmp", RawRequest(1, None, "inet"))
        self.assertParses(
            "procket:raw:17:interface=127.0.0.1:headerIncluded=yes",
            RawRequest(17, "127.0.0.1", "inet", True),
        )
        self.assertParses("procket:raw6:icmpv6:interface=\\:\\:1", RawRequest(58, "::1", "inet6"))
        self.assertParses("procket:raw6:icmpv6", RawRequest(58, None, "inet6"))
        self.assertParses("procket:raw:icmpv6", RawRequest(58, None, "inet6"))
        self.assertParses("procket:raw6:udp", RawRequest(17, None, "inet6"))
        self.assertParses("procket:raw:255:127.0.0.1:1500", RawRequest(255, "127.0.0.1"), 1500)
        self.assertParses("procket:raw:udp:interface=\\:\\:1", RawRequest(17, "::1", "inet6"))
        self.assertParses("procket:raw:gre:headerIncluded=no", RawRequest(47))

    def test_options(self) -> None:
        """The socket options that apply to raw sockets, progname and timeout."""
        endpoint = self.parse(
            "procket:raw:icmp:bindToDevice=lo:mark=7:priority=3:forceReceiveBuffer=65536"
            ":forceSendBuffer=4096:progname=/opt/helper:timeout=2.5:maxPacketSize=1500"
        )
        self.assertEqual(
            endpoint._raw,
            RawRequest(1, bind_to_device="lo", mark=7, priority=3, force_receive_buffer=65536,
                       force_send_buffer=4096),
        )  # fmt: skip
        self.assertEqual(
            (endpoint._progname, endpoint._timeout, endpoint._maxPacketSize),
            ("/opt/helper", 2.5, 1500),
        )
        self.assertEqual(self.parse("procket:raw:icmp")._timeout, DEFAULT_TIMEOUT)

    def test_malformed(self) -> None:
        """Each malformed string is a ValueError naming its bad part."""
        cases = {
            "procket:raw": "no protocol given",
            "procket:raw:": "protocol '' is not a number",
            "procket:raw:ping": "'ping' is not a number from 1 to 255 or one of icmp",
            "procket:raw:0": "'0' is not a number from 1 to 255",
            "procket:raw:256": "'256' is not a number from 1 to 255",
            "procket:raw:01": "'01' is not a number from 1 to 255",
            "procket:raw:-1": "'-1' is not a number from 1 to 255",
            "procket:raw:ICMP": "'ICMP'",
            "procket:raw6:icmp": "ICMP is IPv4's",
            "procket:raw:icmp:interface=\\:\\:1": "ICMP is IPv4's",
            "procket:raw:icmpv6:interface=127.0.0.1": "ICMPv6 is IPv6's",
            "procket:raw:icmp:interface=::1": "colons escaped",
            "procket:raw6:icmpv6:interface=127.0.0.1": "'127.0.0.1' is not an IPv6 address",
            "procket:raw:icmp:interface=localhost": "localhost",
            "procket:raw:icmp:headerIncluded=maybe": "headerIncluded 'maybe' is not yes or no",
            "procket:raw6:udp:headerIncluded=yes": "header_included applies to IPv4 only",
            "procket:raw:icmp:maxPacketSize=0": "maxPacketSize '0'",
            "procket:raw:icmp:maxPacketSize=65536": "maxPacketSize '65536'",
            "procket:raw:icmp:reusePort=yes": "unknown keyword 'reusePort'",
            "procket:raw:icmp:port=80": "unknown keyword 'port'",
            "procket:raw:icmp:mark=-1": "mark '-1'",
            "procket:raw:icmp:timeout=0": "timeout '0'",
            "procket:raw:icmp:127.0.0.1:1500:extra": "unexpected value 'extra'",
            "procket:raw:icmp:protocol=17": "protocol is given twice",
        }
        for description, fragment in cases.items():
            error = self.assertRaises(ValueError, datagramEndpointFromString, MemoryReactor(),
                                      description)  # fmt: skip
            self.assertIn(fragment, str(error), description)
            self.assertIn("procket:raw", str(error), description)

    def test_not_a_stream_endpoint(self) -> None:
        """serverFromString refuses procket:raw, pointing at datagramEndpointFromString."""
        for description in ("procket:raw:icmp", "procket:raw6:icmpv6"):
            error = self.assertRaises(ValueError, serverFromString, MemoryReactor(), description)
            self.assertIn("datagramEndpointFromString", str(error))

    def test_other_datagram_strings_unchanged(self) -> None:
        """procket:udp still parses; an unknown protocol names the raw forms too."""
        endpoint = datagramEndpointFromString(MemoryReactor(), "procket:udp:53")
        self.assertNotIsInstance(endpoint, RawEndpoint)
        error = self.assertRaises(ValueError, datagramEndpointFromString, MemoryReactor(),
                                  "procket:icmp:1")  # fmt: skip
        self.assertIn("procket:raw:PROTOCOL", str(error))

    def test_datagram_service(self) -> None:
        """datagramService takes procket:raw too: its endpoint is a RawEndpoint."""
        protocol = DatagramProtocol()
        service = datagramService("procket:raw:icmp", protocol, MemoryReactor())
        self.assertIsInstance(service.endpoint, RawEndpoint)
        self.assertIs(service.protocol, protocol)

    def test_public_names(self) -> None:
        """The Twisted raw names are public in procket_twisted.endpoints."""
        for name in ("RawEndpoint", "RawPort", "RawAddress", "adoptRawSocket"):
            self.assertIn(name, procket_twisted.endpoints.__all__)


def loadPingExample() -> Any:
    """examples/ping.py as a module."""
    path = os.path.join(examples_directory(), "ping.py")
    spec = importlib.util.spec_from_file_location("procket_ping_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StubEchoSocket(StubRawSocket):
    """Stands in for an ICMP echo socket (SOCK_DGRAM): records ``bind``; its port is 4242."""

    type = socket.SOCK_DGRAM

    def __init__(self, family: int = socket.AF_INET, error: Optional[OSError] = None) -> None:
        super().__init__(family, error)
        self.bound: List[Any] = []

    def bind(self, address: Any) -> None:
        self.bound.append(address)

    def getsockname(self) -> Tuple[str, int]:
        return ("0.0.0.0" if self.family == socket.AF_INET else "::", 4242)


class UnbindableEchoSocket(StubEchoSocket):
    """An echo socket whose ``bind`` fails."""

    def bind(self, address: Any) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")


def echoReply(request: bytes) -> bytes:
    """The ICMP echo reply to REQUEST, with its checksum."""
    body = b"\0\0\0\0" + request[4:]
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def ipv4Header(payload: bytes, ttl: int = 64, words: int = 5) -> bytes:
    """An IPv4 header of WORDS 32-bit words, from 127.0.0.1 to itself, for PAYLOAD."""
    loopback = socket.inet_aton("127.0.0.1")
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | words, 0, 4 * words + len(payload), 0, 0, ttl,
                         1, 0, loopback, loopback)  # fmt: skip
    return header + b"\x01" * (4 * words - 20)  # options: no-operations


class PingExampleUnitTests(SynchronousTestCase):
    """
    examples/ping.py without privilege: its Pinger on a clock with a stub transport, the parsing
    of replies with and without an IP header, and the choice between an ICMP echo socket of its
    own and the helper's raw socket, with a fake socket factory and the helper replaced.
    """

    def setUp(self) -> None:
        self.ping = loadPingExample()

    def pinger(
        self, *argv: str, sock: Optional[StubRawSocket] = None
    ) -> Tuple[Any, task.Clock, StubRawSocket, io.StringIO]:
        clock, output = task.Clock(), io.StringIO()
        options = self.ping.arguments(list(argv))
        family, address = self.ping.resolve(options.host)
        pinger = self.ping.Pinger(clock, options, family, address)
        sock = sock or StubRawSocket(family)
        port = RawPort(sock, pinger, reactor=FakeReactor())  # type: ignore[arg-type]
        with redirect_stdout(output):
            port.startListening()
        return pinger, clock, sock, output

    def test_no_reply(self) -> None:
        """
        Unanswered requests: after the last one and -W seconds, 100% packet loss, no rtt line,
        exit status 1, as ping.
        """
        pinger, clock, sock, output = self.pinger("127.0.0.1", "-c", "2", "-i", "0.5", "-W", "2")
        with redirect_stdout(output):
            clock.advance(0.5)
            self.assertNoResult(pinger.done)
            clock.advance(2)
        self.assertEqual(self.successResultOf(pinger.done), 1)
        lines = output.getvalue().splitlines()
        self.assertEqual(lines[0], "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.")
        self.assertEqual(lines[1:3], ["", "--- 127.0.0.1 ping statistics ---"])
        self.assertRegex(
            lines[3], r"^2 packets transmitted, 0 received, 100% packet loss, time \d+ms$"
        )
        self.assertEqual(len(lines), 4)
        self.assertEqual(len(sock.sent), 2)
        for sequence, (packet, address) in enumerate(sock.sent, 1):
            self.assertEqual(address, ("127.0.0.1", 0))
            self.assertEqual(len(packet), 64)
            self.assertEqual(checksum(packet), 0)
            self.assertEqual(struct.unpack("!BBHHH", packet[:8])[::4], (8, sequence))

    def test_replies_matched_by_identifier(self) -> None:
        """Only echo replies with our identifier count; a duplicate is marked (DUP!)."""
        pinger, clock, sock, output = self.pinger("::1", "-c", "2", "-i", "1")
        request = sock.sent[0][0]
        ours = bytes([129]) + request[1:]
        theirs = (
            bytes([129, 0, 0, 0])
            + struct.pack("!H", (pinger.identifier + 1) & 0xFFFF)
            + request[6:]
        )
        with redirect_stdout(output):
            pinger.datagramReceived(theirs, ("::1", 0))
            pinger.datagramReceived(request, ("::1", 0))  # our own request, looped back
            pinger.datagramReceived(ours, ("::1", 0))
            pinger.datagramReceived(ours, ("::1", 0))
            clock.advance(1)
            second = bytes([129]) + sock.sent[1][0][1:]
            pinger.datagramReceived(second, ("::1", 0))
        self.assertEqual(self.successResultOf(pinger.done), 0)
        lines = output.getvalue().splitlines()
        self.assertEqual(lines[0], "PING ::1(::1) 56 data bytes")
        self.assertRegex(lines[1], r"^64 bytes from ::1: icmp_seq=1 ttl=None time=\d+\.\d+ ms$")
        self.assertRegex(lines[2], r"^64 bytes from ::1: icmp_seq=1 .* \(DUP!\)$")
        self.assertRegex(lines[3], r"^64 bytes from ::1: icmp_seq=2 ")
        self.assertRegex(lines[6], r"^2 packets transmitted, 2 received, \+1 duplicates, 0% packet")
        self.assertRegex(
            lines[7], r"^rtt min/avg/max/mdev = \d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms$"
        )

    def test_times_as_ping_prints_them(self) -> None:
        """Round-trip times have ping's precision: 3 decimals below 1 ms, 0 from 100 ms."""
        self.assertEqual(
            [self.ping.millis(s) for s in (0.000045, 0.0012345, 0.0123, 0.1234)],
            ["0.045", "1.23", "12.3", "123"],
        )

    def test_icmp_message(self) -> None:
        """
        icmp_message drops an IPv4 header of any length (options included) only when the socket
        delivers one (raw IPv4), and leaves an echo socket's message whole, though an echo
        reply's first byte (type 0) read as a header length would mean an empty header.
        """
        reply = echoReply(echoRequest(socket.AF_INET, 7))
        for words in (5, 6, 15):
            self.assertEqual(self.ping.icmp_message(ipv4Header(reply, words=words) + reply, True),
                             reply)  # fmt: skip
        self.assertEqual(self.ping.icmp_message(reply, False), reply)
        headed = ipv4Header(reply) + reply
        self.assertEqual(self.ping.icmp_message(headed, False), headed)
        self.assertEqual(self.ping.icmp_message(b"", True), b"")

    def test_echo_socket_replies_without_ip_header(self) -> None:
        """
        On an ICMP echo socket the identifier is the socket's port (the kernel's), requests carry
        it with a valid checksum, and an IPv4 reply arrives without an IP header: its length is
        the ICMP message's, its ttl the one the transport reports (IP_RECVTTL), and a reply with
        another identifier is ignored.
        """
        sock = StubEchoSocket()
        pinger, clock, sock, output = self.pinger("127.0.0.1", "-c", "1", sock=sock)
        self.assertEqual(pinger.identifier, 4242)
        [(request, address)] = sock.sent
        self.assertEqual(address, ("127.0.0.1", 0))
        self.assertEqual(struct.unpack("!BBHHH", request[:8])[::3], (8, 4242))
        self.assertEqual(checksum(request), 0)
        reply = echoReply(request)
        theirs = reply[:4] + struct.pack("!H", 4243) + reply[6:]
        pinger.transport.receivedHopLimit = 61
        with redirect_stdout(output):
            pinger.datagramReceived(theirs, ("127.0.0.1", 0))
            self.assertNoResult(pinger.done)
            pinger.datagramReceived(reply, ("127.0.0.1", 0))
        self.assertEqual(self.successResultOf(pinger.done), 0)
        lines = output.getvalue().splitlines()
        self.assertRegex(
            lines[1], r"^64 bytes from 127\.0\.0\.1: icmp_seq=1 ttl=61 time=\d+\.\d+ ms$"
        )
        self.assertRegex(lines[4], r"^1 packets transmitted, 1 received, 0% packet loss")

    def test_raw_socket_replies_with_ip_header(self) -> None:
        """On a raw IPv4 socket the reply's IP header is skipped: 64 bytes, our identifier."""
        pinger, clock, sock, output = self.pinger("127.0.0.1", "-c", "1")
        self.assertEqual(pinger.identifier, os.getpid() & 0xFFFF)
        reply = echoReply(sock.sent[0][0])
        pinger.transport.receivedHopLimit = 64
        with redirect_stdout(output):
            pinger.datagramReceived(ipv4Header(reply, words=6) + reply, ("127.0.0.1", 0))
        self.assertEqual(self.successResultOf(pinger.done), 0)
        self.assertRegex(output.getvalue().splitlines()[1],
                         r"^64 bytes from 127\.0\.0\.1: icmp_seq=1 ttl=64 ")  # fmt: skip

    def choose(self, target: str, create: Any, helper: Any = None) -> Tuple[Any, Any, Any, str]:
        """
        Run ping.listen for TARGET with CREATE as the socket factory, -v, and the helper replaced
        by one that records each request and gives HELPER (a stub raw socket); the port (or the
        Failure), the pinger, the helper's requests, and what was printed on stderr.
        """
        requests: List[Any] = []

        def acquire(reactor: Any, asked: Any, **options: Any) -> defer.Deferred[Any]:
            requests.extend(asked)
            return defer.succeed([helper])

        original = _HelperEndpoint.__dict__["_acquire"]
        _HelperEndpoint._acquire = staticmethod(acquire)
        self.addCleanup(setattr, _HelperEndpoint, "_acquire", original)
        options = self.ping.arguments([target, "-v", "-c", "1"])
        family, address = self.ping.resolve(target)
        reactor = FakeReactor()
        pinger = self.ping.Pinger(reactor, options, family, address)
        errors = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(errors):
            listening = defer.ensureDeferred(self.ping.listen(reactor, pinger, create))
        outcome: List[Any] = []
        listening.addBoth(outcome.append)
        return outcome[0], pinger, requests, errors.getvalue()

    def test_echo_socket_first(self) -> None:
        """
        Where the kernel gives an ICMP echo socket (the factory returns one), ping serves itself
        from it, bound to the wildcard address so that its identifier is known, without asking
        the helper; -v says so on stderr.
        """
        for family, target, protocol, wildcard in (
            (socket.AF_INET, "127.0.0.1", socket.IPPROTO_ICMP, "0.0.0.0"),
            (socket.AF_INET6, "::1", socket.IPPROTO_ICMPV6, "::"),
        ):
            made: List[Tuple[int, int, int]] = []
            echo = StubEchoSocket(family)

            def create(*arguments: int) -> StubEchoSocket:
                made.append(arguments)  # noqa: B023 - used at once
                return echo  # noqa: B023

            port, pinger, requests, errors = self.choose(target, create)
            self.assertEqual(made, [(family, socket.SOCK_DGRAM, protocol)])
            self.assertEqual(echo.bound, [(wildcard, 0)])
            self.assertIsInstance(port, RawPort)
            self.assertIs(port.socket, echo)
            self.assertIs(pinger.transport, port)
            self.assertEqual(requests, [])
            self.assertEqual(errors, "ping: an ICMP echo socket, identifier 4242: no helper\n")

    def test_helper_when_refused(self) -> None:
        """
        Where socket() fails with EACCES (the process's groups lie outside ping_group_range),
        EPERM or EPROTONOSUPPORT (no such sockets), ping asks the helper for a raw ICMP or
        ICMPv6 socket instead and serves itself from it; -v says why on stderr.
        """
        for code in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
            for family, target, request, endpoint in (
                (socket.AF_INET, "127.0.0.1", RawRequest(1, None, "inet"), "procket:raw:icmp"),
                (socket.AF_INET6, "::1", RawRequest(58, None, "inet6"), "procket:raw6:icmpv6"),
            ):

                def create(*arguments: int) -> socket.socket:
                    raise OSError(code, os.strerror(code))  # noqa: B023 - used at once

                raw = StubRawSocket(family)
                port, pinger, requests, errors = self.choose(target, create, raw)
                self.assertIsInstance(port, RawPort)
                self.assertIs(port.socket, raw)
                self.assertFalse(pinger.on_echo_socket)
                self.assertEqual(requests, [request])
                self.assertEqual(
                    errors,
                    f"ping: no ICMP echo socket ({os.strerror(code)}): a raw socket from the "
                    f"procket helper ({endpoint})\n",
                )

    def test_other_socket_errors_are_not_refusals(self) -> None:
        """
        Any other socket() error (EMFILE) fails listen as it is, without asking the helper; and
        an echo socket whose bind fails is closed.
        """

        def create(*arguments: int) -> socket.socket:
            raise OSError(errno.EMFILE, "Too many open files")

        failure, _, requests, _ = self.choose("127.0.0.1", create)
        self.assertIsInstance(failure, Failure)
        self.assertEqual(failure.value.errno, errno.EMFILE)
        self.assertEqual(requests, [])
        echo = UnbindableEchoSocket()
        failure, _, requests, _ = self.choose("127.0.0.1", lambda *arguments: echo)
        self.assertIsInstance(failure, Failure)
        self.assertEqual(failure.value.errno, errno.EADDRINUSE)
        self.assertTrue(echo.closed)
        self.assertEqual(requests, [])


#: Runs `main(reactor)` with the real reactor as nobody and reports its result.
TWISTED_PRELUDE = """
import struct
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from procket_twisted.endpoints import datagramEndpointFromString, RawEndpoint

def run(main):
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)).addCallback(report))

def checksum(data):
    data += b"\\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def echo_request(ipv6, identifier):
    body = struct.pack("!BBHHH", 128 if ipv6 else 8, 0, 0, identifier, 1) + b"as nobody"
    return body if ipv6 else body[:2] + struct.pack("!H", checksum(body)) + body[4:]

class Echo(DatagramProtocol):
    def __init__(self, ipv6, identifier):
        self.ipv6, self.identifier, self.reply = ipv6, identifier, defer.Deferred()
    def datagramReceived(self, packet, address):
        message = packet if self.ipv6 else packet[(packet[0] & 15) * 4:]
        kind, _, _, identifier, _ = struct.unpack("!BBHHH", message[:8])
        if kind == (129 if self.ipv6 else 0) and identifier == self.identifier:
            if not self.reply.called:
                self.reply.callback({"first_byte": packet[0], "kind": kind,
                                     "header_ttl": None if self.ipv6 else packet[8],
                                     "hop": self.transport.receivedHopLimit,
                                     "from": list(address)})

async def refusal(reactor, description):
    try:
        port = await datagramEndpointFromString(reactor, description).listen(DatagramProtocol())
    except CannotListenError as error:
        return [error.interface, error.port, type(error.socketError).__name__,
                error.socketError.errno, str(error.socketError)]
    await port.stopListening()
    return "allowed"
"""


def shape(output: str) -> List[str]:
    """OUTPUT's lines with every number replaced by N: the shape of ping's output."""
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in output.splitlines()]


class RawAsNobodyTests(SynchronousTestCase):
    """The Twisted raw layer as nobody, against the setuid helper, on the real reactor."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}

    def run_twisted(self, code: str) -> Any:
        preamble = f"IPV6 = {'inet6' in self.families()}\n"
        return run_unprivileged(
            self, TWISTED_PRELUDE + preamble + textwrap.dedent(code), self.environment
        )

    def families(self) -> List[str]:
        return ["inet", "inet6"] if ipv6_loopback() else ["inet"]

    def test_icmp_echo_through_endpoint_strings(self) -> None:
        """
        procket:raw:icmp on 127.0.0.1 and procket:raw6:icmpv6 on ::1, as nobody: the echo reply
        arrives, IPv4 with its IP header and the same TTL in receivedHopLimit, IPv6 without a
        header (the kernel computed the checksum we left at 0) and with its hop limit.
        """
        self.prefix.write_policy("allow kind=raw proto=1,58\nallow kind=tcp,udp\n")
        result = self.run_twisted("""
            async def main(reactor):
                facts = {"uid": os.getuid()}
                for ipv6, description, target in (
                    (False, "procket:raw:icmp:interface=127.0.0.1", "127.0.0.1"),
                    (True, "procket:raw6:icmpv6:interface=\\\\:\\\\:1", "::1"),
                ):
                    if ipv6 and not IPV6:
                        continue
                    identifier = (os.getpid() + ipv6) & 0xFFFF
                    protocol = Echo(ipv6, identifier)
                    port = await datagramEndpointFromString(reactor, description).listen(protocol)
                    host = port.getHost()
                    port.write(echo_request(ipv6, identifier), (target, 0))
                    timeout = reactor.callLater(10, protocol.reply.cancel)
                    reply = await protocol.reply
                    timeout.cancel()
                    await port.stopListening()
                    reply["host"] = [host.family, host.host, host.protocol, host.type]
                    facts[target] = reply
                return facts
            run(main)
        """)
        self.assertEqual(result["uid"], TEST_UID)
        four = result["127.0.0.1"]
        self.assertEqual(four["host"], ["inet", "127.0.0.1", 1, "RAW"])
        self.assertEqual((four["first_byte"] >> 4, four["kind"]), (4, 0))
        self.assertEqual(four["hop"], four["header_ttl"])
        self.assertEqual(four["from"], ["127.0.0.1", 0])
        if "inet6" in self.families():
            six = result["::1"]
            self.assertEqual(six["host"], ["inet6", "::1", 58, "RAW"])
            self.assertEqual((six["first_byte"], six["kind"]), (129, 129))
            self.assertIsInstance(six["hop"], int)
            self.assertEqual(six["from"], ["::1", 0])

    def test_default_policy_refuses_raw(self) -> None:
        """
        The installed default policy refuses raw sockets: listen fails with CannotListenError
        whose socketError is a PolicyDeniedError naming the raw socket (ping.py's message:
        `PingExampleAsNobodyTests.test_neither_echo_socket_nor_policy`).
        """
        result = self.run_twisted("""
            async def main(reactor):
                return {description: await refusal(reactor, description)
                        for description in ("procket:raw:icmp", "procket:raw6:icmpv6")}
            run(main)
        """)
        four, six = result["procket:raw:icmp"], result["procket:raw6:icmpv6"]
        self.assertEqual(four[:4], ["", 1, "PolicyDeniedError", errno.EACCES])
        self.assertIn("refused raw icmp (1) over inet", four[4])
        self.assertEqual(six[:4], ["", 58, "PolicyDeniedError", errno.EACCES])
        self.assertIn("refused raw icmpv6 (58) over inet6", six[4])

    def test_icmp_only_policy_refuses_other_protocols(self) -> None:
        """
        Adversarial: with `allow kind=raw proto=1`, protocol 17 and ICMPv6 are refused through
        the endpoint, and so is a forged request whose protocol was changed after the Python
        checks: the helper decides, and hands over no socket.
        """
        self.prefix.write_policy("allow kind=raw proto=1\nallow kind=tcp,udp\n")
        result = self.run_twisted("""
            async def main(reactor):
                facts = {description: await refusal(reactor, description) for description in
                         ("procket:raw:17", "procket:raw:udp:interface=127.0.0.1",
                          "procket:raw6:icmpv6", "procket:raw:icmp")}
                forged = RawRequest("icmp")
                object.__setattr__(forged, "number", 17)
                before = open_fds()
                try:
                    listen_many([forged], direct=False)
                    facts["forged"] = "opened"
                except ProcketError as error:
                    facts["forged"] = [type(error).__name__, error.step, str(error)]
                facts["fds_same"] = open_fds() == before
                return facts
            run(main)
        """)
        self.assertEqual(result["procket:raw:17"][:3], ["", 17, "PolicyDeniedError"])
        self.assertEqual(result["procket:raw:udp:interface=127.0.0.1"][:3],
                         ["127.0.0.1", 17, "PolicyDeniedError"])  # fmt: skip
        self.assertEqual(result["procket:raw6:icmpv6"][:3], ["", 58, "PolicyDeniedError"])
        self.assertEqual(result["procket:raw:icmp"], "allowed")
        self.assertEqual(result["forged"][:2], ["PolicyDeniedError", "policy"])
        self.assertIn("(17)", result["forged"][2])
        self.assertTrue(result["fds_same"])

    def test_header_included(self) -> None:
        """
        IP_HDRINCL on IPv4 comes with every raw grant (the holder could set it itself): a packet
        written with its own IPv4 and UDP headers reaches a UDP socket; for IPv6 it is refused at
        parse time in Python, and by the helper for a forged request. A policy that still says
        options=hdrincl is refused as an error, so that no one believes it restricts anything.
        """
        self.prefix.write_policy(
            "allow kind=raw proto=17 family=inet\nallow kind=raw proto=58\nallow kind=tcp,udp\n"
        )
        result = self.run_twisted("""
            import ipaddress, socket as sockets
            async def main(reactor):
                facts = {}
                receiver = sockets.socket(sockets.AF_INET, sockets.SOCK_DGRAM)
                receiver.bind(("127.0.0.1", 0))
                receiver.settimeout(10)
                port = await datagramEndpointFromString(
                    reactor, "procket:raw:17:interface=127.0.0.1:headerIncluded=yes"
                ).listen(DatagramProtocol())
                facts["hdrincl"] = port.getHandle().getsockopt(sockets.IPPROTO_IP, 3)
                payload = b"header included"
                udp = struct.pack("!HHHH", 4242, receiver.getsockname()[1], 8 + len(payload), 0)
                loopback = ipaddress.IPv4Address("127.0.0.1").packed
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0,
                                 64, 17, 0, loopback, loopback)
                port.write(ip + udp + payload, ("127.0.0.1", 0))
                data, source = receiver.recvfrom(100)
                facts["received"] = [data.decode(), source[1]]
                await port.stopListening()
                try:
                    datagramEndpointFromString(reactor, "procket:raw6:icmpv6:headerIncluded=yes")
                except ValueError as error:
                    facts["parse"] = str(error)
                forged = RawRequest("icmpv6", "::1")
                object.__setattr__(forged, "header_included", True)
                try:
                    listen_many([forged], direct=False)
                    facts["forged"] = "opened"
                except ProcketError as error:
                    facts["forged"] = [type(error).__name__, error.step, str(error)]
                return facts
            run(main)
        """)
        self.assertEqual(result["hdrincl"], 1)
        self.assertEqual(result["received"], ["header included", 4242])
        self.assertIn("header_included applies to IPv4 only", result["parse"])
        self.assertEqual(result["forged"][1], "parse")
        self.assertIn("hdrincl", result["forged"][2])
        self.prefix.write_policy("allow kind=raw proto=17 options=hdrincl\nallow kind=tcp,udp\n")
        refused = self.run_twisted("""
            async def main(reactor):
                return await refusal(reactor, "procket:raw:17:interface=127.0.0.1:headerIncluded=yes")
            run(main)
        """)
        self.assertEqual(refused[:3], ["127.0.0.1", 17, "PolicyDeniedError"])
        self.assertIn("options=hdrincl grants nothing", refused[4])


#: Run as root in a new network namespace (``unshare -n``): bring lo up, set the namespace's own
#: net.ipv4.ping_group_range to $1 (the machine's stays as it is), then run the other arguments.
NAMESPACE_SCRIPT = (
    'ip link set lo up && echo "$1" > /proc/sys/net/ipv4/ping_group_range && shift && exec "$@"'
)
#: A ping_group_range that lets no group have ICMP echo sockets (the kernel's default).
NO_GROUP = "1 0"


class PingExampleAsNobodyTests(SynchronousTestCase):
    """
    examples/ping.py as nobody, each run in a private network namespace whose ping_group_range
    the test sets: with ICMP echo sockets allowed it needs no helper; without, it falls back to
    the setuid helper's raw socket, which the policy must allow. Compared with the real ``ping``,
    run as root in a namespace set up the same way.
    """

    def setUp(self) -> None:
        skip_unless_privileged(self)
        missing = [tool for tool in ("ping", "ip", "unshare") if shutil.which(tool) is None]
        probe = ["unshare", "-n", "true"]
        if not missing and subprocess.run(probe, capture_output=True).returncode != 0:
            missing = ["a kernel that lets root create network namespaces (unshare -n)"]
        if missing:
            message = (
                f"needs {', '.join(missing)}; scripts/test installs the tools (scripts/packages.sh)"
            )
            if os.environ.get(REQUIRE_VARIABLE) == "1":
                self.fail(message)
            raise SkipTest(message)
        self.prefix = install_prefix(self)
        self.script = os.path.join(examples_directory(), "ping.py")
        #: A ping_group_range that holds nobody's group and no other.
        self.nobody_group = f"{TEST_GID} {TEST_GID}"

    def in_namespace(
        self, ping_group_range: str, argv: List[str], helper: Optional[str] = None
    ) -> subprocess.CompletedProcess:
        """
        Run ARGV in a new network namespace with PING_GROUP_RANGE: as nobody (no supplementary
        groups) with PROCKET_HELPER=HELPER when HELPER is given, else as root.
        """
        if helper is not None:
            argv = ["setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_GID}", "--clear-groups",
                    "--", *argv]  # fmt: skip
        environment = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
        if helper is not None:
            environment["PROCKET_HELPER"] = helper
        return subprocess.run(
            ["unshare", "-n", "--", "sh", "-c", NAMESPACE_SCRIPT, "sh", ping_group_range, *argv],
            capture_output=True, text=True, cwd="/", env=environment, timeout=60,
        )  # fmt: skip

    def example(
        self, ping_group_range: str, helper: str, *arguments: str
    ) -> subprocess.CompletedProcess:
        """examples/ping.py ARGUMENTS as nobody in a namespace (`in_namespace`)."""
        return self.in_namespace(ping_group_range, [sys.executable, self.script, *arguments],
                                 helper)  # fmt: skip

    def targets(self) -> List[str]:
        return ["127.0.0.1", "::1"] if ipv6_loopback() else ["127.0.0.1"]

    def skip_without_ipv6(self) -> None:
        if not ipv6_loopback():
            raise SkipTest("no IPv6 loopback here")

    def compare_with_ping(self, target: str, ping_group_range: str, helper: str) -> None:
        """
        ping.py -c 3 -i 0.2 TARGET as nobody (with PING_GROUP_RANGE and HELPER) prints what
        ``ping -c 3 -i 0.2 TARGET`` prints, numbers aside, with the same lengths, sources,
        sequence numbers and TTLs, and nothing on stderr.
        """
        arguments = ["-c", "3", "-i", "0.2", target]
        real = self.in_namespace(ping_group_range, ["ping", *arguments])
        self.assertEqual(real.returncode, 0, real.stdout + real.stderr)
        ours = self.example(ping_group_range, helper, *arguments)
        self.assertEqual(ours.returncode, 0, ours.stdout + ours.stderr)
        self.assertEqual(ours.stderr, "")
        self.assertEqual(shape(ours.stdout), shape(real.stdout), f"{ours.stdout}\n{real.stdout}")
        self.assertEqual(ours.stdout.splitlines()[0], real.stdout.splitlines()[0])
        replies = r"^(\d+) bytes from (\S+): icmp_seq=(\d+) ttl=(\d+) time="
        self.assertEqual(
            re.findall(replies, ours.stdout, re.M), re.findall(replies, real.stdout, re.M)
        )
        self.assertEqual(len(re.findall(replies, ours.stdout, re.M)), 3)
        statistics = r"^(\d+) packets transmitted, (\d+) received, (\d+)% packet loss"
        self.assertEqual(re.findall(statistics, ours.stdout, re.M), [("3", "3", "0")])

    def missing_helper(self) -> str:
        """A PROCKET_HELPER that names no file: asking the helper fails with 'does not exist'."""
        return os.path.join(self.prefix.path, "no-helper-here")

    def test_echo_socket_like_ping_ipv4(self) -> None:
        """
        With ping_group_range holding nobody's group and no helper at all, ping.py 127.0.0.1 as
        nobody prints what ping prints: the kernel's ICMP echo socket was enough (asking the
        missing helper would have failed), its replies without an IP header measured right, and
        the TTL taken from IP_RECVTTL (not from a header there is none of).
        """
        self.compare_with_ping("127.0.0.1", self.nobody_group, self.missing_helper())

    def test_echo_socket_like_ping_ipv6(self) -> None:
        """The same for ::1: an ICMPv6 echo socket, no helper, the hop limit as ttl."""
        self.skip_without_ipv6()
        self.compare_with_ping("::1", self.nobody_group, self.missing_helper())

    def test_helper_like_ping_ipv4(self) -> None:
        """
        With ping_group_range holding no group, ping.py 127.0.0.1 as nobody prints what ping
        prints through the helper's raw socket (policy ``allow kind=raw proto=1,58``).
        """
        self.prefix.write_policy("allow kind=raw proto=1,58\nallow kind=tcp,udp\n")
        self.compare_with_ping("127.0.0.1", NO_GROUP, self.prefix.helper)

    def test_helper_like_ping_ipv6(self) -> None:
        """The same for ::1, through the helper's raw ICMPv6 socket."""
        self.skip_without_ipv6()
        self.prefix.write_policy("allow kind=raw proto=1,58\nallow kind=tcp,udp\n")
        self.compare_with_ping("::1", NO_GROUP, self.prefix.helper)

    def test_least_privilege_first(self) -> None:
        """
        With -v, ping.py names on stderr the socket it took, and it takes the smallest that
        works: an ICMP echo socket where ping_group_range holds nobody's group, though the
        helper would give a raw socket; the helper's raw socket where socket() was refused
        (EACCES); each way one reply.
        """
        self.prefix.write_policy("allow kind=raw proto=1,58\nallow kind=tcp,udp\n")
        endpoints = {"127.0.0.1": "procket:raw:icmp", "::1": "procket:raw6:icmpv6"}
        for target in self.targets():
            echo = self.example(self.nobody_group, self.prefix.helper, "-v", "-c", "1", target)
            self.assertEqual(echo.returncode, 0, echo.stdout + echo.stderr)
            self.assertRegex(
                echo.stderr, r"^ping: an ICMP echo socket, identifier \d+: no helper\n$"
            )
            self.assertIn("1 packets transmitted, 1 received", echo.stdout)
            raw = self.example(NO_GROUP, self.prefix.helper, "-v", "-c", "1", target)
            self.assertEqual(raw.returncode, 0, raw.stdout + raw.stderr)
            self.assertEqual(
                raw.stderr,
                "ping: no ICMP echo socket (Permission denied): a raw socket from the procket "
                f"helper ({endpoints[target]})\n",
            )
            self.assertIn("1 packets transmitted, 1 received", raw.stdout)

    def test_neither_echo_socket_nor_policy(self) -> None:
        """
        With ping_group_range holding no group and the default policy (which refuses raw
        sockets), ping.py fails with status 2 and the helper's refusal, and pings nothing.
        """
        refusals = {"127.0.0.1": "refused raw icmp (1)", "::1": "refused raw icmpv6 (58)"}
        for target in self.targets():
            ping = self.example(NO_GROUP, self.prefix.helper, "-c", "1", target)
            self.assertEqual(ping.returncode, 2, ping.stdout + ping.stderr)
            self.assertIn(refusals[target], ping.stderr)
            self.assertTrue(ping.stderr.startswith("ping: "), ping.stderr)
            self.assertNotIn("bytes from", ping.stdout)
