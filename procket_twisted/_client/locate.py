"""
Finding the helper: an explicit C{progname}, then C{$PROCKET_HELPER}, then the helper
C{install-helper} recorded (L{procket_twisted._client.install_record}: under any C{--prefix}, trusted only when root alone
could have written it), then the default locations, then a clear error that says how to install
it.

A command is split into an argv (C{shlex}), never given to a shell, so
C{"sudo -n /usr/local/libexec/procket-twisted/procket-helper"} runs sudo with two arguments.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import stat
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

from .errors import HelperNotFoundError
from .install_record import RECORD, recorded_helper

__all__ = [
    "HelperCommand",
    "find_helper",
    "HELPER_ENVIRONMENT_VARIABLE",
    "INSTALLED_HELPERS",
    "has_file_capabilities",
]

HELPER_ENVIRONMENT_VARIABLE = "PROCKET_HELPER"
#: Where ``procket-twisted install-helper`` puts the helper by default, then where a distribution
#: package would.
INSTALLED_HELPERS = (
    "/usr/local/libexec/procket-twisted/procket-helper",
    "/usr/libexec/procket-twisted/procket-helper",
)
INSTALL_HINT = (
    "install it as root with: procket-twisted install-helper (then check: procket-twisted doctor)"
)

#: What a ``progname`` may be: a command line (split with shlex) or an argv already split.
Progname = Union[str, Sequence[str], None]


@dataclass(frozen=True)
class HelperCommand:
    """
    How to run the helper.

    @ivar argv: the program and its fixed arguments; the request's arguments follow them.
    @ivar executable: the file that is executed (C{argv[0]} resolved without a shell).
    @ivar helper: the helper binary's path (the last argument when the command wraps it, as sudo
        does), for diagnosis.
    @ivar source: where the command came from: C{progname}, C{PROCKET_HELPER} or C{installed}.
    """

    argv: Tuple[str, ...]
    executable: str
    helper: str
    source: str

    def describe(self) -> str:
        """The command as a user would type it, and where it came from."""
        return f"{shlex.join(self.argv)} (from {self.source})"


def has_file_capabilities(path: str) -> bool:
    """Whether PATH carries file capabilities (C{security.capability})."""
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def _is_privileged_file(path: str) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    setuid_root = info.st_uid == 0 and bool(info.st_mode & stat.S_ISUID)
    return setuid_root or has_file_capabilities(path)


def _command(argv: Sequence[str], source: str) -> HelperCommand:
    if not argv or not argv[0]:
        raise HelperNotFoundError(f"the helper command from {source} is empty", step="find")
    program = argv[0]
    executable = program if "/" in program else shutil.which(program)
    if executable is None:
        raise HelperNotFoundError(
            f"the helper command {shlex.join(argv)} (from {source}) starts with {program!r}, "
            "which is not on PATH; give its full path",
            step="find",
        )
    helper = argv[-1] if len(argv) > 1 and argv[-1].startswith("/") else executable
    return HelperCommand(tuple(argv), executable, helper, source)


def _split(value: Union[str, Sequence[str]], source: str) -> Sequence[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as error:
            raise HelperNotFoundError(
                f"the helper command {value!r} (from {source}) cannot be split: {error}",
                step="find",
            ) from None
    return list(value)


@functools.lru_cache(maxsize=64)
def _command_from_text(text: str, source: str) -> HelperCommand:
    """
    The command for a command line, remembered: splitting and resolving it costs tens of
    microseconds, and a program asks again and again with the same one. (A failure raises, and
    is not remembered.)
    """
    return _command(_split(text, source), source)


def find_helper(
    progname: Progname = None, environ: Optional[Mapping[str, str]] = None
) -> HelperCommand:
    """
    The command that runs the helper.

    An installed helper that is neither setuid root nor has file capabilities was installed for
    sudo (C{install-helper --mode sudo}), so it is run as C{sudo -n HELPER}.

    @param progname: a command line or argv; when None, C{$PROCKET_HELPER}, then the recorded
        helper, then the default locations, are used.
    @param environ: the environment to read (default C{os.environ}).
    @raise HelperNotFoundError: when there is no helper, saying how to install one.
    """
    environ = os.environ if environ is None else environ
    if isinstance(progname, str):
        return _command_from_text(progname, "progname")
    if progname is not None:
        return _command(_split(progname, "progname"), "progname")
    configured = environ.get(HELPER_ENVIRONMENT_VARIABLE)
    if configured:
        return _command_from_text(configured, HELPER_ENVIRONMENT_VARIABLE)
    recorded = recorded_helper()
    if recorded is not None:
        return _installed(recorded, f"recorded in {RECORD}")
    for path in INSTALLED_HELPERS:
        if os.path.exists(path):
            return _installed(path, "installed")
    raise HelperNotFoundError(
        "no procket helper found: no progname given, PROCKET_HELPER is not set, install-helper "
        f"recorded none in {RECORD}, and none is installed at {' or '.join(INSTALLED_HELPERS)}; "
        f"{INSTALL_HINT}, or set PROCKET_HELPER to the helper's path",
        step="find",
    )


def _installed(path: str, source: str) -> HelperCommand:
    """The command for a helper install-helper put at PATH: itself, or through sudo -n."""
    sudo = shutil.which("sudo")
    if not _is_privileged_file(path) and sudo is not None:
        return HelperCommand((sudo, "-n", path), sudo, path, f"{source}, through sudo")
    return HelperCommand((path,), path, path, source)
