"""
What every kind of request is, for the code that handles them all alike (the helper's argument,
the policy check, least privilege, the checks of what comes back): one interface, L{Request}, that
L{SocketRequest} (tcp, udp), L{RawRequest}, L{PacketRequest} and L{TunRequest} implement. Nothing
outside a kind's own module asks which kind a request is.
"""

from __future__ import annotations

from typing import Any, FrozenSet, Optional, Protocol

__all__ = ["Request", "AnyRequest"]


class Request(Protocol):
    """One socket or device to open (a frozen dataclass in each kind's module)."""

    @property
    def kind(self) -> str:
        """Its kind as the helper and the policy name it: tcp, udp, raw, packet, tun, tap."""

    def helper_argument(self) -> str:
        """The helper's text for it (C{kind=tcp,family=inet,...})."""

    def describe(self) -> str:
        """A short description for messages (C{tcp 127.0.0.1 port 80})."""

    def capabilities(self) -> FrozenSet[int]:
        """The capabilities opening it in this process would need."""

    def refusal_hint(self) -> str:
        """What to add to the policy's refusal of it ("; ..."), or C{""}."""

    def open_here(self, index: int) -> Any:
        """
        Open it in this process, the way the helper would.

        @param index: its position in its batch, from 1, for the error.
        @raise SocketError: naming the failed call, with the kernel's errno.
        """

    def check(self, handle: Any) -> Optional[str]:
        """How HANDLE (what was received for it) differs from it, or None."""

    def wrap(self, fd: int) -> Any:
        """The object (a socket, a TUN device) for a received fd, which it then owns."""


#: The name the other modules use for any request.
AnyRequest = Request
