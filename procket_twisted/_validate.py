"""
Checking what the helper handed over before anyone uses it.

Twisted checks only the address family of an adopted fd; we check every fd against its request:
family, type, protocol, listening state for streams, and the bound address and port.
"""

from __future__ import annotations

import _socket
import ipaddress
import socket
from typing import Any, List, Optional, Sequence

from ._errors import HelperFailedError
from ._kinds import AnyRequest
from ._options import options_mismatch
from ._protocol import close_fds
from ._request import SocketRequest

__all__ = ["sockets_from_fds", "mismatch"]

_SOL_SOCKET = socket.SOL_SOCKET
_SO_ACCEPTCONN = socket.SO_ACCEPTCONN
_SOCK_STREAM = socket.SOCK_STREAM
# The kernel's numbers as the C socket object holds them: ``socket.socket``'s own ``family`` and
# ``type`` properties build an enum member on every read.
_kernel_family = _socket.socket.family.__get__
_kernel_type = _socket.socket.type.__get__


def mismatch(handle: Any, request: AnyRequest) -> Optional[str]:
    """How HANDLE (a socket, or a TUN device) differs from REQUEST, or None when it is right."""
    if not isinstance(request, SocketRequest):
        return request.check(handle)
    return _inet_mismatch(handle, request)


def _inet_mismatch(sock: socket.socket, request: SocketRequest) -> Optional[str]:
    """
    How SOCK differs from REQUEST. The family, type and protocol are what the kernel told the
    socket object when it was made from its fd (``socket.socket(fileno=...)`` asks it); listening
    and the address are asked here. This runs for every socket of a batch, so the usual case costs
    two system calls and a few comparisons; the messages are built only for a difference.
    """
    family, kind, protocol = request.kernel_identity
    if _kernel_family(sock) != family or _kernel_type(sock) != kind or sock.proto != protocol:
        return _identity_difference(sock, request)
    if kind == _SOCK_STREAM and not sock.getsockopt(_SOL_SOCKET, _SO_ACCEPTCONN):
        return "a TCP socket that is not listening"
    host, port = sock.getsockname()[:2]
    # request.ip is the address's canonical text, as the kernel's is: parse only when they differ.
    if host != request.ip and ipaddress.ip_address(host) != request.address:
        return f"bound to {host}, not {request.ip}"
    if port != request.port and request.port:
        return f"bound to port {port}, not {request.port}"
    return options_mismatch(sock, request)


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
            sock: Any
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
