"""
The Twisted layer on the real reactor, as a pytest user tests it: pytest-twisted runs the reactor
(``--reactor=asyncio`` too) and these test functions wait on Deferreds or coroutines. The helper is
the FAKE one (``fake_helper.py``), run with ``direct=False`` and port 0 as in
``test_reactor_client``.

Under trial this module only imports: it holds no TestCase, so it contributes no tests.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any, Generator

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError

from procket_twisted import HelperTimeoutError, SocketError, SocketRequest
from procket_twisted.endpoints import (
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    acquireSockets,
)

from .fake_helper_support import FAKE
from .test_reactor_client import (
    TIMEOUT_SLACK,
    DatagramClient,
    DatagramEcho,
    EchoClient,
    EchoFactory,
    children,
    describeFds,
    failsWithin,
    openFds,
    replyWaiting,
    waitFor,
)


@pytest.fixture
def helperMode(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A function that sets the fake helper's mode for this test (``ok`` until then)."""
    monkeypatch.setenv("FAKE_HELPER_MODE", "ok")
    monkeypatch.delenv("FAKE_HELPER_LOG", raising=False)
    return lambda mode: monkeypatch.setenv("FAKE_HELPER_MODE", mode)


def getReactor() -> Any:
    """The reactor pytest-twisted installed and runs (imported only now, never at import)."""
    from twisted.internet import reactor

    return reactor


async def nothingLeft(before: tuple, timeout: float = 5.0) -> None:
    """Assert that, within TIMEOUT, every child since BEFORE is reaped and every fd closed."""
    reactor = getReactor()
    fds, pids = before
    await waitFor(reactor, lambda: not children() - pids, timeout)
    assert children() - pids == set(), "a helper process was left behind"
    await waitFor(reactor, lambda: not openFds() - fds, timeout)
    assert describeFds(openFds() - fds) == {}, "descriptors were left open"


@pytest_twisted.inlineCallbacks
def test_acquire_sockets(helperMode: Any) -> Generator[Any, Any, None]:
    """
    With the reactor running, acquireSockets runs the helper as a child and fires with a working
    listening socket (a client connects to it).
    """
    reactor = getReactor()
    assert reactor.running
    [sock] = yield acquireSockets(
        reactor, [SocketRequest(0, "tcp", "127.0.0.1")], progname=FAKE, direct=False
    )
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass


@pytest_twisted.ensureDeferred
async def test_tcp_echo(helperMode: Any) -> None:
    """A ProcketServerEndpoint port serves a real TCP client; nothing is left afterwards."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    reactor = getReactor()
    before = (openFds(), children())
    factory = EchoFactory()
    endpoint = ProcketServerEndpoint(reactor, 0, "127.0.0.1", progname=FAKE, direct=False)
    port = await endpoint.listen(factory)
    client = EchoClient(b"pytest says hi")
    try:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        received = await client.done
    finally:
        await port.stopListening()
    await defer.gatherResults(factory.lost)
    assert received == b"pytest says hi"
    await nothingLeft(before)


@pytest_twisted.ensureDeferred
async def test_udp_echo(helperMode: Any) -> None:
    """A ProcketDatagramServerEndpoint port receives a datagram and answers it."""
    reactor = getReactor()
    endpoint = ProcketDatagramServerEndpoint(reactor, 0, "127.0.0.1", progname=FAKE, direct=False)
    server = await endpoint.listen(DatagramEcho())
    target = ("127.0.0.1", server.getHost().port)
    client = DatagramClient(target, b"are you there")
    clientPort = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        data, source = await client.answer
    finally:
        await clientPort.stopListening()
        await server.stopListening()
    assert (data, source) == (b"are you there", target)


@pytest_twisted.ensureDeferred
async def test_error_mode(helperMode: Any) -> None:
    """A helper's bind failure is CannotListenError carrying the SocketError and its errno."""
    reactor = getReactor()
    helperMode("error-bind")
    endpoint = ProcketServerEndpoint(reactor, 0, "127.0.0.1", progname=FAKE, direct=False)
    with pytest.raises(CannotListenError) as raised:
        await endpoint.listen(EchoFactory())
    assert isinstance(raised.value.socketError, SocketError)
    assert raised.value.socketError.errno == errno.EADDRINUSE
    assert (raised.value.interface, raised.value.port) == ("127.0.0.1", 0)


@pytest_twisted.ensureDeferred
async def test_timeout(helperMode: Any) -> None:
    """
    A hanging helper gives HelperTimeoutError after the timeout, and within timeout +
    TIMEOUT_SLACK (it would hang 30 s by itself), while the reactor keeps ticking; the child was
    killed and reaped by the time listen fails, and nothing stays open. Fails if the helper is not
    killed at the timeout.
    """
    reactor = getReactor()
    helperMode("hang")
    before = (openFds(), children())
    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(None))
    loop.clock = reactor
    loop.start(0.02, now=False)
    endpoint = ProcketServerEndpoint(
        reactor, 0, "127.0.0.1", progname=FAKE, direct=False, timeout=0.5
    )
    started = time.monotonic()
    try:
        with pytest.raises(CannotListenError) as raised:
            await failsWithin(reactor, endpoint.listen(EchoFactory()), 0.5 + TIMEOUT_SLACK)
    finally:
        loop.stop()
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.5 + TIMEOUT_SLACK
    assert children() - before[1] == set(), "the timed-out helper is still our child"
    assert isinstance(raised.value.socketError, HelperTimeoutError)
    assert raised.value.socketError.step == "timeout"
    assert len(ticks) >= 5  # a blocked reactor would tick once at most
    await nothingLeft(before, timeout=2.0)


@pytest_twisted.ensureDeferred
async def test_reply_after_timeout(helperMode: Any) -> None:
    """
    A helper that answers with its fds but never exits (``ok-then-hang``) is killed at the
    timeout: HelperTimeoutError in time, the child reaped by then, the answer's fds received and
    closed, so this process holds no fd more than before (after the reactor ran a little longer).
    Fails if a late answer's fds are leaked or handed out.
    """
    reactor = getReactor()
    helperMode("ok-then-hang")
    before = (openFds(), children())
    acquired = acquireSockets(
        reactor,
        [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")],
        progname=FAKE,
        direct=False,
        timeout=2.0,
    )
    assert await waitFor(reactor, lambda: replyWaiting(before[0]), 2.0), "no answer came"
    with pytest.raises(HelperTimeoutError):
        await failsWithin(reactor, acquired, 2.0 + TIMEOUT_SLACK)
    assert children() - before[1] == set(), "the timed-out helper is still our child"
    await task.deferLater(reactor, 0.2, lambda: None)
    assert describeFds(openFds() - before[0]) == {}, "descriptors were left open"


@pytest_twisted.inlineCallbacks
def test_cancel_kills_helper(helperMode: Any) -> Generator[Any, Any, None]:
    """Cancelling listen while the helper hangs kills it and closes everything."""
    reactor = getReactor()
    helperMode("hang")
    before = (openFds(), children())
    endpoint = ProcketServerEndpoint(
        reactor, 0, "127.0.0.1", progname=FAKE, direct=False, timeout=30
    )
    listening = endpoint.listen(EchoFactory())
    started = yield waitFor(reactor, lambda: bool(children() - before[1]))
    assert started, "the helper never started"
    listening.cancel()
    with pytest.raises(defer.CancelledError):
        yield listening
    yield defer.ensureDeferred(nothingLeft(before))
