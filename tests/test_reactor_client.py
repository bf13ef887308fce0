"""
The Twisted driver of the helper (`acquireSockets`) and the endpoints on the REAL reactor, against
the FAKE helper (``fake_helper.py``, run with this interpreter): a real child process answering
over the real channel, so sockets really arrive, listen and carry traffic, every misbehaviour
gives its typed error through ``CannotListenError``, timeouts and cancellation kill the child, and
no descriptor or child process is left behind. Also the synchronous path taken before the reactor
runs (as under ``twistd``'s ``privilegedStartService``), on a ``MemoryReactor``.

Tests pass ``direct=False`` so that the helper runs even for port 0 (and as root, where every
port could be bound in-process). Port 0 is asked for: the fake helper binds it, and the client's
check of what arrived skips the port number for port 0.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
import time
from typing import Any, Callable, Dict, Generator, List, Optional, Set, Tuple

from twisted.internet import defer, task
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

import procket_twisted._client.api
import procket_twisted._client.exchange
from procket_twisted import (
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    HelperTimeoutError,
    PolicyDeniedError,
    SocketError,
    SocketRequest,
)
from procket_twisted.endpoints import (
    DatagramServerEndpointService,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    TLSServerEndpoint,
    acquireSockets,
)

from .fake_helper_support import (
    FAKE,
    log_fake_helper_runs,
    reset_fake_helper,
    set_fake_helper_mode,
)
from .support import children, ipv6_loopback, set_environment

#: Each fake helper misbehaviour, and the error it must give: type, errno, step.
ERROR_MODES: Dict[str, Tuple[type, Optional[int], str]] = {
    "error-bind": (SocketError, errno.EADDRINUSE, "bind"),
    "error-listen": (SocketError, errno.EADDRINUSE, "listen"),
    "error-policy": (PolicyDeniedError, errno.EACCES, "policy"),
    "error-privilege": (HelperNotPrivilegedError, errno.EPERM, "privilege"),
    "crash": (HelperFailedError, errno.EPROTO, "reply"),
    "garbage": (HelperFailedError, errno.EPROTO, "reply"),
    "wrong-count": (HelperFailedError, errno.EPROTO, "validate"),
    "wrong-socket": (HelperFailedError, errno.EPROTO, "validate"),
    "not-a-socket": (HelperFailedError, errno.EPROTO, "validate"),
    "missing-fds": (HelperFailedError, errno.EPROTO, "reply"),
    "sudo-password": (HelperNotPrivilegedError, errno.EPERM, "spawn"),
    "silent-exit-3": (HelperFailedError, errno.EPROTO, "reply"),
}


def openFds() -> Set[int]:
    """
    The descriptors open in this process now, except the reactor's own: Twisted's TCP ports keep
    one descriptor on /dev/null in reserve from their first listen on (to survive EMFILE).
    """
    found = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == os.devnull:
                continue
        except OSError:
            # The listing's own descriptor, closed meanwhile: not counted, or a descriptor that
            # leaks later on its number would go unseen by a comparison with this snapshot.
            continue
        found.add(int(entry))
    return found


def describeFds(fds: Set[int]) -> Dict[int, str]:
    """What each of FDS is (``socket:[...]``, ``pipe:[...]``...), for failure messages."""
    described = {}
    for fd in fds:
        try:
            described[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # closed meanwhile, or the listing's own descriptor
    return described


def sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after SECONDS on REACTOR."""
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def waitFor(
    reactor: Any, condition: Callable[[], bool], timeout: float = 5.0
) -> Generator[Any, Any, bool]:
    """Let the reactor run until CONDITION() holds (True) or TIMEOUT seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        yield sleep(reactor, 0.01)
    return True


#: How much later than its timeout a timed-out acquisition may fail: generous, as the machines are
#: shared; far below the fake helper's 30-second hang (``fake_helper.HANG_SECONDS``), so a helper
#: that is never killed (and only ends by itself) cannot pass for one killed at the timeout.
TIMEOUT_SLACK = 10.0


def replyWaiting(before: Set[int]) -> bool:
    """
    Whether one of this process's sockets opened since BEFORE (the channel to a helper) has a
    message waiting: the helper has answered and its fds are in flight, not yet received.
    """
    poller = select.poll()
    for fd, target in describeFds(openFds() - before).items():
        if target.startswith("socket:"):
            poller.register(fd, select.POLLIN)
    return any(events & select.POLLIN for _, events in poller.poll(0))


def failsWithin(reactor: Any, deferred: defer.Deferred[Any], seconds: float) -> defer.Deferred[Any]:
    """
    DEFERRED, which must fire within SECONDS of real time on REACTOR: if it has not, it is cancelled
    and fails with AssertionError instead (so an upper bound fails the test quickly, rather than
    after however long a helper that was never killed takes to end by itself).
    """
    late = []

    def tooLate() -> None:
        late.append(True)
        deferred.cancel()

    timer = reactor.callLater(seconds, tooLate)

    def check(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if late:
            raise AssertionError(f"still waiting after {seconds:g} s: {result}")
        return result

    return deferred.addBoth(check)


def onRealReactor(method: Callable[..., Any]) -> Callable[..., Any]:
    """
    Run an inlineCallbacks-style test method with the real reactor running, under trial and
    under pytest alike.

    Trial calls a test method before it runs the reactor, so the body is scheduled to start once
    the reactor runs (a body started earlier would see ``reactor.running`` False, and the code
    under test would take its synchronous path). Under pytest, once a pytest-twisted test has
    started the reactor in its greenlet, trial can no longer run the reactor itself
    (pytest-twisted issue 147), so the body is waited for with ``pytest_twisted.blockon``.
    """

    @functools.wraps(method)
    def run(self: Any) -> Any:
        from twisted.internet import reactor

        body = defer.inlineCallbacks(method)
        if reactor.running:
            import pytest_twisted

            return pytest_twisted.blockon(body(self))
        return task.deferLater(reactor, 0, body, self)

    return run


class EchoServer(Protocol):
    """Sends back what it receives; fires ``lost`` when its connection ends."""

    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


class EchoFactory(Factory):
    """Builds EchoServers and keeps their ``lost`` Deferreds."""

    def __init__(self) -> None:
        self.lost: List[defer.Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> EchoServer:
        server = EchoServer()
        server.factory = self
        self.lost.append(server.lost)
        return server


class EchoClient(Protocol):
    """Sends PAYLOAD, disconnects once as much has come back; ``done`` fires with what came."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.received)


