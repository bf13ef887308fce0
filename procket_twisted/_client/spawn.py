"""
Running the helper and waiting for it, blocking: the plain Python API's driver.

The channel is a C{SOCK_SEQPACKET} socket pair; the helper gets one end as its stdin, stdout and
stderr (so anything sudo or the loader prints reaches us as diagnostics instead of the user's
terminal). We wait on a pidfd and the channel together, up to the timeout; a helper still running
then is killed with SIGKILL and reaped. Every path closes every fd it received and reaps the child.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import signal
import socket
import stat
import threading
from typing import List, Optional, Tuple

from .errors import (
    HelperFailedError,
    HelperNotFoundError,
    PolicyDeniedError,
    ProcketError,
)
from .failures import helper_timeout
from .locate import INSTALL_HINT, HelperCommand
from .wire import Packet, close_fds, receive_packets

__all__ = [
    "exchange",
    "spawn_error",
    "start_helper",
    "stop_helper",
]


def _unsearchable_directory(path: str) -> Optional[str]:
    """The first directory above PATH that this process may not search, or None."""
    current = os.path.dirname(os.path.abspath(path))
    ancestors = []
    while True:
        ancestors.append(current)
        if current == "/":
            break
        current = os.path.dirname(current)
    for directory in reversed(ancestors):
        if not os.access(directory, os.X_OK):
            return directory
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _why_not_executable(path: str) -> str:
    """Why this process may not execute PATH, and what would fix it."""
    closed = _unsearchable_directory(path)
    if closed is not None:
        return (
            f"this user cannot enter {closed} (no search permission); as root: chmod o+x {closed}"
        )
    try:
        info = os.stat(path)
        noexec = bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:
        return "this user may not execute it"
    if not info.st_mode & stat.S_IXOTH and info.st_mode & stat.S_IXGRP:
        group, user = _group_name(info.st_gid), _user_name(os.getuid())
        return (
            f"only root and members of group {group} (gid {info.st_gid}) may run it (mode "
            f"{stat.S_IMODE(info.st_mode):o}); an administrator can add this user to that group "
            f"(usermod -aG {group} {user}, then log in again)"
        )
    if noexec:
        return "its filesystem is mounted noexec"
    return "this user may not execute it"


def spawn_error(error: OSError, command: HelperCommand) -> ProcketError:
    """The typed error for a helper that could not be started at all."""
    path = command.executable
    if error.errno == 2:  # ENOENT
        return HelperNotFoundError(
            f"the helper {path} (from {command.source}) does not exist; {INSTALL_HINT}, or fix "
            f"{command.source}",
            step="spawn",
        )
    if error.errno == 13:  # EACCES
        return PolicyDeniedError(
            f"permission denied running the helper {path}: {_why_not_executable(path)}",
            step="spawn",
        )
    return HelperFailedError(
        f"cannot start the helper {command.describe()}: {error.strerror}",
        errno=error.errno,
        step="spawn",
    )


def start_helper(command: HelperCommand, argv: List[str], channel: socket.socket) -> int:
    """Start the helper with ARGV, CHANNEL as its stdin, stdout and stderr; return its pid.

    @raise ProcketError: when it cannot be started.
    """
    fd = channel.fileno()
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target in (0, 1, 2)]
    # A one-word command is the helper itself, which reads nothing from its environment (it
    # clears it): give it none, which also spares converting ours on every call. A command
    # with arguments (sudo, a shell, an interpreter) gets ours.
    environment = {} if len(command.argv) == 1 else os.environ
    try:
        return os.posix_spawn(command.executable, argv, environment, file_actions=actions)
    except OSError as error:
        raise spawn_error(error, command) from None


def stop_helper(pid: int) -> bool:
    """
    SIGKILL the helper and reap it. Returns False when it runs as another user (through sudo) and
    cannot be signalled: then a thread reaps it when its own watchdog ends it.
    """
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        threading.Thread(
            target=os.waitpid, args=(pid, 0), name="procket-reaper", daemon=True
        ).start()
        return False
    os.waitpid(pid, 0)
    return True


def _wait(pid: int, channel: socket.socket, timeout: float) -> Tuple[List[Packet], int]:
    """
    Wait for the helper to exit (one wakeup, on its pidfd) and reap it, then read every packet it
    left on the channel; stop it at the deadline. Its reply is a few bytes, far below what the
    channel buffers, so it never waits for us to read.
    """
    pidfd = os.pidfd_open(pid)
    reaped = False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            reaped = True
            raise helper_timeout(timeout, stop_helper(pid))
        _, status = os.waitpid(pid, 0)
        reaped = True
    except BaseException:
        if not reaped:
            stop_helper(pid)
        close_fds([fd for packet in receive_packets(channel)[0] for fd in packet.fds])
        raise
    finally:
        os.close(pidfd)
    return receive_packets(channel, until_answer=True)[0], os.waitstatus_to_exitcode(status)


def exchange(command: HelperCommand, argv: List[str], timeout: float) -> Tuple[List[Packet], int]:
    """
    Run the helper with ARGV and return every packet it sent (their fds are the caller's to
    close) and its exit code.

    @raise ProcketError: when it cannot be started, or does not end within TIMEOUT.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        try:
            pid = start_helper(command, argv, theirs)
        finally:
            theirs.close()
        return _wait(pid, ours, timeout)
