"""
Least privilege: when this process may open a socket itself, it does, and no helper runs.

It may when it holds every capability the request needs (C{request.capabilities()}): for TCP
and UDP, C{CAP_NET_BIND_SERVICE} only for a port below C{net.ipv4.ip_unprivileged_port_start}
(which covers IPv6 too), and whatever the requested options need (none for v6only, reuseport,
freebind and a priority up to 6); root holds them all.
"""

from __future__ import annotations

from typing import Any

from .kinds import AnyRequest
from .system import has_bind_capability, has_capability, unprivileged_port_start

__all__ = [
    "unprivileged_port_start",
    "has_capability",
    "has_bind_capability",
    "can_open_directly",
    "open_directly",
]


def can_open_directly(request: AnyRequest) -> bool:
    """Whether REQUEST needs no capability this process lacks."""
    return all(has_capability(capability) for capability in request.capabilities())


def open_directly(request: AnyRequest, index: int = 1) -> Any:
    """
    Open REQUEST in this process, the way the helper would.

    @raise SocketError: naming the failed call, with the kernel's errno.
    """
    return request.open_here(index)
