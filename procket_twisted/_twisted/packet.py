"""
Packet sockets in Twisted: a listening port that delivers link-layer frames, an endpoint that gets
the socket from the helper, and the C{procket:packet:...} string form.

What a protocol receives depends on what it is:

  - a C{twisted.pair.ethernet.IEthernetProtocol} (an C{EthernetProtocol} with C{IPProtocol} and
    C{RawUDPProtocol} on top, say) gets C{datagramReceived(frame, partial)} for each whole frame,
    as C{twisted.pair.tuntap.TuntapPort} delivers them: use it on a raw (not cooked) socket;
  - a C{twisted.pair.raw.IRawPacketProtocol} (an C{IPProtocol}, an ARP parser) gets
    C{datagramReceived(payload, partial, dest, source, protocol)}, where the link layer gave
    C{source} (its hardware address) and C{protocol} (the ethertype): use it on a cooked socket;
  - anything else (a C{DatagramProtocol}) gets C{datagramReceived(frame, address)}, where
    ADDRESS is a L{LinkLayerAddress}: the interface, ethertype, packet type, hardware type and
    hardware address of the frame (the kernel's C{sockaddr_ll}).

C{partial} is true when a frame was longer than C{maxPacketSize} and was cut.

The port sends frames with C{write(frame, address=None)}: without an address on a raw socket
bound to an interface, the frame goes out of that interface as it is; with a L{LinkLayerAddress}
(or the tuple C{socket.sendto} takes for AF_PACKET), out of the interface it names, and a cooked
socket adds the link-layer header for the hardware address it names.
"""

from __future__ import annotations

import errno
import socket
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

from twisted.internet import abstract, defer, error, interfaces
from twisted.pair import ethernet, raw
from twisted.python import log
from twisted.python.failure import Failure
from twisted.python.reflect import fullyQualifiedName
from zope.interface import implementer

from .._client.api import DEFAULT_TIMEOUT
from .._client.errors import ProcketError
from .._client.locate import Progname
from .._client.packet import (
    ETH_P_ALL,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    MAX_FILTER,
    Instruction,
    PacketRequest,
)
from .endpoints import SingleUse, _HelperEndpoint, checkPacketSize
from .interfaces import IDatagramServerEndpoint
from .strings import (
    PREFIX,
    checked,
    flag,
    grammar,
    helperOptions,
    number,
    parseWith,
    socketOptions,
    splitDescription,
)

__all__ = [
    "LinkLayerAddress",
    "PacketPort",
    "adoptPacketSocket",
    "ProcketPacketEndpoint",
    "AdoptedPacketEndpoint",
    "packetEndpointFromString",
    "parseFilter",
    "DEFAULT_MAX_FRAME_SIZE",
    "PACKET_HOST",
    "PACKET_BROADCAST",
    "PACKET_MULTICAST",
    "PACKET_OTHERHOST",
    "PACKET_OUTGOING",
]

#: The largest frame on ``lo`` (its MTU is 65536) with its link-layer header, and some room.
DEFAULT_MAX_FRAME_SIZE = 65536 + 64

#: Packet types (``sll_pkttype``): to us, to everyone, to a group, to another host (seen in
#: promiscuous mode), and sent by this host (seen by an ETH_P_ALL socket).
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)
_PACKET_TYPE_NAMES = {
    PACKET_HOST: "host",
    PACKET_BROADCAST: "broadcast",
    PACKET_MULTICAST: "multicast",
    PACKET_OTHERHOST: "otherhost",
    PACKET_OUTGOING: "outgoing",
}
_MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)


