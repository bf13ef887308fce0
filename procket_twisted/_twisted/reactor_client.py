"""
Getting sockets from the helper without blocking the reactor: the Twisted layer's driver.

The helper is started as the blocking API starts it (C{posix_spawn}, with our end of the channel
as its stdin, stdout and stderr), when the pacer (L{procket_twisted._twisted.pacer}) says so: one per
reactor turn, a few at a time. The reactor watches its pidfd;
when it ends, its reply is read from the channel and turned into sockets by the same code as the
blocking API (L{sockets_from_reply}). A timeout or a cancelled Deferred kills it; every received fd
is closed unless it is handed to the caller. (Twisted's C{spawnProcess} would block the reactor
several times longer per helper: it checks every signal and every open descriptor.)

Before the reactor runs (C{twistd} calls C{privilegedStartService} before C{reactor.run()}),
the blocking API is used instead: nothing is waiting on the reactor yet, and a failure then raises
at once, so C{twistd --listen procket:tcp:80} stops with the error, as C{--listen tcp:80} does.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any, Iterable, List, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from .._client.api import (
    DEFAULT_TIMEOUT,
    check_batch,
    close_sockets,
    listen_many,
    open_what_needs_no_privilege,
    renumber,
)
from .._client.errors import HelperFailedError, HelperTimeoutError, ProcketError
from .._client.kinds import AnyRequest
from .._client.locate import HelperCommand, Progname, find_helper
from .._client.reply import sockets_from_reply
from .._client.spawn import helper_argv, start_helper, stop_helper
from .._client.wire import Packet, close_fds, receive_packets
from .pacer import pacer_for

__all__ = ["acquireSockets"]


@implementer(IReadDescriptor)
class _ExitWatcher:
    """
    Tells when the helper exits, through its pidfd in the reactor (no SIGCHLD machinery): when
    the pidfd is readable the helper has exited; this reaps it and fires C{ended} with its exit
    code. If the reactor stops first, the helper is killed and reaped, so none is left behind.
    """

    def __init__(self, reactor: Any, pid: int) -> None:
        self._reactor = reactor
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.ended: defer.Deferred[int] = defer.Deferred()
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._pidfd

    def logPrefix(self) -> str:
        return "procket-helper"

    def doRead(self) -> None:
        self._reactor.removeReader(self)
        self.ended.callback(self._reap())

    def connectionLost(self, reason: Failure) -> None:
        if self._pidfd >= 0:
            self.kill()
            self._reap()

    def kill(self) -> None:
        """SIGKILL the helper, if it still runs."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> int:
        os.close(self._pidfd)
        self._pidfd = -1
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def _cannot_start(what: str, error: OSError) -> HelperFailedError:
    return HelperFailedError(
        f"cannot {what}: {error.strerror or error}", errno=error.errno, step="spawn"
    )


class _HelperRun:
    """
    One helper run for a list of requests, from its place in the pacer's queue to its Deferred
    firing: L{_spawn} is the pacer's job (all the work happens there, so that queueing many runs in
    one reactor turn costs that turn little), L{_ended} reads the reply when the helper has exited.
    """

    def __init__(
        self, reactor: Any, progname: Progname, requests: List[AnyRequest], timeout: float
    ) -> None:
        self._reactor = reactor
        self._progname = progname
        self._requests = requests
        self._timeout = timeout
        self._outcome = "waiting"  # then running; or cancelled, timeout; done
        self._watcher: Any = None
        self.result: defer.Deferred[List[socket.socket]] = defer.Deferred(self._cancel)
        pacer_for(reactor).start(self._spawn)

    def _cancel(self, _: defer.Deferred[List[socket.socket]]) -> None:
        previous, self._outcome = self._outcome, "cancelled"
        if previous == "running":
            self._watcher.kill()

    def _fail(self, error: ProcketError) -> None:
        self._outcome = "done"
        self.result.errback(error)

    def _spawn(self) -> Optional[defer.Deferred[Any]]:
        """
        Start the helper, unless cancelled; return the Deferred that fires when it has ended, or
        None when it was not started.
        """
        if self._outcome == "cancelled":
            return None
        try:
            command = find_helper(self._progname)
            argv = helper_argv(command, self._requests)
        except ProcketError as error:
            self._fail(error)
            return None
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as error:
            self._fail(_cannot_start("make the channel to the helper", error))
            return None
        try:
            pid = start_helper(command, argv, theirs)
        except ProcketError as error:
            ours.close()
            self._fail(error)
            return None
        finally:
            theirs.close()
        try:
            self._watcher = _ExitWatcher(self._reactor, pid)
        except OSError as error:  # no pidfd: the helper must not be left running or unreaped
            stop_helper(pid)
            ours.close()
            self._fail(_cannot_start("watch the helper", error))
            return None
        self._outcome = "running"
        timer = self._reactor.callLater(self._timeout, self._on_timeout)
        # The pacer's own Deferred, fired first thing when the helper has ended: the helper's
        # place is free before anyone learns the outcome.
        place: defer.Deferred[Any] = defer.Deferred()
        self._watcher.ended.addCallback(self._ended, command, ours, timer, place)
        return place

    def _on_timeout(self) -> None:
        self._outcome = "timeout"
        self._watcher.kill()

    def _ended(
        self,
        exit_code: int,
        command: HelperCommand,
        ours: socket.socket,
        timer: Any,
        place: defer.Deferred[Any],
    ) -> None:
        place.callback(None)
        if timer.active():
            timer.cancel()
        with ours:
            packets: List[Packet] = receive_packets(ours, until_answer=True)[0]
        outcome, self._outcome = self._outcome, "done"
        if outcome != "running":
            close_fds([fd for packet in packets for fd in packet.fds])
            if outcome == "timeout":
                self.result.errback(
                    HelperTimeoutError(
                        f"the helper did not answer within {self._timeout:g} s and was killed",
                        step="timeout",
                    )
                )
            return
        try:
            sockets = sockets_from_reply(self._requests, command, packets, exit_code)
        except ProcketError as error:
            self.result.errback(error)
        else:
            self.result.callback(sockets)


def acquireSockets(
    reactor: Any,
    requests: Iterable[AnyRequest],
    *,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> defer.Deferred[List[socket.socket]]:
    """
    L{procket_twisted.listen_many} for Twisted: the sockets for REQUESTS, without blocking the
    reactor.

    @param reactor: the reactor (C{IReactorProcess} and C{IReactorTime}) that runs the helper.
    @return: a Deferred firing with the sockets in request order, or failing with the
        L{ProcketError}. Cancelling it kills the helper and closes everything.
    @raise TypeError, ValueError: at once, for bad REQUESTS or TIMEOUT.
    """
    wanted = check_batch(requests, timeout)
    if not getattr(reactor, "running", False):
        return defer.execute(listen_many, wanted, progname=progname, timeout=timeout, direct=direct)
    try:
        opened, privileged = open_what_needs_no_privilege(wanted, direct)
    except ProcketError:
        return defer.fail()
    if not privileged:
        return defer.succeed([opened[p] for p in range(len(wanted))])

    def merge(sockets: List[socket.socket]) -> List[socket.socket]:
        opened.update(zip(privileged, sockets))
        return [opened[p] for p in range(len(wanted))]

    def undo(failure: Failure) -> Failure:
        close_sockets(opened.values())
        if isinstance(failure.value, ProcketError):
            renumber(failure.value, privileged)
        return failure

    run = _HelperRun(reactor, progname, [wanted[p] for p in privileged], timeout)
    return run.result.addCallbacks(merge, undo)