class DatagramEcho(DatagramProtocol):
    """Sends every datagram back where it came from."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


class DatagramClient(DatagramProtocol):
    """Sends PAYLOAD to TARGET when started; ``answer`` fires with the first (data, address)."""

    def __init__(self, target: Tuple[str, int], payload: bytes) -> None:
        self.target = target
        self.payload = payload
        self.answer: defer.Deferred[Tuple[bytes, Any]] = defer.Deferred()

    def startProtocol(self) -> None:
        self.transport.write(self.payload, self.target)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if not self.answer.called:
            self.answer.callback((data, addr))


class FakeHelperMixin:
    """The fake helper's mode and run log, set through the environment for one test."""

    def setEnvironment(self, name: str, value: Optional[str]) -> None:
        """Set (or, for None, unset) an environment variable for this test."""
        set_environment(self, name, value)  # type: ignore[arg-type]

    def resetFakeHelper(self) -> None:
        """Mode ``ok`` and no run log, for this test."""
        reset_fake_helper(self)  # type: ignore[arg-type]

    def mode(self, mode: str) -> None:
        """Make the fake helper behave as MODE from now on."""
        set_fake_helper_mode(self, mode)  # type: ignore[arg-type]

    def runLog(self) -> Callable[[], List[List[str]]]:
        """Log each fake helper run; returns a function giving each run's arguments."""
        return log_fake_helper_runs(self)  # type: ignore[arg-type]


