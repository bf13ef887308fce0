"""
Privileged sockets for asyncio programs, awaited without ever blocking the event loop: the
asyncio driver of the helper (L{procket_twisted.aio}), built on the same core as the blocking
API and the reactor's driver (L{Exchange}).

The loop is never blocked: what this process may open itself is opened at once (a bind, as the
other drivers do, trying a privileged port first where a kernel grant may allow it); the helper,
when one is needed, is started with C{posix_spawn} (a static helper execs in well under a
millisecond) in a turn of the loop of its own, a few at a time (the pacing the reactor's driver
uses: L{procket_twisted._client.pacing}), and the loop watches its pidfd (C{os.pidfd_open} and
C{loop.add_reader}): no thread, no SIGCHLD handler, no child watcher, and no C{waitpid} until
the pidfd says the helper has exited, when it returns at once. Its reply is then read from the
channel without blocking.

A timeout kills the helper (SIGKILL) and fails with L{HelperTimeoutError} once it is reaped;
cancelling the awaiting task kills it too, and the task ends (with C{CancelledError}) once it is
reaped. Either way every descriptor received or opened is closed, a reply that arrives too late
included, and no child is left. A helper that cannot be signalled (run as another user through
sudo) is left to its own 10-second watchdog, and reaped by the loop when it ends; the loop must
keep running until then, or it stays a zombie until this process exits.

The sockets come back non-blocking, ready for C{loop.create_server(sock=...)},
C{loop.create_datagram_endpoint(sock=...)}, C{asyncio.start_server(sock=...)} and the
C{loop.sock_*} methods (the first three would make them non-blocking themselves; the C{sock_*}
methods need it). A TUN/TAP device's descriptor is non-blocking too, for C{loop.add_reader}.

A test's stand-in for the helper (L{procket_twisted.testing.useFakeHelper}, the C{procket_helper}
pytest fixture) stands in here too, as for the other drivers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import weakref
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from .api import DEFAULT_TIMEOUT
from .errors import HelperFailedError, ProcketError
from .exchange import Exchange, check_batch
from .kinds import AnyRequest
from .locate import HelperCommand, Progname
from .pacing import OnEnd, Pacer
from .packet import Instruction, PacketRequest
from .raw import RawRequest
from .request import IPAddressLike, SocketRequest
from .spawn import start_helper, stop_helper
from .standin import installed
from .tun import TunDevice, TunRequest
from .wire import Packet, receive_packets

__all__ = ["listen", "listen_many", "open_raw", "open_packet", "open_tun"]

#: What the loop learns when the helper has ended: the packets it sent (their fds ours) and its
#: exit code.
_Ended = Tuple[List[Packet], int]
_pacers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer]" = weakref.WeakKeyDictionary()


def _cannot(what: str, error: BaseException, step: str = "spawn") -> HelperFailedError:
    """The error for a step of running the helper (at STEP) that failed here."""
    code = error.errno if isinstance(error, OSError) else None
    reason = (error.strerror if isinstance(error, OSError) else None) or str(error) or repr(error)
    return HelperFailedError(f"cannot {what}: {reason}", errno=code, step=step)


def _kill(pid: int) -> bool:
    """SIGKILL the helper PID (not yet reaped); False when it may not be signalled (sudo)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    return True


async def _wait_uncancellable(waited: "asyncio.Future[Any]") -> bool:
    """
    Wait until WAITED is done, even when the task is cancelled meanwhile (a killed helper ends in
    a moment, and must be reaped before the task ends); return whether it was cancelled.
    """
    cancelled = False
    while not waited.done():
        try:
            await asyncio.wait({waited})
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


class _HelperRun:
    """
    One helper, watched by the loop through its pidfd. When the pidfd is readable the helper has
    exited: L{_exited} reaps it (C{waitpid} returns at once then), reads what it left on the
    channel, closes the channel and settles L{ended}, which is never cancelled. After L{abandon},
    whatever it sent is closed instead of handed on.

    @ivar ended: the packets the helper sent and its exit code, once it has exited and is reaped.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: Exchange,
        pid: int,
        channel: socket.socket,
    ) -> None:
        """
        Watch the helper PID, which answers on CHANNEL (ours to close once it has ended).

        @raise OSError: when its pidfd cannot be opened (nothing is watched then).
        @raise NotImplementedError: when LOOP cannot watch a descriptor.
        """
        self._loop = loop
        self._batch = batch
        self.pid = pid
        self._channel = channel
        self._abandoned = False
        self.ended: asyncio.Future[_Ended] = loop.create_future()
        self._pidfd = os.pidfd_open(pid)
        try:
            loop.add_reader(self._pidfd, self._exited)
        except BaseException:
            os.close(self._pidfd)
            raise

    def _exited(self) -> None:
        """The pidfd is readable: the helper has exited. Reap it and read its reply."""
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        try:
            _, status = os.waitpid(self.pid, 0)
            exit_code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            # Reaped by someone else (SIGCHLD ignored, a waitpid(-1) child watcher): its exit
            # status is lost, and its reply says the rest.
            exit_code = 0
        try:
            with self._channel:
                packets = receive_packets(self._channel, until_answer=True)[0]
        except OSError as error:
            if not self._abandoned:
                self.ended.set_exception(_cannot("read the helper's reply", error, "reply"))
                return
            packets = []
        if self._abandoned:
            self._batch.discard(packets)
            packets = []
        self.ended.set_result((packets, exit_code))

    def abandon(self) -> bool:
        """
        Kill the helper, if it still runs, and close whatever it sends (now, or when it has
        ended); L{ended} is of no use after this. Returns False when the helper could not be
        signalled (run as another user, through sudo): its own watchdog ends it.
        """
        self._abandoned = True
        if not self.ended.done():
            return _kill(self.pid)
        if self.ended.exception() is None:
            self._batch.discard(self.ended.result()[0])
        return True


def _cancel_handle(handle: Any) -> None:
    handle.cancel()  # any loop's handle (uvloop's are not asyncio.TimerHandle)


def _pacer(loop: asyncio.AbstractEventLoop) -> Pacer:
    """The pacer of LOOP's helper starts (one per loop)."""
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = Pacer(loop.call_later, _cancel_handle)
    return pacer


