"""
Getting sockets from the helper without blocking the reactor: the Twisted layer's driver.

The helper is started as the blocking API starts it (``posix_spawn``, with our end of the channel
as its stdin, stdout and stderr), at most one per reactor turn, and the reactor watches its pidfd;
when it ends, its reply is read from the channel and turned into sockets by the same code as the
blocking API (`sockets_from_reply`). A timeout or a cancelled Deferred kills it; every received fd
is closed unless it is handed to the caller. (Twisted's ``spawnProcess`` would block the reactor
several times longer per helper: it checks every signal and every open descriptor.)

Before the reactor runs (``twistd`` calls ``privilegedStartService`` before ``reactor.run()``),
the blocking API is used instead: nothing is waiting on the reactor yet, and a failure then raises
at once, so ``twistd --listen procket:tcp:80`` stops with the error, as ``--listen tcp:80`` does.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import weakref
from typing import Any, Callable, Deque, Dict, Iterable, List

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from ._api import (
    DEFAULT_TIMEOUT,
    check_batch,
    close_sockets,
    listen_many,
    open_what_needs_no_privilege,
    renumber,
)
from ._errors import HelperFailedError, HelperTimeoutError, ProcketError
from ._kinds import AnyRequest
from ._locate import Progname, find_helper
from ._protocol import Packet, close_fds, receive_packets
from ._reply import sockets_from_reply
from ._spawn import helper_argv, start_helper, stop_helper

__all__ = ["acquireSockets"]


@implementer(IReadDescriptor)
class _ExitWatcher:
    """
    Tells when the helper exits, through its pidfd in the reactor (no SIGCHLD machinery): when
    the pidfd is readable the helper has exited; this reaps it and fires ``ended`` with its exit
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


class _SpawnPacer:
    """
    Starts at most one helper per reactor turn. Each start blocks the reactor for the spawn
    (about a tenth of a millisecond); a hundred endpoint listens started together would
    otherwise block it for all of theirs at once.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._waiting: Deque[Callable[[], None]] = collections.deque()
        self._scheduled = False

    def start(self, spawn: Callable[[], None]) -> None:
        """Run SPAWN in a coming reactor turn, after the ones queued before it."""
        self._waiting.append(spawn)
        self._schedule()

    def _schedule(self) -> None:
        if self._waiting and not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        try:
            self._waiting.popleft()()
        finally:
            self._schedule()


_pacers: "weakref.WeakKeyDictionary[Any, _SpawnPacer]" = weakref.WeakKeyDictionary()


def _pacer(reactor: Any) -> _SpawnPacer:
    if reactor not in _pacers:
        _pacers[reactor] = _SpawnPacer(reactor)
    return _pacers[reactor]


def _cannot_start(what: str, error: OSError) -> HelperFailedError:
    return HelperFailedError(
        f"cannot {what}: {error.strerror or error}", errno=error.errno, step="spawn"
    )


def _run_helper(
    reactor: Any, command_progname: Progname, requests: List[AnyRequest], timeout: float
) -> defer.Deferred[List[socket.socket]]:
    command = find_helper(command_progname)
    argv = helper_argv(command, requests)
    state: Dict[str, Any] = {"outcome": "waiting", "watcher": None}  # waiting, running, done...

    def cancel(_: defer.Deferred[List[socket.socket]]) -> None:
        previous, state["outcome"] = state["outcome"], "cancelled"
        if previous == "running":
            state["watcher"].kill()

    result: defer.Deferred[List[socket.socket]] = defer.Deferred(cancel)

    def fail(error: ProcketError) -> None:
        state["outcome"] = "done"
        result.errback(error)

    def spawn() -> None:
        if state["outcome"] == "cancelled":
            return
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as error:
            fail(_cannot_start("make the channel to the helper", error))
            return
        try:
            pid = start_helper(command, argv, theirs)
        except ProcketError as error:
            ours.close()
            fail(error)
            return
        finally:
            theirs.close()
        try:
            watcher = _ExitWatcher(reactor, pid)
        except OSError as error:  # no pidfd: the helper must not be left running or unreaped
            stop_helper(pid)
            ours.close()
            fail(_cannot_start("watch the helper", error))
            return
        state["outcome"], state["watcher"] = "running", watcher
        timer = reactor.callLater(timeout, on_timeout)
        watcher.ended.addCallback(ended, ours, timer)

    def on_timeout() -> None:
        state["outcome"] = "timeout"
        state["watcher"].kill()

    def ended(exit_code: int, ours: socket.socket, timer: Any) -> None:
        if timer.active():
            timer.cancel()
        with ours:
            packets: List[Packet] = receive_packets(ours, until_answer=True)[0]
        outcome, state["outcome"] = state["outcome"], "done"
        if outcome != "running":
            close_fds([fd for packet in packets for fd in packet.fds])
            if outcome == "timeout":
                result.errback(
                    HelperTimeoutError(
                        f"the helper did not answer within {timeout:g} s and was killed",
                        step="timeout",
                    )
                )
            return
        try:
            sockets = sockets_from_reply(requests, command, packets, exit_code)
        except ProcketError as error:
            result.errback(error)
        else:
            result.callback(sockets)

    _pacer(reactor).start(spawn)
    return result


def acquireSockets(
    reactor: Any,
    requests: Iterable[AnyRequest],
    *,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> defer.Deferred[List[socket.socket]]:
    """
    `procket_twisted.listen_many` for Twisted: the sockets for REQUESTS, without blocking the
    reactor.

    @param reactor: the reactor (``IReactorProcess`` and ``IReactorTime``) that runs the helper.
    @return: a Deferred firing with the sockets in request order, or failing with the
        `ProcketError`. Cancelling it kills the helper and closes everything.
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

    try:
        running = _run_helper(reactor, progname, [wanted[p] for p in privileged], timeout)
    except ProcketError:
        return defer.fail().addErrback(undo)
    return running.addCallbacks(merge, undo)
