"""
Why a helper is not privileged, and what to run about it: shared by the errors and by C{doctor}.
"""

from __future__ import annotations

import os
import stat
from typing import List, Optional

from .locate import has_file_capabilities

__all__ = ["process_status_field", "no_new_privs", "privilege_problems", "can_execute"]

INSTALL_COMMAND = "procket-twisted install-helper"


def process_status_field(name: str) -> Optional[str]:
    """A field of C{/proc/self/status} (C{NoNewPrivs}, C{CapEff}...), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except OSError:
        pass
    return None


def no_new_privs() -> bool:
    """Whether this process runs with no_new_privs (setuid bits and file capabilities ignored)."""
    return process_status_field("NoNewPrivs") == "1"


def can_execute(path: str) -> bool:
    """Whether this process may execute PATH."""
    return os.access(path, os.X_OK)


def privilege_problems(helper: str) -> List[str]:
    """
    What keeps HELPER from being privileged for this process, each with its fix; empty when
    nothing visible from here is wrong (then the helper's own message is the reason).
    """
    problems: List[str] = []
    if no_new_privs():
        problems.append(
            "this process runs with no_new_privs set (systemd NoNewPrivileges=, docker "
            "--security-opt no-new-privileges, setpriv --no-new-privs...), so the kernel ignores "
            "setuid bits and file capabilities (and sudo, which is setuid, cannot run either): "
            "start it without no_new_privs, or, for TCP and UDP ports, let the kernel grant them "
            "with no helper at all (as root: procket-twisted grant apply)"
        )
    try:
        info = os.stat(helper)
    except OSError as error:
        problems.append(f"{helper} cannot be examined: {error.strerror}")
        return problems
    setuid = bool(info.st_mode & stat.S_ISUID)
    if info.st_uid != 0:
        problems.append(
            f"{helper} is owned by uid {info.st_uid}, not root: run as root: {INSTALL_COMMAND}"
        )
    elif not setuid and not has_file_capabilities(helper):
        problems.append(
            f"{helper} is neither setuid root nor has file capabilities: run as root: "
            f"{INSTALL_COMMAND}"
        )
    try:
        nosuid = bool(os.statvfs(helper).f_flag & os.ST_NOSUID)
    except OSError:
        nosuid = False
    if nosuid:
        problems.append(
            f"{helper} is on a filesystem mounted nosuid, where setuid bits and file "
            f"capabilities do nothing: install it elsewhere ({INSTALL_COMMAND} --prefix /usr/local)"
        )
    return problems
