"""
Raw IP sockets: ICMP, ICMPv6 or any IP protocol number, with IP_HDRINCL if asked. They need
CAP_NET_RAW, and a policy rule that names C{kind=raw}.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Union

from .failures import socket_error
from .options import CAP_NET_RAW, option_capabilities, options_mismatch, set_options
from .request import (
    IPAddressLike,
    _parsed_ip,
    check_flag,
    check_options,
    describe_options,
    option_arguments,
)

__all__ = ["RawRequest", "PROTOCOL_NUMBERS"]

#: Names a raw socket's protocol may be given by.
PROTOCOL_NUMBERS = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58,
    "sctp": 132, "raw": 255,
}  # fmt: skip
_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
_IP_HDRINCL = 3


@dataclass(frozen=True)
class RawRequest:
    """
    One raw IP socket.

    @ivar protocol: the IP protocol: a number from 1 to 255 or a name (C{"icmp"},
        C{"icmpv6"}, C{"udp"}...).
    @ivar ip: a local address to bind, or None (not bound: every address of its family).
    @ivar family: C{"inet"} or C{"inet6"} when IP does not tell (default: inet6 for icmpv6,
        else inet).
    @ivar header_included: IP_HDRINCL: the program writes the IPv4 header itself (IPv4 only).
    @ivar bind_to_device: socket
        options, as for L{SocketRequest}.
    @ivar mark: socket
        options, as for L{SocketRequest}.
    @ivar priority: socket
        options, as for L{SocketRequest}.
    @ivar force_receive_buffer: socket
        options, as for L{SocketRequest}.
    @ivar force_send_buffer: socket
        options, as for L{SocketRequest}.
    @raise TypeError, ValueError: naming the bad value.
    """

    protocol: Union[int, str]
    ip: IPAddressLike = None
    family: Optional[str] = None
    header_included: bool = False
    bind_to_device: Optional[str] = None
    mark: Optional[int] = None
    priority: Optional[int] = None
    force_receive_buffer: Optional[int] = None
    force_send_buffer: Optional[int] = None
    number: int = field(init=False, repr=False, compare=False)
    address: Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        number = (
            PROTOCOL_NUMBERS.get(self.protocol) if isinstance(self.protocol, str) else self.protocol
        )
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 255:
            raise ValueError(
                f"protocol must be a number from 1 to 255 or one of {', '.join(PROTOCOL_NUMBERS)}"
                f", not {self.protocol!r}"
            )
        object.__setattr__(self, "number", number)
        address = None
        if self.ip is not None:
            address, text = _parsed_ip(self.ip)
            object.__setattr__(self, "ip", text)
        object.__setattr__(self, "address", address)
        family = self.family
        if family is None:
            family = "inet6" if (address and address.version == 6) or number == 58 else "inet"
        if family not in _FAMILIES:
            raise ValueError(f"family must be inet or inet6, not {family!r}")
        if address is not None and (address.version == 6) != (family == "inet6"):
            raise ValueError(f"ip {self.ip} is not an address of family {family}")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            raise ValueError(
                f"ip {self.ip} is IPv4-mapped, which a raw IPv6 socket cannot use: give "
                f"{address.ipv4_mapped} (family inet)"
            )
        object.__setattr__(self, "family", family)
        if check_flag("header_included", self.header_included) and family != "inet":
            raise ValueError("header_included applies to IPv4 only")
        check_options(self)

    @property
    def socket_family(self) -> socket.AddressFamily:
        """AF_INET or AF_INET6."""
        return socket.AddressFamily(_FAMILIES[str(self.family)])

    @property
    def kind(self) -> str:
        """Its kind, as the helper and the policy name it: C{raw}."""
        return "raw"

    def helper_argument(self) -> str:
        """The helper's text for this socket."""
        parts = ["kind=raw", f"family={self.family}", f"proto={self.number}"]
        if self.ip is not None:
            parts.append(f"addr={self.ip}")
        if self.header_included:
            parts.append("hdrincl=1")
        return ",".join(parts + option_arguments(self))

    def refusal_hint(self) -> str:
        """Nothing to add to the policy's refusal."""
        return ""

    def describe(self) -> str:
        """C{raw icmp (1) over inet} and its options, for messages."""
        names = {number: name for name, number in PROTOCOL_NUMBERS.items()}
        what = f"raw {names.get(self.number, 'protocol')} ({self.number}) over {self.family}"
        where = f" on {self.ip}" if self.ip is not None else ""
        return what + where + describe_options(self)

    def capabilities(self) -> FrozenSet[int]:
        """The capabilities opening it needs."""
        return frozenset({CAP_NET_RAW}) | option_capabilities(self)

    def open_here(self, index: int) -> socket.socket:
        """Open it in this process (which holds the capabilities); raises SocketError."""
        step = "socket"
        try:
            sock = socket.socket(self.socket_family, socket.SOCK_RAW, self.number)
        except OSError as error:
            raise socket_error(step, error.errno or 0, self, index) from None
        try:
            step = "setsockopt"
            if self.header_included:
                sock.setsockopt(socket.IPPROTO_IP, _IP_HDRINCL, 1)
            set_options(sock, self)
            if self.ip is not None:
                step = "bind"
                sock.bind((self.ip, 0))
        except OSError as error:
            sock.close()
            raise socket_error(step, error.errno or 0, self, index) from None
        return sock

    def check(self, sock: socket.socket) -> Optional[str]:
        """How SOCK differs from this request, or None."""
        if sock.family != self.socket_family or sock.type != socket.SOCK_RAW:
            return f"a {sock.family.name} {sock.type.name} socket, not a raw {self.family} one"
        if sock.proto != self.number:
            return f"protocol {sock.proto}, not {self.number}"
        if self.ip is not None and ipaddress.ip_address(sock.getsockname()[0]) != self.address:
            return f"bound to {sock.getsockname()[0]}, not {self.ip}"
        if self.header_included and not sock.getsockopt(socket.IPPROTO_IP, _IP_HDRINCL):
            return "IP_HDRINCL is not set"
        return options_mismatch(sock, self)

    def wrap(self, fd: int) -> socket.socket:
        """The socket object for a received fd (ours)."""
        return socket.socket(fileno=fd)
