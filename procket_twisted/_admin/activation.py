"""
C{procket-twisted run}: socket activation for any program, without systemd.

It acquires the sockets (through the helper where they need privilege), puts them at fds 3, 4...
in the order given, sets C{LISTEN_FDS}, C{LISTEN_PID} and C{LISTEN_FDNAMES} as systemd does, and
execs the command in its own process, so the command's pid is C{LISTEN_PID}. Programs that speak
the protocol (C{twistd} with C{systemd:domain=INET:index=0}, gunicorn, uvicorn C{--fd 3}...)
then serve privileged ports without privilege.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from .._client.api import DEFAULT_TIMEOUT, listen_many
from .._client.locate import Progname
from .._client.request import SocketRequest
from .._twisted.parser import socketRequestFromString

__all__ = ["FIRST_FD", "parse_listen", "activation_environment", "place_fds", "run"]

FIRST_FD = 3  # SD_LISTEN_FDS_START
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_listen(specs: Sequence[str]) -> Tuple[List[SocketRequest], List[str]]:
    """
    The requests and names for C{--listen} SPECS (C{tcp:80}, C{udp:53:name=dns}...). A name
    defaults to PROTOCOL-PORT (C{tcp-80}).

    @raise ValueError: naming the bad spec or name.
    """
    requests, names = [], []
    for spec in specs:
        request, extra = socketRequestFromString(spec, ("name",))
        name = extra.get("name", f"{request.protocol}-{request.port}")
        if not _NAME.fullmatch(name):
            raise ValueError(f"{spec!r}: name {name!r} must be 1 to 64 letters, digits, . _ -")
        requests.append(request)
        names.append(name)
    return requests, names


def activation_environment(
    environment: Dict[str, str], names: Sequence[str], pid: int
) -> Dict[str, str]:
    """ENVIRONMENT plus the variables that tell process PID about its len(NAMES) sockets."""
    return {
        **environment,
        "LISTEN_FDS": str(len(names)),
        "LISTEN_PID": str(pid),
        "LISTEN_FDNAMES": ":".join(names),
    }


def place_fds(fds: Sequence[int]) -> None:
    """
    Move FDS (ours) to FIRST_FD, FIRST_FD+1... in order, inheritable; nothing else changes.
    Each is first copied above the target range, so that no move overwrites another.
    """
    above = FIRST_FD + len(fds)
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above) for fd in fds]
    for fd in fds:
        os.close(fd)
    for position, copy in enumerate(copies):
        os.dup2(copy, FIRST_FD + position, inheritable=True)
        os.close(copy)


def run(
    specs: Sequence[str],
    command: Sequence[str],
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    environment: Optional[Dict[str, str]] = None,
) -> None:
    """
    Acquire SPECS' sockets and exec COMMAND with them; returns only by raising.

    @raise ValueError: for a bad spec or an empty command.
    @raise ProcketError: when a socket cannot be had.
    @raise OSError: when the command cannot be executed (FileNotFoundError when it is missing).
    """
    if not command:
        raise ValueError("no command given: procket-twisted run --listen tcp:80 -- COMMAND ...")
    program = shutil.which(command[0])
    if program is None:
        raise FileNotFoundError(command[0])
    requests, names = parse_listen(specs)
    sockets = listen_many(requests, progname=progname, timeout=timeout)
    place_fds([sock.detach() for sock in sockets])
    variables = activation_environment(
        dict(os.environ if environment is None else environment), names, os.getpid()
    )
    os.execve(program, list(command), variables)
