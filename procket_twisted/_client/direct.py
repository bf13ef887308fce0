"""
Least privilege: when this process may open a socket itself, it does, and no helper runs.

It may when it holds every capability the request needs (C{request.capabilities()}): for TCP
and UDP, C{CAP_NET_BIND_SERVICE} only for a port below C{net.ipv4.ip_unprivileged_port_start}
(which covers IPv6 too), and whatever the requested options need (none for v6only, reuseport,
freebind and a priority up to 6); root holds them all.

It may also when a kernel grant lets it (C{procket-twisted grant}: a cgroup BPF program that lets
a bind skip the CAP_NET_BIND_SERVICE check): so a TCP or UDP socket that lacks only that
capability is tried here first, with one bind; when the kernel refuses (EACCES), the helper is
asked, as for any refused attempt. Nothing tells this process beforehand whether a grant covers
it (the program is root's to read), and a refused bind costs a few microseconds.
"""

from __future__ import annotations

from typing import Any

from .kinds import AnyRequest
from .options import CAP_NET_BIND_SERVICE
from .system import has_bind_capability, has_capability, unprivileged_port_start

__all__ = [
    "unprivileged_port_start",
    "has_capability",
    "has_bind_capability",
    "can_open_directly",
    "worth_trying_directly",
    "open_directly",
]

#: The kinds a kernel grant can let bind a privileged port (the bind hooks see TCP and UDP).
_GRANTABLE_KINDS = ("tcp", "udp")


def can_open_directly(request: AnyRequest) -> bool:
    """Whether REQUEST needs no capability this process lacks."""
    return all(has_capability(capability) for capability in request.capabilities())


def worth_trying_directly(request: AnyRequest) -> bool:
    """
    Whether to try REQUEST here first: this process may open it (L{can_open_directly}), or it is
    a TCP or UDP socket that lacks only CAP_NET_BIND_SERVICE, which a kernel grant can stand for.
    """
    missing = {c for c in request.capabilities() if not has_capability(c)}
    return not missing or (missing == {CAP_NET_BIND_SERVICE} and request.kind in _GRANTABLE_KINDS)


def open_directly(request: AnyRequest, index: int = 1) -> Any:
    """
    Open REQUEST in this process, the way the helper would.

    @raise SocketError: naming the failed call, with the kernel's errno.
    """
    return request.open_here(index)
