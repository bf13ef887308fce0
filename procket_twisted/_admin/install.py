"""
C{procket-twisted install-helper}: put the built helper in place, privileged, with its policy.

Layout under PREFIX (default C{/usr/local})::

    PREFIX/libexec/procket-twisted/procket-helper   the helper (setuid root, or capabilities)
    PREFIX/libexec/procket-twisted/policy           its policy (written once, then left alone)

The helper refuses to run, and to read its policy, unless every directory above it is owned by
root and not writable by group or others (sticky directories such as /tmp excepted, but not its
own directory, which only root may write), and it allows nothing without a complete policy. So
this command, in this order:

  1. checks every existing directory of PREFIX/libexec/procket-twisted, from "/" down, as the helper
     will: each is opened in its parent's descriptor without following a symbolic link and checked
     with fstat. Any it would refuse (a symbolic link, not root's, writable by others) stops the
     install, with the fix, before anything is created or changed;
  2. creates the missing directories, each with mkdir in its parent's descriptor, opens it the same
     way, checks it again (someone may have been faster in a sticky parent) and sets its owner and
     mode through its own descriptor; then adds search permission to PREFIX and the directories
     below it, also through their descriptors;
  3. writes the helper to a new file with a random name in the helper's directory (through that
     directory's descriptor), sets owner, mode and capabilities on the file's descriptor, and
     renames it over the old helper, so the helper is replaced atomically;
  4. writes the default policy whole to a new file and links it to C{policy}, which leaves an
     existing policy alone (and says if the helper would refuse it);
  5. records the helper's path in /etc/procket-twisted/helper (unless C{--no-record}), its
     directories checked and made as in 1 and 2, the file written whole and renamed into place,
     so that clients find this helper without PROCKET_HELPER.

No path under PREFIX is ever followed twice or by name, so a user who can change a directory on
the way cannot redirect root's mkdir, chown or chmod to another file. Running it twice is
harmless.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
from typing import List, Optional, Tuple

from .._client.install_record import RECORD
from .invocation import as_root
from .plugin_cache import regenerate_plugin_cache

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
#   port=N,N-M,...     the local port            addr=IP,IP/BITS,...  the local addresses
#   device=IF,...      the interface (SO_BINDTODEVICE with options=device; a packet socket's;
#                      a new tun or tap's name, which an allow rule for tun or tap must give)
#   options=NAME,...   an allow rule grants these socket options (without options=, only
#                      v6only, reuseport and freebind); a deny rule refuses them. The others:
#                      transparent, device, mark, priority, rcvbuf, sndbuf.
#   mark=, priority=, rcvbuf=, sndbuf=   ranges that bound those options' values
# A socket is matched as every address it accepts: 0.0.0.0 is every IPv4 address, :: without
# v6only is every IPv6 and every IPv4 address, ::ffff:a.b.c.d is a.b.c.d, and a tun or tap is
# its whole network (address/prefix). An allow rule's addr= must contain them all; a deny
# rule's addr= matches any of them.
# Ids are numbers, because the helper looks up no names while privileged: id -u NAME and
# getent group NAME give them. This file must stay owned by root and not writable by group or
# others, and end with a newline, or the helper allows nothing; so does a syntax error, and so
# does a missing file. The whole format: procket-twisted policy.
#
# Examples:
#   allow group=33 kind=tcp port=80,443     # group 33 (www-data) may have the web ports
#   deny kind=tcp port=1-79                 # nobody gets the ports below 80 (before the allow)
#   allow user=1000 options=mark,device mark=1-99 device=eth0   # uid 1000: marks 1-99, eth0
#   allow group=4002 kind=raw proto=1,58             # group 4002 may ping (ICMP, ICMPv6)
#   allow user=1000 kind=tun device=vpn0 addr=10.8.0.0/24   # uid 1000: vpn0 in 10.8.0.0/24
allow kind=tcp,udp
"""


class InstallError(Exception):
    """install-helper cannot do what was asked; the message says why and what to do."""


