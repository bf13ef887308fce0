"""
Raw IP sockets in Twisted: L{RawPort}, the transport, and L{RawEndpoint}, the datagram endpoint
(C{procket:raw:icmp}, C{procket:raw6:icmpv6} through C{datagramEndpointFromString}).

Twisted's C{adoptDatagramPort} takes a raw IPv4 socket, but treats it as UDP: C{getHost} reports
the protocol number as a UDP port, IPv6 addresses arrive as they do for UDP, and there is no way to
learn a packet's hop limit. L{RawPort} delivers each packet to a C{DatagramProtocol}-style
protocol as C{datagramReceived(packet, (host, 0))}: from an IPv4 socket with the IP header
included, as the kernel gives it; from an IPv6 socket without it (the kernel never passes the IPv6
header up). C{transport.receivedHopLimit} is the packet's TTL or hop limit while it is delivered.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReadDescriptor,
    ISystemHandle,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._client.api import DEFAULT_TIMEOUT
from .._client.locate import Progname
from .._client.raw import PROTOCOL_NUMBERS, RawRequest
from .endpoints import SingleUse, _HelperEndpoint, checkPacketSize
from .interfaces import IDatagramServerEndpoint

__all__ = [
    "RawAddress",
    "RawPort",
    "RawEndpoint",
    "AdoptedRawEndpoint",
    "adoptRawSocket",
    "RAW_MAX_PACKET_SIZE",
]

#: The largest IP packet (the IPv4 total length is 16 bits).
RAW_MAX_PACKET_SIZE = 65535
_FAMILY_NAMES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
# Linux values; the socket module lacks IP_RECVTTL.
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
_IP_TTL = getattr(socket, "IP_TTL", 2)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_ANCILLARY_SIZE = socket.CMSG_SPACE(struct.calcsize("=i"))
#: At most this many bytes are read in one doRead, so that one busy socket cannot starve the
#: reactor (Twisted's UDP port reads as much).
_MAX_THROUGHPUT = 256 * 1024

RawTarget = Union[str, Tuple[Any, ...]]


@implementer(IAddress)
@dataclass(frozen=True)
class RawAddress:
    """
    The local address of a raw IP socket.

    @ivar family: C{"inet"} or C{"inet6"}.
    @ivar host: the bound address (C{0.0.0.0} or C{::} when not bound).
    @ivar protocol: the IP protocol number (1 for ICMP, 58 for ICMPv6...).
    """

    family: str
    host: str
    protocol: int

    @property
    def type(self) -> str:
        """C{"RAW"}, as C{IPv4Address.type} is C{"TCP"} or C{"UDP"}."""
        return "RAW"


@implementer(IListeningPort, IReadDescriptor, ISystemHandle)
class RawPort:
    """
    A raw IP socket (or any IPv4 or IPv6 datagram socket) serving a C{DatagramProtocol}.

    The protocol gets C{datagramReceived(packet, (host, 0))} for each packet (IPv4: the IP header
    first; IPv6: the payload alone) and sends with C{transport.write(packet, (host, 0))}. The
    port owns SOCKET from C{startListening} on, and closes it when it stops.

    @ivar socket: the socket, for unprivileged options (an ICMPv6 filter, for example).
    @ivar protocol: the protocol it delivers to.
    @ivar maxPacketSize: the longest packet read whole; longer ones are truncated.
    @ivar receivedHopLimit: while C{datagramReceived} runs, the TTL (IPv4) or hop limit (IPv6)
        the packet arrived with, or None when the kernel did not tell; None otherwise.
    """

    _log = Logger()

    def __init__(
        self,
        sock: socket.socket,
        protocol: Any,
        maxPacketSize: int = RAW_MAX_PACKET_SIZE,
        reactor: Any = None,
    ) -> None:
        """
        @raise ValueError: for a socket that is not an IPv4 or IPv6 datagram or raw socket, or a
            bad MAXPACKETSIZE.
        """
        if sock.family not in _FAMILY_NAMES or sock.type not in (
            socket.SOCK_RAW,
            socket.SOCK_DGRAM,
        ):
            raise ValueError(
                f"a raw port needs an IPv4 or IPv6 raw socket, not {sock.family.name} "
                f"{sock.type.name}"
            )
        checkPacketSize(maxPacketSize, RAW_MAX_PACKET_SIZE)
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        self.socket = sock
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.reactor = reactor
        self.receivedHopLimit: Optional[int] = None
        self.family = _FAMILY_NAMES[sock.family]
        self._state = "new"  # then listening, stopping, stopped
        self._stopped: List[defer.Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe()} ({self._state})>"

    def _describe(self) -> str:
        names = {number: name for name, number in PROTOCOL_NUMBERS.items()}
        number = self.socket.proto
        return f"raw {names.get(number, 'protocol')} ({number}) over {self.family}"

    # IListeningPort

    def startListening(self) -> None:
        """Start delivering packets to the protocol (C{makeConnection}, then reading)."""
        if self._state != "new":
            raise RuntimeError(f"{self!r} cannot start listening again")
        self.socket.setblocking(False)
        level, option = (
            (socket.IPPROTO_IP, _IP_RECVTTL)
            if self.family == "inet"
            else (socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT)
        )
        try:
            self.socket.setsockopt(level, option, 1)
        except OSError:  # pragma: no cover - every Linux IP socket takes it
            pass
        self._state = "listening"
        self.protocol.makeConnection(self)
        if self._state == "listening":  # unless startProtocol stopped it
            self.reactor.addReader(self)

    def stopListening(self) -> defer.Deferred[None]:
        """
        Stop reading, and close the socket in the next reactor turn.

        @return: a Deferred that fires once the socket is closed and the protocol stopped.
        """
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return defer.succeed(None)
        stopped: defer.Deferred[None] = defer.Deferred()
        self._stopped.append(stopped)
        if self._state == "listening":
            self._state = "stopping"
            self.reactor.removeReader(self)
            self.reactor.callLater(0, self.connectionLost, Failure(error.ConnectionDone()))
        return stopped

    loseConnection = stopListening

    def getHost(self) -> RawAddress:
        """The family, local address and IP protocol of the socket."""
        return RawAddress(self.family, self.socket.getsockname()[0], self.socket.proto)

    # ISystemHandle

    def getHandle(self) -> socket.socket:
        """The socket."""
        return self.socket

    # IReadDescriptor

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self.socket.fileno()

    def logPrefix(self) -> str:
        """The protocol's class name, for log lines, as Twisted's ports do."""
        return type(self.protocol).__name__

    def doRead(self) -> None:
        """Deliver the packets that are waiting (up to 256 KiB of them)."""
        read = 0
        while read < _MAX_THROUGHPUT and self._state == "listening":
            try:
                packet, ancillary, _, address = self.socket.recvmsg(
                    self.maxPacketSize, _ANCILLARY_SIZE
                )
            except BlockingIOError:
                return
            except InterruptedError:  # pragma: no cover - Python retries EINTR itself
                continue
            read += len(packet)
            self.receivedHopLimit = _hopLimit(ancillary)
            try:
                self.protocol.datagramReceived(packet, (_host(address), 0))
            except Exception:
                self._log.failure("Unhandled error in {protocol}.datagramReceived",
                                  protocol=self.logPrefix())  # fmt: skip
            finally:
                self.receivedHopLimit = None

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        """Close the socket and stop the protocol (once; the reactor calls it at shutdown too)."""
        if self._state == "stopped":
            return
        if self._state == "listening":
            self.reactor.removeReader(self)
        self._state = "stopped"
        try:
            self.protocol.doStop()
        finally:
            self.socket.close()
            waiting, self._stopped = self._stopped, []
            for stopped in waiting:
                stopped.callback(None)

    # the transport

    def write(self, packet: bytes, address: RawTarget) -> None:
        """
        Send PACKET to ADDRESS: C{(host, 0)} as C{datagramReceived} gives it, or a host.

        With IP_HDRINCL (C{headerIncluded}), PACKET starts with the IPv4 header; otherwise the
        kernel adds it. On an ICMPv6 socket the kernel computes the ICMPv6 checksum.

        @raise InvalidAddressError: for a host that is not a numeric address of the socket's
            family (no name is looked up: that would block the reactor).
        @raise MessageLengthError: for a packet too long to send.
        @raise OSError: as C{sendto} does (for example ENOBUFS, or EACCES for a broadcast
            address without C{setBroadcastAllowed(True)}).
        """
        host = address if isinstance(address, str) else address[0]
        target = self._target(host)
        while True:
            try:
                self.socket.sendto(packet, target)
                return
            except InterruptedError:  # pragma: no cover - Python retries EINTR itself
                continue
            except OSError as problem:
                if problem.errno == errno.EMSGSIZE:
                    raise error.MessageLengthError("message too long") from None
                raise

    def _target(self, host: Any) -> Tuple[str, int]:
        try:
            parsed = ipaddress.ip_address(host)
        except ValueError:
            raise error.InvalidAddressError(
                host, "not a numeric IPv4 or IPv6 address (names are not looked up)"
            ) from None
        if (parsed.version == 6) != (self.family == "inet6"):
            raise error.InvalidAddressError(host, f"not an address of family {self.family}")
        return (str(host), 0)

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Allow (or forbid) sending to a broadcast address (SO_BROADCAST)."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, bool(enabled))

    def getBroadcastAllowed(self) -> bool:
        """Whether sending to a broadcast address is allowed."""
        return bool(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))


def _hopLimit(ancillary: Sequence[Tuple[int, int, bytes]]) -> Optional[int]:
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, _IP_TTL), (socket.IPPROTO_IPV6, _IPV6_HOPLIMIT)):
            if len(data) >= 4:
                return int(struct.unpack("=i", data[:4])[0])
    return None


def _host(address: Any) -> str:
    """The host of a received address; an IPv6 scope is kept (C{fe80::1%2}) for replies."""
    host = str(address[0])
    if len(address) == 4 and address[3] and "%" not in host:
        host = f"{host}%{address[3]}"
    return host


def adoptRawSocket(
    reactor: Any, sock: socket.socket, protocol: Any, maxPacketSize: int = RAW_MAX_PACKET_SIZE
) -> RawPort:
    """
    Serve PROTOCOL from SOCK (from L{procket_twisted.open_raw}, for example): a listening
    L{RawPort}, which owns SOCK from now on. SOCK is closed if this fails.
    """
    try:
        port = RawPort(sock, protocol, maxPacketSize, reactor)
        port.startListening()
    except BaseException:
        sock.close()
        raise
    return port


@implementer(IDatagramServerEndpoint)
class RawEndpoint(_HelperEndpoint):
    """
    Raw IP sockets from the helper: C{procket:raw:icmp}, C{procket:raw6:icmpv6}.

    Each C{listen} asks the helper for a new raw socket (the policy must name C{kind=raw}) and
    serves the protocol from it with a L{RawPort}.
    """

    def __init__(
        self,
        reactor: Any,
        ipProtocol: Union[int, str],
        interface: Optional[str] = None,
        maxPacketSize: int = RAW_MAX_PACKET_SIZE,
        *,
        family: Optional[str] = None,
        headerIncluded: bool = False,
        progname: Progname = None,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = True,
        **options: Any,
    ) -> None:
        """
        @param ipProtocol: the IP protocol, a number from 1 to 255 or a name (C{"icmp"},
            C{"icmpv6"}, C{"udp"}...).
        @param interface: a numeric local address to bind, or None (every address).
        @param family: C{"inet"} or C{"inet6"}, when INTERFACE does not tell (default: inet6
            for ICMPv6, else inet).
        @param headerIncluded: IP_HDRINCL: written packets start with their IPv4 header.
        @param options: socket options, as L{RawRequest} takes them (C{mark=42}...).
        @raise ValueError: naming the bad argument.
        """
        self._raw = RawRequest(ipProtocol, interface or None, family, headerIncluded, **options)
        checkPacketSize(maxPacketSize, RAW_MAX_PACKET_SIZE)
        super().__init__(reactor, self._raw, progname, timeout, direct)
        self._maxPacketSize = maxPacketSize

    def listen(self, protocol: Any) -> defer.Deferred[IListeningPort]:
        """
        @return: a Deferred firing with the listening L{RawPort} serving PROTOCOL, or failing
            with C{CannotListenError} whose C{socketError} is the L{ProcketError}.
        """
        return self._listen(
            lambda sock: adoptRawSocket(self._reactor, sock, protocol, self._maxPacketSize)
        )

    def _where(self) -> Tuple[str, int]:
        """A CannotListenError names the address (or "") and the protocol number."""
        return str(self._raw.ip or ""), self._raw.number


@implementer(IDatagramServerEndpoint)
class AdoptedRawEndpoint(SingleUse):
    """A raw endpoint for a socket already acquired (L{acquireSockets}, L{open_raw}): single use."""

    def __init__(
        self, reactor: Any, sock: socket.socket, maxPacketSize: int = RAW_MAX_PACKET_SIZE
    ) -> None:
        checkPacketSize(maxPacketSize, RAW_MAX_PACKET_SIZE)
        self.reactor = reactor
        self.socket = sock
        self.maxPacketSize = maxPacketSize

    def _release(self) -> None:
        self.socket.close()

    def __repr__(self) -> str:
        return f"<AdoptedRawEndpoint {self.socket!r}>"

    def listen(self, protocol: Any) -> defer.Deferred[IListeningPort]:
        """Adopt the socket for PROTOCOL, once."""
        return self._adoptOnce(
            lambda: adoptRawSocket(self.reactor, self.socket, protocol, self.maxPacketSize)
        )
