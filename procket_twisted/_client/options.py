"""
Socket options a request can carry, set before bind: the one table that knows, for each, its
name everywhere (the L{SocketRequest} attribute, the helper's and the policy's name), how to set it
and read it back, and which capability the kernel checks for it.

Most of these are checked by the kernel when they are set, so an unprivileged process cannot set
them on a socket it was handed: the helper sets them before it drops its privileges.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from typing import Any, FrozenSet, Optional, Tuple

__all__ = [
    "Option",
    "OPTIONS",
    "options_taken_by",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "option_capabilities",
    "set_options",
    "options_mismatch",
    "keep_asked_options",
]

CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

# Linux's numbers, for those Python's socket module does not name.
_IP_FREEBIND = 15
_IP_TRANSPARENT = 19
_IPV6_TRANSPARENT = 75
_IPV6_FREEBIND = 78
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_IFNAMSIZ = 16


@dataclass(frozen=True)
class Option:
    """
    One socket option.

    @ivar attribute: the request attribute (C{None} or C{False} when not asked for).
    @ivar name: its name for the helper and in the policy (C{options=}).
    @ivar keyword: its endpoint-string keyword (camelCase, as Twisted's keywords are).
    @ivar inet: (level, option) to set it on an IPv4 socket.
    @ivar inet6: (level, option) on an IPv6 socket, when different.
    @ivar read_as: (level, option) to read it back, when different (forced buffer sizes read
        back as SO_RCVBUF and SO_SNDBUF).
    @ivar capability: the capability the kernel checks when it is set, or None.
    @ivar unprivileged_up_to: values up to this need no capability (SO_PRIORITY up to 6).
    @ivar limits: the smallest and largest value of a number (forced buffer sizes: the kernel
        doubles them), as the helper accepts them.
    @ivar kind: what its value is: C{flag} (asked for when True), C{boolean} (True or False,
        asked for unless None), C{number}, C{unsigned} (SO_MARK, read back unsigned),
        C{at_least} (a buffer size: the kernel doubles it) or C{name} (an interface).
    """

    attribute: str
    name: str
    keyword: str
    inet: Tuple[int, int]
    inet6: Optional[Tuple[int, int]] = None
    read_as: Optional[Tuple[int, int]] = None
    capability: Optional[int] = None
    kind: str = "flag"
    unprivileged_up_to: Optional[int] = None
    limits: Optional[Tuple[int, int]] = None

    def capability_for(self, value: Any) -> Optional[int]:
        """The capability setting the option to VALUE needs, or None."""
        if self.unprivileged_up_to is not None and value <= self.unprivileged_up_to:
            return None
        return self.capability

    def helper_value(self, value: Any) -> str:
        """VALUE as the helper's text."""
        return str(int(value)) if self.kind in ("flag", "boolean") else str(value)

    def _where(self, family: int) -> Tuple[int, int]:
        return self.inet6 if family == socket.AF_INET6 and self.inet6 else self.inet

    def set(self, sock: socket.socket, value: Any) -> None:
        """Set the option on SOCK to VALUE (raises OSError)."""
        level, name = self._where(sock.family)
        if self.kind == "name":
            sock.setsockopt(level, name, str(value).encode("ascii") + b"\0")
        else:
            sock.setsockopt(level, name, int(value))

    def matches(self, sock: socket.socket, value: Any) -> bool:
        """Whether SOCK has this option as VALUE asks."""
        level, name = self.read_as or self._where(sock.family)
        if self.kind == "name":
            raw = sock.getsockopt(level, name, _IFNAMSIZ)
            return bool(raw.split(b"\0", 1)[0].decode("ascii", "replace") == value)
        got = sock.getsockopt(level, name)
        if self.kind in ("flag", "boolean"):
            return bool(got) == bool(value)
        if self.kind == "unsigned":
            return bool(got & 0xFFFFFFFF == value)
        if self.kind == "at_least":
            return bool(got >= value)
        return bool(got == value)


_SOCKET = socket.SOL_SOCKET
OPTIONS = (
    Option("v6only", "v6only", "v6only", (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
           kind="boolean"),
    Option("reuseport", "reuseport", "reusePort", (_SOCKET, socket.SO_REUSEPORT)),
    Option("freebind", "freebind", "freeBind", (socket.IPPROTO_IP, _IP_FREEBIND),
           (socket.IPPROTO_IPV6, _IPV6_FREEBIND)),
    Option("transparent", "transparent", "transparent", (socket.IPPROTO_IP, _IP_TRANSPARENT),
           (socket.IPPROTO_IPV6, _IPV6_TRANSPARENT), capability=CAP_NET_ADMIN),
    Option("bind_to_device", "device", "bindToDevice", (_SOCKET, socket.SO_BINDTODEVICE),
           capability=CAP_NET_RAW, kind="name"),
    Option("mark", "mark", "mark", (_SOCKET, socket.SO_MARK), capability=CAP_NET_ADMIN,
           kind="unsigned", limits=(0, 0xFFFFFFFF)),
    Option("priority", "priority", "priority", (_SOCKET, socket.SO_PRIORITY),
           capability=CAP_NET_ADMIN, kind="number", unprivileged_up_to=6,
           limits=(0, 0x7FFFFFFF)),
    Option("force_receive_buffer", "rcvbuf", "forceReceiveBuffer", (_SOCKET, _SO_RCVBUFFORCE),
           read_as=(_SOCKET, socket.SO_RCVBUF), capability=CAP_NET_ADMIN, kind="at_least",
           limits=(1, 0x3FFFFFFF)),
    Option("force_send_buffer", "sndbuf", "forceSendBuffer", (_SOCKET, _SO_SNDBUFFORCE),
           read_as=(_SOCKET, socket.SO_SNDBUF), capability=CAP_NET_ADMIN, kind="at_least",
           limits=(1, 0x3FFFFFFF)),
)  # fmt: skip


_ASKED = "_procket_asked_options"


def asked_options(request: Any) -> Tuple[Tuple[Option, Any], ...]:
    """
    The options REQUEST asks for, each with its value, in L{OPTIONS} order: what its
    C{check_options} kept when it was made (requests are frozen), or none for a kind that takes
    no options.
    """
    asked: Tuple[Tuple[Option, Any], ...] = request.__dict__.get(_ASKED, ())
    return asked


def keep_asked_options(request: Any, asked: Tuple[Tuple[Option, Any], ...]) -> None:
    """Keep ASKED on REQUEST as what L{asked_options} answers."""
    object.__setattr__(request, _ASKED, asked)


def option_capabilities(request: Any) -> FrozenSet[int]:
    """The capabilities that setting REQUEST's options needs."""
    needed = (option.capability_for(value) for option, value in asked_options(request))
    return frozenset(capability for capability in needed if capability is not None)


def set_options(sock: socket.socket, request: Any) -> None:
    """Set REQUEST's options on SOCK (raises OSError)."""
    for option, value in asked_options(request):
        option.set(sock, value)


def options_mismatch(sock: socket.socket, request: Any) -> Optional[str]:
    """Which of REQUEST's options SOCK does not have as asked, or None."""
    for option, value in asked_options(request):
        if not option.matches(sock, value):
            return f"option {option.name} is not {value}"
    return None


def options_taken_by(kind: type) -> Tuple[Option, ...]:
    """The options a kind of request takes: those whose attribute is one of its fields."""
    names = {field.name for field in dataclasses.fields(kind)}
    return tuple(option for option in OPTIONS if option.attribute in names)
