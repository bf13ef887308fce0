"""
Shared test machinery: installing the real helper into a temporary prefix, and running code as an
unprivileged user against it.

Privileged tests need root (to install a setuid helper and to switch to the test user). Without
root they skip with the reason; with ``PROCKET_REQUIRE_PRIVILEGED_TESTS=1`` (as CI sets) they fail
instead, so a skip can never pass unseen.

The unprivileged side runs ``sys.executable`` under ``setpriv`` as ``nobody``: the interpreter,
its venv and the installed package must be readable by that user, which ``scripts/test`` ensures
by building a venv in a world-readable temporary directory.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

REQUIRE_VARIABLE = "PROCKET_REQUIRE_PRIVILEGED_TESTS"
#: A helper binary the privileged tests install instead of the package's (scripts/test sets it to
#: the ASan and UBSan build for its sanitizer run).
HELPER_BUILD_VARIABLE = "PROCKET_TEST_HELPER_BUILD"
TEST_USER = "nobody"
TEST_UID = pwd.getpwnam(TEST_USER).pw_uid
TEST_GID = pwd.getpwnam(TEST_USER).pw_gid

#: Source of ``open_fds()`` (this process's fds, sorted) and ``children()`` (the pids whose parent
#: is this process, zombies included), for code run in another process: part of `PRELUDE`, and
#: pasted into scripts that run without it (they need only ``import os`` before it).
LEAK_PROBES_SOURCE = """\
def open_fds():
    # The listing's own fd is in the listing, and closed by now: leave it out, or a leak that
    # reuses its number would go unseen.
    found = []
    for fd in sorted(int(fd) for fd in os.listdir("/proc/self/fd")):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found

def children():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as stat_file:
                    fields = stat_file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.append(int(pid))
    return found
"""

#: Code run before every unprivileged snippet: JSON output and leak snapshots.
PRELUDE = (
    """\
import errno, json, os, socket, sys
import procket_twisted
from procket_twisted import *

"""
    + LEAK_PROBES_SOURCE
    + """
def error_facts(error):
    return {"type": type(error).__name__, "errno": error.errno, "step": error.step,
            "index": error.index, "message": str(error)}

def report(value):
    print(json.dumps(value))
"""
)


def parent_of(pid: int) -> int:
    """The parent pid of process PID (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def children() -> Set[int]:
    """The pids whose parent is this process (zombies included)."""
    return {int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and parent_of(int(entry)) == os.getpid()}  # fmt: skip


def set_environment(testcase: unittest.TestCase, name: str, value: Optional[str]) -> None:
    """Set (or, for None, unset) the environment variable NAME until TESTCASE ends."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value

    def restore() -> None:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

    testcase.addCleanup(restore)


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (some containers have no IPv6)."""
    import socket

    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_privileged_reason() -> Optional[str]:
    """Why privileged tests cannot run here, or None when they can."""
    return _privileged_reason()


@functools.lru_cache(maxsize=None)
def _privileged_reason() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root, to install a setuid helper and run the client as another user"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to run the client as an unprivileged user"
    probe = _run_unprivileged_raw("import procket_twisted, twisted", {}, timeout=60)
    if probe.returncode != 0:
        return (
            f"{TEST_USER} cannot import procket_twisted with {sys.executable}: run the suite "
            "with scripts/test, which builds a venv every user can read "
            f"({probe.stderr.strip()[-300:]})"
        )
    return None


#: ``unit`` in this variable (scripts/test --unit) skips every privileged test at once.
TIER_VARIABLE = "PROCKET_TEST_TIER"


def skip_unless_privileged(testcase: unittest.TestCase) -> None:
    """
    Skip TESTCASE when privileged tests cannot run (fail instead when CI requires them), or when
    the unit tier runs (scripts/test --unit), which leaves them to the other tiers.
    """
    if os.environ.get(TIER_VARIABLE) == "unit":
        raise unittest.SkipTest("the unit tier runs no privileged test (scripts/test does)")
    reason = require_privileged_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        testcase.fail(f"privileged tests are required ({REQUIRE_VARIABLE}=1) but {reason}")
    raise unittest.SkipTest(reason)


def skip_with_sanitizer_build(testcase: unittest.TestCase, why: str) -> None:
    """Skip TESTCASE in the sanitizer run, for a property only the static release build has."""
    if os.environ.get(HELPER_BUILD_VARIABLE):
        raise unittest.SkipTest(f"the sanitizer build is dynamically linked: {why}")


def cli_command() -> List[str]:
    """The installed ``procket-twisted`` command for this interpreter."""
    script = os.path.join(os.path.dirname(sys.executable), "procket-twisted")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "procket_twisted._admin.cli"]


@dataclass
class Prefix:
    """A temporary install of the helper."""

    path: str
    directory: str
    helper: str
    policy: str

    def write_policy(self, text: str, mode: int = 0o644) -> None:
        """Replace the policy with TEXT (owned by root, MODE)."""
        with open(self.policy, "w", encoding="ascii") as stream:
            stream.write(textwrap.dedent(text))
        os.chown(self.policy, 0, 0)
        os.chmod(self.policy, mode)


