"""
What to open: the one place that knows what a valid socket request is.

A L{SocketRequest} is checked when it is made, so a bad port or address fails in the caller's own
line with a C{ValueError} or C{TypeError}, long before any helper runs. It renders itself as the
helper's argument (L{helper_argument}), and knows whether it needs privilege at all.
"""

from __future__ import annotations

import _socket
import functools
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union

from .failures import socket_error
from .options import (
    CAP_NET_BIND_SERVICE,
    OPTIONS,
    asked_options,
    keep_asked_options,
    option_capabilities,
    options_mismatch,
    set_options,
)
from .system import unprivileged_port_start

__all__ = [
    "SocketRequest",
    "IPAddressLike",
    "DEFAULT_BACKLOG",
    "MAX_PORT",
    "MAX_BACKLOG",
    "PROTOCOLS",
    "KERNEL_IDENTITY",
    "OpenInetError",
    "open_inet",
]

DEFAULT_BACKLOG = 128
#: The highest port, and the longest listen queue a request may ask for.
MAX_PORT = MAX_BACKLOG = 65535
PROTOCOLS = ("tcp", "udp")
#: (family, type, protocol) by protocol and IP version, as plain numbers.
KERNEL_IDENTITY = {
    (protocol, version): (int(family), int(kind), int(number))
    for protocol, kind, number in (
        ("tcp", socket.SOCK_STREAM, socket.IPPROTO_TCP),
        ("udp", socket.SOCK_DGRAM, socket.IPPROTO_UDP),
    )
    for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6))
}
_DEVICE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_ABSENT = object()
_SOL_SOCKET = socket.SOL_SOCKET
_SO_ACCEPTCONN = socket.SO_ACCEPTCONN
_SO_REUSEADDR = socket.SO_REUSEADDR
_SOCK_STREAM = socket.SOCK_STREAM
# The kernel's numbers as the C socket object holds them: ``socket.socket``'s own ``family`` and
# ``type`` properties build an enum member on every read.
_kernel_family = _socket.socket.family.__get__
_kernel_type = _socket.socket.type.__get__
_HELPER_ARGUMENT = "_procket_helper_argument"

#: What ``ip`` may be: a numeric address string, an ``ipaddress`` object, or the seed's tuple form
#: (four bytes for IPv4, eight 16-bit groups for IPv6).
IPAddressLike = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address, Tuple[int, ...], None]


Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_EVERY_IPV4 = (ipaddress.IPv4Address("0.0.0.0"), "0.0.0.0")


def _parsed_ip(ip: IPAddressLike) -> Tuple[Address, str]:
    """
    IP as an C{ipaddress} object and its canonical text (which is how the kernel writes it);
    C{None} is 0.0.0.0. Raises TypeError or ValueError.
    The usual forms cost little: no address is the same constant each time, and text is
    remembered (C{ipaddress} parses it, and writes it back, anew each time).
    """
    if ip is None:
        return _EVERY_IPV4
    if isinstance(ip, str):
        return _parse_ip_text(ip)
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        address = ip
    elif isinstance(ip, tuple):
        address = _parse_ip_tuple(ip)
    else:
        raise TypeError(f"ip must be a numeric address string or tuple, not {type(ip).__name__}")
    return address, str(address)


@functools.lru_cache(maxsize=256)
def _parse_ip_text(ip: str) -> Tuple[Address, str]:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(
            f"ip {ip!r} is not a numeric IPv4 or IPv6 address "
            "(names such as 'localhost' are not resolved: use '127.0.0.1' or '::1')"
        ) from None
    if getattr(address, "scope_id", None):
        raise ValueError(
            f"ip {ip!r} has a scope (%interface): scoped IPv6 addresses are not supported; "
            "use a global or loopback address"
        )
    return address, str(address)