class RealReactorTestCase(FakeHelperMixin, TestCase):
    """Real-reactor tests with leak checks."""

    def setUp(self) -> None:
        self.resetFakeHelper()

    def snapshot(self) -> Tuple[Set[int], Set[int]]:
        """The open descriptors and the children now, for `assertNothingLeft`."""
        return openFds(), children()

    @defer.inlineCallbacks
    def assertNothingLeft(
        self, before: Tuple[Set[int], Set[int]], timeout: float = 5.0
    ) -> Generator[Any, Any, None]:
        """
        Within TIMEOUT, every child started since BEFORE is gone (reaped) and every descriptor
        opened since is closed.
        """
        from twisted.internet import reactor

        fds, pids = before
        yield waitFor(reactor, lambda: not children() - pids, timeout)
        self.assertEqual(children() - pids, set(), "a helper process was left behind")
        yield waitFor(reactor, lambda: not openFds() - fds, timeout)
        self.assertEqual(describeFds(openFds() - fds), {}, "descriptors were left open")

    @defer.inlineCallbacks
    def startedHelper(self, before: Tuple[Set[int], Set[int]]) -> Generator[Any, Any, int]:
        """The pid of the one helper child started since BEFORE, once it runs."""
        from twisted.internet import reactor

        started = yield waitFor(reactor, lambda: bool(children() - before[1]))
        self.assertTrue(started, "the helper never started")
        [pid] = children() - before[1]
        return pid

    @defer.inlineCallbacks
    def assertNoFdMore(self, before: Tuple[Set[int], Set[int]]) -> Generator[Any, Any, None]:
        """After letting the reactor run a little, this process holds no fd it did not at BEFORE."""
        from twisted.internet import reactor

        yield sleep(reactor, 0.2)
        self.assertEqual(describeFds(openFds() - before[0]), {}, "descriptors were left open")

    def endpoint(self, port: int = 0, interface: str = "127.0.0.1", **options: Any) -> Any:
        """A ProcketServerEndpoint on the real reactor that always runs the fake helper."""
        from twisted.internet import reactor

        options.setdefault("progname", FAKE)
        options.setdefault("direct", False)
        return ProcketServerEndpoint(reactor, port, interface, **options)

    @defer.inlineCallbacks
    def echoOver(
        self, port: Any, factory: EchoFactory, connectTo: Any, payload: bytes
    ) -> Generator[Any, Any, bytes]:
        """
        Send PAYLOAD through a client connected by CONNECTTO (a client endpoint) to the echo
        server of FACTORY listening on PORT; stop PORT; wait until both sides have closed.
        """
        client = EchoClient(payload)
        try:
            yield connectProtocol(connectTo, client)
            received = yield client.done
        finally:
            yield port.stopListening()
        yield defer.gatherResults(factory.lost)
        return received


