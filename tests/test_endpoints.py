"""
The endpoints, adoption and the datagram service, on a ``MemoryReactor`` with the fake helper of
`procket_twisted.testing` (real sockets on kernel-chosen ports, requests recorded, failures
queued): what is asked for, what the reactor adopts, how failures and cancellation surface, and
which endpoints are single use.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, List, Optional

from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import AlreadyListened, CannotListenError, UnsupportedAddressFamily
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from procket_twisted import (
    HelperFailedError,
    PolicyDeniedError,
    ProcketError,
    SocketError,
    SocketRequest,
)
from procket_twisted.endpoints import (
    AdoptedDatagramServerEndpoint,
    DatagramServerEndpointService,
    IDatagramServerEndpoint,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    TLSServerEndpoint,
    acquireEndpoints,
    adoptSocket,
    datagramService,
)
from procket_twisted.testing import FakeHelper, useFakeHelper

from .support import (
    TEST_GID,
    TEST_UID,
    ipv6_loopback,
    run_command_unprivileged,
    skip_unless_privileged,
)


def isOpen(fd: int) -> bool:
    """Whether FD is an open descriptor of this process."""
    try:
        os.fstat(fd)
    except OSError as error:
        if error.errno == errno.EBADF:
            return False
        raise
    return True


def closeIfOpen(fd: int) -> None:
    """Close FD unless it is already closed."""
    if isOpen(fd):
        os.close(fd)


def listeningSocket(family: int = socket.AF_INET) -> socket.socket:
    """A real listening TCP socket on the loopback address of FAMILY, on a kernel-chosen port."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.listen(5)
    return sock


class RecordingAcquire:
    """An ``_acquire`` seam that records its calls and returns the Deferred it is told to."""

    def __init__(self, result: Optional[defer.Deferred[Any]] = None) -> None:
        self.calls: List[Any] = []
        self.result = result

    def __call__(self, reactor: Any, requests: Any, **options: Any) -> defer.Deferred[Any]:
        self.calls.append((reactor, list(requests), options))
        assert self.result is not None
        return self.result


