"""
The typed errors of procket_twisted.

Every failure to get a socket is a L{ProcketError}, which is an C{OSError}: C{errno} says what the
kernel (or the helper) said, C{step} says where it happened, C{index} says which socket of a
several-socket request failed (1-based; 0 when the failure is not about one socket). The message
says what went wrong and what to do about it.
"""

from __future__ import annotations

import errno as errnos
from typing import Optional

__all__ = [
    "ProcketError",
    "HelperNotFoundError",
    "HelperNotPrivilegedError",
    "PolicyDeniedError",
    "HelperTimeoutError",
    "SocketError",
    "HelperFailedError",
]


class ProcketError(OSError):
    """
    Getting a socket through procket failed.

    @ivar errno: the errno of the failure (C{None} when there is none).
    @ivar step: where it failed: a helper step (C{parse}, C{privilege}, C{policy}, C{socket},
        C{setsockopt}, C{bind}, C{listen}, C{drop}, C{send}, C{setup}) or a client one
        (C{find}, C{spawn}, C{timeout}, C{reply}, C{validate}).
    @ivar index: the 1-based number of the socket that failed, or 0.
    @ivar detail: the helper's own words, when it said something.
    """

    default_errno: Optional[int] = None

    def __init__(
        self,
        message: str,
        *,
        errno: Optional[int] = None,
        step: str,
        index: int = 0,
        detail: str = "",
    ) -> None:
        code = self.default_errno if errno is None else errno
        super().__init__(code, message)
        self.step = step
        self.index = index
        self.detail = detail

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keep the keyword-only attributes when pickled (multiprocessing, trial's reporters).
        return (
            _rebuild,
            (type(self), self.strerror, self.errno, self.step, self.index, self.detail),
        )


def _rebuild(
    kind: type, message: str, errno: Optional[int], step: str, index: int, detail: str
) -> ProcketError:
    error: ProcketError = kind(message, errno=errno, step=step, index=index, detail=detail)
    return error


class HelperNotFoundError(ProcketError):
    """No helper could be found or started: nothing installed, or a wrong path or command."""

    default_errno = errnos.ENOENT


class HelperNotPrivilegedError(ProcketError):
    """
    The helper runs but has no privilege: it is not setuid root and has no file capability, its
    filesystem is mounted nosuid, this process has no_new_privs set, or sudo refused.
    """

    default_errno = errnos.EPERM


class PolicyDeniedError(ProcketError):
    """The installed policy (or the helper's file permissions) does not let this user do that."""

    default_errno = errnos.EACCES


class HelperTimeoutError(ProcketError):
    """The helper did not answer in time; it was killed."""

    default_errno = errnos.ETIMEDOUT


class SocketError(ProcketError):
    """
    The kernel refused a socket call (C{socket}, C{setsockopt}, C{bind}, C{listen}), for
    example C{errno.EADDRINUSE} when something already listens on the port.
    """


class HelperFailedError(ProcketError):
    """The helper failed in a way that is not the caller's request: crash, bad reply, bad setup."""

    default_errno = errnos.EPROTO