@implementer(interfaces.IAddress)
@dataclass(frozen=True)
class LinkLayerAddress:
    """
    Where a frame came from (or goes to): the fields of the kernel's C{sockaddr_ll}.

    @ivar device: the network interface's name (C{""} for a socket bound to every interface).
    @ivar protocol: the ethertype, such as 0x0800 for IPv4.
    @ivar packetType: L{PACKET_HOST}, L{PACKET_BROADCAST}, L{PACKET_MULTICAST}, L{PACKET_OTHERHOST}
        or L{PACKET_OUTGOING}.
    @ivar hardwareType: the C{ARPHRD_*} type of the interface: 1 for Ethernet, 772 for loopback.
    @ivar address: the hardware address: the sender's for a received frame.
    """

    device: str
    protocol: int
    packetType: int = PACKET_HOST
    hardwareType: int = 0
    address: bytes = b""

    @classmethod
    def fromSockaddr(cls, sockaddr: Sequence[Any]) -> "LinkLayerAddress":
        """The address for what C{recvfrom} or C{getsockname} return for AF_PACKET."""
        fields = tuple(sockaddr) + (PACKET_HOST, 0, b"")[len(sockaddr) - 2 :]
        device, protocol, packetType, hardwareType, address = fields[:5]
        return cls(str(device), int(protocol), int(packetType), int(hardwareType), bytes(address))

    def toSockaddr(self) -> Tuple[str, int, int, int, bytes]:
        """The tuple C{socket.sendto} takes for AF_PACKET."""
        return (self.device, self.protocol, self.packetType, self.hardwareType, self.address)

    @property
    def interface(self) -> str:
        """L{device}, by the name it had before 0.2 (deprecated)."""
        warnings.warn(
            "LinkLayerAddress.interface is now LinkLayerAddress.device", DeprecationWarning, 2
        )
        return self.device

    @property
    def packetTypeName(self) -> str:
        """C{host}, C{broadcast}, C{multicast}, C{otherhost} or C{outgoing}."""
        return _PACKET_TYPE_NAMES.get(self.packetType, str(self.packetType))

    @property
    def hardwareAddress(self) -> str:
        """The hardware address as C{00:11:22:33:44:55}."""
        return ":".join(f"{byte:02x}" for byte in self.address)


PacketAddress = Union[LinkLayerAddress, Tuple[Any, ...], None]


def _delivery(protocol: Any) -> str:
    if ethernet.IEthernetProtocol.providedBy(protocol):
        return "ethernet"
    if raw.IRawPacketProtocol.providedBy(protocol):
        return "packet"
    return "address"