def _start_now(
    loop: asyncio.AbstractEventLoop, batch: Exchange, progname: Progname
) -> Tuple[HelperCommand, _HelperRun]:
    """
    Start the helper for what BATCH left to it, watched by LOOP (the pacer's job, in its turn).

    @raise ProcketError: the one typed error (nothing open, no child left).
    """
    command, argv = batch.helper_command(progname)
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError as error:
        raise batch.fail(_cannot("make the channel to the helper", error)) from None
    try:
        try:
            pid = start_helper(command, argv, theirs)
        finally:
            theirs.close()
    except ProcketError as error:
        ours.close()
        raise batch.fail(error) from None
    try:
        return command, _HelperRun(loop, batch, pid, ours)
    except (OSError, NotImplementedError) as error:
        # No pidfd (EMFILE), or a loop that cannot watch one: the helper must not be left
        # running or unreaped (a SIGKILLed helper is reaped at once).
        ours.close()
        stop_helper(pid)
        raise batch.fail(_cannot("watch the helper", error)) from None


async def _from_helper(batch: Exchange, progname: Progname) -> List[Any]:
    """
    Run the helper for what BATCH left to it, started in its turn by the loop's pacer (at most
    one start per turn of the loop, a few helpers at a time: L{procket_twisted._client.pacing})
    and watched by the loop, and return all the sockets in request order.

    @raise ProcketError: the one typed error (nothing open, no child left).
    @raise asyncio.CancelledError: when the awaiting task is cancelled (the helper killed and
        reaped first, nothing open).
    """
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Tuple[HelperCommand, _HelperRun]] = loop.create_future()

    def job() -> Optional[OnEnd]:
        if started.cancelled():  # the task was cancelled while it waited: nothing runs
            return None
        try:
            command_and_run = _start_now(loop, batch, progname)
        except Exception as error:  # the typed error; anything else must not leave it waiting
            if not isinstance(error, ProcketError):
                batch.abandon()
            started.set_exception(error)
            return None
        started.set_result(command_and_run)
        ended = command_and_run[1].ended
        return lambda release: ended.add_done_callback(lambda _: release())

    _pacer(loop).start(job)
    try:
        command, run = await started
    except BaseException:  # cancelled, or the start failed (then nothing runs)
        batch.abandon()
        if started.done() and not started.cancelled() and started.exception() is None:
            running = started.result()[1]  # cancelled just after the start
            if running.abandon():
                await _wait_uncancellable(running.ended)
        raise
    try:
        await asyncio.wait({run.ended}, timeout=batch.timeout)
    except BaseException:  # the awaiting task was cancelled (all that asyncio.wait raises)
        batch.abandon()
        if run.abandon():
            await _wait_uncancellable(run.ended)
        raise
    if not run.ended.done():
        killed = run.abandon()
        if killed and await _wait_uncancellable(run.ended):
            batch.abandon()
            raise asyncio.CancelledError()
        raise batch.timeout_error(killed)
    try:
        packets, exit_code = run.ended.result()
    except ProcketError as error:
        raise batch.fail(error) from None
    return batch.finish(command, packets, exit_code)


def _non_blocking(opened: Sequence[Any]) -> List[Any]:
    """OPENED (sockets and TUN devices), each made non-blocking, as a list."""
    for each in opened:
        if isinstance(each, socket.socket):
            each.setblocking(False)
        else:
            os.set_blocking(each.fileno(), False)
    return list(opened)