class EndpointTestCase(SynchronousTestCase):
    """A MemoryReactor, the fake helper, and sockets closed after the test."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.helper: FakeHelper = useFakeHelper(self)
        self.factory = Factory.forProtocol(Protocol)

    def adoptedFds(self) -> List[int]:
        """The descriptors the MemoryReactor was asked to adopt, in order."""
        return [adopted[0] for adopted in self.reactor.adoptedPorts]


class ProcketServerEndpointTests(EndpointTestCase):
    """`ProcketServerEndpoint`: one helper request per listen, adopted by the reactor."""

    def test_listen_adopts(self) -> None:
        """
        listen asks the helper for exactly the endpoint's request, and the reactor adopts the
        received socket as an AF_INET stream port for the factory; the listen Deferred fires with
        the reactor's port.
        """
        endpoint = ProcketServerEndpoint(self.reactor, 80, "127.0.0.1", 10)
        port = self.successResultOf(endpoint.listen(self.factory))
        self.assertTrue(verifyObject(IListeningPort, port))
        self.assertEqual(self.helper.requests, [[SocketRequest(80, "tcp", "127.0.0.1", 10)]])
        [(fileno, family, factory)] = self.reactor.adoptedPorts
        self.assertIsInstance(fileno, int)
        self.assertEqual(family, socket.AF_INET)
        self.assertIs(factory, self.factory)

    def test_listen_ipv6(self) -> None:
        """An IPv6 interface makes the reactor adopt an AF_INET6 port."""
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback here")
        endpoint = ProcketServerEndpoint(self.reactor, 443, "::1")
        self.successResultOf(endpoint.listen(self.factory))
        self.assertEqual(self.helper.requests, [[SocketRequest(443, "tcp", "::1", 50)]])
        self.assertEqual(self.reactor.adoptedPorts[0][1], socket.AF_INET6)

    def test_default_interface(self) -> None:
        """Without an interface the request is for every IPv4 address with backlog 50."""
        self.successResultOf(ProcketServerEndpoint(self.reactor, 80).listen(self.factory))
        self.assertEqual(self.helper.requests, [[SocketRequest(80, "tcp", "0.0.0.0", 50)]])
        self.assertEqual(self.reactor.adoptedPorts[0][1], socket.AF_INET)

    def test_adopted_descriptor_closed(self) -> None:
        """After adoption the endpoint keeps no descriptor: the one the reactor saw is closed."""
        self.successResultOf(
            ProcketServerEndpoint(self.reactor, 80, "127.0.0.1").listen(self.factory)
        )
        self.assertFalse(isOpen(self.adoptedFds()[0]))

    def test_failure_is_cannot_listen(self) -> None:
        """
        A helper failure makes listen fail with CannotListenError for the endpoint's interface
        and port, whose socketError is the typed error with its errno; nothing is adopted.
        """
        refusal = SocketError("in use", errno=errno.EADDRINUSE, step="bind", index=1)
        self.helper.failNext(refusal)
        endpoint = ProcketServerEndpoint(self.reactor, 80, "127.0.0.1")
        failure = self.failureResultOf(endpoint.listen(self.factory), CannotListenError)
        self.assertIs(failure.value.socketError, refusal)
        self.assertEqual(failure.value.socketError.errno, errno.EADDRINUSE)
        self.assertEqual(failure.value.socketError.step, "bind")
        self.assertEqual(failure.value.port, 80)
        self.assertEqual(failure.value.interface, "127.0.0.1")
        self.assertEqual(self.reactor.adoptedPorts, [])

    def test_every_procket_error_is_cannot_listen(self) -> None:
        """Policy refusals and helper failures are CannotListenError too, typed inside."""
        for error in (
            PolicyDeniedError("not allowed", step="policy"),
            HelperFailedError("crashed", step="reply"),
        ):
            self.helper.failNext(error)
            endpoint = ProcketServerEndpoint(self.reactor, 80)
            failure = self.failureResultOf(endpoint.listen(self.factory), CannotListenError)
            self.assertIs(failure.value.socketError, error)
            self.assertEqual(failure.value.interface, "0.0.0.0")

    def test_failure_queue_then_success(self) -> None:
        """A queued failure affects only the next listen; the one after it succeeds."""
        self.helper.failNext(SocketError("in use", errno=errno.EADDRINUSE, step="bind"))
        endpoint = ProcketServerEndpoint(self.reactor, 80)
        self.failureResultOf(endpoint.listen(self.factory), CannotListenError)
        self.successResultOf(endpoint.listen(self.factory))
        self.assertEqual(len(self.helper.requests), 2)

    def test_other_errors_pass_through(self) -> None:
        """An exception that is not a ProcketError (a bug) is not disguised as CannotListenError."""
        endpoint = ProcketServerEndpoint(self.reactor, 80)
        endpoint._acquire = RecordingAcquire(defer.fail(ZeroDivisionError("bug")))
        self.failureResultOf(endpoint.listen(self.factory), ZeroDivisionError)

    def test_options_reach_acquire(self) -> None:
        """listen hands reactor, request, progname, timeout and direct to the helper seam."""
        acquire = RecordingAcquire(defer.Deferred())
        endpoint = ProcketServerEndpoint(
            self.reactor, 80, "127.0.0.1", progname=["/opt/helper"], timeout=1.5, direct=False
        )
        endpoint._acquire = acquire
        endpoint.listen(self.factory)
        [(reactor, requests, options)] = acquire.calls
        self.assertIs(reactor, self.reactor)
        self.assertEqual(requests, [SocketRequest(80, "tcp", "127.0.0.1", 50)])
        self.assertEqual(options, {"progname": ["/opt/helper"], "timeout": 1.5, "direct": False})

    def test_cancel(self) -> None:
        """
        Cancelling listen's Deferred while the helper runs cancels the acquisition (which is what
        kills a real helper): the Deferred fails with CancelledError and nothing is adopted.
        """
        cancelled = []
        endpoint = ProcketServerEndpoint(self.reactor, 80)
        endpoint._acquire = RecordingAcquire(defer.Deferred(cancelled.append))
        listening = endpoint.listen(self.factory)
        self.assertNoResult(listening)
        listening.cancel()
        self.assertEqual(len(cancelled), 1)
        self.failureResultOf(listening, defer.CancelledError)
        self.assertEqual(self.reactor.adoptedPorts, [])

    def test_multi_use(self) -> None:
        """The endpoint may listen again: each listen asks the helper anew and adopts anew."""
        endpoint = ProcketServerEndpoint(self.reactor, 80, "127.0.0.1")
        self.successResultOf(endpoint.listen(self.factory))
        self.successResultOf(endpoint.listen(self.factory))
        self.assertEqual(len(self.helper.requests), 2)
        self.assertEqual(self.helper.requests[0], self.helper.requests[1])
        self.assertEqual(len(self.reactor.adoptedPorts), 2)

    def test_adoption_failure_closes_socket(self) -> None:
        """When the reactor refuses the socket, listen fails with its error; socket closed."""
        sock = listeningSocket()
        reactor = MemoryReactor()

        def refuse(*args: Any) -> None:
            raise UnsupportedAddressFamily("refused")

        reactor.adoptStreamPort = refuse
        endpoint = ProcketServerEndpoint(reactor, 80)
        endpoint._acquire = RecordingAcquire(defer.succeed([sock]))
        self.failureResultOf(endpoint.listen(self.factory), UnsupportedAddressFamily)
        self.assertEqual(sock.fileno(), -1)

    def test_bad_arguments(self) -> None:
        """A bad port, interface or backlog is a ValueError when the endpoint is made."""
        self.assertRaises(ValueError, ProcketServerEndpoint, self.reactor, 65536)
        self.assertRaises(ValueError, ProcketServerEndpoint, self.reactor, 80, "localhost")
        self.assertRaises(ValueError, ProcketServerEndpoint, self.reactor, 80, "", -1)
        self.assertEqual(self.helper.requests, [])


class TLSServerEndpointTests(EndpointTestCase):
    """`TLSServerEndpoint` listens on the wrapped endpoint with the factory behind TLS."""

    def options(self) -> Any:
        """TLS options (no certificate is needed: nothing connects)."""
        from twisted.internet.ssl import CertificateOptions

        return CertificateOptions()

    def test_wraps_factory(self) -> None:
        """The adopted factory is a TLSMemoryBIOFactory around the user's factory."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        endpoint = TLSServerEndpoint(ProcketServerEndpoint(self.reactor, 443), self.options())
        self.successResultOf(endpoint.listen(self.factory))
        [(_, _, adopted)] = self.reactor.adoptedPorts
        self.assertIsInstance(adopted, TLSMemoryBIOFactory)
        self.assertIs(adopted.wrappedFactory, self.factory)
        self.assertEqual(self.helper.requests, [[SocketRequest(443, "tcp", "0.0.0.0", 50)]])

    def test_failure(self) -> None:
        """A failure of the wrapped endpoint is the TLS endpoint's failure."""
        self.helper.failNext(PolicyDeniedError("not allowed", step="policy"))
        endpoint = TLSServerEndpoint(ProcketServerEndpoint(self.reactor, 443), self.options())
        failure = self.failureResultOf(endpoint.listen(self.factory), CannotListenError)
        self.assertIsInstance(failure.value.socketError, PolicyDeniedError)