@implementer(interfaces.IListeningPort, interfaces.ISystemHandle)
class PacketPort(abstract.FileDescriptor):
    """
    A packet socket (AF_PACKET) in the reactor: delivers each frame it receives to its protocol
    (see the module's description for what each kind of protocol gets) and sends frames.

    Create it with L{adoptPacketSocket}, or with an endpoint.
    """

    #: Bytes read in one go before other descriptors get their turn.
    maxThroughput = 256 * 1024

    def __init__(
        self,
        sock: socket.socket,
        protocol: Any,
        maxPacketSize: int = DEFAULT_MAX_FRAME_SIZE,
        reactor: Any = None,
    ) -> None:
        """
        @param sock: a non-blocking AF_PACKET socket, bound; the port owns it from now on.
        @param protocol: what frames are delivered to.
        """
        if sock.family != socket.AF_PACKET:
            raise ValueError(f"a PacketPort needs an AF_PACKET socket, not {sock.family!r}")
        abstract.FileDescriptor.__init__(self, reactor)
        self.socket = sock
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.cooked = sock.type == socket.SOCK_DGRAM
        self._delivery = _delivery(protocol)
        self._waiting: List[defer.Deferred[None]] = []
        self._host = LinkLayerAddress.fromSockaddr(sock.getsockname())
        self.logstr = f"{self._getLogPrefix(protocol)} (packet)"

    def __repr__(self) -> str:
        state = "" if self.connected else "not "
        where = self._host.device or "every interface"
        return (
            f"<{fullyQualifiedName(self.protocol.__class__)} {state}listening on "
            f"{where} ethertype 0x{self._host.protocol:04x}>"
        )

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self.socket.fileno()

    def getHandle(self) -> socket.socket:
        """The socket."""
        return self.socket

    def getHost(self) -> LinkLayerAddress:
        """The interface and ethertype the socket is bound to."""
        return self._host

    def logPrefix(self) -> str:
        return self.logstr

    def startListening(self) -> None:
        """Connect the protocol and start reading."""
        log.msg(f"{self._getLogPrefix(self.protocol)} starting on {self!r}")
        self.connected = 1
        self.protocol.makeConnection(self)
        self.startReading()

    def doRead(self) -> None:
        """Deliver the frames waiting in the socket."""
        read = 0
        while read < self.maxThroughput and self.connected:
            try:
                frame, _, flags, sockaddr = self.socket.recvmsg(self.maxPacketSize)
            except OSError as problem:
                if problem.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return
                # ENETDOWN and the like: the interface went away or down. Say so, keep the port.
                log.msg(f"{self!r}: receiving failed: {problem}")
                return
            read += len(frame)
            partial = 1 if flags & _MSG_TRUNC else 0
            try:
                self._deliver(frame, partial, sockaddr)
            except BaseException:
                cls = fullyQualifiedName(self.protocol.__class__)
                log.err(None, f"Unhandled exception from {cls}.datagramReceived")

    def _deliver(self, frame: bytes, partial: int, sockaddr: Any) -> None:
        if self._delivery == "ethernet":
            self.protocol.datagramReceived(frame, partial=partial)
            return
        address = LinkLayerAddress.fromSockaddr(sockaddr)
        if self._delivery == "packet":
            self.protocol.datagramReceived(
                frame,
                partial=partial,
                dest=None,
                source=address.address,
                protocol=address.protocol,
            )
        else:
            self.protocol.datagramReceived(frame, address)

    def write(self, frame: bytes, address: PacketAddress = None) -> int:  # type: ignore[override]
        """
        Send FRAME: out of the bound interface (a raw socket, no ADDRESS), or to ADDRESS, a
        L{LinkLayerAddress} or a C{sendto} tuple C{(interface, ethertype[, packet type,
        hardware type, hardware address])}.

        @return: the number of bytes sent.
        @raise MessageLengthError: FRAME is larger than the interface takes.
        @raise OSError: for another failure (ENOBUFS, ENETDOWN...).
        """
        if isinstance(address, LinkLayerAddress):
            address = address.toSockaddr()
        try:
            if address is None:
                if self.cooked:
                    raise ValueError("a cooked packet socket sends to an address: give one")
                return self.socket.send(frame)
            return self.socket.sendto(frame, address)
        except OSError as problem:
            if problem.errno == errno.EINTR:
                return self.write(frame, address)
            if problem.errno == errno.EMSGSIZE:
                raise error.MessageLengthError("frame too long") from None
            raise

    def writeSequence(  # type: ignore[override]
        self, seq: Sequence[bytes], address: PacketAddress = None
    ) -> int:
        """Send the frame made of the pieces of SEQ (see L{write})."""
        return self.write(b"".join(seq), address)

    def stopListening(self) -> defer.Deferred[None]:
        """Stop reading and close the socket; the Deferred fires once it is closed."""
        if not self.connected and not self.disconnecting:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiting)
        if not self.disconnecting:
            self.disconnecting = True
            self.stopReading()
            reactor: Any = self.reactor
            reactor.callLater(0, self.connectionLost, Failure(error.ConnectionDone()))
        return waiting

    def loseConnection(self, _connDone: Any = None) -> None:
        """The same as L{stopListening}."""
        self.stopListening()

    def connectionLost(self, reason: Failure) -> None:
        """Close the socket, stop the protocol, and fire what waits for it."""
        log.msg(f"(packet port on {self._host.device or 'every interface'} closed)")
        abstract.FileDescriptor.connectionLost(self, reason)
        self.connected = 0
        self.disconnecting = False
        self.socket.close()
        try:
            self.protocol.doStop()
        finally:
            waiting, self._waiting = self._waiting, []
            for deferred in waiting:
                deferred.callback(None)


def adoptPacketSocket(
    reactor: Any,
    sock: socket.socket,
    protocol: Any,
    maxPacketSize: int = DEFAULT_MAX_FRAME_SIZE,
) -> PacketPort:
    """
    A listening L{PacketPort} for SOCK (an AF_PACKET socket, from L{procket_twisted.open_packet}
    or L{acquireSockets}) delivering to PROTOCOL. The port owns SOCK from now on.

    @raise TypeError: PROTOCOL does not fit the socket: an C{IEthernetProtocol} needs a raw
        socket, an C{IRawPacketProtocol} a cooked one.
    """
    try:
        _checkFits(protocol, sock.type == socket.SOCK_DGRAM)
        sock.setblocking(False)
        port = PacketPort(sock, protocol, maxPacketSize, reactor)
        port.startListening()
    except BaseException:
        sock.close()
        raise
    return port


def _checkFits(protocol: Any, cooked: bool) -> None:
    delivery = _delivery(protocol)
    if delivery == "ethernet" and cooked:
        raise TypeError(
            f"{fullyQualifiedName(type(protocol))} takes Ethernet frames: use a raw packet "
            "socket (cooked=False), not a cooked one"
        )
    if delivery == "packet" and not cooked:
        raise TypeError(
            f"{fullyQualifiedName(type(protocol))} takes packets without their link-layer "
            "header: use a cooked packet socket (cooked=True), or put an EthernetProtocol under it"
        )


