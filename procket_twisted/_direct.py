"""
Least privilege: when this process may open a socket itself, it does, and no helper runs.

It may when the port is 0 or at least ``net.ipv4.ip_unprivileged_port_start`` (which covers IPv6
too), or when it already holds ``CAP_NET_BIND_SERVICE`` (root, or a service given it), and when it
holds whatever capability the requested options need (none for v6only, reuseport, freebind and a
priority up to 6).
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Any

from ._diagnose import process_status_field
from ._kinds import AnyRequest
from ._options import CAP_NET_BIND_SERVICE, option_capabilities, set_options
from ._reply import socket_error
from ._request import SocketRequest

__all__ = [
    "unprivileged_port_start",
    "has_capability",
    "has_bind_capability",
    "can_open_directly",
    "open_directly",
]

_PORT_START_FILE = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


@functools.lru_cache(maxsize=1)
def unprivileged_port_start() -> int:
    """
    The lowest port an unprivileged process may bind here (1024 when it cannot be read), read
    once: if an administrator changes it later, a port now free of privilege still goes through
    the helper, and one no longer free is refused in-process and then asked of the helper.
    """
    try:
        with open(_PORT_START_FILE, encoding="ascii") as setting:
            return int(setting.read())
    except (OSError, ValueError):
        return 1024


def has_capability(capability: int) -> bool:
    """Whether this process holds CAPABILITY in its effective set."""
    return bool(_effective_capabilities(os.geteuid()) >> capability & 1)


@functools.lru_cache(maxsize=4)
def _effective_capabilities(euid: int) -> int:
    """
    The effective capability set, read once per effective uid: capabilities change with the uid
    (as when twistd drops root), and a stale "may bind" costs no more than a refused bind, after
    which the helper is asked (see `open_what_needs_no_privilege`).
    """
    try:
        return int(process_status_field("CapEff") or "0", 16)
    except ValueError:
        return 0


def has_bind_capability() -> bool:
    """Whether this process holds CAP_NET_BIND_SERVICE (root does)."""
    return has_capability(CAP_NET_BIND_SERVICE)


def can_open_directly(request: AnyRequest) -> bool:
    """Whether REQUEST, its port and its options, needs no privilege this process lacks."""
    if not isinstance(request, SocketRequest):
        return all(has_capability(capability) for capability in request.capabilities())
    port = request.port
    if not (port == 0 or port >= unprivileged_port_start() or has_bind_capability()):
        return False
    return all(has_capability(capability) for capability in option_capabilities(request))


def open_directly(request: AnyRequest, index: int = 1) -> Any:
    """
    Open REQUEST in this process, the way the helper would (for TCP and UDP: SO_REUSEADDR on TCP,
    as Twisted's own listenTCP does, then the requested options, then bind, then listen).

    @raise SocketError: naming the failed call, with the kernel's errno.
    """
    if not isinstance(request, SocketRequest):
        return request.open_here(index)
    step = "socket"
    try:
        protocol = socket.IPPROTO_TCP if request.protocol == "tcp" else socket.IPPROTO_UDP
        sock = socket.socket(request.family, request.type, protocol)
    except OSError as error:
        raise socket_error(step, error.errno or 0, request, index) from None
    try:
        step = "setsockopt"
        if request.protocol == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_options(sock, request)
        step = "bind"
        sock.bind((request.ip, request.port))
        if request.protocol == "tcp":
            step = "listen"
            sock.listen(request.effective_backlog)
    except OSError as error:
        sock.close()
        raise socket_error(step, error.errno or 0, request, index) from None
    return sock
