"""
Checking what the helper handed over before anyone uses it.

Twisted checks only the address family of an adopted fd; we check every fd against its request:
family, type, protocol, listening state for streams, and the bound address and port.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .errors import HelperFailedError
from .kinds import AnyRequest
from .wire import close_fds

__all__ = ["sockets_from_fds", "mismatch"]


def mismatch(handle: Any, request: AnyRequest) -> Optional[str]:
    """How HANDLE (a socket, or a TUN device) differs from REQUEST, or None when it is right."""
    return request.check(handle)


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
                sock = request.wrap(fd)
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
