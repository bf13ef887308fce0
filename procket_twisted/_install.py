"""
``procket-twisted install-helper``: put the built helper in place, privileged, with its policy.

Layout under PREFIX (default ``/usr/local``)::

    PREFIX/libexec/procket-twisted/procket-helper   the helper (setuid root, or capabilities)
    PREFIX/libexec/procket-twisted/policy           its policy (written once, then left alone)

The helper refuses to run, and to read its policy, unless every directory above it is owned by
root and not writable by group or others (sticky directories such as /tmp excepted), so this
command checks the same before installing. Running it twice is harmless: the binary is replaced
atomically and an existing policy is kept.
"""

from __future__ import annotations

import grp
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from typing import List, Optional

from ._plugin_cache import regenerate_plugin_cache

__all__ = [
    "InstallError",
    "install_helper",
    "helper_directory",
    "built_helper",
    "DEFAULT_PREFIX",
    "DEFAULT_POLICY",
    "MODES",
]

DEFAULT_PREFIX = "/usr/local"
MODES = ("setuid", "setcap", "sudo")
SUDOERS_DIRECTORY = "/etc/sudoers.d"
HELPER_NAME = "procket-helper"
POLICY_NAME = "policy"
# CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13): permitted, not effective; the
# helper raises only what a request needs, after its policy allowed the request.
_FILE_CAPABILITIES = (1 << 10) | (1 << 12) | (1 << 13)
_VFS_CAP_REVISION_2 = 0x02000000

DEFAULT_POLICY = """\
# procket-twisted policy, read by the procket-helper beside this file.
#
# One rule per line: "allow" or "deny", then conditions key=value[,value...], all of which must
# hold. The first rule that matches a socket decides; a socket that no rule matches is denied.
#   user=UID,...       the caller's uid          group=GID,...   the caller's gid or groups
#   kind=tcp,udp,raw,packet,tun,tap   what is opened (a rule without kind= is about tcp,udp only)
#   family=inet,inet6  proto=N (raw)             ethertype=0x806 (packet)
#   port=N,N-M,...     the local port            addr=IP,IP/BITS,...  the local address
#   device=IF,...      the interface it is bound to (with options=device)
#   options=NAME,...   an allow rule grants these socket options (without options=, only
#                      v6only, reuseport and freebind); a deny rule refuses them. The others:
#                      transparent, device, mark, priority, rcvbuf, sndbuf, hdrincl, promisc.
# Ids are numbers, because the helper looks up no names while privileged: id -u NAME and
# getent group NAME give them. This file must stay owned by root and not writable by group or
# others, or the helper allows nothing. A syntax error also allows nothing. See docs/policy.md.
#
# Examples:
#   allow group=33 kind=tcp port=80,443     # group 33 (www-data) may have the web ports
#   deny kind=tcp port=1-79                 # nobody gets the ports below 80 (before the allow)
#   allow user=1000 options=mark,device device=eth0   # uid 1000 may mark and bind to eth0
#   allow group=4002 kind=raw proto=1,58             # group 4002 may ping (ICMP, ICMPv6)
allow kind=tcp,udp
"""


class InstallError(Exception):
    """install-helper cannot do what was asked; the message says why and what to do."""


