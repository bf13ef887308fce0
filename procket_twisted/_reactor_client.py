"""
Getting sockets from the helper without blocking the reactor: the Twisted layer's driver.

The helper runs as a child process the reactor watches (``spawnProcess``, with our end of the
channel as its stdin, stdout and stderr); when it ends, its reply is read from the channel and
turned into sockets by the same code as the blocking API (`sockets_from_reply`). A timeout or a
cancelled Deferred kills it; every received fd is closed unless it is handed to the caller.

Before the reactor runs (``twistd`` calls ``privilegedStartService`` before ``reactor.run()``),
the blocking API is used instead: nothing is waiting on the reactor yet, and a failure then raises
at once, so ``twistd --listen procket:tcp:80`` stops with the error, as ``--listen tcp:80`` does.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Iterable, List

from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from ._api import (
    DEFAULT_TIMEOUT,
    check_batch,
    close_sockets,
    listen_many,
    open_what_needs_no_privilege,
    renumber,
)
from ._errors import HelperTimeoutError, ProcketError
from ._kinds import AnyRequest
from ._locate import Progname, find_helper
from ._protocol import Packet, close_fds, receive_packets
from ._reply import sockets_from_reply
from ._spawn import helper_argv, spawn_error

__all__ = ["acquireSockets"]


class _HelperProcess(ProcessProtocol):
    """Watches one helper run; ``ended`` fires with its exit code (``os.waitstatus_to_exitcode``)."""

    def __init__(self) -> None:
        self.ended: defer.Deferred[int] = defer.Deferred()

    def processEnded(self, reason: Failure) -> None:
        status = getattr(reason.value, "status", None)
        code = os.waitstatus_to_exitcode(status) if status is not None else 255
        self.ended.callback(code)

    def kill(self) -> None:
        """SIGKILL the helper, if it still runs."""
        if self.transport is None:
            return
        try:
            self.transport.signalProcess("KILL")
        except (ProcessExitedAlready, OSError):
            pass


def _run_helper(
    reactor: Any, command_progname: Progname, requests: List[AnyRequest], timeout: float
) -> defer.Deferred[List[socket.socket]]:
    command = find_helper(command_progname)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = _HelperProcess()
    state = {"outcome": "running"}  # running, then done, timeout or cancelled

    def cancel(_: defer.Deferred[List[socket.socket]]) -> None:
        state["outcome"] = "cancelled"
        process.kill()

    result: defer.Deferred[List[socket.socket]] = defer.Deferred(cancel)
    try:
        fd = theirs.fileno()
        reactor.spawnProcess(
            process,
            command.executable,
            helper_argv(command, requests),
            env=dict(os.environ),
            childFDs={0: fd, 1: fd, 2: fd},
        )
    except OSError as error:
        ours.close()
        raise spawn_error(error, command) from None
    finally:
        theirs.close()

    def on_timeout() -> None:
        state["outcome"] = "timeout"
        process.kill()

    timer = reactor.callLater(timeout, on_timeout)

    def ended(exit_code: int) -> None:
        if timer.active():
            timer.cancel()
        with ours:
            packets: List[Packet] = receive_packets(ours)[0]
        if state["outcome"] == "cancelled":
            close_fds([fd for packet in packets for fd in packet.fds])
            return
        if state["outcome"] == "timeout":
            close_fds([fd for packet in packets for fd in packet.fds])
            result.errback(
                HelperTimeoutError(
                    f"the helper did not answer within {timeout:g} s and was killed",
                    step="timeout",
                )
            )
            return
        state["outcome"] = "done"
        try:
            sockets = sockets_from_reply(requests, command, packets, exit_code)
        except ProcketError as error:
            result.errback(error)
        else:
            result.callback(sockets)

    process.ended.addCallback(ended)
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
