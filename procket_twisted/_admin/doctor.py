"""
C{procket-twisted doctor}: can this user get a privileged socket right now, through which
helper, and if not, what exactly to run. It asks the helper for a real socket to find out.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from typing import Callable, List, Optional, Tuple

from .._client.api import listen
from .._client.diagnose import can_execute, no_new_privs, privilege_problems
from .._client.direct import has_bind_capability, unprivileged_port_start
from .._client.errors import (
    HelperNotFoundError,
    HelperNotPrivilegedError,
    ProcketError,
    SocketError,
)
from .._client.install_record import record_problem
from .._client.locate import (
    HELPER_ENVIRONMENT_VARIABLE,
    Progname,
    find_helper,
    has_file_capabilities,
)
from .._client.policy_check import policy_decisions
from .._client.request import SocketRequest
from .install import InstallError
from .kernel_grant import grant_tool
from .plugin_cache import plugin_state

__all__ = ["doctor"]

_PROBE_ADDRESS = "127.0.0.1"
_PROBE_ATTEMPTS = 8


def _describe_file(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError as error:
        return f"cannot be examined ({error.strerror})"
    kinds = []
    if info.st_mode & stat.S_ISUID and info.st_uid == 0:
        kinds.append("setuid root")
    if has_file_capabilities(path):
        kinds.append("file capabilities")
    return (
        f"owner uid {info.st_uid}, group gid {info.st_gid}, mode {stat.S_IMODE(info.st_mode):o}, "
        f"{' and '.join(kinds) or 'not privileged by itself'}, "
        f"{'executable' if can_execute(path) else 'NOT executable'} by this user"
    )


#: What only a glibc build has: static, the tunables' name; dynamic, the loader's.
_GLIBC_MARKS = (b"GLIBC_TUNABLES", b"/ld-linux")
_LARGEST_HELPER = 16 * 1024 * 1024


def built_against_glibc(path: str) -> Optional[bool]:
    """Whether the helper at PATH is linked against glibc, or None when it cannot be read."""
    try:
        with open(path, "rb") as helper:
            content = helper.read(_LARGEST_HELPER)
    except OSError:
        return None
    return any(mark in content for mark in _GLIBC_MARKS)


def _build_line(helper: str) -> Optional[str]:
    """A word about a helper built against glibc, which starts slowly on virtual machines."""
    if not built_against_glibc(helper):
        return None
    return (
        "- helper build: glibc. Its start-up detects the CPU with cpuid, which a virtual machine "
        "traps: about 0.9 ms per helper run there. Built against musl it starts in about 0.1 ms: "
        "install musl-tools, reinstall procket-twisted (pip), then run install-helper again"
    )


def _policy_line(helper: str) -> str:
    policy = os.path.join(os.path.dirname(helper), "policy")
    try:
        info = os.lstat(policy)
    except FileNotFoundError:
        return (
            f"{policy} is absent, so the helper allows nothing: as root, run "
            "procket-twisted install-helper (it writes the default policy)"
        )
    except OSError as error:
        return f"{policy} cannot be examined ({error.strerror})"
    line = f"{policy} (owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
    try:
        with open(policy, "rb") as stream:
            if info.st_size > 0:
                stream.seek(-1, os.SEEK_END)
                if stream.read(1) != b"\n":
                    line += (
                        "; its last line has no newline, so the helper refuses it as "
                        "half-written: add one"
                    )
    except OSError:
        pass  # not readable by this user: the helper's own answer says what it thinks
    return line


_TUN_DEVICE = "/dev/net/tun"


def _tun_line(helper: str) -> Optional[str]:
    """
    A word when the helper has file capabilities and /dev/net/tun is mode 600: it cannot open
    the device then (that needs CAP_DAC_OVERRIDE, far broader than what it holds), so TUN/TAP
    requests fail while sockets work.
    """
    try:
        info = os.stat(helper)
        device = os.stat(_TUN_DEVICE)
    except OSError:
        return None
    setuid = bool(info.st_mode & stat.S_ISUID) and info.st_uid == 0
    if setuid or not has_file_capabilities(helper) or device.st_mode & stat.S_IROTH:
        return None
    return (
        f"- TUN/TAP: {_TUN_DEVICE} is mode {stat.S_IMODE(device.st_mode):o} and the helper has "
        "file capabilities only, so it cannot open the device (that would need "
        "CAP_DAC_OVERRIDE, which is not granted): sockets work, TUN/TAP interfaces do not. Install "
        f"it setuid (procket-twisted install-helper), or make {_TUN_DEVICE} mode 666, the usual "
        "mode (creating an interface still needs CAP_NET_ADMIN)"
    )


def _probe(
    progname: Progname, port: Optional[int], say: Callable[[str], None]
) -> Tuple[int, Optional[ProcketError]]:
    """Ask the helper for a listening socket on a privileged port: the port, and the failure."""
    ports = [port] if port is not None else list(range(1023, 1023 - _PROBE_ATTEMPTS, -1))
    failure: Optional[ProcketError] = None
    for candidate in ports:
        started = time.perf_counter()
        try:
            sock = listen(candidate, ip=_PROBE_ADDRESS, progname=progname, direct=False)
        except ProcketError as error:
            failure = error
            if error.errno == errno.EADDRINUSE and port is None:
                continue
            return candidate, error
        elapsed = (time.perf_counter() - started) * 1000
        with sock:
            owner = os.fstat(sock.fileno()).st_uid
        say(
            f"- test: got a listening TCP socket on {_PROBE_ADDRESS} port {candidate} through the "
            f"helper in {elapsed:.1f} ms, owned by uid {owner}"
        )
        return candidate, None
    return ports[-1], failure


def _kernel_grant(port: int, say: Callable[[str], None]) -> bool:
    """
    Whether a kernel grant (procket-twisted grant) lets this user bind PORT itself: one bind, as
    the client tries it, no helper.
    """
    request = SocketRequest(port, "tcp", _PROBE_ADDRESS)
    try:
        request.open_here(1).close()
    except SocketError as error:
        if error.errno == errno.EACCES:
            say(f"- kernel grant: none lets this user bind {request.describe()} itself here")
        else:
            say(f"- kernel grant: cannot tell ({error})")
        return False
    say(
        f"- kernel grant: this user binds {request.describe()} itself, with no helper (a cgroup "
        "BPF program grants it: procket-twisted grant); TCP and UDP without privileged options "
        "go that way, the rest (raw, packet, TUN/TAP, privileged options) to the helper"
    )
    return True


def _grant_rules(helper: str, say: Callable[[str], None]) -> None:
    """What each policy rule becomes in a kernel grant (procket-grant compile), when readable."""
    policy = os.path.join(os.path.dirname(helper), "policy")
    try:
        tool = grant_tool()
    except InstallError:
        return
    if not os.access(policy, os.R_OK):
        return
    compiled = subprocess.run([tool, "compile", policy], capture_output=True, text=True)
    if compiled.returncode != 0:
        return
    rules = [line for line in compiled.stdout.splitlines() if line.startswith(("rule ", "  inet"))]
    say("- kernel grant rules (procket-twisted grant compile): what the kernel decides itself")
    for line in rules[:24]:
        say(f"    {line.strip()}")
    if len(rules) > 24:
        say(f"    ... ({len(rules) - 24} more lines)")


def _installed_instead(source: str, say: Callable[[str], None]) -> None:
    """When PROCKET_HELPER or progname names no file: which helper there would be without it."""
    if source not in ("progname", HELPER_ENVIRONMENT_VARIABLE):
        return
    try:
        installed = find_helper(environ={})
    except HelperNotFoundError:
        say(f"- {source} names a helper that does not exist, and none is installed either")
        return
    say(
        f"- {source} names a helper that does not exist; without it this user would run "
        f"{installed.helper} ({installed.source}), whose policy is "
        f"{_policy_line(installed.helper)}: unset {source} or point it there"
    )


def _show_rule(progname: Progname, port: int, say: Callable[[str], None]) -> None:
    """Say which policy rule decides the probe's request for this user."""
    request = SocketRequest(port, "tcp", _PROBE_ADDRESS)
    try:
        decision = policy_decisions([request], progname=progname)[0]
    except ProcketError as error:
        say(f"- policy rule for {request.describe()}: cannot tell ({error})")
        return
    say(f"- policy rule for {request.describe()}, for this user: {decision.describe()}")