def built_helper() -> str:
    """
    The helper binary compiled when this package was installed.

    @raise InstallError: if this copy of the package has none.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper", HELPER_NAME)
    if not os.path.isfile(path):
        raise InstallError(
            f"this copy of procket-twisted has no built helper ({path} is missing): install the "
            "package with 'pip install .' (a regular install, which compiles it with the system C "
            "compiler; apt-get install gcc libc6-dev if there is none)"
        )
    return path


def helper_directory(prefix: str) -> str:
    """Where the helper and its policy live under PREFIX."""
    return os.path.join(prefix, "libexec", "procket-twisted")


def _untrusted_reason(path: str) -> Optional[str]:
    """Why the helper would refuse to run from directory PATH, or None (its own rule, in C)."""
    parts = [part for part in path.split("/") if part]
    for depth in range(len(parts) + 1):
        current = "/" + "/".join(parts[:depth])
        info = os.lstat(current)
        if not stat.S_ISDIR(info.st_mode):
            return f"{current} is not a directory (a symlink?)"
        if info.st_uid != 0:
            return f"{current} is owned by uid {info.st_uid}, not root"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            return f"{current} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _make_directories(directory: str) -> None:
    missing = []
    current = directory
    while not os.path.exists(current):
        missing.append(current)
        current = os.path.dirname(current)
    for path in reversed(missing):
        os.mkdir(path, 0o755)
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)


def _make_reachable(prefix: str, directory: str) -> List[str]:
    """
    Let every user reach the helper: add search permission (o+x) to PREFIX and the directories
    below it (a prefix from mktemp -d is mode 700); above PREFIX only warn, as those directories
    are not ours to change.
    """
    lines = []
    current = directory
    while True:
        mode = stat.S_IMODE(os.stat(current).st_mode)
        if not mode & stat.S_IXOTH:
            os.chmod(current, mode | stat.S_IXGRP | stat.S_IXOTH)
            lines.append(f"made {current} searchable by every user (mode {mode | 0o011:o})")
        if current == prefix or current == "/":
            break
        current = os.path.dirname(current)
    while current != "/":
        current = os.path.dirname(current)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            lines.append(
                f"warning: other users cannot enter {current}, so they cannot run the helper: "
                f"chmod o+x {current}, or choose another --prefix"
            )
    return lines


def _group_id(group: Optional[str]) -> Optional[int]:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise InstallError(
            f"there is no group {group!r}: create it first (groupadd {group})"
        ) from None


def _capability_xattr() -> bytes:
    words = [_VFS_CAP_REVISION_2, _FILE_CAPABILITIES, 0, 0, 0]
    return b"".join(word.to_bytes(4, "little") for word in words)


def _install_binary(source: str, target: str, mode: str, gid: Optional[int]) -> int:
    """Copy SOURCE to TARGET atomically with its owner, mode and capabilities; return the mode."""
    if mode == "sudo":
        bits = 0o755
    else:
        bits = (0o4000 if mode == "setuid" else 0) | (0o750 if gid is not None else 0o755)
    handle, temporary = tempfile.mkstemp(prefix=".procket-helper.", dir=os.path.dirname(target))
    try:
        with open(source, "rb") as original, os.fdopen(handle, "wb") as copy:
            shutil.copyfileobj(original, copy)
            copy.flush()
            # chown clears the setuid bit and capabilities, so it comes first.
            os.fchown(copy.fileno(), 0, gid if gid is not None and mode != "sudo" else 0)
            os.fchmod(copy.fileno(), bits)
            if mode == "setcap":
                os.setxattr(copy.fileno(), "security.capability", _capability_xattr())
            os.fsync(copy.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return bits


def sudoers_file(prefix: str) -> str:
    """The sudoers drop-in install-helper writes for PREFIX (sudoers.d skips names with dots)."""
    if os.path.normpath(prefix) == DEFAULT_PREFIX:
        return os.path.join(SUDOERS_DIRECTORY, "procket-twisted")
    tag = hashlib.sha256(os.path.normpath(prefix).encode()).hexdigest()[:12]
    return os.path.join(SUDOERS_DIRECTORY, f"procket-twisted-{tag}")


def _write_sudoers(path: str, helper: str, group: Optional[str], prefix: str) -> None:
    if shutil.which("sudo") is None:
        raise InstallError("--mode sudo needs sudo, which is not installed (apt-get install sudo)")
    who = f"%{group}" if group is not None else "ALL"
    text = (
        f"# Written by procket-twisted install-helper for {prefix}: {who} may run the helper as\n"
        "# root without a password. Its policy file still decides what it opens.\n"
        f"{who} ALL=(root) NOPASSWD: {helper}\n"
    )
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    temporary = path + ".new"  # the dot keeps sudo from reading it half-written
    with open(temporary, "w", encoding="ascii") as stream:
        stream.write(text)
    os.chmod(temporary, 0o440)
    visudo = shutil.which("visudo")
    if visudo is not None:
        check = subprocess.run([visudo, "-cqf", temporary], capture_output=True, text=True)
        if check.returncode != 0:
            os.unlink(temporary)
            raise InstallError(f"visudo rejected the sudo rule: {check.stdout}{check.stderr}")
    os.replace(temporary, path)


def _write_policy(path: str) -> bool:
    """Write the default policy unless one exists; True when written."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="ascii") as stream:
        os.fchown(stream.fileno(), 0, 0)
        os.fchmod(stream.fileno(), 0o644)
        stream.write(DEFAULT_POLICY)
    return True


