"""
Twisted endpoints whose sockets come from the helper: a stream server endpoint (C{procket:tcp},
C{procket:tcp6}, TLS on top for C{procket:ssl}), a datagram server endpoint (C{procket:udp}),
single-use endpoints for sockets already acquired, and the adoption step they all share.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Iterable, Optional, Tuple

from twisted.internet import defer, error, fdesc
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from .._client.api import DEFAULT_TIMEOUT
from .._client.errors import ProcketError
from .._client.kinds import AnyRequest
from .._client.locate import Progname
from .._client.request import SocketRequest
from .interfaces import IDatagramServerEndpoint
from .reactor_client import acquireSockets

__all__ = [
    "AdoptedStreamEndpoint",
    "release",
    "ProcketServerEndpoint",
    "ProcketDatagramServerEndpoint",
    "TLSServerEndpoint",
    "AdoptedDatagramServerEndpoint",
    "adoptSocket",
    "SingleUse",
]

DEFAULT_STREAM_BACKLOG = 50  # Twisted's tcp: default
DEFAULT_MAX_PACKET_SIZE = 8192  # Twisted's udp default


def adoptSocket(
    reactor: Any,
    sock: socket.socket,
    factoryOrProtocol: Any,
    maxPacketSize: int = DEFAULT_MAX_PACKET_SIZE,
) -> IListeningPort:
    """
    Hand SOCK to the reactor: a listening stream socket serves FACTORYORPROTOCOL (a factory), a
    datagram socket delivers to it (a C{DatagramProtocol}). SOCK is closed in every case; the
    reactor keeps its own descriptor.
    """
    try:
        sock.setblocking(False)
        port: IListeningPort
        if sock.type == socket.SOCK_STREAM:
            port = reactor.adoptStreamPort(sock.fileno(), sock.family, factoryOrProtocol)
        else:
            port = reactor.adoptDatagramPort(
                sock.fileno(), sock.family, factoryOrProtocol, maxPacketSize
            )
        return port
    finally:
        sock.close()


def checkPacketSize(maxPacketSize: Any, largest: Optional[int] = None) -> None:
    """
    MAXPACKETSIZE, the largest packet, frame or datagram a port reads whole, checked: an integer
    from 1 (to LARGEST, when there is a limit).

    @raise ValueError: naming the bad value and the range.
    """
    if (
        not isinstance(maxPacketSize, int)
        or isinstance(maxPacketSize, bool)
        or not 1 <= maxPacketSize <= (largest or maxPacketSize)
    ):
        what = f"an integer from 1 to {largest}" if largest else "a positive integer"
        raise ValueError(f"maxPacketSize must be {what}, not {maxPacketSize!r}")


class _HelperEndpoint:
    """What the stream and datagram endpoints share: one request, acquired on each listen."""

    #: Where sockets come from; `procket_twisted.testing` replaces it with a fake helper.
    _acquire = staticmethod(acquireSockets)

    def __init__(
        self, reactor: Any, request: AnyRequest, progname: Progname, timeout: float, direct: bool
    ) -> None:
        self._reactor = reactor
        self._request = request
        self._progname = progname
        self._timeout = timeout
        self._direct = direct

    def _listen(self, adopt: Any) -> defer.Deferred[IListeningPort]:
        acquired = self._acquire(
            self._reactor,
            [self._request],
            progname=self._progname,
            timeout=self._timeout,
            direct=self._direct,
        )
        return acquired.addCallbacks(lambda sockets: adopt(sockets[0]), self._cannotListen)

    def _where(self) -> Tuple[str, int]:
        """The (interface, port) a CannotListenError names for this endpoint."""
        request: Any = self._request  # TCP and UDP; the other kinds' endpoints override this
        return request.ip, request.port

    def _cannotListen(self, failure: Failure) -> Failure:
        failure.trap(ProcketError)
        interface, port = self._where()
        return Failure(error.CannotListenError(interface, port, failure.value))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._request.describe()}>"


@implementer(IStreamServerEndpoint)
class ProcketServerEndpoint(_HelperEndpoint):
    """
    A TCP server endpoint on any port, for an unprivileged process: C{procket:tcp:80}.

    Each C{listen} asks the helper for a new listening socket (without blocking the reactor) and
    adopts it, so the endpoint can listen again after C{stopListening}, like C{tcp:}'s.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        interface: str = "",
        backlog: int = DEFAULT_STREAM_BACKLOG,
        *,
        progname: Progname = None,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = True,
        **options: Any,
    ) -> None:
        """
        @param interface: a numeric local address; C{""} is every IPv4 address.
        @param options: socket options, as L{SocketRequest} takes them (C{mark=42}...).
        @param progname: the helper command (see L{procket_twisted.listen}).
        @raise ValueError: for a bad port, interface or backlog.
        """
        request = SocketRequest(port, "tcp", interface or None, backlog, **options)
        super().__init__(reactor, request, progname, timeout, direct)

    def listen(self, protocolFactory: Any) -> defer.Deferred[IListeningPort]:
        """
        Before the reactor runs (twistd's C{privilegedStartService}, and the start of a
        C{task.react} main) the socket is acquired at once, blocking, and the Deferred has fired
        when this returns; once it runs, without blocking it. In a C{task.react} main, C{await
        task.deferLater(reactor, 0)} first to have the second.

        @return: a Deferred firing with the C{IListeningPort}, or failing with
            C{CannotListenError} whose C{socketError} is the L{ProcketError} (with its errno).
            Cancelling it kills the helper.
        """
        return self._listen(lambda sock: adoptSocket(self._reactor, sock, protocolFactory))


