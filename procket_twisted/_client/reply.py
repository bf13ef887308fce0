"""
From what the helper sent and how it exited to sockets, or to one typed error that says what went
wrong and what to do. Shared by the blocking client and the Twisted one.
"""

from __future__ import annotations

import signal
from typing import Any, List, Sequence, Type

from .diagnose import privilege_problems
from .errors import (
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    PolicyDeniedError,
    ProcketError,
)
from .failures import socket_error
from .kinds import AnyRequest
from .locate import HelperCommand
from .validate import sockets_from_fds
from .wire import Answer, Packet, close_fds, parse_answer

__all__ = ["sockets_from_reply", "POLICY_HINT"]

POLICY_HINT = (
    "the policy is set by whoever installed the helper: ask them to allow it in the policy file "
    "named above (procket-twisted policy prints the format)"
)
_SOCKET_STEPS = ("socket", "setsockopt", "bind", "listen")
_MAX_DIAGNOSTICS = 600


def _answer_error(
    answer: Answer, requests: Sequence[AnyRequest], command: HelperCommand
) -> ProcketError:
    # Name the socket by what it is, not by its number: the caller may have sent the helper only
    # some of its sockets (the others were opened directly), so the numbers would mislead.
    where = (
        requests[answer.index - 1].describe()
        if 1 <= answer.index <= len(requests)
        else "the request"
    )
    if answer.step in _SOCKET_STEPS and 1 <= answer.index <= len(requests):
        return socket_error(
            answer.step, answer.errno, requests[answer.index - 1], answer.index, answer.text
        )
    if answer.step == "privilege":
        problems = privilege_problems(command.helper) or [answer.text]
        return _from_answer(
            HelperNotPrivilegedError,
            f"the helper {command.helper} is not privileged: {'; '.join(problems)}",
            answer,
        )
    if answer.step == "policy":
        hint = (
            requests[answer.index - 1].refusal_hint() if 1 <= answer.index <= len(requests) else ""
        )
        return _from_answer(
            PolicyDeniedError,
            f"the helper refused {where}: {answer.text}{hint}; {POLICY_HINT}",
            answer,
        )
    if answer.step == "parse":
        return _from_answer(
            HelperFailedError,
            f"the helper {command.helper} rejected {where}: {answer.text}; if it belongs to "
            "another version of procket-twisted, reinstall it with procket-twisted install-helper",
            answer,
        )
    return _from_answer(
        HelperFailedError,
        f"the helper {command.helper} failed at its {answer.step} step: {answer.text}",
        answer,
    )


def _from_answer(kind: Type[ProcketError], message: str, answer: Answer) -> ProcketError:
    return kind(
        message, errno=answer.errno, step=answer.step, index=answer.index, detail=answer.text
    )


def _exit_error(exit_code: int, diagnostics: str, command: HelperCommand) -> ProcketError:
    said = f": {diagnostics}" if diagnostics else ""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:  # real-time signals have no name of their own
            name = f"signal {-exit_code}"
        return HelperFailedError(
            f"the helper {command.describe()} was killed by {name} before answering{said}",
            step="reply",
        )
    if "sudo:" in diagnostics:
        if "not found" in diagnostics:
            return HelperNotFoundError(f"sudo cannot find the helper{said}", step="spawn")
        return HelperNotPrivilegedError(
            f"sudo refused to run the helper without a password{said}; allow it as root with: "
            "procket-twisted install-helper --mode sudo [--group GROUP]",
            step="spawn",
        )
    return HelperFailedError(
        f"the helper {command.describe()} exited with status {exit_code} without answering{said}",
        step="reply",
    )


def sockets_from_reply(
    requests: Sequence[AnyRequest],
    command: HelperCommand,
    packets: Sequence[Packet],
    exit_code: int,
) -> List[Any]:
    """
    The sockets the helper sent, checked against REQUESTS, given every packet it sent and its exit
    code (C{os.waitstatus_to_exitcode}). Every received fd is closed when an error is raised.

    @raise ProcketError: the typed error for whatever went wrong.
    """
    fds = [fd for packet in packets for fd in packet.fds]
    parsed = [(packet, parse_answer(packet.data)) for packet in packets]
    answer = next((answer for _, answer in parsed if answer is not None), None)
    if answer is not None and answer.ok and exit_code == 0:
        if any(p.truncated for p in packets) or answer.count != len(fds):
            close_fds(fds)
            raise HelperFailedError(
                f"the helper said it sent {answer.count} sockets but {len(fds)} arrived",
                step="reply",
            )
        return sockets_from_fds(fds, requests)
    close_fds(fds)
    if answer is not None and not answer.ok:
        raise _answer_error(answer, requests, command)
    diagnostics = " ".join(
        packet.data.decode("utf-8", "replace").strip()
        for packet, answer in parsed
        if answer is None
    )
    raise _exit_error(exit_code, diagnostics[:_MAX_DIAGNOSTICS], command)
