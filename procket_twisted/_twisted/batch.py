"""
Many sockets from one helper run, as single-use endpoints (a honeypot's dozens of ports, or a
tool's raw and packet sockets at once).
"""

from __future__ import annotations

import socket
from typing import Any, Iterable, List

from twisted.internet import defer

from .._client.api import DEFAULT_TIMEOUT
from .._client.kinds import AnyRequest
from .._client.locate import Progname
from .._client.tun import TunDevice
from .endpoints import AdoptedDatagramServerEndpoint, AdoptedStreamEndpoint, _HelperEndpoint
from .packet import AdoptedPacketEndpoint
from .raw import AdoptedRawEndpoint
from .tun import AdoptedTunnelEndpoint

__all__ = ["acquireEndpoints"]


def _adopted(reactor: Any, handle: Any) -> Any:
    """The single-use endpoint for HANDLE, by what it is."""
    if isinstance(handle, TunDevice):
        return AdoptedTunnelEndpoint(reactor, handle)
    if handle.family == socket.AF_PACKET:
        return AdoptedPacketEndpoint(reactor, handle)
    if handle.type == socket.SOCK_RAW:
        return AdoptedRawEndpoint(reactor, handle)
    family = handle.family
    if handle.type == socket.SOCK_STREAM:
        return AdoptedStreamEndpoint(reactor, handle.detach(), family)
    return AdoptedDatagramServerEndpoint(reactor, handle.detach(), family)


def acquireEndpoints(
    reactor: Any,
    requests: Iterable[AnyRequest],
    *,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> defer.Deferred[List[Any]]:
    """
    Many sockets (of any kind) from one helper run, as single-use endpoints in request order:
    L{AdoptedStreamEndpoint} (a C{AdoptedStreamServerEndpoint}) for TCP,
    L{AdoptedDatagramServerEndpoint} for UDP, and the raw, packet and TUN/TAP ones for those
    kinds. Listen on each once; each owns its descriptor until then, or until its C{close}
    (L{release} closes a whole batch).
    """
    acquired = _HelperEndpoint._acquire(
        reactor, requests, progname=progname, timeout=timeout, direct=direct
    )
    return acquired.addCallback(lambda handles: [_adopted(reactor, h) for h in handles])