def _policy_problem(path: str) -> Optional[str]:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file (a symlink?)"
    if info.st_uid != 0:
        return f"it is owned by uid {info.st_uid}, not root"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or others can write it (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def install_helper(
    prefix: str = DEFAULT_PREFIX,
    group: Optional[str] = None,
    mode: str = "setuid",
    source: Optional[str] = None,
) -> List[str]:
    """
    Install the helper under PREFIX and return what was done, a line per action.

    @param group: only root and this group may run the helper (mode 4750); None: everyone may
        (mode 4755), and the policy decides what each user gets.
    @param mode: ``setuid`` (setuid root), ``setcap`` (file capabilities, never root), or
        ``sudo`` (a sudoers drop-in lets GROUP, or everyone, run it through ``sudo -n``).
    @param source: the helper binary to install instead of the one built with this package (a
        sanitizer build for the tests, a distribution's build).
    @raise InstallError: when not root, or the prefix, group or source cannot be used.
    """
    if mode not in MODES:
        raise InstallError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if os.geteuid() != 0:
        raise InstallError(
            "install-helper must run as root, because it makes the helper privileged: "
            "sudo procket-twisted install-helper"
        )
    if not os.path.isabs(prefix):
        raise InstallError(f"--prefix must be an absolute path, not {prefix!r}")
    if source is None:
        source = built_helper()
    elif not os.path.isfile(source):
        raise InstallError(f"--from {source}: no such file")
    gid = _group_id(group)
    directory = helper_directory(os.path.normpath(prefix))
    _make_directories(directory)
    reason = _untrusted_reason(directory)
    if reason is not None:
        raise InstallError(
            f"cannot install under {prefix}: {reason}; the helper refuses to run where a user could "
            "replace it, so choose another --prefix or make each directory root's and not "
            "writable by others"
        )
    helper = os.path.join(directory, HELPER_NAME)
    bits = _install_binary(source, helper, mode, gid)
    how = {
        "setuid": "setuid root",
        "setcap": "file capabilities cap_net_bind_service,cap_net_admin,cap_net_raw=p",
        "sudo": "for sudo, not setuid",
    }[mode]
    group_name = group if group is not None and mode != "sudo" else "root"
    done = [f"installed the helper {helper} ({how}, mode {bits:o}, owner root, group {group_name})"]
    sudoers = sudoers_file(prefix)
    if mode == "sudo":
        _write_sudoers(sudoers, helper, group, prefix)
        done.append(
            f"wrote {sudoers}: {'group ' + group if group else 'every user'} may run it with sudo -n"
        )
    elif os.path.exists(sudoers):
        os.unlink(sudoers)
        done.append(f"removed {sudoers}, left from an earlier --mode sudo install")
    policy = os.path.join(directory, POLICY_NAME)
    if _write_policy(policy):
        done.append(f"wrote the default policy {policy}: TCP and UDP, any port, every user")
    else:
        problem = _policy_problem(policy)
        kept = f"kept the existing policy {policy}"
        done.append(kept if problem is None else f"{kept}, BUT the helper refuses it: {problem}")
    done.extend(_make_reachable(os.path.normpath(prefix), directory))
    if os.path.normpath(prefix) != DEFAULT_PREFIX:
        command = f"sudo -n {helper}" if mode == "sudo" else helper
        done.append(f"point programs at it with: export PROCKET_HELPER='{command}'")
    done.extend(regenerate_plugin_cache())
    done.append("check it as the user who will use it: procket-twisted doctor")
    return done
