"""
Why a bind said "address in use" when the other address family holds the port: with
C{net.ipv6.bindv6only=0} (Linux's default) an IPv6 socket on C{::} takes the IPv4 port too, so
C{procket:tcp:80} beside C{procket:tcp6:80:interface=\\:\\:} collides with itself. The sockets of
this process are looked at (its own descriptors), so the message can say "this process holds it".
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Iterator, Optional

__all__ = ["collision_hint", "dual_stack_note"]


def _fix(protocol: str, port: int) -> str:
    return (
        f"add v6only=yes to the IPv6 one (procket:{protocol}6:{port}:interface=\\:\\::v6only=yes, "
        "or v6only=True in Python), or listen on :: alone, which serves IPv4 too"
    )


def _own_sockets(kind: int, port: int) -> Iterator[socket.socket]:
    """Duplicates of this process's sockets of KIND bound to PORT (the caller closes them)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            copy = os.dup(int(name))
        except (OSError, ValueError):
            continue  # closed meanwhile, or the listing's own descriptor
        try:
            sock = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)
            continue
        if (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == kind
            and sock.getsockname()[1] == port
        ):
            yield sock
        else:
            sock.close()


def _dual_stack(sock: socket.socket) -> bool:
    """Whether SOCK is an IPv6 socket on C{::} that takes IPv4 too."""
    return (
        sock.family == socket.AF_INET6
        and ipaddress.ip_address(sock.getsockname()[0]).is_unspecified
        and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    )


def collision_hint(request: Any) -> Optional[str]:
    """
    The hint for an C{EADDRINUSE} on REQUEST (a TCP or UDP request) when the port is held by a
    socket of this process of the other family: its IPv4 socket against a dual-stack C{::}, or
    its dual-stack C{::} against an IPv4 one. C{None} when that is not what happened.
    """
    wanted_v6 = request.address.version == 6
    if request.port == 0 or (wanted_v6 and not request.address.is_unspecified):
        return None
    if wanted_v6 and request.v6only:
        return None
    found = None
    for sock in _own_sockets(request.type, request.port):
        with sock:
            if wanted_v6 and sock.family == socket.AF_INET:
                found = (
                    f"this process holds the IPv4 side of {request.protocol} port {request.port} "
                    f"(on {sock.getsockname()[0]}), and an IPv6 socket on :: takes IPv4 too "
                    "unless it is v6only"
                )
            elif not wanted_v6 and _dual_stack(sock):
                found = (
                    f"this process holds an IPv6 socket on :: {request.protocol} port "
                    f"{request.port}, which takes IPv4 too (it is not v6only)"
                )
        if found:
            break
    return f"{found}; {_fix(request.protocol, request.port)}" if found else None


def dual_stack_note(request: Any) -> str:
    """What to add to a plain "in use" hint for a dual-stack C{::} REQUEST (else nothing)."""
    if request.address.version == 6 and request.address.is_unspecified and not request.v6only:
        return " (on :: without v6only the IPv4 port must be free too)"
    return ""