class ProcketDatagramServerEndpointTests(EndpointTestCase):
    """`ProcketDatagramServerEndpoint`: a UDP socket from the helper, adopted for a protocol."""

    def test_listen_adopts(self) -> None:
        """
        listen asks for the UDP request and the reactor adopts a datagram port for the protocol
        with the endpoint's maximum packet size.
        """
        protocol = DatagramProtocol()
        endpoint = ProcketDatagramServerEndpoint(self.reactor, 53, "127.0.0.1", 512)
        self.successResultOf(endpoint.listen(protocol))
        self.assertEqual(self.helper.requests, [[SocketRequest(53, "udp", "127.0.0.1")]])
        [(fileno, family, adopted, maxPacketSize)] = self.reactor.adoptedPorts
        self.assertEqual(family, socket.AF_INET)
        self.assertIs(adopted, protocol)
        self.assertEqual(maxPacketSize, 512)
        self.assertFalse(isOpen(fileno))

    def test_listen_ipv6(self) -> None:
        """An IPv6 interface gives an AF_INET6 datagram port, default packet size 8192."""
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback here")
        endpoint = ProcketDatagramServerEndpoint(self.reactor, 53, "::1")
        self.successResultOf(endpoint.listen(DatagramProtocol()))
        self.assertEqual(self.reactor.adoptedPorts[0][1], socket.AF_INET6)
        self.assertEqual(self.reactor.adoptedPorts[0][3], 8192)

    def test_failure(self) -> None:
        """A helper failure is CannotListenError with the typed error inside."""
        refusal = SocketError("in use", errno=errno.EADDRINUSE, step="bind")
        self.helper.failNext(refusal)
        endpoint = ProcketDatagramServerEndpoint(self.reactor, 53, "127.0.0.1")
        failure = self.failureResultOf(endpoint.listen(DatagramProtocol()), CannotListenError)
        self.assertIs(failure.value.socketError, refusal)
        self.assertEqual((failure.value.interface, failure.value.port), ("127.0.0.1", 53))

    def test_bad_arguments(self) -> None:
        """A bad packet size, port or interface is a ValueError when the endpoint is made."""
        self.assertRaises(ValueError, ProcketDatagramServerEndpoint, self.reactor, 53, "", 0)
        self.assertRaises(ValueError, ProcketDatagramServerEndpoint, self.reactor, 70000)
        self.assertRaises(ValueError, ProcketDatagramServerEndpoint, self.reactor, 53, "x")


