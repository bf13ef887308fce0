"""
From what the helper sent and how it exited to sockets, or to one typed error that says what went
wrong and what to do. Shared by the blocking client and the Twisted one.
"""

from __future__ import annotations

import errno as errnos
import os
import signal
from typing import Any, List, Optional, Protocol, Sequence, Type

from ._diagnose import privilege_problems
from ._errors import (
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    PolicyDeniedError,
    ProcketError,
    SocketError,
)
from ._kinds import AnyRequest
from ._locate import HelperCommand
from ._protocol import Answer, Packet, close_fds, parse_answer
from ._validate import sockets_from_fds

__all__ = ["sockets_from_reply", "socket_error", "POLICY_HINT"]

POLICY_HINT = (
    "the policy is set by whoever installed the helper: ask them to allow it in the policy file "
    "named above (docs/policy.md)"
)
_SOCKET_STEPS = ("socket", "setsockopt", "bind", "listen")
_MAX_DIAGNOSTICS = 600


class Described(Protocol):
    """What every kind of request has: a description for messages."""

    def describe(self) -> str: ...


def _hint(name: str, request: Any) -> Optional[str]:
    port = getattr(request, "port", None)
    if name == "EADDRINUSE" and port is not None:
        return (
            f"something already uses {request.protocol} port {port} there "
            f"(ss -lnp 'sport = :{port}' shows what); stop it or choose another port"
        )
    if name == "EADDRNOTAVAIL":
        return f"{getattr(request, 'ip', 'the address')} is not an address of this machine (ip address shows them)"
    if name in ("ENODEV", "ENXIO"):
        return "there is no such interface here (ip link shows them)"
    if name == "EBUSY":
        return "an interface of that name exists already: choose another name"
    if name == "EACCES" and getattr(request, "mode", None) in ("tun", "tap"):
        return (
            "the helper cannot open /dev/net/tun: installed with file capabilities it cannot "
            "open a device of mode 600 (procket-twisted doctor says more); install it setuid"
        )
    return {
        "EAFNOSUPPORT": "this kernel or network namespace has no such address family",
        "EMFILE": "the process is out of file descriptors (ulimit -n)",
    }.get(name)


def socket_error(
    step: str, code: int, request: Described, index: int, detail: str = ""
) -> SocketError:
    """The error for a failed socket call: what failed, the kernel's reason, and a hint."""
    name = errnos.errorcode.get(code, "")
    hint = _hint(name, request)
    message = f"cannot {step} {request.describe()}: {os.strerror(code)}"
    if hint is not None:
        message += f"; {hint}"
    return SocketError(message, errno=code, step=step, index=index, detail=detail)


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
        unnamed = (
            1 <= answer.index <= len(requests)
            and getattr(requests[answer.index - 1], "mode", None) in ("tun", "tap")
            and getattr(requests[answer.index - 1], "name", None) is None
        )
        named = (
            "; a tun or tap grant names its interfaces (device= in the policy): ask for one of "
            "them by name"
            if unnamed
            else ""
        )
        return _from_answer(
            PolicyDeniedError,
            f"the helper refused {where}: {answer.text}{named}; {POLICY_HINT}",
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
    code (``os.waitstatus_to_exitcode``). Every received fd is closed when an error is raised.

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