def install_prefix(
    testcase: unittest.TestCase,
    *options: str,
    policy: Optional[str] = None,
) -> Prefix:
    """
    Install the helper with ``procket-twisted install-helper --prefix TMP OPTIONS...`` into a
    fresh temporary prefix (removed after the test), optionally with policy text.
    """
    path = tempfile.mkdtemp(prefix="procket-prefix-")
    os.chmod(path, 0o755)
    testcase.addCleanup(shutil.rmtree, path, True)
    build = os.environ.get(HELPER_BUILD_VARIABLE)
    source = ["--from", build] if build else []
    result = subprocess.run(
        cli_command() + ["install-helper", "--no-record", "--prefix", path, *source, *options],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        testcase.fail(f"install-helper failed: {result.stdout}{result.stderr}")
    directory = os.path.join(path, "libexec", "procket-twisted")
    prefix = Prefix(
        path,
        directory,
        os.path.join(directory, "procket-helper"),
        os.path.join(directory, "policy"),
    )
    if policy is not None:
        prefix.write_policy(policy)
    return prefix


def keep_install_record(testcase: unittest.TestCase) -> None:
    """Put back the machine's install record (or its absence) when TESTCASE ends."""
    from procket_twisted._client.install_record import RECORD

    directory = os.path.dirname(RECORD)
    existed = os.path.isdir(directory)
    saved = None
    if os.path.lexists(RECORD):
        saved = tempfile.mkdtemp(prefix="procket-record-saved-")
        shutil.copy2(RECORD, os.path.join(saved, "helper"), follow_symlinks=False)

    def restore() -> None:
        if os.path.lexists(RECORD):
            os.unlink(RECORD)
        if saved is not None:
            shutil.copy2(os.path.join(saved, "helper"), RECORD, follow_symlinks=False)
            shutil.rmtree(saved)
        elif not existed and os.path.isdir(directory):
            shutil.rmtree(directory)

    testcase.addCleanup(restore)


def _environment(extra: Mapping[str, str]) -> Dict[str, str]:
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
    environment.update(extra)
    return environment


def run_command_unprivileged(
    argv: List[str],
    environment: Mapping[str, str],
    timeout: float = 60,
    setpriv_options: Iterable[str] = (),
    uid: int = TEST_UID,
    gid: int = TEST_GID,
) -> subprocess.CompletedProcess:
    """Run ARGV as UID:GID (no supplementary groups) with a minimal ENVIRONMENT, from /."""
    command = [
        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
        *setpriv_options, "--", *argv,
    ]  # fmt: skip
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd="/",
        env=_environment(environment),
        timeout=timeout,
    )


def _run_unprivileged_raw(
    code: str,
    environment: Mapping[str, str],
    timeout: float = 60,
    setpriv_options: Iterable[str] = (),
    uid: int = TEST_UID,
    gid: int = TEST_GID,
) -> subprocess.CompletedProcess:
    return run_command_unprivileged(
        [sys.executable, "-c", code], environment, timeout, setpriv_options, uid, gid
    )


def run_unprivileged(
    testcase: unittest.TestCase,
    code: str,
    environment: Optional[Mapping[str, str]] = None,
    setpriv_options: Iterable[str] = (),
    timeout: float = 60,
    uid: int = TEST_UID,
    gid: int = TEST_GID,
) -> Any:
    """
    Run CODE (after `PRELUDE`) as UID:GID (default: the test user) and return the JSON value of
    its last stdout line; fail the test with its output when it exits non-zero.
    """
    program = PRELUDE + textwrap.dedent(code)
    result = _run_unprivileged_raw(program, environment or {}, timeout, setpriv_options, uid, gid)
    if result.returncode != 0:
        testcase.fail(
            f"unprivileged code failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        testcase.fail(f"unprivileged code printed nothing; stderr: {result.stderr}")
    return json.loads(lines[-1])


_HANDED_OUT: set = set()


def free_port(low: int = 600, high: int = 1000) -> int:
    """
    A privileged TCP and UDP port that nothing on 127.0.0.1 or ::1 uses now (as root), and that
    this process has not handed out before (two calls in one test never collide).
    """
    import random
    import socket

    candidates = [port for port in range(low, high) if port not in _HANDED_OUT]
    for port in random.sample(candidates, len(candidates)):
        probes = []
        try:
            for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    probe = socket.socket(family, kind)
                    probes.append(probe)
                    if family == socket.AF_INET6:
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe.bind((address, port))
            _HANDED_OUT.add(port)
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free privileged port")


def start_unprivileged(
    testcase: unittest.TestCase, argv: List[str], environment: Mapping[str, str]
) -> subprocess.Popen:
    """
    Start ARGV as the test user in the background (output to a log the test can read with
    `server_output`); it is stopped and reaped when the test ends.
    """
    log = tempfile.NamedTemporaryFile(prefix="procket-server-", suffix=".log", delete=False)
    testcase.addCleanup(os.unlink, log.name)
    command = ["setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_GID}", "--clear-groups", "--",
               *argv]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd="/", env=_environment(environment)
    )
    log.close()
    process.log_path = log.name  # type: ignore[attr-defined]

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    testcase.addCleanup(stop)
    return process


def server_output(process: subprocess.Popen) -> str:
    """What a process started by `start_unprivileged` has printed so far."""
    with open(process.log_path) as stream:  # type: ignore[attr-defined]
        return stream.read()


def wait_for_tcp(
    testcase: unittest.TestCase,
    process: subprocess.Popen,
    host: str,
    port: int,
    seconds: float = 20,
) -> None:
    """Wait until HOST:PORT accepts TCP connections; fail with the server's output if it dies."""
    import socket
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                testcase.fail(f"server never listened on {host}:{port}:\n{server_output(process)}")
            time.sleep(0.05)


def process_users(name_part: str) -> Dict[int, int]:
    """pid -> real uid of every process whose command line contains NAME_PART (not ourselves)."""
    found: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/status") as stream:
                uid = next(int(line.split()[1]) for line in stream if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if name_part in command and not command.startswith("setpriv"):
            found[int(entry)] = uid
    return found


def examples_directory() -> str:
    """The examples, beside the tests (scripts/test copies both)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def docs_directory() -> str:
    """The documentation, beside the tests (scripts/test copies it too)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
