"""
Checking what the helper handed over before anyone uses it.

Twisted checks only the address family of an adopted fd; we check every fd against its request:
family, type, protocol, listening state for streams, and the bound address and port.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, List, Optional, Sequence

from ._errors import HelperFailedError
from ._kinds import AnyRequest
from ._options import options_mismatch
from ._protocol import close_fds
from ._request import SocketRequest

__all__ = ["sockets_from_fds", "mismatch"]

_PROTOCOL_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


def mismatch(handle: Any, request: AnyRequest) -> Optional[str]:
    """How HANDLE (a socket, or a TUN device) differs from REQUEST, or None when it is right."""
    if not isinstance(request, SocketRequest):
        return request.check(handle)
    return _inet_mismatch(handle, request)


def _inet_mismatch(sock: socket.socket, request: SocketRequest) -> Optional[str]:
    kernel: Any = super(socket.socket, sock)  # family and type as numbers: no enum lookup
    if kernel.family != request.family:
        return f"family {sock.family.name}, not {request.family.name}"
    if kernel.type != request.type:
        return f"type {sock.type.name}, not {request.type.name}"
    if sock.proto != _PROTOCOL_NUMBERS[request.protocol]:
        return f"protocol {sock.proto}, not {request.protocol}"
    if request.protocol == "tcp" and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return "a TCP socket that is not listening"
    host, port = sock.getsockname()[:2]
    # request.ip is the address's canonical text, as the kernel's is: parse only when they differ.
    if host != request.ip and ipaddress.ip_address(host) != request.address:
        return f"bound to {host}, not {request.ip}"
    if request.port and port != request.port:
        return f"bound to port {port}, not {request.port}"
    return options_mismatch(sock, request)


def sockets_from_fds(fds: Sequence[int], requests: Sequence[AnyRequest]) -> List[Any]:
    """
    Wrap each fd of FDS (ours to close) in a socket after checking it against its request.

    @raise HelperFailedError: if the count or any socket is not what was asked for; then every fd
        of FDS is closed.
    """
    if len(fds) != len(requests):
        close_fds(fds)
        raise HelperFailedError(
            f"the helper sent {len(fds)} fds for {len(requests)} sockets", step="validate"
        )
    sockets: List[Any] = []
    try:
        for index, (fd, request) in enumerate(zip(fds, requests), 1):
            try:
                sock = (
                    socket.socket(fileno=fd)
                    if isinstance(request, SocketRequest)
                    else request.wrap(fd)
                )
            except OSError as error:
                raise HelperFailedError(
                    f"fd {index} from the helper is not a socket: {error.strerror}",
                    step="validate",
                    index=index,
                ) from None
            sockets.append(sock)
            problem = mismatch(sock, request)
            if problem is not None:
                raise HelperFailedError(
                    f"socket {index} from the helper is not the {request.describe()} asked for: "
                    f"{problem}",
                    step="validate",
                    index=index,
                )
    except BaseException:
        for sock in sockets:
            sock.close()
        close_fds(fds[len(sockets) :])
        raise
    return sockets