class AdoptSocketTests(SynchronousTestCase):
    """`adoptSocket` hands a socket's descriptor to the reactor and closes the socket."""

    def test_stream(self) -> None:
        """A listening TCP socket becomes a stream port for the factory; the socket is closed."""
        reactor = MemoryReactor()
        sock = listeningSocket()
        fileno = sock.fileno()
        factory = Factory.forProtocol(Protocol)
        adoptSocket(reactor, sock, factory)
        self.assertEqual(reactor.adoptedPorts, [(fileno, socket.AF_INET, factory)])
        self.assertEqual(sock.fileno(), -1)

    def test_datagram(self) -> None:
        """A UDP socket becomes a datagram port with the packet size; the socket is closed."""
        reactor = MemoryReactor()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        fileno = sock.fileno()
        protocol = DatagramProtocol()
        adoptSocket(reactor, sock, protocol, 1000)
        self.assertEqual(reactor.adoptedPorts, [(fileno, socket.AF_INET, protocol, 1000)])
        self.assertEqual(sock.fileno(), -1)

    def test_non_blocking_for_reactor(self) -> None:
        """The descriptor is non-blocking when the reactor receives it."""
        seen = []

        class Reactor(MemoryReactor):
            def adoptStreamPort(self, fileno: int, family: int, factory: Any) -> Any:
                seen.append(os.get_blocking(fileno))
                return super().adoptStreamPort(fileno, family, factory)

        sock = listeningSocket()
        adoptSocket(Reactor(), sock, Factory())
        self.assertEqual(seen, [False])

    def test_closed_on_failure(self) -> None:
        """When the reactor raises, the error propagates and the socket is closed all the same."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.assertRaises(UnsupportedAddressFamily, adoptSocket, MemoryReactor(), sock, Factory())
        self.assertEqual(sock.fileno(), -1)


class AdoptedDatagramServerEndpointTests(SynchronousTestCase):
    """`AdoptedDatagramServerEndpoint`: single use, descriptor closed after adoption."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.fileno = sock.detach()
        self.addCleanup(closeIfOpen, self.fileno)

    def test_listen(self) -> None:
        """
        listen makes the descriptor non-blocking, has the reactor adopt it for the protocol with
        the packet size, closes it (through the ``_close`` seam), and fires with the port.
        """
        closed: List[int] = []
        nonBlocking: List[int] = []
        endpoint = AdoptedDatagramServerEndpoint(self.reactor, self.fileno, socket.AF_INET, 2048)
        endpoint._close = closed.append
        endpoint._setNonBlocking = nonBlocking.append
        protocol = DatagramProtocol()
        port = self.successResultOf(endpoint.listen(protocol))
        self.assertTrue(verifyObject(IListeningPort, port))
        self.assertEqual(self.reactor.adoptedPorts, [(self.fileno, socket.AF_INET, protocol, 2048)])
        self.assertEqual(nonBlocking, [self.fileno])
        self.assertEqual(closed, [self.fileno])

    def test_closes_descriptor(self) -> None:
        """With the real ``_close``, the descriptor is closed after adoption (EBADF)."""
        endpoint = AdoptedDatagramServerEndpoint(self.reactor, self.fileno, socket.AF_INET)
        self.successResultOf(endpoint.listen(DatagramProtocol()))
        self.assertFalse(isOpen(self.fileno))

    def test_single_use(self) -> None:
        """A second listen fails with AlreadyListened and adopts nothing more."""
        endpoint = AdoptedDatagramServerEndpoint(self.reactor, self.fileno, socket.AF_INET)
        self.successResultOf(endpoint.listen(DatagramProtocol()))
        self.failureResultOf(endpoint.listen(DatagramProtocol()), AlreadyListened)
        self.assertEqual(len(self.reactor.adoptedPorts), 1)

    def test_adoption_failure(self) -> None:
        """When the reactor refuses the descriptor, listen fails with the reactor's error."""
        endpoint = AdoptedDatagramServerEndpoint(self.reactor, self.fileno, socket.AF_UNIX)
        self.failureResultOf(endpoint.listen(DatagramProtocol()), UnsupportedAddressFamily)
        self.failureResultOf(endpoint.listen(DatagramProtocol()), AlreadyListened)