async def listen_many(
    requests: Iterable[AnyRequest],
    *,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> List[Any]:
    """
    L{procket_twisted.listen_many} for asyncio: several sockets (or TUN/TAP devices), with at
    most one helper run for all that need privilege, without blocking the event loop.

    @param requests: what to open, 1 to 253 of them: L{SocketRequest} (TCP, UDP), L{RawRequest},
        L{PacketRequest}, L{TunRequest}, in any mix.
    @param progname: the helper command (see L{procket_twisted.listen}).
    @param timeout: seconds to wait for the helper before killing it.
    @param direct: open in this process what needs no privilege here (see
        L{procket_twisted.listen}).
    @return: the sockets (and L{TunDevice} objects), in the order of REQUESTS, all non-blocking.
    @raise TypeError: for something that is not a request (when awaited, before anything runs).
    @raise ValueError: for a count or timeout out of range (likewise).
    @raise ProcketError: on any failure; then no socket stays open and no helper is left running.
        C{error.index} is the 1-based position in REQUESTS of the socket that failed (or 0).
    @raise asyncio.CancelledError: when the awaiting task is cancelled: the helper has been
        killed and reaped, and nothing stays open.
    """
    stand_in = installed()
    if stand_in is not None:  # a test's fake helper (procket_twisted.testing)
        return _non_blocking(stand_in(check_batch(requests, timeout)))
    batch = Exchange(requests, timeout, direct)
    if not batch.needs_helper:
        return _non_blocking(batch.sockets())
    return _non_blocking(await _from_helper(batch, progname))


async def listen(
    port: int,
    protocol: str = "tcp",
    ip: IPAddressLike = None,
    *,
    backlog: Optional[int] = None,
    v6only: Optional[bool] = None,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
    **options: Any,
) -> socket.socket:
    """
    L{procket_twisted.listen} for asyncio: a listening TCP socket, or a bound UDP socket, on any
    port, without blocking the event loop::

        sock = await procket_twisted.aio.listen(80)
        server = await asyncio.start_server(handle, sock=sock)

    The arguments and errors are those of L{procket_twisted.listen}. C{create_server} and
    C{start_server} listen again with their own C{backlog} (100 by default): pass the same one.

    @param port: 0-65535.
    @param protocol: C{"tcp"} or C{"udp"}.
    @param ip: the local address (see L{procket_twisted.listen}); C{None} is every IPv4 address.
    @param backlog: the listen queue for TCP (default 128).
    @param v6only: for IPv6: C{True} IPv6 only, C{False} dual-stack, C{None} system default.
    @param options: socket options set before bind, as L{SocketRequest} takes them.
    @param progname: the command that runs the helper (default: C{$PROCKET_HELPER}, then the
        installed helper).
    @param timeout: seconds to wait for the helper before it is killed.
    @param direct: bind here when this process may; C{False} always asks the helper.
    @return: a non-blocking C{socket.socket}, owned by this process's user.
    @raise ValueError: for a bad port, protocol, address or option (when awaited, before
        anything runs).
    @raise TypeError: for an argument of the wrong type (likewise).
    @raise ProcketError: on any failure (L{procket_twisted.listen} lists its kinds), with
        L{HelperTimeoutError} when the helper did not answer within TIMEOUT (it was killed).
    @raise asyncio.CancelledError: when the awaiting task is cancelled (the helper killed and
        reaped, nothing open).
    """
    request = SocketRequest(port, protocol, ip, backlog, v6only, **options)
    opened = await listen_many([request], progname=progname, timeout=timeout, direct=direct)
    sock: socket.socket = opened[0]
    return sock


async def open_raw(
    protocol: Union[int, str],
    ip: IPAddressLike = None,
    *,
    family: Optional[str] = None,
    header_included: bool = False,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
    **options: Any,
) -> socket.socket:
    """
    L{procket_twisted.open_raw} for asyncio: a non-blocking raw IP socket, for
    C{loop.sock_recvfrom} or C{create_datagram_endpoint(sock=...)}.

    See L{RawRequest} for the arguments and L{listen} for progname, timeout, direct, the errors
    and cancellation. The policy must name C{kind=raw}.
    """
    request = RawRequest(protocol, ip, family, header_included, **options)
    opened = await listen_many([request], progname=progname, timeout=timeout, direct=direct)
    sock: socket.socket = opened[0]
    return sock


async def open_packet(
    ethertype: int,
    device: Optional[str] = None,
    *,
    cooked: bool = False,
    promiscuous: bool = False,
    filter: Optional[Sequence[Instruction]] = None,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
    **options: Any,
) -> socket.socket:
    """
    L{procket_twisted.open_packet} for asyncio: a non-blocking packet socket.

    See L{PacketRequest} for the arguments and L{listen} for the rest. The policy must name
    C{kind=packet}.
    """
    request = PacketRequest(ethertype, device, cooked, promiscuous, filter, **options)
    opened = await listen_many([request], progname=progname, timeout=timeout, direct=direct)
    sock: socket.socket = opened[0]
    return sock


async def open_tun(
    name: Optional[str] = None,
    *,
    mode: str = "tun",
    address: Optional[str] = None,
    up: bool = False,
    packet_info: bool = False,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> TunDevice:
    """
    L{procket_twisted.open_tun} for asyncio: a new TUN (or TAP) interface owned by this user,
    its descriptor non-blocking (read it when C{loop.add_reader} says it is readable).

    See L{TunRequest} for the arguments and L{listen} for the rest. The policy must name
    C{kind=tun} (or C{kind=tap}).
    """
    request = TunRequest(mode, name, address, up, packet_info)
    opened = await listen_many([request], progname=progname, timeout=timeout, direct=direct)
    device: TunDevice = opened[0]
    return device
