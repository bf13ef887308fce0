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

from .._client.api import DEFAULT_TIMEOUT, listen_many
from .._client.errors import HelperFailedError, ProcketError
from .._client.exchange import Exchange, check_batch
from .._client.kinds import AnyRequest
from .._client.locate import HelperCommand, Progname
from .._client.spawn import start_helper, stop_helper
from .._client.standin import installed
from .._client.wire import Packet, receive_packets
from .pacer import pacerFor

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


def _cannotStart(what: str, error: OSError) -> HelperFailedError:
    return HelperFailedError(
        f"cannot {what}: {error.strerror or error}", errno=error.errno, step="spawn"
    )


class _HelperRun:
    """
    One helper run for a batch (an L{Exchange}), from its place in the pacer's queue to its
    Deferred firing: L{_spawn} is the pacer's job (all the work happens there, so that queueing
    many runs in one reactor turn costs that turn little), L{_ended} reads the reply when the
    helper has exited, and the batch turns it into the sockets or the one error.
    """

    def __init__(self, reactor: Any, progname: Progname, batch: Exchange) -> None:
        self._reactor = reactor
        self._progname = progname
        self._batch = batch
        self._outcome = "waiting"  # then running; or cancelled, timeout; done
        self._watcher: Any = None
        self.result: defer.Deferred[List[Any]] = defer.Deferred(self._cancel)
        pacerFor(reactor).start(self._spawn)

    def _cancel(self, _: defer.Deferred[List[Any]]) -> None:
        previous, self._outcome = self._outcome, "cancelled"
        self._batch.abandon()
        if previous == "running":
            self._watcher.kill()

    def _fail(self, error: ProcketError) -> None:
        self._outcome = "done"
        self.result.errback(self._batch.fail(error))

    def _spawn(self) -> Optional[defer.Deferred[Any]]:
        """
        Start the helper, unless cancelled; return the Deferred that fires when it has ended, or
        None when it was not started.
        """
        if self._outcome == "cancelled":
            return None
        try:
            command, argv = self._batch.helper_command(self._progname)
        except ProcketError as error:
            self._fail(error)
            return None
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as error:
            self._fail(_cannotStart("make the channel to the helper", error))
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
            self._fail(_cannotStart("watch the helper", error))
            return None
        self._outcome = "running"
        timer = self._reactor.callLater(self._batch.timeout, self._onTimeout)
        # The pacer's own Deferred, fired first thing when the helper has ended: the helper's
        # place is free before anyone learns the outcome.
        place: defer.Deferred[Any] = defer.Deferred()
        self._watcher.ended.addCallback(self._ended, command, ours, timer, place)
        return place

    def _onTimeout(self) -> None:
        self._outcome = "timeout"
        self._watcher.kill()

    def _ended(
        self,
        exitCode: int,
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
        if outcome != "running":  # too late: the caller has its error (or cancelled)
            self._batch.discard(packets)
            if outcome == "timeout":
                self.result.errback(self._batch.timeout_error())
            return
        try:
            sockets = self._batch.finish(command, packets, exitCode)
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
) -> defer.Deferred[List[Any]]:
    """
    L{procket_twisted.listen_many} for Twisted: the sockets for REQUESTS, without blocking the
    reactor. Before the reactor runs (twistd's privileged start, the start of a C{task.react}
    main) they are acquired at once, blocking, so that a failure stops twistd; C{await
    task.deferLater(reactor, 0)} first in a C{task.react} main to have the reactor's path.

    @param reactor: the reactor (C{IReactorProcess} and C{IReactorTime}) that runs the helper.
    @return: a Deferred firing with the sockets in request order, or failing with the
        L{ProcketError}. Cancelling it kills the helper and closes everything.
    @raise TypeError, ValueError: at once, for bad REQUESTS or TIMEOUT.
    """
    if installed() is not None or not getattr(reactor, "running", False):
        wanted = check_batch(requests, timeout)
        return defer.execute(listen_many, wanted, progname=progname, timeout=timeout, direct=direct)
    try:
        batch = Exchange(requests, timeout, direct)
    except ProcketError:
        return defer.fail()
    if not batch.needs_helper:
        return defer.succeed(batch.sockets())
    return _HelperRun(reactor, progname, batch).result