class AcquireEndpointsTests(EndpointTestCase):
    """`acquireEndpoints`: many sockets from one helper run, as single-use endpoints."""

    def test_endpoints(self) -> None:
        """
        One helper run for all requests gives, in order, an AdoptedStreamServerEndpoint for TCP
        and an AdoptedDatagramServerEndpoint for UDP, each owning an open descriptor of the right
        family until it listens.
        """
        requests = [SocketRequest(80, "tcp", "127.0.0.1"), SocketRequest(53, "udp", "127.0.0.1")]
        endpoints = self.successResultOf(acquireEndpoints(self.reactor, requests))
        self.assertEqual(self.helper.requests, [requests])
        stream, datagram = endpoints
        self.assertIsInstance(stream, AdoptedStreamServerEndpoint)
        self.assertIsInstance(datagram, AdoptedDatagramServerEndpoint)
        self.assertTrue(verifyObject(IDatagramServerEndpoint, datagram))
        self.assertIs(stream.reactor, self.reactor)
        self.assertIs(datagram.reactor, self.reactor)
        self.assertEqual(stream.addressFamily, socket.AF_INET)
        self.assertEqual(datagram.addressFamily, socket.AF_INET)
        self.assertEqual(datagram.maxPacketSize, 8192)
        for endpoint in endpoints:
            self.assertTrue(isOpen(endpoint.fileno))
            self.addCleanup(closeIfOpen, endpoint.fileno)
        with socket.socket(fileno=os.dup(stream.fileno)) as check:
            self.assertEqual(check.type, socket.SOCK_STREAM)
        with socket.socket(fileno=os.dup(datagram.fileno)) as check:
            self.assertEqual(check.type, socket.SOCK_DGRAM)

    def test_single_use(self) -> None:
        """Each endpoint listens once, closing its descriptor; a second listen: AlreadyListened."""
        requests = [SocketRequest(80, "tcp"), SocketRequest(53, "udp")]
        stream, datagram = self.successResultOf(acquireEndpoints(self.reactor, requests))
        self.successResultOf(stream.listen(self.factory))
        self.successResultOf(datagram.listen(DatagramProtocol()))
        self.assertEqual(
            [adopted[0] for adopted in self.reactor.adoptedPorts], [stream.fileno, datagram.fileno]
        )
        self.assertFalse(isOpen(stream.fileno))
        self.assertFalse(isOpen(datagram.fileno))
        self.failureResultOf(stream.listen(self.factory), AlreadyListened)
        self.failureResultOf(datagram.listen(DatagramProtocol()), AlreadyListened)

    def test_failure(self) -> None:
        """A helper failure fails the Deferred with the typed error itself."""
        refusal = SocketError("in use", errno=errno.EADDRINUSE, step="bind", index=2)
        self.helper.failNext(refusal)
        requests = [SocketRequest(80, "tcp"), SocketRequest(53, "udp")]
        failure = self.failureResultOf(acquireEndpoints(self.reactor, requests), ProcketError)
        self.assertIs(failure.value, refusal)


@implementer(IListeningPort)
class RecordingPort:
    """A listening port that records stopListening."""

    def __init__(self) -> None:
        self.stopped = 0

    def startListening(self) -> None:
        """Nothing to start."""

    def stopListening(self) -> None:
        self.stopped += 1

    def getHost(self) -> Any:
        return None


@implementer(IDatagramServerEndpoint)
class RecordingDatagramEndpoint:
    """A datagram endpoint that records what listened on it and returns a RecordingPort."""

    def __init__(self) -> None:
        self.protocols: List[Any] = []
        self.port = RecordingPort()

    def listen(self, protocol: Any) -> defer.Deferred[Any]:
        self.protocols.append(protocol)
        return defer.succeed(self.port)


