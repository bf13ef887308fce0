"""
The helper's wire protocol, both directions, with no I/O policy of its own.

Request: the helper's argv after the program is C{v1} and then one argument per socket
(each request's C{helper_argument()}). Reply: one packet on the channel (the helper's stdin, a
C{SOCK_SEQPACKET} socket pair), either C{ok N} carrying N fds (SCM_RIGHTS) in request order, or
C{error INDEX STEP ERRNO TEXT}. The helper's exit status is the number of its failing step, as
listed in L{HELPER_STEPS} (0 on success). Any other packet is diagnostic text written by something
between us and the helper (sudo, the dynamic loader) on its stdout or stderr.
"""

from __future__ import annotations

import array
import os
import socket
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .kinds import AnyRequest

__all__ = [
    "PROTOCOL_VERSION",
    "HELPER_STEPS",
    "MAX_SOCKETS",
    "helper_arguments",
    "Packet",
    "Answer",
    "receive_packets",
    "parse_answer",
    "close_fds",
]

PROTOCOL_VERSION = "v1"
#: The helper's steps in order; a failing step's exit status is its position plus one.
HELPER_STEPS = (
    "setup", "parse", "privilege", "policy", "socket",
    "setsockopt", "bind", "listen", "drop", "send",
)  # fmt: skip
MAX_SOCKETS = 253  # SCM_MAX_FD: what one message can carry
_PACKET_BYTES = 16384  # the largest reply: a check of 253 sockets and a long policy path
_CONTROL_BYTES = socket.CMSG_SPACE(MAX_SOCKETS * array.array("i").itemsize)


def helper_arguments(requests: Sequence[AnyRequest]) -> List[str]:
    """The helper's arguments after its program name: the version, then one per socket."""
    if not 1 <= len(requests) <= MAX_SOCKETS:
        raise ValueError(f"ask for 1 to {MAX_SOCKETS} sockets per call, not {len(requests)}")
    return [PROTOCOL_VERSION] + [request.helper_argument() for request in requests]


@dataclass
class Packet:
    """One packet read from the channel, with the fds it carried (already ours to close)."""

    data: bytes
    fds: List[int] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True)
class Answer:
    """The helper's structured answer: success with a count, or a failure at a step."""

    ok: bool
    count: int = 0
    index: int = 0
    step: str = ""
    errno: int = 0
    text: str = ""


def receive_packets(
    channel: socket.socket, until_answer: bool = False
) -> Tuple[List[Packet], bool]:
    """
    Read every packet waiting on CHANNEL without blocking, or, with UNTIL_ANSWER, up to the
    helper's answer (what follows it is of no use, and reading costs).

    @return: the packets, and whether the other side has closed (end of file).
    @raise OSError: if reading fails for a reason other than "nothing more yet".
    """
    packets: List[Packet] = []
    while True:
        try:
            data, ancillary, flags, _ = channel.recvmsg(
                _PACKET_BYTES, _CONTROL_BYTES, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return packets, False
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data and not fds:
            return packets, True
        packets.append(Packet(data, list(fds), bool(flags & socket.MSG_CTRUNC)))
        if until_answer and parse_answer(data) is not None:
            return packets, False


def parse_answer(data: bytes) -> Optional[Answer]:
    """The helper's answer in DATA, or None when DATA is not one (diagnostic text)."""
    try:
        line = data.decode("ascii").rstrip("\n")
    except UnicodeDecodeError:
        return None
    words = line.split(" ", 4)
    if len(words) == 2 and words[0] == "ok" and words[1].isdigit():
        return Answer(ok=True, count=int(words[1]))
    if (
        len(words) >= 4
        and words[0] == "error"
        and words[1].isdigit()
        and words[2] in HELPER_STEPS
        and words[3].lstrip("-").isdigit()
    ):
        text = words[4] if len(words) == 5 else ""
        return Answer(ok=False, index=int(words[1]), step=words[2], errno=int(words[3]), text=text)
    return None


def close_fds(fds: Sequence[int]) -> None:
    """Close FDS, ignoring any already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