@implementer(IDatagramServerEndpoint)
class ProcketPacketEndpoint(_HelperEndpoint):
    """
    A packet socket from the helper, for an unprivileged process:
    C{procket:packet:0x806:device=eth0}. Each C{listen} asks the helper for a new socket.
    """

    def __init__(
        self,
        reactor: Any,
        ethertype: int,
        device: Optional[str] = None,
        maxPacketSize: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        cooked: bool = False,
        promiscuous: bool = False,
        filter: Optional[Sequence[Instruction]] = None,
        progname: Progname = None,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = True,
        **options: Any,
    ) -> None:
        """
        @param ethertype: as L{PacketRequest} takes it, as are the next four.
        @param device: the network interface (C{interface=}, its name before 0.2, is still taken,
            with a DeprecationWarning).
        @param cooked: frames without their link-layer header.
        @param promiscuous: promiscuous mode while the port is open.
        @param filter: a classic BPF program, attached and locked by the helper.
        @param options: the socket options, as L{PacketRequest} takes them.
        @param maxPacketSize: the largest frame delivered whole; longer ones arrive cut, with
            C{partial} set for C{twisted.pair} protocols.
        @raise ValueError, TypeError: for a bad argument.
        """
        request = PacketRequest(ethertype, device, cooked, promiscuous, filter, **options)
        checkPacketSize(maxPacketSize)
        super().__init__(reactor, request, progname, timeout, direct)
        self._maxPacketSize = maxPacketSize

    def listen(self, protocol: Any) -> defer.Deferred[PacketPort]:
        """
        @return: a Deferred firing with the L{PacketPort} delivering to PROTOCOL, or failing with
            C{CannotListenError} (whose C{socketError} is the L{ProcketError}), or with
            C{TypeError} when PROTOCOL does not fit the socket (see L{adoptPacketSocket}).
        """
        request: PacketRequest = self._request  # type: ignore[assignment]
        try:
            _checkFits(protocol, request.cooked)
        except TypeError:
            return defer.fail()
        return self._listen(  # type: ignore[return-value]
            lambda sock: adoptPacketSocket(self._reactor, sock, protocol, self._maxPacketSize)
        )

    def _cannotListen(self, failure: Failure) -> Failure:
        failure.trap(ProcketError)
        request: PacketRequest = self._request  # type: ignore[assignment]
        return Failure(
            error.CannotListenError(
                request.device or "", f"0x{request.ethertype:04x}", failure.value
            )
        )