class AcquireSocketsTests(RealReactorTestCase):
    """`acquireSockets` with the reactor running: the helper as a child the reactor watches."""

    @onRealReactor
    def test_sockets(self) -> Generator[Any, Any, None]:
        """
        One helper run gives a listening TCP socket and a bound UDP socket, in request order, on
        the addresses asked for; both work; afterwards nothing is left open or running.
        """
        from twisted.internet import reactor

        self.assertTrue(reactor.running)  # so the reactor-driven path is the one under test
        runs = self.runLog()
        before = self.snapshot()
        requests = [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")]
        acquired = acquireSockets(reactor, requests, progname=FAKE, direct=False)
        stream, datagram = yield acquired
        try:
            self.assertEqual(len(runs()), 1)
            self.assertEqual(runs()[0][-3:], ["v1"] + [r.helper_argument() for r in requests])
            self.assertEqual(stream.type, socket.SOCK_STREAM)
            self.assertTrue(stream.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            self.assertEqual(stream.getsockname()[0], "127.0.0.1")
            with socket.create_connection(stream.getsockname(), timeout=5):
                pass
            self.assertEqual(datagram.type, socket.SOCK_DGRAM)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"ping", datagram.getsockname())
            datagram.settimeout(5)
            self.assertEqual(datagram.recv(16), b"ping")
        finally:
            stream.close()
            datagram.close()
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_direct_needs_no_helper(self) -> Generator[Any, Any, None]:
        """With direct=True, a socket this process may open itself (port 0) runs no helper."""
        from twisted.internet import reactor

        runs = self.runLog()
        [sock] = yield acquireSockets(
            reactor, [SocketRequest(0, "tcp", "127.0.0.1")], progname=FAKE, direct=True
        )
        with sock:
            self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        self.assertEqual(runs(), [])

    @onRealReactor
    def test_direct_and_helper_merged(self) -> Generator[Any, Any, None]:
        """
        When only some requests need the helper, it is asked for those alone, and the sockets come
        back merged in request order.
        """
        from twisted.internet import reactor

        self.patch(
            procket_twisted._client.exchange, "worth_trying_directly", lambda r: r.protocol == "tcp"
        )
        runs = self.runLog()
        requests = [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")]
        stream, datagram = yield acquireSockets(reactor, requests, progname=FAKE, direct=True)
        stream.close()
        datagram.close()
        self.assertEqual((stream.type, datagram.type), (socket.SOCK_STREAM, socket.SOCK_DGRAM))
        self.assertEqual(len(runs()), 1)
        self.assertEqual(runs()[0][-2:], ["v1", requests[1].helper_argument()])

    @onRealReactor
    def test_helper_failure_after_direct(self) -> Generator[Any, Any, None]:
        """
        When the helper fails for a later request, the sockets already opened directly are closed
        and the error's index is the caller's position of the failed request (not the helper's).
        """
        from twisted.internet import reactor

        self.patch(
            procket_twisted._client.exchange, "worth_trying_directly", lambda r: r.protocol == "tcp"
        )
        self.mode("error-bind")
        before = self.snapshot()
        requests = [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")]
        acquired = acquireSockets(reactor, requests, progname=FAKE, direct=True)
        error = yield self.assertFailure(acquired, SocketError)
        self.assertEqual((error.index, error.step, error.errno), (2, "bind", errno.EADDRINUSE))
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_helper_not_found(self) -> Generator[Any, Any, None]:
        """A helper that does not exist is HelperNotFoundError, as with the blocking API."""
        from twisted.internet import reactor

        for progname in ("/nonexistent/procket-helper", "no-such-procket-helper-command"):
            acquired = acquireSockets(
                reactor, [SocketRequest(0, "tcp", "127.0.0.1")], progname=progname, direct=False
            )
            yield self.assertFailure(acquired, HelperNotFoundError)

    @onRealReactor
    def test_cancel_after_success(self) -> Generator[Any, Any, None]:
        """Cancelling an acquisition that has already succeeded changes nothing."""
        from twisted.internet import reactor

        acquired = acquireSockets(
            reactor, [SocketRequest(0, "tcp", "127.0.0.1")], progname=FAKE, direct=False
        )
        [sock] = yield acquired
        acquired.cancel()
        with sock:
            self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


class RealEndpointTests(RealReactorTestCase):
    """The endpoints with the real reactor: real ports carrying real traffic."""

    @onRealReactor
    def test_tcp_echo(self) -> Generator[Any, Any, None]:
        """
        A ProcketServerEndpoint's listen (through the helper) gives a port a real TCP client
        connects to and exchanges data with; the helper was asked for exactly that socket.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        runs = self.runLog()
        before = self.snapshot()
        factory = EchoFactory()
        port = yield self.endpoint().listen(factory)
        self.assertEqual(runs(), [["v1", "kind=tcp,family=inet,addr=127.0.0.1,port=0,backlog=50"]])
        address = port.getHost()
        self.assertEqual(address.host, "127.0.0.1")
        self.assertNotEqual(address.port, 0)
        received = yield self.echoOver(
            port, factory, TCP4ClientEndpoint(reactor, "127.0.0.1", address.port), b"hello procket"
        )
        self.assertEqual(received, b"hello procket")
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_tcp6_echo(self) -> Generator[Any, Any, None]:
        """The same over IPv6 on ::1: the reactor adopts an IPv6 port."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP6ClientEndpoint

        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback here")
        factory = EchoFactory()
        port = yield self.endpoint(interface="::1").listen(factory)
        address = port.getHost()
        self.assertEqual((address.type, address.host), ("TCP", "::1"))
        received = yield self.echoOver(
            port, factory, TCP6ClientEndpoint(reactor, "::1", address.port), b"hello six"
        )
        self.assertEqual(received, b"hello six")

    @onRealReactor
    def test_listen_again(self) -> Generator[Any, Any, None]:
        """After stopListening the endpoint listens again, on a new socket from a new helper run."""
        runs = self.runLog()
        endpoint = self.endpoint()
        for _ in range(2):
            port = yield endpoint.listen(EchoFactory())
            yield port.stopListening()
        self.assertEqual(len(runs()), 2)

    @onRealReactor
    def test_many_at_once(self) -> Generator[Any, Any, None]:
        """
        Eight listens started in one turn, more than the pacer runs at a time, all succeed, each
        on its own port from its own helper run; one queued behind them and cancelled never runs a
        helper; afterwards nothing is left open or running.
        """
        runs = self.runLog()
        before = self.snapshot()
        listening = [self.endpoint().listen(EchoFactory()) for _ in range(9)]
        listening[-1].cancel()
        yield self.assertFailure(listening.pop(), defer.CancelledError)
        ports = yield defer.gatherResults(listening)
        try:
            self.assertEqual(len({port.getHost().port for port in ports}), 8)
            self.assertEqual(len(runs()), 8)
        finally:
            yield defer.gatherResults([port.stopListening() for port in ports])
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_tls(self) -> Generator[Any, Any, None]:
        """
        A TLS endpoint built from a ``procket:ssl`` string's context, over a helper-provided
        socket, serves a real TLS client that verifies the certificate.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import SSL4ClientEndpoint
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        from .test_parser import escaped, writeSelfSigned

        keyPath, certPath = writeSelfSigned(self.mktemp())
        parsed = serverFromString(
            reactor, f"procket:ssl:0:privateKey={escaped(keyPath)}:certKey={escaped(certPath)}"
        )
        endpoint = TLSServerEndpoint(self.endpoint(), parsed._contextFactory)
        factory = EchoFactory()
        port = yield endpoint.listen(factory)
        with open(certPath, "rb") as certFile:
            trust = Certificate.loadPEM(certFile.read())
        client = SSL4ClientEndpoint(
            reactor,
            "127.0.0.1",
            port.getHost().port,
            optionsForClientTLS("localhost", trustRoot=trust),
        )
        echo = EchoClient(b"secret")
        try:
            yield connectProtocol(client, echo)
            received = yield echo.done
        finally:
            yield port.stopListening()
        yield defer.gatherResults(factory.lost)
        self.assertEqual(received, b"secret")

    @onRealReactor
    def test_string_endpoint(self) -> Generator[Any, Any, None]:
        """
        ``serverFromString(reactor, "procket:tcp:0:interface=127.0.0.1")`` listens for real (port
        0 needs no privilege, so no helper runs) and serves a client.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        runs = self.runLog()
        self.setEnvironment("PROCKET_HELPER", " ".join(FAKE))
        factory = EchoFactory()
        port = yield serverFromString(reactor, "procket:tcp:0:interface=127.0.0.1").listen(factory)
        received = yield self.echoOver(
            port,
            factory,
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            b"by string",
        )
        self.assertEqual(received, b"by string")
        self.assertEqual(runs(), [])

    @onRealReactor
    def test_udp_echo(self) -> Generator[Any, Any, None]:
        """
        A ProcketDatagramServerEndpoint's listen gives a UDP port whose DatagramProtocol receives
        a datagram and answers it.
        """
        from twisted.internet import reactor

        before = self.snapshot()
        endpoint = ProcketDatagramServerEndpoint(
            reactor, 0, "127.0.0.1", progname=FAKE, direct=False
        )
        server = yield endpoint.listen(DatagramEcho())
        address = server.getHost()
        self.assertEqual((address.type, address.host), ("UDP", "127.0.0.1"))
        client = DatagramClient(("127.0.0.1", address.port), b"datagram")
        clientPort = reactor.listenUDP(0, client, interface="127.0.0.1")
        try:
            data, source = yield client.answer
        finally:
            yield clientPort.stopListening()
            yield server.stopListening()
        self.assertEqual(data, b"datagram")
        self.assertEqual(source, ("127.0.0.1", address.port))
        yield self.assertNothingLeft(before)


class RealFailureTests(RealReactorTestCase):
    """Misbehaving helpers, timeouts and cancellation with the real reactor."""

    @onRealReactor
    def test_out_of_descriptors(self) -> Generator[Any, Any, None]:
        """
        When the channel or the pidfd cannot be made (EMFILE), the acquisition fails with a
        HelperFailedError carrying the errno (it does not hang); a started helper is killed and
        reaped; later acquisitions still work.
        """
        from twisted.internet import reactor

        import procket_twisted._twisted.reactor_client as client

        request = [SocketRequest(0, "tcp", "127.0.0.1")]
        for name, target in (("socketpair", client.socket), ("pidfd_open", client.os)):
            before = children()
            original = getattr(target, name)

            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

            setattr(target, name, refuse)
            try:
                acquired = acquireSockets(reactor, request, progname=FAKE, direct=False)
                error = yield self.assertFailure(acquired, HelperFailedError)
            finally:
                setattr(target, name, original)
            self.assertEqual((error.errno, error.step), (errno.EMFILE, "spawn"), name)
            self.assertEqual(children(), before, name)
        sockets = yield acquireSockets(reactor, request, progname=FAKE, direct=False)
        sockets[0].close()

    @onRealReactor
    def test_error_modes(self) -> Generator[Any, Any, None]:
        """
        Every helper misbehaviour makes listen fail with CannotListenError for the endpoint's
        address, carrying the right typed error (type, errno, step); nothing is left behind.
        """
        before = self.snapshot()
        for mode, (kind, code, step) in ERROR_MODES.items():
            self.mode(mode)
            listening = self.endpoint().listen(EchoFactory())
            error = yield self.assertFailure(listening, CannotListenError)
            self.assertEqual((error.interface, error.port), ("127.0.0.1", 0), mode)
            problem = error.socketError
            self.assertIsInstance(problem, kind, f"{mode}: {problem!r}")
            self.assertEqual((problem.errno, problem.step), (code, step), f"{mode}: {problem}")
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_datagram_error_mode(self) -> Generator[Any, Any, None]:
        """A datagram endpoint's helper failure is CannotListenError with the typed error too."""
        from twisted.internet import reactor

        self.mode("error-policy")
        endpoint = ProcketDatagramServerEndpoint(
            reactor, 0, "127.0.0.1", progname=FAKE, direct=False
        )
        error = yield self.assertFailure(endpoint.listen(DatagramEcho()), CannotListenError)
        self.assertIsInstance(error.socketError, PolicyDeniedError)

    @onRealReactor
    def test_timeout(self) -> Generator[Any, Any, None]:
        """
        A helper that never answers fails listen with HelperTimeoutError (errno ETIMEDOUT, step
        timeout) once the timeout has passed and well before the helper would end by itself
        (timeout + TIMEOUT_SLACK, against its 30-second hang); by the time the Deferred fails the
        child was killed and reaped (its pid is no child of ours, not even a zombie); nothing is
        open. Fails if the helper is not killed at the timeout (the failure then comes only when
        it ends by itself, or never), if it is not reaped, or if the timeout fires early.
        """
        from twisted.internet import reactor

        self.mode("hang")
        before = self.snapshot()
        started = time.monotonic()
        listening = self.endpoint(timeout=0.5).listen(EchoFactory())
        pid = yield self.startedHelper(before)
        error = yield self.assertFailure(
            failsWithin(reactor, listening, 0.5 + TIMEOUT_SLACK), CannotListenError
        )
        elapsed = time.monotonic() - started
        self.assertNotIn(pid, children(), "the timed-out helper is still our child")
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 0.5 + TIMEOUT_SLACK)
        problem = error.socketError
        self.assertIsInstance(problem, HelperTimeoutError)
        self.assertEqual((problem.errno, problem.step), (errno.ETIMEDOUT, "timeout"))
        self.assertIn("0.5 s", str(problem))
        yield self.assertNoFdMore(before)
        yield self.assertNothingLeft(before, timeout=2.0)

    @onRealReactor
    def test_reply_after_timeout(self) -> Generator[Any, Any, None]:
        """
        A helper that answers with its fds (a TCP and a UDP socket) but then never exits
        (``ok-then-hang``) is killed at the timeout: the acquisition fails with
        HelperTimeoutError, not with the sockets, within timeout + TIMEOUT_SLACK; the child is
        reaped by then; the fds that were waiting on the channel were received and closed, so
        this process holds no fd more than before. Fails if a late reply's fds are kept (leaked)
        or handed out, or if the helper is not killed or not reaped.
        """
        from twisted.internet import reactor

        self.mode("ok-then-hang")
        before = self.snapshot()
        requests = [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")]
        acquired = acquireSockets(reactor, requests, progname=FAKE, direct=False, timeout=2.0)
        pid = yield self.startedHelper(before)
        answered = yield waitFor(reactor, lambda: replyWaiting(before[0]), 2.0)
        self.assertTrue(
            answered, "the helper's answer never reached the channel before the timeout"
        )
        error = yield self.assertFailure(
            failsWithin(reactor, acquired, 2.0 + TIMEOUT_SLACK), HelperTimeoutError
        )
        self.assertEqual((error.errno, error.step), (errno.ETIMEDOUT, "timeout"))
        self.assertNotIn(pid, children(), "the timed-out helper is still our child")
        yield self.assertNoFdMore(before)
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_reply_after_cancel(self) -> Generator[Any, Any, None]:
        """
        Cancelling an acquisition whose helper has answered with its fds but not exited
        (``ok-then-hang``: the answer waits unread on the channel) fails it with CancelledError
        at once; the helper is killed (its child is gone within seconds, long before its own
        30-second hang or the 30-second timeout would end it) and reaped; the fds of the answer
        are received and closed, so this process holds no fd more than before. Fails if cancel
        does not kill the helper, or if the answer's fds are leaked.
        """
        from twisted.internet import reactor

        self.mode("ok-then-hang")
        before = self.snapshot()
        requests = [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")]
        acquired = acquireSockets(reactor, requests, progname=FAKE, direct=False, timeout=30)
        pid = yield self.startedHelper(before)
        answered = yield waitFor(reactor, lambda: replyWaiting(before[0]), 10.0)
        self.assertTrue(answered, "the helper's answer never reached the channel")
        acquired.cancel()
        yield self.assertFailure(acquired, defer.CancelledError)
        gone = yield waitFor(reactor, lambda: pid not in children(), 5.0)
        self.assertTrue(gone, "the cancelled helper was not killed and reaped")
        yield self.assertNoFdMore(before)
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_endpoint_reply_after_cancel(self) -> Generator[Any, Any, None]:
        """
        The same through an endpoint: cancelling listen after the helper has answered fails it
        with CancelledError, adopts nothing, kills and reaps the helper and leaves no fd open.
        """
        from twisted.internet import reactor

        self.mode("ok-then-hang")
        before = self.snapshot()
        listening = self.endpoint(timeout=30).listen(EchoFactory())
        pid = yield self.startedHelper(before)
        answered = yield waitFor(reactor, lambda: replyWaiting(before[0]), 10.0)
        self.assertTrue(answered, "the helper's answer never reached the channel")
        listening.cancel()
        yield self.assertFailure(listening, defer.CancelledError)
        gone = yield waitFor(reactor, lambda: pid not in children(), 5.0)
        self.assertTrue(gone, "the cancelled helper was not killed and reaped")
        yield self.assertNoFdMore(before)
        yield self.assertNothingLeft(before)

    @onRealReactor
    def test_cancel_kills_helper(self) -> Generator[Any, Any, None]:
        """
        Cancelling listen's Deferred while the helper hangs fails it with CancelledError at once,
        kills the helper (the child disappears long before its timeout) and leaves nothing open.
        """
        from twisted.internet import reactor

        self.mode("hang")
        before = self.snapshot()
        listening = self.endpoint(timeout=30).listen(EchoFactory())
        started = yield waitFor(reactor, lambda: bool(children() - before[1]))
        self.assertTrue(started, "the helper never started")
        listening.cancel()
        yield self.assertFailure(listening, defer.CancelledError)
        yield self.assertNothingLeft(before, timeout=5.0)

    @onRealReactor
    def test_reactor_responsive(self) -> Generator[Any, Any, None]:
        """
        While the helper runs (here: hangs until the timeout), the reactor keeps running other
        work: a LoopingCall keeps ticking.
        """
        from twisted.internet import reactor

        self.mode("hang")
        ticks = []
        loop = task.LoopingCall(lambda: ticks.append(None))
        loop.clock = reactor
        loop.start(0.02, now=False)
        try:
            listening = self.endpoint(timeout=0.5).listen(EchoFactory())
            yield self.assertFailure(listening, CannotListenError)
        finally:
            loop.stop()
        # A blocking wait would allow one late tick at most; 0.5 s at 0.02 s is about 25.
        self.assertGreaterEqual(len(ticks), 5)


class SynchronousPathTests(FakeHelperMixin, SynchronousTestCase):
    """
    Before the reactor runs (``twistd``'s ``privilegedStartService``), the blocking API is used:
    the Deferred has fired when acquireSockets returns, and a failure raises at startup.
    """

    def setUp(self) -> None:
        self.resetFakeHelper()

    def test_acquire_sockets(self) -> None:
        """With a reactor that is not running, the sockets are there when the call returns."""
        runs = self.runLog()
        reactor = MemoryReactor()
        acquired = acquireSockets(
            reactor, [SocketRequest(0, "tcp", "127.0.0.1")], progname=FAKE, direct=False
        )
        [sock] = self.successResultOf(acquired)
        with sock:
            self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertEqual(len(runs()), 1)

    def test_failure(self) -> None:
        """A helper failure has failed the Deferred when the call returns."""
        self.mode("error-policy")
        acquired = acquireSockets(
            MemoryReactor(), [SocketRequest(0, "udp", "127.0.0.1")], progname=FAKE, direct=False
        )
        failure = self.failureResultOf(acquired, PolicyDeniedError)
        self.assertEqual(failure.value.step, "policy")

    def test_timeout(self) -> None:
        """
        A hanging helper times out on the blocking path too (the blocking driver,
        procket_twisted._client.spawn): HelperTimeoutError after the timeout and within
        timeout + TIMEOUT_SLACK (the helper would hang 30 s), the helper killed and reaped by
        the time it is raised, and no fd left. Fails if the blocking driver does not kill the
        helper at its deadline (it would then wait for the helper to end by itself).
        """
        self.mode("hang")
        pids, fds = children(), openFds()
        started = time.monotonic()
        acquired = acquireSockets(
            MemoryReactor(),
            [SocketRequest(0, "tcp", "127.0.0.1")],
            progname=FAKE,
            direct=False,
            timeout=0.3,
        )
        elapsed = time.monotonic() - started
        error = self.failureResultOf(acquired, HelperTimeoutError).value
        self.assertEqual((error.errno, error.step), (errno.ETIMEDOUT, "timeout"))
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 0.3 + TIMEOUT_SLACK)
        self.assertEqual(children() - pids, set())
        self.assertEqual(describeFds(openFds() - fds), {})

    def test_reply_after_timeout(self) -> None:
        """
        On the blocking path, a helper that answers with its fds but never exits
        (``ok-then-hang``) times out in time, is killed and reaped, and the fds it sent are
        closed: no fd more than before. Fails if the blocking driver keeps the late reply's fds.
        """
        self.mode("ok-then-hang")
        pids, fds = children(), openFds()
        started = time.monotonic()
        acquired = acquireSockets(
            MemoryReactor(),
            [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")],
            progname=FAKE,
            direct=False,
            timeout=1.0,
        )
        self.assertLess(time.monotonic() - started, 1.0 + TIMEOUT_SLACK)
        self.failureResultOf(acquired, HelperTimeoutError)
        self.assertEqual(children() - pids, set())
        self.assertEqual(describeFds(openFds() - fds), {})

    def test_endpoint(self) -> None:
        """An endpoint's listen on a reactor that is not running has adopted when it returns."""
        reactor = MemoryReactor()
        endpoint = ProcketServerEndpoint(reactor, 0, "127.0.0.1", progname=FAKE, direct=False)
        self.successResultOf(endpoint.listen(Factory.forProtocol(Protocol)))
        self.assertEqual(len(reactor.adoptedPorts), 1)
        self.assertEqual(reactor.adoptedPorts[0][1], socket.AF_INET)

    def test_service_fails_at_startup(self) -> None:
        """
        A datagram service whose helper refuses raises CannotListenError from
        privilegedStartService, with the typed error inside: twistd stops with it.
        """
        self.mode("error-bind")
        endpoint = ProcketDatagramServerEndpoint(
            MemoryReactor(), 0, "127.0.0.1", progname=FAKE, direct=False
        )
        service = DatagramServerEndpointService(endpoint, DatagramProtocol())
        error = self.assertRaises(CannotListenError, service.privilegedStartService)
        self.assertIsInstance(error.socketError, SocketError)
        self.assertEqual(error.socketError.errno, errno.EADDRINUSE)

    def test_bad_arguments(self) -> None:
        """Bad requests or timeout raise at once, whatever the reactor, before anything runs."""
        runs = self.runLog()
        for reactor in (MemoryReactor(), None):
            self.assertRaises(TypeError, acquireSockets, reactor, ["tcp:80"], progname=FAKE)
            self.assertRaises(ValueError, acquireSockets, reactor, [], progname=FAKE)
            self.assertRaises(
                ValueError,
                acquireSockets,
                reactor,
                [SocketRequest(0)],
                progname=FAKE,
                timeout=0,
            )
        self.assertEqual(runs(), [])