class DatagramServiceTests(EndpointTestCase):
    """`DatagramServerEndpointService` and `datagramService`, in twistd's order."""

    def test_listens_when_privileged_starts(self) -> None:
        """
        The endpoint is listened on in privilegedStartService (before twistd drops privileges),
        not when the service is made, and startService does not listen again.
        """
        protocol = DatagramProtocol()
        service = DatagramServerEndpointService(
            ProcketDatagramServerEndpoint(self.reactor, 53, "127.0.0.1"), protocol
        )
        self.assertTrue(verifyObject(IService, service))
        self.assertIs(service.protocol, protocol)
        self.assertEqual(self.helper.requests, [])
        service.privilegedStartService()
        self.assertEqual(self.helper.requests, [[SocketRequest(53, "udp", "127.0.0.1")]])
        self.assertIs(self.reactor.adoptedPorts[0][2], protocol)
        service.startService()
        self.assertEqual(len(self.helper.requests), 1)
        self.assertTrue(service.running)
        self.successResultOf(defer.maybeDeferred(service.stopService))

    def test_stop_stops_port(self) -> None:
        """stopService stops the port the endpoint gave."""
        endpoint = RecordingDatagramEndpoint()
        protocol = DatagramProtocol()
        service = DatagramServerEndpointService(endpoint, protocol)
        service.privilegedStartService()
        service.startService()
        self.assertEqual(endpoint.protocols, [protocol])
        self.assertEqual(endpoint.port.stopped, 0)
        self.successResultOf(defer.maybeDeferred(service.stopService))
        self.assertEqual(endpoint.port.stopped, 1)
        self.assertFalse(service.running)

    def test_failure_raises_at_startup(self) -> None:
        """
        A failure to listen while the application starts raises from privilegedStartService, so
        twistd stops with the error instead of running without its port.
        """
        refusal = PolicyDeniedError("not allowed", step="policy")
        self.helper.failNext(refusal)
        service = DatagramServerEndpointService(
            ProcketDatagramServerEndpoint(self.reactor, 53), DatagramProtocol()
        )
        error = self.assertRaises(CannotListenError, service.privilegedStartService)
        self.assertIs(error.socketError, refusal)

    def test_datagram_service(self) -> None:
        """``datagramService(description, protocol, reactor)`` builds the service for the string."""
        protocol = DatagramProtocol()
        service = datagramService("procket:udp:53:interface=127.0.0.1", protocol, self.reactor)
        self.assertIsInstance(service, DatagramServerEndpointService)
        self.assertIs(service.protocol, protocol)
        self.assertIsInstance(service.endpoint, ProcketDatagramServerEndpoint)
        self.assertIs(service.endpoint._reactor, self.reactor)
        service.privilegedStartService()
        self.assertEqual(self.helper.requests, [[SocketRequest(53, "udp", "127.0.0.1")]])
        self.successResultOf(defer.maybeDeferred(service.stopService))

    def test_datagram_service_bad_string(self) -> None:
        """A malformed description is a ValueError when the service is made."""
        for description in ("procket:udp:x", "procket:tcp:80", "udp:53"):
            self.assertRaises(
                ValueError, datagramService, description, DatagramProtocol(), self.reactor
            )

    def test_datagram_service_global_reactor(self) -> None:
        """Without a reactor, datagramService uses the installed global reactor."""
        from twisted.internet import reactor

        service = datagramService("procket:udp:53", DatagramProtocol())
        self.assertIs(service.endpoint._reactor, reactor)


class AddressRecordingReactor(MemoryReactor):
    """A MemoryReactor that also records where each adopted socket is bound (type, address)."""

    def __init__(self) -> None:
        super().__init__()
        self.boundTo: List[Any] = []

    def record(self, fileno: int) -> None:
        sock = socket.socket(fileno=fileno)
        try:
            self.boundTo.append((sock.type, sock.getsockname()))
        finally:
            sock.detach()

    def adoptStreamPort(self, fileno: int, addressFamily: Any, factory: Any) -> Any:
        self.record(fileno)
        return super().adoptStreamPort(fileno, addressFamily, factory)

    def adoptDatagramPort(
        self, fileno: int, addressFamily: Any, protocol: Any, maxPacketSize: int = 8192
    ) -> Any:
        self.record(fileno)
        return super().adoptDatagramPort(fileno, addressFamily, protocol, maxPacketSize)


