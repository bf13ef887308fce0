"""
One batch of requests, from its plan to its one result, with no I/O of its own: the core that the
blocking driver (L{procket_twisted.listen_many}) and the reactor's (C{acquireSockets}) share.

An L{Exchange} is made from the requests (checked once: kinds, count, timeout). It opens at once
what needs no privilege here, or what a kernel grant may let it bind (least privilege: see
L{procket_twisted._client.direct}), and says what is left for the helper
(L{Exchange.helper_command}). A driver runs the helper however it runs things (waiting on a pidfd,
or from the reactor), and hands back what the helper sent: L{Exchange.finish} turns it into the
sockets in request order, or raises the one typed error (its index the caller's, not the
helper's); L{Exchange.fail} and L{Exchange.timeout_error} are the two other ways a run ends.
Every path closes whatever it opened or received unless it hands it to the caller.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .direct import open_directly, worth_trying_directly
from .errors import HelperTimeoutError, ProcketError, SocketError
from .failures import helper_timeout
from .kinds import AnyRequest
from .locate import HelperCommand, Progname, find_helper
from .packet import PacketRequest
from .raw import RawRequest
from .reply import sockets_from_reply
from .request import SocketRequest
from .tun import TunRequest
from .wire import MAX_SOCKETS, Packet, close_fds, helper_arguments

__all__ = ["Exchange", "check_batch", "check_timeout", "close_sockets", "MAX_TIMEOUT"]

#: The longest timeout accepted: a day (poll() and the clocks have limits; no helper needs more).
MAX_TIMEOUT = 86400.0
_DENIED = (1, 13)  # EPERM, EACCES: the direct attempt lacked privilege after all
_KINDS = (SocketRequest, RawRequest, PacketRequest, TunRequest)


def check_timeout(timeout: float) -> float:
    """
    TIMEOUT as seconds, checked.

    @raise ValueError: unless it is a number more than 0 and at most a day.
    """
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise ValueError(
            f"timeout must be a number of seconds more than 0 and at most {MAX_TIMEOUT:g}, "
            f"not {timeout!r}"
        )
    return float(timeout)


def check_batch(requests: Iterable[AnyRequest], timeout: float) -> List[AnyRequest]:
    """
    REQUESTS as a list, checked (1 to 253 requests of any kind, a positive TIMEOUT).

    @raise TypeError: for something that is not a request.
    @raise ValueError: for a count or timeout out of range.
    """
    wanted = list(requests)
    for request in wanted:
        if not isinstance(request, _KINDS):
            raise TypeError(
                "requests must be SocketRequest, RawRequest, PacketRequest or TunRequest objects, "
                f"not {type(request).__name__}"
            )
    if not 1 <= len(wanted) <= MAX_SOCKETS:
        raise ValueError(f"ask for 1 to {MAX_SOCKETS} sockets per call, not {len(wanted)}")
    check_timeout(timeout)
    return wanted


def close_sockets(sockets: Iterable[Any]) -> None:
    """Close every socket (or TUN device) of SOCKETS."""
    for sock in sockets:
        sock.close()


class Exchange:
    """
    One batch: what was opened here, what is left for the helper, and how the run ends.

    @ivar requests: the requests, checked, in the caller's order.
    @ivar timeout: seconds to wait for the helper.
    @ivar privileged: the positions (in L{requests}) of those left for the helper, in order.
    """

    def __init__(self, requests: Iterable[AnyRequest], timeout: float, direct: bool = True) -> None:
        """
        Check REQUESTS and TIMEOUT and, when DIRECT, open here what needs no privilege.

        @raise TypeError, ValueError: for bad REQUESTS or TIMEOUT, before anything is opened.
        @raise ProcketError: when opening one here fails for another reason than privilege
            (nothing is left open then).
        """
        self.requests = check_batch(requests, timeout)
        self.timeout = float(timeout)
        self._opened: Dict[int, Any] = {}
        self.privileged: List[int] = []
        self._refused_here = False  # a bind tried here was refused (no kernel grant covers it)
        try:
            for position, request in enumerate(self.requests):
                if not (direct and worth_trying_directly(request)):
                    self.privileged.append(position)
                    continue
                try:
                    self._opened[position] = open_directly(request, position + 1)
                except SocketError as error:
                    if error.errno not in _DENIED:
                        raise
                    self._refused_here = True
                    self.privileged.append(position)
        except BaseException:
            self.abandon()
            raise

    @property
    def needs_helper(self) -> bool:
        """Whether anything is left for the helper."""
        return bool(self.privileged)

    def helper_requests(self) -> List[AnyRequest]:
        """The requests left for the helper, in the order it gets them."""
        return [self.requests[position] for position in self.privileged]

    def helper_command(self, progname: Progname) -> Tuple[HelperCommand, List[str]]:
        """
        The helper to run, and its whole argv.

        @raise ProcketError: when no helper can be found (what was opened here is closed).
        """
        try:
            command = find_helper(progname)
        except ProcketError as error:
            raise self.fail(error) from None
        return command, list(command.argv) + helper_arguments(self.helper_requests())

    def sockets(self) -> List[Any]:
        """The result when nothing was left for the helper: the sockets in request order."""
        return [self._opened[position] for position in range(len(self.requests))]

    def finish(
        self, command: HelperCommand, packets: Sequence[Packet], exit_code: int
    ) -> List[Any]:
        """
        The sockets in request order, from what the helper sent (every packet; their fds are
        ours now) and how it exited.

        @raise ProcketError: the one typed error for whatever went wrong, its index the caller's;
            then nothing stays open.
        """
        try:
            received = sockets_from_reply(self.helper_requests(), command, packets, exit_code)
        except ProcketError as error:
            raise self.fail(error) from None
        self._opened.update(zip(self.privileged, received))
        return self.sockets()

    def fail(self, error: ProcketError) -> ProcketError:
        """
        Close what was opened here and return ERROR with its index the caller's (and, when no
        helper could be run after the kernel refused a bind tried here, saying so).
        """
        self.abandon()
        if self._refused_here and error.step in ("find", "spawn"):
            error.strerror = (
                "the kernel refused to let this process bind it itself (no kernel grant covers "
                f"it: procket-twisted grant), and {error.strerror}"
            )
        if 1 <= error.index <= len(self.privileged):
            error.index = self.privileged[error.index - 1] + 1
        return error

    def discard(self, packets: Sequence[Packet]) -> None:
        """Close every fd of PACKETS: a reply that came too late (after a timeout or a cancel)."""
        close_fds([fd for packet in packets for fd in packet.fds])

    def timeout_error(self, killed: bool = True) -> HelperTimeoutError:
        """The error for a helper that did not answer in time (what was opened here is closed)."""
        self.abandon()
        return helper_timeout(self.timeout, killed)

    def abandon(self) -> None:
        """Close everything opened here (the batch will not be handed to the caller)."""
        opened, self._opened = self._opened, {}
        close_sockets(opened.values())
