"""
The kinds of request, as one type for the code that handles them all alike (the helper's
argument, the policy check, least privilege, validation of what comes back).

Each kind knows itself: ``helper_argument()``, ``describe()``, and, but for `SocketRequest`
(whose logic lives in _direct and _validate), ``capabilities()``, ``open_here(index)``,
``check(handle)`` and ``wrap(fd)``.
"""

from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # the kinds import the error code that imports this module
    from ._packet import PacketRequest
    from ._raw import RawRequest
    from ._request import SocketRequest
    from ._tun import TunRequest

AnyRequest = Union["SocketRequest", "RawRequest", "PacketRequest", "TunRequest"]

__all__ = ["AnyRequest"]