def localPortRange() -> range:
    """The ports the kernel picks from for a bind to port 0 (ip_local_port_range)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as stream:
        low, high = (int(field) for field in stream.read().split())
    return range(low, high + 1)


class FakeHelperTests(SynchronousTestCase):
    """
    `procket_twisted.testing.useFakeHelper` itself: it needs no privilege (it binds ports the
    kernel picks, never the privileged port asked for), and its failures queue in order.
    """

    def test_kernel_chosen_port(self) -> None:
        """
        A listen on a privileged port (TCP 80, UDP 53, on 127.0.0.1) through the fake helper
        gets a real socket bound to the same address on a port the kernel picked (in
        ip_local_port_range, so not the one asked for), while the request records the port asked
        for. Fails if the fake binds the requested port (which only root may, so the tests that
        use it would pass only as root).
        """
        reactor = AddressRecordingReactor()
        helper = useFakeHelper(self)
        self.successResultOf(
            ProcketServerEndpoint(reactor, 80, "127.0.0.1").listen(Factory.forProtocol(Protocol))
        )
        self.successResultOf(
            ProcketDatagramServerEndpoint(reactor, 53, "127.0.0.1").listen(DatagramProtocol())
        )
        self.assertEqual([r[0].port for r in helper.requests], [80, 53])
        [(streamType, (streamHost, streamPort)), (datagramType, (datagramHost, datagramPort))] = (
            reactor.boundTo
        )
        self.assertEqual((streamType, streamHost), (socket.SOCK_STREAM, "127.0.0.1"))
        self.assertEqual((datagramType, datagramHost), (socket.SOCK_DGRAM, "127.0.0.1"))
        self.assertIn(streamPort, localPortRange())
        self.assertIn(datagramPort, localPortRange())

    def test_two_queued_failures(self) -> None:
        """
        Two failures queued with failNext fail the next two listens, the first queued first,
        each with its own error (the very object); the listen after them succeeds. Fails if a
        second failNext replaces the first, or if the queue is taken from its end.
        """
        helper = useFakeHelper(self)
        reactor = MemoryReactor()
        first = SocketError("in use", errno=errno.EADDRINUSE, step="bind", index=1)
        second = PolicyDeniedError("not allowed", step="policy", index=1)
        helper.failNext(first)
        helper.failNext(second)
        endpoint = ProcketServerEndpoint(reactor, 80, "127.0.0.1")
        factory = Factory.forProtocol(Protocol)
        seen = [
            self.failureResultOf(endpoint.listen(factory), CannotListenError).value.socketError
            for _ in range(2)
        ]
        self.assertEqual([type(error) for error in seen], [SocketError, PolicyDeniedError])
        self.assertIs(seen[0], first)
        self.assertIs(seen[1], second)
        self.assertEqual(reactor.adoptedPorts, [])
        self.successResultOf(endpoint.listen(factory))
        self.assertEqual(len(reactor.adoptedPorts), 1)
        self.assertEqual(len(helper.requests), 3)

    def test_unprivileged(self) -> None:
        """
        This module's tests, which use the fake helper on privileged ports (80, 443, 53), all
        pass when run as an unprivileged user (nobody, without capabilities, who may bind no
        privileged port), under trial: none fails or errors. Fails if any of them depends on root.
        """
        skip_unless_privileged(self)
        directory = tempfile.mkdtemp(prefix="procket-fake-helper-as-nobody-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chown(directory, TEST_UID, TEST_GID)
        tests = os.path.dirname(os.path.abspath(__file__))
        result = run_command_unprivileged(
            [
                # not -m twisted.trial: before Twisted 23.8 its __main__ needs pkg_resources
                sys.executable, "-c", "from twisted.scripts.trial import run; run()",
                f"--temp-directory={os.path.join(directory, '_trial_temp')}",
                "tests.test_endpoints",
            ],
            {"PYTHONPATH": os.path.dirname(tests), "HOME": directory},
            timeout=300,
        )  # fmt: skip
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        summary = output.strip().splitlines()[-1]
        self.assertTrue(summary.startswith("PASSED"), output)
        self.assertNotIn("failures=", summary)
        self.assertNotIn("errors=", summary)
        successes = int(summary.split("successes=")[1].rstrip(")").split(",")[0])
        self.assertGreater(successes, 30, output)