def _parse_ip_tuple(ip: Tuple[int, ...]) -> Address:
    if not all(isinstance(part, int) and not isinstance(part, bool) for part in ip):
        raise TypeError(f"ip tuple {ip!r} must hold integers")
    if len(ip) == 4 and all(0 <= part <= 255 for part in ip):
        return ipaddress.IPv4Address(bytes(ip))
    if len(ip) == 8 and all(0 <= part <= 0xFFFF for part in ip):
        return ipaddress.IPv6Address(b"".join(part.to_bytes(2, "big") for part in ip))
    raise ValueError(f"ip tuple {ip!r} must be 4 numbers 0-255 (IPv4) or 8 numbers 0-65535 (IPv6)")


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, not {value}")
    return value


class OpenInetError(Exception):
    """
    A step of L{open_inet} failed.

    @ivar step: the call that failed: C{socket}, C{setsockopt}, C{bind} or C{listen}.
    @ivar errno: the kernel's errno.
    """

    def __init__(self, step: str, errno: int) -> None:
        super().__init__(step, errno)
        self.step = step
        self.errno = errno


def open_inet(
    identity: Tuple[int, int, int],
    address: Tuple[Any, int],
    backlog: int,
    request: Optional[object] = None,
) -> socket.socket:
    """
    A TCP or UDP socket opened in this process the way the helper opens one: C{socket(IDENTITY)},
    SO_REUSEADDR for TCP (as Twisted's own listenTCP does), REQUEST's socket options (none
    without one), C{bind(ADDRESS)}, and for TCP C{listen(BACKLOG)}. The one sequence behind
    every TCP or UDP socket opened here (L{SocketRequest.open_here}, and the short way of
    L{procket_twisted.listen}).

    @param identity: (family, type, protocol), as L{KERNEL_IDENTITY} gives them.
    @raise OpenInetError: naming the failed call, with the kernel's errno (nothing stays open).
    """
    try:
        sock = socket.socket(*identity)
    except OSError as error:
        raise OpenInetError("socket", error.errno or 0) from None
    stream = identity[1] == _SOCK_STREAM
    step = "setsockopt"
    try:
        if stream:
            sock.setsockopt(_SOL_SOCKET, _SO_REUSEADDR, 1)
        if request is not None:
            set_options(sock, request)
        step = "bind"
        sock.bind(address)
        if stream:
            step = "listen"
            sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise OpenInetError(step, error.errno or 0) from None
    return sock


def check_interface_name(name: object, what: str) -> str:
    """NAME, checked as a Linux interface name (1 to 15 letters, digits and . _ - :)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ValueError(
            f"{what} must be an interface name of 1 to 15 letters, digits and . _ - :, not {name!r}"
        )
    return name


def check_flag(name: str, value: object) -> bool:
    """VALUE, checked as True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False")
    return value


def check_options(request: object) -> None:
    """
    The socket options REQUEST carries (the attributes L{OPTIONS} names that it has), checked in
    one pass over L{OPTIONS}, which also keeps on REQUEST the ones it asks for (L{asked_options}).
    Call it last when making a request: it must see the request's final values.

    @raise TypeError, ValueError: naming the bad option.
    """
    asked = []
    for option in OPTIONS:
        value = getattr(request, option.attribute, _ABSENT)
        if value is _ABSENT:
            continue  # not every kind takes every option
        kind = option.kind
        if kind == "flag":
            if value is False:
                continue
            check_flag(option.attribute, value)
        elif value is None:
            continue
        elif kind == "name":
            check_interface_name(value, option.attribute)
        elif kind != "boolean":  # v6only: its request checks it, knowing the address
            low, high = option.limits or (0, 0)
            _check_int(option.attribute, value, low, high)
        asked.append((option, value))
    keep_asked_options(request, tuple(asked))


def requested_options(request: object) -> Dict[str, object]:
    """The socket options REQUEST asks for, by their policy name (C{{"mark": 42, ...}})."""
    return {option.name: value for option, value in asked_options(request)}


def option_arguments(request: object) -> List[str]:
    """The helper's C{name=value} parts for the options REQUEST asks for."""
    return [
        f"{option.name}={option.helper_value(value)}" for option, value in asked_options(request)
    ]