@implementer(IDatagramServerEndpoint)
class AdoptedPacketEndpoint(SingleUse):
    """
    A packet endpoint for a socket already acquired (L{acquireSockets}, L{open_packet}): single
    use; a second C{listen} fails with C{AlreadyListened}.
    """

    def __init__(
        self, reactor: Any, sock: socket.socket, maxPacketSize: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        checkPacketSize(maxPacketSize)
        self.reactor = reactor
        self.socket = sock
        self.maxPacketSize = maxPacketSize

    def _release(self) -> None:
        self.socket.close()

    def __repr__(self) -> str:
        return f"<AdoptedPacketEndpoint {self.socket!r}>"

    def listen(self, protocol: Any) -> defer.Deferred[PacketPort]:
        """Adopt the socket for PROTOCOL, once."""
        return self._adoptOnce(
            lambda: adoptPacketSocket(self.reactor, self.socket, protocol, self.maxPacketSize)
        )


# ---- the string form ----------------------------------------------------------------------

_ETHERTYPE_NAMES = {"all": ETH_P_ALL, "ip": ETH_P_IP, "arp": ETH_P_ARP, "ipv6": ETH_P_IPV6}
_USAGE = "procket:packet:ETHERTYPE[:device=NAME][:cooked=yes][:promiscuous=yes][:filter=BPF]"


def _ethertype(where: str, text: str) -> int:
    if text.lower() in _ETHERTYPE_NAMES:
        return _ETHERTYPE_NAMES[text.lower()]
    if text[:2].lower() == "0x":
        digits = text[2:]
        if digits and len(digits) <= 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
            return int(digits, 16)
        raise ValueError(f"{where}: ethertype {text!r} is not 0x0 to 0xffff")
    try:
        return number(where, "ethertype", text, 0, 0xFFFF)
    except ValueError:
        raise ValueError(
            f"{where}: ethertype {text!r} is not a number (0x806, 2054) or one of "
            f"{', '.join(_ETHERTYPE_NAMES)}"
        ) from None


def parseFilter(text: str) -> Tuple[Instruction, ...]:
    """
    A classic BPF program from the text C{tcpdump -ddd} prints, with commas for newlines (the
    form iptables' C{--bytecode} takes): C{"4,40 0 0 12,21 0 1 2054,6 0 0 65535,6 0 0 0"},
    the count first, then C{code jt jf k} per instruction. Make it with
    C{tcpdump -ddd -i IFACE 'arp' | tr '\\n' ','}.

    @raise ValueError: naming what is wrong.
    """
    parts = [part.strip() for part in text.strip().strip(",").split(",")]
    if not parts or not parts[0].isdigit():
        raise ValueError(
            f"filter {text!r} does not start with its instruction count (as tcpdump -ddd prints)"
        )
    count = int(parts[0])
    if count != len(parts) - 1:
        raise ValueError(f"filter says {count} instructions but has {len(parts) - 1}")
    if not 1 <= count <= MAX_FILTER:
        raise ValueError(f"filter must have 1 to {MAX_FILTER} instructions, not {count}")
    program = []
    for position, part in enumerate(parts[1:], 1):
        fields = part.split()
        if len(fields) != 4 or not all(field.isascii() and field.isdigit() for field in fields):
            raise ValueError(f"filter instruction {position} {part!r} is not 'code jt jf k'")
        code, jt, jf, k = (int(field) for field in fields)
        program.append((code, jt, jf, k))
    return tuple(program)


@grammar(options=PacketRequest, example="0x806 (or arp)")
def _parsePacket(
    reactor: Any,
    where: str,
    /,
    ethertype: str,
    device: Optional[str] = None,
    maxPacketSize: str = str(DEFAULT_MAX_FRAME_SIZE),
    *,
    cooked: Optional[str] = None,
    promiscuous: Optional[str] = None,
    filter: Optional[str] = None,
    progname: Optional[str] = None,
    timeout: Optional[str] = None,
    **options: str,
) -> ProcketPacketEndpoint:
    """C{procket:packet:ETHERTYPE[:DEVICE[:MAXPACKETSIZE]]} and its keywords."""
    etherType = _ethertype(where, ethertype)
    if device == "":
        raise ValueError(f"{where}: device is empty; leave it out for every interface")
    size = number(where, "maxPacketSize", maxPacketSize, 1, 1 << 20)
    program = None if filter is None else checked(where, lambda: parseFilter(filter))
    keywords = {**helperOptions(where, progname, timeout), **socketOptions(where, options)}
    return checked(
        where,
        lambda: ProcketPacketEndpoint(
            reactor,
            etherType,
            device,
            size,
            cooked=flag(where, "cooked", cooked),
            promiscuous=flag(where, "promiscuous", promiscuous),
            filter=program,
            **keywords,
        ),
    )


def packetEndpointFromString(reactor: Any, description: str) -> ProcketPacketEndpoint:
    """
    The packet endpoint for C{procket:packet:ETHERTYPE[:device=NAME][:maxPacketSize=N]}
    (C{interface=NAME}, the keyword's name before 0.2, is still taken, with a DeprecationWarning)
    with the keywords C{cooked}, C{promiscuous} (yes or no), C{filter} (see L{parseFilter}),
    C{progname}, C{timeout}, and the socket options C{mark}, C{priority},
    C{forceReceiveBuffer}, C{forceSendBuffer}. ETHERTYPE is hexadecimal (C{0x806}), decimal
    (C{2054}), or C{all}, C{ip}, C{arp}, C{ipv6}.

    @raise ValueError: naming the bad part of a malformed description.
    """
    args, kwargs = splitDescription(description)
    if "interface" in kwargs:
        warnings.warn("procket:packet:...:interface= is now device=", DeprecationWarning, 2)
        kwargs.setdefault("device", kwargs.pop("interface"))
    if args[:2] != [PREFIX, "packet"]:
        raise ValueError(f"{description!r} is not a packet endpoint: use {_USAGE}")
    where = f"{PREFIX}:packet"
    return parseWith(_parsePacket, where, (reactor, where), args[2:], kwargs)