def doctor(
    progname: Progname = None, port: Optional[int] = None, say: Callable[[str], None] = print
) -> int:
    """
    Report on this user's access to privileged sockets; return the exit status (0: it works).
    """
    uid, gid = os.getuid(), os.getgid()
    say(f"procket-twisted doctor, as uid {uid} gid {gid}, groups {sorted(os.getgroups())}")
    start = unprivileged_port_start()
    say(f"- ports from {start} up need no helper here (net.ipv4.ip_unprivileged_port_start)")
    for line in plugin_state():
        say(line)
    if has_bind_capability():
        say(
            "- this process already holds CAP_NET_BIND_SERVICE: it binds any port itself, no helper "
            "needed (procket_twisted does so without running one)"
        )
        who = "root" if uid == 0 else "this process"
        say(f"RESULT: {who} binds privileged TCP and UDP ports itself; no helper is needed.")
        return 0
    say(f"- no_new_privs: {'SET (setuid helpers cannot work)' if no_new_privs() else 'not set'}")
    granted = _kernel_grant(port if port is not None else 1023, say)
    ignored = record_problem()
    if ignored is not None:
        say(f"- install record: ignored, {ignored}; run install-helper again to rewrite it")
    try:
        command = find_helper(progname)
    except HelperNotFoundError as error:
        say(f"- helper: none. {error}")
        if granted:
            say("RESULT: this user gets privileged TCP and UDP ports from the kernel grant.")
            return 0
        say("RESULT: this user cannot get privileged sockets yet.")
        return 1
    say(f"- helper: {command.describe()}")
    say(f"- helper file: {command.helper}: {_describe_file(command.helper)}")
    if not os.path.exists(command.helper):
        _installed_instead(command.source, say)
    else:
        say(f"- policy: {_policy_line(command.helper)}")
    for extra in (_build_line(command.helper), _tun_line(command.helper)):
        if extra is not None:
            say(extra)
    _grant_rules(command.helper, say)
    probed, failure = _probe(progname, port, say)
    _show_rule(progname, probed, say)
    if failure is None:
        say(f"RESULT: this user can get privileged sockets through {command.helper}.")
        return 0
    say(f"- test: FAILED ({type(failure).__name__}, step {failure.step}): {failure}")
    if isinstance(failure, SocketError) and failure.errno == errno.EADDRINUSE:
        taken = (
            f"port {probed}"
            if port is not None
            else f"ports {probed}-{probed + _PROBE_ATTEMPTS - 1}"
        )
        say(
            f"RESULT: the helper works, but {taken} on {_PROBE_ADDRESS} is taken here (ss -lnp "
            f"'sport = :{probed}' shows by what); try another port with --port."
        )
        return 1
    fixes: List[str] = (
        privilege_problems(command.helper) if isinstance(failure, HelperNotPrivilegedError) else []
    )
    for fix in fixes:
        say(f"- fix: {fix}")
    if granted:
        say(
            "RESULT: this user gets privileged TCP and UDP ports from the kernel grant; the "
            "helper, for the rest, does not work (see above)."
        )
        return 0
    say("RESULT: this user cannot get privileged sockets right now.")
    return 1