@implementer(IDatagramServerEndpoint)
class ProcketDatagramServerEndpoint(_HelperEndpoint):
    """A UDP endpoint on any port, for an unprivileged process: C{procket:udp:53}."""

    def __init__(
        self,
        reactor: Any,
        port: int,
        interface: str = "",
        maxPacketSize: int = DEFAULT_MAX_PACKET_SIZE,
        *,
        progname: Progname = None,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = True,
        **options: Any,
    ) -> None:
        """
        @raise ValueError: for a bad port, interface or packet size.
        """
        request = SocketRequest(port, "udp", interface or None, **options)
        if not isinstance(maxPacketSize, int) or maxPacketSize < 1:
            raise ValueError(f"maxPacketSize must be a positive integer, not {maxPacketSize!r}")
        super().__init__(reactor, request, progname, timeout, direct)
        self._maxPacketSize = maxPacketSize

    def listen(self, protocol: Any) -> defer.Deferred[IListeningPort]:
        """
        @return: a Deferred firing with the C{IListeningPort} delivering to PROTOCOL, or
            failing with C{CannotListenError}.
        """
        return self._listen(
            lambda sock: adoptSocket(self._reactor, sock, protocol, self._maxPacketSize)
        )


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """TLS on top of another stream server endpoint (C{procket:ssl:443})."""

    def __init__(self, wrapped: Any, contextFactory: Any) -> None:
        self._wrapped = wrapped
        self._contextFactory = contextFactory

    def listen(self, protocolFactory: Any) -> defer.Deferred[IListeningPort]:
        """Listen on the wrapped endpoint with PROTOCOLFACTORY behind TLS."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._wrapped.listen(  # type: ignore[no-any-return]
            TLSMemoryBIOFactory(self._contextFactory, False, protocolFactory)
        )


class SingleUse:
    """
    What the endpoints for something already acquired share: the first C{listen} adopts it; any
    later one fails with C{AlreadyListened}, as Twisted's C{AdoptedStreamServerEndpoint} does, and
    C{close} gives it up without listening (its descriptor is closed at once).
    """

    _used = False
    _closed = False

    def _adoptOnce(self, adopt: Callable[[], Any]) -> defer.Deferred[Any]:
        if self._used:
            done = "closed" if self._closed else "listened on"
            return defer.fail(
                error.AlreadyListened(
                    f"{self!r} was {done} already: an acquired endpoint is used once "
                    "(acquire another)"
                )
            )
        self._used = True
        try:
            return defer.succeed(adopt())
        except BaseException:
            return defer.fail()

    def close(self) -> None:
        """
        Give up what this endpoint holds without listening on it: its descriptor is closed now
        (not when the process exits), and a later C{listen} fails with C{AlreadyListened}. Does
        nothing once it has listened (the port owns the descriptor then) or been closed.
        """
        if not self._used:
            self._used = self._closed = True
            self._release()

    def _release(self) -> None:
        raise NotImplementedError


def release(acquired: Iterable[Any]) -> None:
    """
    Close everything of ACQUIRED (what L{acquireEndpoints} or L{acquireSockets} gave: endpoints
    not listened on, sockets, TUN devices) that is still held: the batch not needed after all.
    """
    for item in acquired:
        item.close()


@implementer(IStreamServerEndpoint)
class AdoptedStreamEndpoint(SingleUse, AdoptedStreamServerEndpoint):
    """
    A stream endpoint for a listening socket already acquired (L{acquireEndpoints}): like
    Twisted's C{AdoptedStreamServerEndpoint} (a subclass of it, for C{isinstance}), single use,
    the descriptor closed after adoption, plus L{close}.
    """

    def __repr__(self) -> str:
        return f"<AdoptedStreamEndpoint fd={self.fileno} family={self.addressFamily}>"

    def listen(self, protocolFactory: Any) -> defer.Deferred[IListeningPort]:
        """Adopt the listening socket for PROTOCOLFACTORY, once."""
        return self._adoptOnce(lambda: self._adopt(protocolFactory))

    def _adopt(self, protocolFactory: Any) -> IListeningPort:
        fdesc.setNonBlocking(self.fileno)
        port: IListeningPort = self.reactor.adoptStreamPort(
            self.fileno, self.addressFamily, protocolFactory
        )
        os.close(self.fileno)
        return port

    def _release(self) -> None:
        os.close(self.fileno)


@implementer(IDatagramServerEndpoint)
class AdoptedDatagramServerEndpoint(SingleUse):
    """
    A datagram endpoint for a descriptor already acquired: the counterpart of Twisted's
    C{AdoptedStreamServerEndpoint}. Single use: a second C{listen} fails with
    C{AlreadyListened}; the descriptor is closed after adoption.
    """

    _close = staticmethod(os.close)
    _setNonBlocking = staticmethod(fdesc.setNonBlocking)

    def __init__(
        self,
        reactor: Any,
        fileno: int,
        addressFamily: int,
        maxPacketSize: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        self.reactor = reactor
        self.fileno = fileno
        self.addressFamily = addressFamily
        self.maxPacketSize = maxPacketSize

    def listen(self, protocol: Any) -> defer.Deferred[IListeningPort]:
        """Adopt the descriptor for PROTOCOL, once."""
        return self._adoptOnce(lambda: self._adopt(protocol))

    def _adopt(self, protocol: Any) -> IListeningPort:
        self._setNonBlocking(self.fileno)
        port: IListeningPort = self.reactor.adoptDatagramPort(
            self.fileno, self.addressFamily, protocol, self.maxPacketSize
        )
        self._close(self.fileno)
        return port

    def _release(self) -> None:
        self._close(self.fileno)

    def __repr__(self) -> str:
        return f"<AdoptedDatagramServerEndpoint fd={self.fileno} family={self.addressFamily}>"