def built_helper() -> str:
    """
    The helper binary compiled when this package was installed.

    @raise InstallError: if this copy of the package has none.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(package, "helper", HELPER_NAME)
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


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _UnsafeError(Exception):
    """A directory on the way to the helper is one it would refuse; the message says which."""


def _untrusted_reason(info: os.stat_result, path: str, own: bool) -> Optional[str]:
    """
    Why the helper would refuse a directory, or None (its own rule, in C).

    @param info: the directory's fstat, through a descriptor opened without following links.
    @param path: its name, for the message.
    @param own: whether it is the helper's own directory, which must be writable by root alone
        even when sticky (anyone could add files to a sticky one, and the helper reads its
        policy there).
    @return: the reason and the fix, or None when the helper accepts the directory.
    """
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != 0:
        return f"{path} is owned by uid {info.st_uid}, not root: chown root {path}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if own:
            return (
                f"{path}, the helper's own directory, is writable by group or others (mode "
                f"{mode:o}); it must be writable by root alone, sticky or not: chmod go-w {path}"
            )
        if not info.st_mode & stat.S_ISVTX:
            return (
                f"{path} is writable by group or others (mode {mode:o}) and not sticky: "
                f"chmod go-w {path}"
            )
    return None


def _open_directory(parent: int, name: str, path: str) -> int:
    """
    Open the directory NAME in the directory PARENT without following a symbolic link.

    @param path: NAME's full path, for the messages.
    @return: a descriptor for the directory.
    @raise FileNotFoundError: if NAME does not exist.
    @raise _UnsafeError: if NAME is a symbolic link or not a directory.
    """
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise _UnsafeError(
                f"{path} is a symbolic link; give the real path (realpath {path})"
            ) from None
        if info is not None and not stat.S_ISDIR(info.st_mode):
            raise _UnsafeError(f"{path} is not a directory") from None
        raise _UnsafeError(
            f"{path} changed while install-helper was looking at it (another user is replacing it?)"
        ) from None


def _check(descriptor: int, path: str, own: bool) -> None:
    reason = _untrusted_reason(os.fstat(descriptor), path, own)
    if reason is not None:
        raise _UnsafeError(reason)


def _open_helper_directory(directory: str) -> List[Tuple[str, int]]:
    """
    Open DIRECTORY and every directory above it, checking each as the helper will, then create
    what is missing; return each directory's path and descriptor, from "/" down.

    First every existing component is opened from "/" down without following links and checked
    through its descriptor: a directory, owned by root, not writable by group or others unless
    sticky; DIRECTORY itself, if it exists, writable by root alone. Only when all pass are the
    missing ones made, each in its parent's descriptor, opened without following links, checked
    again (a user may have put a link or a directory of their own into a sticky parent first),
    and given owner root and mode 755 through its own descriptor. No path is followed twice, so
    no one can redirect a step to another file.

    @raise _UnsafeError: when a directory is one the helper would refuse, with the reason and fix.
    """
    parts = [part for part in directory.split("/") if part]
    opened = [("/", os.open("/", _DIRECTORY_FLAGS))]
    try:
        _check(opened[0][1], "/", own=False)
        for depth, name in enumerate(parts, 1):
            path = "/" + "/".join(parts[:depth])
            try:
                descriptor = _open_directory(opened[-1][1], name, path)
            except FileNotFoundError:
                break
            opened.append((path, descriptor))
            _check(descriptor, path, own=depth == len(parts))
        for depth in range(len(opened), len(parts) + 1):
            name, path = parts[depth - 1], "/" + "/".join(parts[:depth])
            parent = opened[-1][1]
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
                made = True
            except FileExistsError:
                made = False  # someone was faster: take it only if it passes the same checks
            try:
                descriptor = _open_directory(parent, name, path)
            except FileNotFoundError:
                raise _UnsafeError(
                    f"{path} vanished while install-helper was making it (another user is "
                    "changing its parent?)"
                ) from None
            opened.append((path, descriptor))
            _check(descriptor, path, own=depth == len(parts))
            if made:
                os.fchown(descriptor, 0, 0)
                os.fchmod(descriptor, 0o755)
    except BaseException:
        for _, descriptor in opened:
            os.close(descriptor)
        raise
    return opened


def _make_reachable(opened: List[Tuple[str, int]], prefix_depth: int) -> List[str]:
    """
    Let every user reach the helper: add search permission (o+x) to PREFIX and the directories
    below it (a prefix from mktemp -d is mode 700), through their descriptors; above PREFIX only
    warn, as those directories are not ours to change.

    @param opened: each directory from "/" down to the helper's, with its descriptor.
    @param prefix_depth: the index of PREFIX in OPENED.
    @return: a line for each change and each warning.
    """
    lines = []
    for path, descriptor in reversed(opened[prefix_depth:]):
        mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
        if not mode & stat.S_IXOTH:
            os.fchmod(descriptor, mode | stat.S_IXGRP | stat.S_IXOTH)
            lines.append(f"made {path} searchable by every user (mode {mode | 0o011:o})")
    for path, descriptor in reversed(opened[:prefix_depth]):
        if not os.fstat(descriptor).st_mode & stat.S_IXOTH:
            lines.append(
                f"warning: other users cannot enter {path}, so they cannot run the helper: "
                f"chmod o+x {path}, or choose another --prefix"
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


def _temporary_name(name: str) -> str:
    """A fresh hidden name beside NAME, for a file written before it is renamed or linked."""
    return f".{name}.{secrets.token_hex(8)}"


def _create_temporary(directory: int, name: str) -> Tuple[str, int]:
    """Create a new empty file, mode 600, in the directory DIRECTORY; return its name and fd."""
    temporary = _temporary_name(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return temporary, os.open(temporary, flags, 0o600, dir_fd=directory)


def _remove_temporary(directory: int, temporary: str) -> None:
    try:
        os.unlink(temporary, dir_fd=directory)
    except FileNotFoundError:
        pass


def _install_binary(source: str, directory: int, mode: str, gid: Optional[int]) -> int:
    """
    Copy SOURCE into the helper's directory atomically, with its owner, mode and capabilities.

    @param directory: a descriptor for the helper's directory: the copy is made there under a
        random name, completed through its own descriptor, then renamed over the helper.
    @return: the helper's mode bits.
    """
    if mode == "sudo":
        bits = 0o755
    else:
        bits = (0o4000 if mode == "setuid" else 0) | (0o750 if gid is not None else 0o755)
    temporary, handle = _create_temporary(directory, HELPER_NAME)
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
        os.replace(temporary, HELPER_NAME, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        _remove_temporary(directory, temporary)
        raise
    os.fsync(directory)
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


def _write_policy(directory: int) -> bool:
    """
    Write the default policy into the helper's directory unless one exists; True when written.

    The helper allows nothing without a policy and refuses a half-written one, so the policy is
    written whole to a temporary file first and then linked to its name, which fails, leaving
    the existing policy alone, when there is one.

    @param directory: a descriptor for the helper's directory.
    """
    temporary, handle = _create_temporary(directory, POLICY_NAME)
    try:
        with os.fdopen(handle, "w", encoding="ascii") as stream:
            stream.write(DEFAULT_POLICY)
            stream.flush()
            os.fchown(stream.fileno(), 0, 0)
            os.fchmod(stream.fileno(), 0o644)
            os.fsync(stream.fileno())
        try:
            os.link(
                temporary,
                POLICY_NAME,
                src_dir_fd=directory,
                dst_dir_fd=directory,
                follow_symlinks=False,
            )
        except FileExistsError:
            return False
    finally:
        _remove_temporary(directory, temporary)
    os.fsync(directory)
    return True


def _policy_problem(directory: int) -> Optional[str]:
    """
    Why the helper would refuse the existing policy in DIRECTORY (a descriptor), or None.
    """
    info = os.stat(POLICY_NAME, dir_fd=directory, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file (a symlink?)"
    if info.st_uid != 0:
        return f"it is owned by uid {info.st_uid}, not root"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or others can write it (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _policy_unterminated(directory: int) -> bool:
    """Whether the policy in DIRECTORY (a descriptor) has a last line without its newline."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptor = os.open(POLICY_NAME, flags, dir_fd=directory)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return False
        return os.pread(descriptor, 1, info.st_size - 1) != b"\n"
    finally:
        os.close(descriptor)


