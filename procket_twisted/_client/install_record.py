"""
Where C{install-helper} put the helper, so that a program given no C{progname} and no
C{PROCKET_HELPER} finds a helper installed under any C{--prefix}.

The record is one line, the helper's absolute path, in L{RECORD}. It only ever points a process
at a helper that root chose: it is used only when the record, the helper it names, and every
directory above each are owned by root and not writable by group or others (a sticky directory
such as /tmp excepted, as the helper's own rule has it), with no symbolic link on the way. So a
user can neither write a record nor replace what it names, even after root deletes a prefix
under /tmp. Anything else is ignored (L{record_problem} says why; C{doctor} prints it), and the
lookup goes on to the default locations.
"""

from __future__ import annotations

import os
import stat
from typing import Optional, Tuple

__all__ = ["RECORD", "recorded_helper", "record_problem", "unsafe_path_reason"]

#: The record install-helper writes (C{--no-record} skips it).
RECORD = "/etc/procket-twisted/helper"
_MAX_RECORD = 4096


def unsafe_path_reason(path: str) -> Optional[str]:
    """
    Why PATH (absolute, normalized) is not one only root can change, or None when it is: every
    directory from "/" down is a real directory (no symbolic link), owned by root, not writable by
    group or others unless sticky, and PATH itself is a regular file of root's that group and
    others cannot write.
    """
    parts = [part for part in path.split("/") if part]
    for depth in range(len(parts) + 1):
        current = "/" + "/".join(parts[:depth])
        try:
            info = os.lstat(current)
        except OSError as error:
            return f"{current}: {error.strerror}"
        last = depth == len(parts)
        if stat.S_ISLNK(info.st_mode):
            return f"{current} is a symbolic link"
        if not (stat.S_ISREG(info.st_mode) if last else stat.S_ISDIR(info.st_mode)):
            return f"{current} is not a {'regular file' if last else 'directory'}"
        if info.st_uid != 0:
            return f"{current} is owned by uid {info.st_uid}, not root"
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (last or not info.st_mode & stat.S_ISVTX):
            return f"{current} is writable by group or others"
    return None


def _read() -> Tuple[Optional[str], Optional[str]]:
    """(the recorded helper, None), (None, why it is not used), or (None, None): no record."""
    try:
        os.lstat(RECORD)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"{RECORD} cannot be read: {error.strerror}"
    reason = unsafe_path_reason(RECORD)
    if reason is not None:
        return None, f"{RECORD} is not trusted: {reason}"
    try:
        with open(RECORD, "rb") as stream:
            text = stream.read(_MAX_RECORD + 1)
    except OSError as error:
        return None, f"{RECORD} cannot be read: {error.strerror}"
    lines = text.split(b"\n")
    helper = lines[0].decode("utf-8", "replace")
    if (
        len(text) > _MAX_RECORD
        or lines[1:] not in ([], [b""])
        or not os.path.isabs(helper)
        or os.path.normpath(helper) != helper
    ):
        return None, f"{RECORD} is not one absolute path on one line"
    reason = unsafe_path_reason(helper)
    if reason is not None:
        return None, f"{RECORD} names {helper}, which is not used: {reason}"
    return helper, None


def recorded_helper() -> Optional[str]:
    """The helper install-helper recorded, or None (no record, or one not trusted)."""
    return _read()[0]


def record_problem() -> Optional[str]:
    """Why a record exists but is not used (for doctor), or None."""
    return _read()[1]
