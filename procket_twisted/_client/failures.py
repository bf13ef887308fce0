"""
The error for a socket call that failed, wherever it ran (in the helper, or here when this
process may open the socket itself): what failed, the kernel's reason, and a hint of what to do.
"""

from __future__ import annotations

import errno as errnos
import os
from typing import Any, Optional, Protocol

from .dual_stack import collision_hint, dual_stack_note
from .errors import HelperTimeoutError, SocketError

__all__ = ["socket_error", "helper_timeout", "Described"]


class Described(Protocol):
    """What every kind of request has: a description for messages."""

    def describe(self) -> str: ...


def _hint(name: str, request: Any) -> Optional[str]:
    port = getattr(request, "port", None)
    if name == "EADDRINUSE" and port is not None:
        return collision_hint(request) or (
            f"something already uses {request.protocol} port {port} there"
            f"{dual_stack_note(request)} (ss -lnp 'sport = :{port}' shows what); stop it or "
            "choose another port"
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


def helper_timeout(timeout: float, killed: bool = True) -> HelperTimeoutError:
    """The error for a helper that did not answer within TIMEOUT seconds."""
    fate = "killed" if killed else "left to its own 10-second watchdog"
    return HelperTimeoutError(
        f"the helper did not answer within {timeout:g} s and was {fate}; a loaded machine or a "
        "slow sudo may need a longer timeout",
        step="timeout",
    )