def _install_into(
    descriptor: int,
    directory: str,
    prefix: str,
    mode: str,
    source: str,
    group: Optional[str],
    gid: Optional[int],
) -> List[str]:
    """
    Install the helper, its sudo rule (or remove a stale one) and its policy; return the lines.

    @param descriptor: the checked helper directory, opened without following links.
    @param directory: its path, for the messages.
    """
    helper = os.path.join(directory, HELPER_NAME)
    bits = _install_binary(source, descriptor, mode, gid)
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
        who = f"group {group}" if group else "every user"
        done.append(f"wrote {sudoers}: {who} may run it with sudo -n")
    elif os.path.exists(sudoers):
        os.unlink(sudoers)
        done.append(f"removed {sudoers}, left from an earlier --mode sudo install")
    policy = os.path.join(directory, POLICY_NAME)
    if _write_policy(descriptor):
        done.append(f"wrote the default policy {policy}: TCP and UDP, any port, every user")
    else:
        problem = _policy_problem(descriptor)
        kept = f"kept the existing policy {policy}"
        if problem is not None:
            done.append(f"{kept}, BUT the helper refuses it: {problem}")
        elif _policy_unterminated(descriptor):
            done.append(
                f"{kept}, BUT the helper refuses a policy whose last line has no newline (a "
                "half-written file): add one"
            )
        else:
            done.append(kept)
    return done


