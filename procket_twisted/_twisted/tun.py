"""
TUN and TAP interfaces in Twisted: Twisted's own C{twisted.pair.tuntap.TuntapPort} on the
descriptor the helper hands over, an endpoint, and the C{procket:tun:...} / C{procket:tap:...}
string forms.

C{TuntapPort} opens C{/dev/net/tun} itself, which needs CAP_NET_ADMIN. It does every system call
through a C{system} object (its constructor's C{system} argument), so instead of a second port
with the same interface, L{adoptTunnel} gives it a system whose C{open} returns the helper's
descriptor and whose C{TUNSETIFF} answers what the descriptor is attached to (checking that it
is the mode the port wants). Everything else is Twisted's: reading, writing, C{getHost()} (a
C{TunnelAddress}), and C{stopListening()}, which closes the descriptor, so the interface goes
away.

What the port delivers, as Twisted defines it: a TAP port (its protocol is an
C{IEthernetProtocol}, such as C{EthernetProtocol} with C{IPProtocol} on top) gets Ethernet
frames; a TUN port (an C{IRawPacketProtocol}) gets IP packets as C{datagramReceived(packet,
partial=0)}. Twisted's C{IPProtocol} cannot sit directly on a TUN port (it insists on the
link-layer arguments a TUN packet has none of); L{TunnelIPProtocol} can.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Any, Optional

from twisted.internet import defer, error
from twisted.pair import ethernet, ip, raw
from twisted.pair.tuntap import TunnelFlags, TuntapPort, _RealSystem
from twisted.python.failure import Failure
from twisted.python.reflect import fullyQualifiedName
from zope.interface import implementer

from .._client.api import DEFAULT_TIMEOUT
from .._client.errors import ProcketError
from .._client.locate import Progname
from .._client.tun import TUN_DEVICE, TunDevice, TunRequest, interface_of
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
    splitDescription,
)

__all__ = [
    "TunnelIPProtocol",
    "adoptTunnel",
    "ProcketTunnelEndpoint",
    "AdoptedTunnelEndpoint",
    "tunEndpointFromString",
    "DEFAULT_MAX_TUNNEL_PACKET_SIZE",
]

#: What a TUN or TAP port reads at most per packet: the largest IP packet.
DEFAULT_MAX_TUNNEL_PACKET_SIZE = 65536

_TUNSETIFF = 0x400454CA
_IFNAMSIZ = 16
_MODE_BITS = (TunnelFlags.IFF_TUN | TunnelFlags.IFF_TAP | TunnelFlags.IFF_NO_PI).value


class _HelperTunnelSystem(_RealSystem):
    """
    The system calls of one C{TuntapPort}, but for opening the tunnel: C{open} gives the
    helper's descriptor (once), and C{TUNSETIFF} reports the interface it is attached to.
    """

    def __init__(self, device: TunDevice) -> None:
        self._device = device

    def open(self, filename: Any, flag: int, mode: int = 0o777) -> int:  # type: ignore[override]
        if os.fsencode(filename) != os.fsencode(TUN_DEVICE):
            raise OSError(errno.EINVAL, f"this tunnel is {TUN_DEVICE}, not {filename!r}")
        fd = self._device.detach()
        if fd < 0:
            raise OSError(errno.EBADF, "the helper's tunnel descriptor was used already")
        if flag & os.O_NONBLOCK:
            os.set_blocking(fd, False)
        return fd

    def ioctl(  # type: ignore[override]
        self, fd: int, opt: int, arg: Any = None, mutate_flag: Optional[bool] = None
    ) -> Any:
        if opt != _TUNSETIFF:
            if mutate_flag is None:
                return fcntl.ioctl(fd, opt, arg)
            return fcntl.ioctl(fd, opt, arg, mutate_flag)
        wanted_name, wanted_flags = struct.unpack(f"{_IFNAMSIZ}sH", bytes(arg[: _IFNAMSIZ + 2]))
        wanted_name = wanted_name.rstrip(b"\0")
        name, flags = interface_of(fd)
        problem = None
        if flags & _MODE_BITS != wanted_flags & _MODE_BITS:
            problem = (
                f"interface {name} has flags 0x{flags & _MODE_BITS:x}, not the 0x"
                f"{wanted_flags & _MODE_BITS:x} this port wants (tun 0x1, tap 0x2, no packet "
                "information 0x1000)"
            )
        elif wanted_name and wanted_name != name.encode("ascii"):
            problem = f"the descriptor is attached to {name}, not {wanted_name.decode()}"
        if problem is not None:
            os.close(fd)
            raise OSError(errno.EINVAL, problem)
        return struct.pack(f"{_IFNAMSIZ}sH", name.encode("ascii"), flags) + bytes(
            arg[_IFNAMSIZ + 2 :]
        )


@implementer(raw.IRawPacketProtocol)
class TunnelIPProtocol(ip.IPProtocol):
    """
    C{twisted.pair.ip.IPProtocol} that works directly on a TUN port, whose packets come without
    link-layer arguments. It also gives the protocols above it the IP header's true length and
    version (Twisted's swaps the two nibbles), skips IP options, cuts the link layer's padding
    (the payload ends where the header's total length says), and ignores what is not IPv4.
    """

    def datagramReceived(  # type: ignore[override]
        self,
        data: bytes,
        partial: int = 0,
        dest: Any = None,
        source: Any = None,
        protocol: Any = None,
    ) -> None:
        if len(data) < 20 or data[0] >> 4 != 4:
            return
        length = (data[0] & 0x0F) * 4
        header = ip.IPHeader(data)
        if length < 20 or len(data) < length or header.tot_len < length:
            return
        for proto in self.ipProtos.get(header.protocol, ()):
            proto.datagramReceived(
                data=data[length : header.tot_len],
                partial=partial,
                source=header.saddr,
                dest=header.daddr,
                protocol=header.protocol,
                version=4,
                ihl=length,
                tos=header.tos,
                tot_len=header.tot_len,
                fragment_id=header.fragment_id,
                fragment_offset=header.fragment_offset,
                dont_fragment=header.dont_fragment,
                more_fragments=header.more_fragments,
                ttl=header.ttl,
            )


def _checkMode(protocol: Any, mode: str) -> None:
    """Raise TypeError unless PROTOCOL is what a TuntapPort of MODE delivers to."""
    name = fullyQualifiedName(type(protocol))
    isEthernet = ethernet.IEthernetProtocol.providedBy(protocol)
    if mode == "tap" and not isEthernet:
        raise TypeError(
            f"a tap interface carries Ethernet frames: its protocol must provide "
            f"twisted.pair.ethernet.IEthernetProtocol (an EthernetProtocol), and {name} does not"
        )
    if mode == "tun" and (isEthernet or not raw.IRawPacketProtocol.providedBy(protocol)):
        raise TypeError(
            f"a tun interface carries IP packets: its protocol must provide "
            f"twisted.pair.raw.IRawPacketProtocol (such as TunnelIPProtocol) and not "
            f"IEthernetProtocol; {name} does not fit"
        )


def adoptTunnel(
    reactor: Any,
    device: TunDevice,
    protocol: Any,
    maxPacketSize: int = DEFAULT_MAX_TUNNEL_PACKET_SIZE,
) -> TuntapPort:
    """
    A listening C{twisted.pair.tuntap.TuntapPort} on DEVICE (from L{procket_twisted.open_tun} or
    L{acquireSockets}), delivering to PROTOCOL. The port owns the device from now on; its
    C{stopListening} closes it, and the interface goes away.

    @raise TypeError: PROTOCOL does not fit the device's mode (see L{_checkMode}), or the device
        keeps the packet information header, which C{TuntapPort} does not read.
    @raise CannotListenError: the descriptor is not what the device says.
    """
    try:
        _checkMode(protocol, device.mode)
        if device.packet_info:
            raise TypeError(
                "TuntapPort reads packets without the packet information header: open the "
                "device with packet_info=False"
            )
        port = TuntapPort(
            device.name.encode("ascii"),
            protocol,
            maxPacketSize,
            reactor,
            system=_HelperTunnelSystem(device),
        )
        port.startListening()
    except BaseException:
        device.close()
        raise
    return port


@implementer(IDatagramServerEndpoint)
class ProcketTunnelEndpoint(_HelperEndpoint):
    """
    A new TUN or TAP interface from the helper, owned by this user, as a C{TuntapPort}:
    C{procket:tun:tun7:address=10.0.0.1/24:up=yes}. Each C{listen} creates a new interface;
    C{stopListening} removes it.
    """

    def __init__(
        self,
        reactor: Any,
        mode: str = "tun",
        name: Optional[str] = None,
        address: Optional[str] = None,
        up: bool = False,
        maxPacketSize: int = DEFAULT_MAX_TUNNEL_PACKET_SIZE,
        *,
        progname: Progname = None,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = True,
    ) -> None:
        """
        @param mode: C{"tun"} (IP packets) or C{"tap"} (Ethernet frames).
        @param name: the interface's name, as L{TunRequest} takes it.
        @param address: its address and prefix, as L{TunRequest} takes it.
        @param up: bring it up.
        @param maxPacketSize: the largest packet read whole.
        @raise ValueError, TypeError: for a bad argument.
        """
        request = TunRequest(mode, name, address, up)
        checkPacketSize(maxPacketSize)
        super().__init__(reactor, request, progname, timeout, direct)
        self._maxPacketSize = maxPacketSize

    def listen(self, protocol: Any) -> defer.Deferred[TuntapPort]:
        """
        @return: a Deferred firing with the C{TuntapPort} delivering to PROTOCOL, or failing with
            C{CannotListenError} (whose C{socketError} is the L{ProcketError}), or with
            C{TypeError} when PROTOCOL does not fit the mode.
        """
        request: TunRequest = self._request  # type: ignore[assignment]
        try:
            _checkMode(protocol, request.mode)
        except TypeError:
            return defer.fail()
        return self._listen(  # type: ignore[return-value]
            lambda device: adoptTunnel(self._reactor, device, protocol, self._maxPacketSize)
        )

    def _cannotListen(self, failure: Failure) -> Failure:
        failure.trap(ProcketError)
        request: TunRequest = self._request  # type: ignore[assignment]
        where = request.name or f"(a new {request.mode} interface)"
        return Failure(error.CannotListenError(None, where, failure.value))


@implementer(IDatagramServerEndpoint)
class AdoptedTunnelEndpoint(SingleUse):
    """
    A TUN or TAP endpoint for a device already acquired (L{acquireSockets}, L{open_tun}): single
    use; a second C{listen} fails with C{AlreadyListened}.
    """

    def __init__(
        self, reactor: Any, device: TunDevice, maxPacketSize: int = DEFAULT_MAX_TUNNEL_PACKET_SIZE
    ) -> None:
        checkPacketSize(maxPacketSize)
        self.reactor = reactor
        self.device = device
        self.maxPacketSize = maxPacketSize

    def _release(self) -> None:
        self.device.close()

    def __repr__(self) -> str:
        return f"<AdoptedTunnelEndpoint {self.device!r}>"

    def listen(self, protocol: Any) -> defer.Deferred[TuntapPort]:
        """Adopt the device for PROTOCOL, once."""
        return self._adoptOnce(
            lambda: adoptTunnel(self.reactor, self.device, protocol, self.maxPacketSize)
        )


@grammar()
def _parseTunnel(
    reactor: Any,
    where: str,
    mode: str,
    /,
    name: Optional[str] = None,
    *,
    address: Optional[str] = None,
    up: Optional[str] = None,
    maxPacketSize: str = str(DEFAULT_MAX_TUNNEL_PACKET_SIZE),
    progname: Optional[str] = None,
    timeout: Optional[str] = None,
) -> ProcketTunnelEndpoint:
    """C{procket:tun[:NAME]} and C{procket:tap[:NAME]} (MODE), and their keywords."""
    size = number(where, "maxPacketSize", maxPacketSize, 1, 1 << 20)
    options = helperOptions(where, progname, timeout)
    return checked(
        where,
        lambda: ProcketTunnelEndpoint(
            reactor, mode, name or None, address, flag(where, "up", up), size, **options
        ),
    )


def tunEndpointFromString(reactor: Any, description: str) -> ProcketTunnelEndpoint:
    """
    The endpoint for C{procket:tun[:NAME][:address=ADDRESS/PREFIX][:up=yes]} or
    C{procket:tap:...} (plus C{maxPacketSize}, C{progname} and C{timeout}). An IPv6 address
    needs its colons escaped: C{address=fd00\\:\\:1/64}.

    @raise ValueError: naming the bad part of a malformed description.
    """
    args, kwargs = splitDescription(description)
    if len(args) < 2 or args[0] != PREFIX or args[1] not in ("tun", "tap"):
        raise ValueError(
            f"{description!r} is not a TUN or TAP endpoint: use "
            "procket:tun[:NAME][:address=10.0.0.1/24][:up=yes] or procket:tap:..."
        )
    mode = args[1]
    where = f"{PREFIX}:{mode}"
    if "" in args[2:] or kwargs.get("address") == "":
        if "address" not in kwargs:
            raise ValueError(f"{where}: the interface name is empty; leave it out for any name")
        raise ValueError(
            f"{where}: an IPv6 address needs its colons escaped with backslashes, as in "
            f"{where}:address=fd00\\:\\:1/64 (in a shell, quote it)"
        )
    return parseWith(_parseTunnel, where, (reactor, where, mode), args[2:], kwargs)