def describe_options(request: object) -> str:
    """C{ (mark=42, ...)} for the options REQUEST asks for, or C{""}."""
    options = ", ".join(f"{name}={value}" for name, value in requested_options(request).items())
    return f" ({options})" if options else ""


@dataclass(frozen=True)
class SocketRequest:
    """
    One socket to open: a listening TCP socket or a bound UDP socket.

    @ivar port: 0-65535 (0 lets the kernel choose).
    @ivar protocol: C{"tcp"} (bound and listening) or C{"udp"} (bound).
    @ivar ip: the local address: a numeric string, an C{ipaddress} object, a 4- or 8-tuple, or
        C{None} for every IPv4 address. An IPv6 address makes an IPv6 socket.
    @ivar backlog: the listen queue of a TCP socket (C{None}: 128). Not for UDP.
    @ivar v6only: for IPv6: C{True} for IPv6 only, C{False} for dual-stack (IPv4 too),
        C{None} for the system default (C{net.ipv6.bindv6only}).
    @ivar reuseport: SO_REUSEPORT, so several sockets of the same user share the port.
    @ivar freebind: IP_FREEBIND, to bind an address the machine does not have (yet).
    @ivar transparent: IP_TRANSPARENT (IPV6_TRANSPARENT), for transparent proxies (privileged).
    @ivar bind_to_device: SO_BINDTODEVICE: an interface name such as C{"eth0"} (privileged).
    @ivar mark: SO_MARK, the firewall mark, 0 to 4294967295 (privileged).
    @ivar priority: SO_PRIORITY, 0 to 2147483647; above 6 is privileged.
    @ivar force_receive_buffer: SO_RCVBUFFORCE: a receive buffer size in bytes, beyond
        C{net.core.rmem_max} (privileged).
    @ivar force_send_buffer: SO_SNDBUFFORCE: the same for the send buffer (privileged).
    @raise TypeError: for a value of the wrong type.
    @raise ValueError: for a value out of range, an unknown protocol, or an option that does not
        apply (C{backlog} for UDP, C{v6only} for IPv4).
    """

    port: int
    protocol: str = "tcp"
    ip: IPAddressLike = None
    backlog: Optional[int] = None
    v6only: Optional[bool] = None
    reuseport: bool = False
    freebind: bool = False
    transparent: bool = False
    bind_to_device: Optional[str] = None
    mark: Optional[int] = None
    priority: Optional[int] = None
    force_receive_buffer: Optional[int] = None
    force_send_buffer: Optional[int] = None
    address: Address = field(init=False, repr=False, compare=False)
    #: (family, type, protocol) as the kernel numbers them, for checking a received socket.
    kernel_identity: Tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_int("port", self.port, 0, MAX_PORT)
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}"
            )
        address, text = _parsed_ip(self.ip)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "ip", text)
        object.__setattr__(self, "kernel_identity", KERNEL_IDENTITY[self.protocol, address.version])
        if self.backlog is not None:
            if self.protocol != "tcp":
                raise ValueError("backlog applies to tcp only")
            _check_int("backlog", self.backlog, 0, MAX_BACKLOG)
        if self.v6only is not None:
            if not isinstance(self.v6only, bool):
                raise TypeError("v6only must be True, False or None")
            if address.version != 6:
                raise ValueError("v6only applies to IPv6 addresses only")
        check_options(self)

    def options(self) -> Dict[str, object]:
        """The socket options asked for, by their policy name (C{{"mark": 42, ...}})."""
        return requested_options(self)

    @property
    def family(self) -> socket.AddressFamily:
        """C{AF_INET} or C{AF_INET6}, by the address."""
        return socket.AddressFamily(self.kernel_identity[0])

    @property
    def type(self) -> socket.SocketKind:
        """C{SOCK_STREAM} for TCP, C{SOCK_DGRAM} for UDP."""
        return socket.SocketKind(self.kernel_identity[1])

    @property
    def effective_backlog(self) -> int:
        """The listen queue length that will be used."""
        return DEFAULT_BACKLOG if self.backlog is None else self.backlog

    def helper_argument(self) -> str:
        """
        The helper's text for this socket, for example C{kind=tcp,family=inet,...}. Built once:
        the request is frozen, and an endpoint that listens again sends it again.
        """
        text: Optional[str] = self.__dict__.get(_HELPER_ARGUMENT)
        if text is None:
            parts = [
                f"kind={self.protocol}",
                f"family={'inet6' if self.address.version == 6 else 'inet'}",
                f"addr={self.ip}",
                f"port={self.port}",
            ]
            if self.protocol == "tcp":
                parts.append(f"backlog={self.effective_backlog}")
            parts.extend(option_arguments(self))
            text = ",".join(parts)
            object.__setattr__(self, _HELPER_ARGUMENT, text)
        return text

    def refusal_hint(self) -> str:
        """For TCP: the doctor command that shows the rule deciding this port for the user."""
        if self.protocol != "tcp":
            return ""
        return f"; procket-twisted doctor --port {self.port} shows which rule decides"

    def describe(self) -> str:
        """A short human description, for messages: C{tcp 127.0.0.1 port 80 (mark=42)}."""
        return f"{self.protocol} {self.ip} port {self.port}" + describe_options(self)

    @property
    def kind(self) -> str:
        """C{"tcp"} or C{"udp"}: its kind, as the helper and the policy name it."""
        return self.protocol

    def capabilities(self) -> FrozenSet[int]:
        """
        What opening it needs: CAP_NET_BIND_SERVICE for a port below the unprivileged ones
        (C{net.ipv4.ip_unprivileged_port_start}; port 0 lets the kernel choose a free one),
        and what its options need.
        """
        needed = option_capabilities(self)
        if 0 < self.port < unprivileged_port_start():
            needed = needed | {CAP_NET_BIND_SERVICE}
        return needed

    def open_here(self, index: int) -> socket.socket:
        """
        Open it in this process, the way the helper would (L{open_inet}).

        @raise SocketError: naming the failed call, with the kernel's errno.
        """
        try:
            return open_inet(
                self.kernel_identity, (self.ip, self.port), self.effective_backlog, self
            )
        except OpenInetError as failure:
            raise socket_error(failure.step, failure.errno, self, index) from None

    def check(self, sock: socket.socket) -> Optional[str]:
        """
        How SOCK differs from this request, or None. The family, type and protocol are what the
        kernel told the socket object when it was made from its fd (C{socket.socket(fileno=...)}
        asks it); listening and the address are asked here. This runs for every socket of a
        batch, so the usual case costs two system calls and a few comparisons; the messages are
        built only for a difference.
        """
        family, kind, protocol = self.kernel_identity
        if _kernel_family(sock) != family or _kernel_type(sock) != kind or sock.proto != protocol:
            return _identity_difference(sock, self)
        if kind == _SOCK_STREAM and not sock.getsockopt(_SOL_SOCKET, _SO_ACCEPTCONN):
            return "a TCP socket that is not listening"
        host, port = sock.getsockname()[:2]
        # self.ip is the address's canonical text, as the kernel's is: parse only when they differ.
        if host != self.ip and ipaddress.ip_address(host) != self.address:
            return f"bound to {host}, not {self.ip}"
        if port != self.port and self.port:
            return f"bound to port {port}, not {self.port}"
        return options_mismatch(sock, self)

    def wrap(self, fd: int) -> socket.socket:
        """The socket object for a received fd (ours)."""
        return socket.socket(fileno=fd)


def _identity_difference(sock: socket.socket, request: SocketRequest) -> str:
    """Which of family, type and protocol differs, as a message."""
    if sock.family != request.family:
        return f"family {_name(sock.family)}, not {request.family.name}"
    if sock.type != request.type:
        return f"type {_name(sock.type)}, not {request.type.name}"
    return f"protocol {sock.proto}, not {request.protocol}"


def _name(number: Any) -> str:
    """A family's or type's name, or its number when Python has no name for it."""
    return str(getattr(number, "name", number))