def _write_record(helper: str) -> str:
    """
    Record HELPER's path in L{RECORD} (for clients that have no PROCKET_HELPER): written whole
    to a new file in its directory, checked and made the same way as the helper's, and renamed
    over the old record. Returns the line to print.
    """
    opened = _open_helper_directory(os.path.dirname(RECORD))
    directory = opened[-1][1]
    name = os.path.basename(RECORD)
    try:
        temporary, handle = _create_temporary(directory, name)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(helper + "\n")
                stream.flush()
                os.fchown(stream.fileno(), 0, 0)
                os.fchmod(stream.fileno(), 0o644)
                os.fsync(stream.fileno())
            os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            _remove_temporary(directory, temporary)
            raise
        os.fsync(directory)
    finally:
        for _, descriptor in opened:
            os.close(descriptor)
    return f"recorded it in {RECORD}: programs find it without PROCKET_HELPER"


def install_helper(
    prefix: str = DEFAULT_PREFIX,
    group: Optional[str] = None,
    mode: str = "setuid",
    source: Optional[str] = None,
    record: bool = True,
) -> List[str]:
    """
    Install the helper under PREFIX and return what was done, a line per action.

    @param group: only root and this group may run the helper (mode 4750); None: everyone may
        (mode 4755), and the policy decides what each user gets.
    @param mode: C{setuid} (setuid root), C{setcap} (file capabilities, never root), or
        C{sudo} (a sudoers drop-in lets GROUP, or everyone, run it through C{sudo -n}).
    @param source: the helper binary to install instead of the one built with this package (a
        sanitizer build for the tests, a distribution's build).
    @param record: record the helper's path in L{RECORD}, where clients look after
        C{PROCKET_HELPER}, so that this install is the one they use; C{False} leaves the record
        alone (a second, private install).
    @raise InstallError: when not root, or the prefix, group or source cannot be used.
    """
    if mode not in MODES:
        raise InstallError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if os.geteuid() != 0:
        arguments = ["install-helper"]
        for option, value in (("--prefix", prefix), ("--group", group), ("--from", source)):
            if value is not None and not (option == "--prefix" and prefix == DEFAULT_PREFIX):
                arguments += [option, value]
        arguments += ["--mode", mode] if mode != "setuid" else []
        arguments += [] if record else ["--no-record"]
        raise InstallError(
            "install-helper must run as root, because it makes the helper privileged: "
            f"{as_root(arguments)}"
        )
    if not os.path.isabs(prefix):
        raise InstallError(f"--prefix must be an absolute path, not {prefix!r}")
    if source is None:
        source = built_helper()
    elif not os.path.isfile(source):
        raise InstallError(f"--from {source}: no such file")
    gid = _group_id(group)
    directory = helper_directory(os.path.normpath(prefix))
    try:
        opened = _open_helper_directory(directory)
    except _UnsafeError as error:
        raise InstallError(
            f"cannot install under {prefix}: {error}; the helper refuses to run where another "
            "user could replace it or its policy, so fix that or choose another --prefix"
        ) from None
    try:
        done = _install_into(opened[-1][1], directory, prefix, mode, source, group, gid)
        prefix_depth = len([part for part in os.path.normpath(prefix).split("/") if part])
        done.extend(_make_reachable(opened, prefix_depth))
    finally:
        for _, descriptor in opened:
            os.close(descriptor)
    helper = os.path.join(directory, HELPER_NAME)
    if record:
        try:
            done.append(_write_record(helper))
        except _UnsafeError as error:
            raise InstallError(
                f"installed {helper}, but cannot record it in {RECORD}: {error}; fix that, or "
                "run again with --no-record and set PROCKET_HELPER"
            ) from None
    elif os.path.normpath(prefix) != DEFAULT_PREFIX:
        command = f"sudo -n {helper}" if mode == "sudo" else helper
        done.append(f"point programs at it with: export PROCKET_HELPER='{command}'")
    done.extend(regenerate_plugin_cache()[0])
    done.append("check it as the user who will use it: procket-twisted doctor")
    return done
