"""
Adversarial tests of the helper's security rules (docs/design.md, "Security rules", rules 1 to
8): each rule has a test that fails if the helper stops enforcing it.

Most tests attack the real setuid helper directly, not through the client, because the client
never sends what they send. The test process (root) forks; the child becomes the test user for
good (setgroups, setresgid, setresuid: its real, effective and saved ids are the user's and it has
no capability, exactly as if the user had started it), arranges its fds, limits, signals and
environment as the attack needs, and execs the installed helper. The test reads the reply on its
end of the channel, and inspects a running helper in /proc as root: a helper is frozen in its
final send by filling its channel first (`BlockedHelper`). A few tests go through the client as
the test user (`support.run_unprivileged`).
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import re
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted._admin.doctor import built_against_glibc

from .support import (
    TEST_GID,
    TEST_UID,
    Prefix,
    free_port,
    install_prefix,
    run_unprivileged,
    skip_unless_privileged,
    skip_with_sanitizer_build,
)

#: The environment every simulated caller passes; the helper must keep none of it.
CALLER_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PROCKET_PROBE": "caller"}
#: A group the test user is not in, given to it as a supplementary group by some tests.
OUTSIDER_GID = 4242
#: Files that a name-service lookup (getpwnam, initgroups...) would open.
NAME_SERVICE_FILES = {"passwd", "group", "shadow", "gshadow", "nsswitch.conf", "initgroups"}
#: The helper's exit statuses (its header comment).
SETUP, PARSE, PRIVILEGE, POLICY, SOCKET = 1, 2, 3, 4, 5
#: The helper's watchdog is 10 seconds; the rest is slack for a loaded machine.
WATCHDOG_LIMIT = 12.0
#: An ``error INDEX STEP ERRNO TEXT`` reply: one line of printable ASCII.
ERROR_REPLY = re.compile(rb"error (\d+) ([a-z]+) (\d+) [\x20-\x7e]*\n")
_CONTROL_BYTES = socket.CMSG_SPACE(253 * array.array("i").itemsize)
_POINTER_BYTES = struct.calcsize("P")
_PR_SET_NO_NEW_PRIVS = 38
_LIBC = ctypes.CDLL(None, use_errno=True)


def tcp_spec(port: Union[int, str], address: str = "127.0.0.1", family: str = "inet") -> str:
    """The helper's argument for a TCP socket."""
    return f"kind=tcp,family={family},addr={address},port={port}"


def udp_spec(port: Union[int, str], address: str = "127.0.0.1", family: str = "inet") -> str:
    """The helper's argument for a UDP socket."""
    return f"kind=udp,family={family},addr={address},port={port}"


@dataclass(frozen=True)
class Caller:
    """Who starts the helper: the test user by default; ``uid=None`` stays root (the sudo path)."""

    uid: Optional[int] = TEST_UID
    gid: int = TEST_GID
    groups: Sequence[int] = ()
    environment: Mapping[str, str] = field(default_factory=lambda: dict(CALLER_ENVIRONMENT))


NOBODY = Caller()


def as_root(**environment: str) -> Caller:
    """Root running the helper itself, as sudo does, with ENVIRONMENT added (SUDO_UID...)."""
    return Caller(uid=None, environment={**CALLER_ENVIRONMENT, **environment})


@dataclass
class Outcome:
    """What one helper run did."""

    exit_code: int  # as os.waitstatus_to_exitcode: negative when a signal killed it
    replies: List[bytes]  # the messages it sent on the channel
    fds: List[int]  # the fds it sent (closed at cleanup)
    output: bytes = b""  # what it wrote on fds 1 and 2

    def error(self) -> Tuple[int, str, int]:
        """(INDEX, STEP, ERRNO) of its only reply, which must be one well-formed error line."""
        assert len(self.replies) == 1, f"expected one reply, got {self.replies!r}"
        match = ERROR_REPLY.fullmatch(self.replies[0])
        assert match is not None, f"not an error reply: {self.replies[0]!r}"
        return int(match.group(1)), match.group(2).decode(), int(match.group(3))

    def socket_owners(self) -> List[Tuple[int, int]]:
        """(uid, gid) of every fd received, each checked to be a socket."""
        owners = []
        for fd in self.fds:
            info = os.fstat(fd)
            assert stat.S_ISSOCK(info.st_mode), f"received fd {fd} is not a socket"
            owners.append((info.st_uid, info.st_gid))
        return owners


def spawn(
    argv: Sequence[str],
    layout: Mapping[int, Optional[int]],
    caller: Caller = NOBODY,
    *,
    program: Optional[str] = None,
    inherited: Sequence[int] = (),
    limits: Sequence[Tuple[int, int]] = (),
    no_new_privs: bool = False,
    hostile_signals: bool = False,
) -> int:
    """
    Fork a child that execs ARGV as CALLER, and return its pid.

    @param layout: the child's fds: target fd -> source fd to dup there, or None to close it.
    @param program: the file to execute (default ``argv[0]``; needed when ARGV is empty).
    @param inherited: more fds the child keeps open across exec.
    @param limits: ``(resource.RLIMIT_..., value)`` pairs to set (soft and hard) first.
    @param no_new_privs: set no_new_privs, as ``setpriv --no-new-privs`` or systemd would.
    @param hostile_signals: ignore every signal that can be (real-time too), and block every signal
        (both survive exec).
    """
    path = os.fsencode(program or argv[0])
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*map(os.fsencode, argv), None)
    pairs = [f"{key}={value}".encode() for key, value in caller.environment.items()]
    c_environment = (ctypes.c_char_p * (len(pairs) + 1))(*pairs, None)
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        for target, source in layout.items():
            if source is None:
                os.close(target)
            else:
                os.dup2(source, target)
        for fd in inherited:
            os.set_inheritable(fd, True)
        for limit, value in limits:
            resource.setrlimit(limit, (value, value))
        if hostile_signals:
            for number in set(range(1, signal.SIGRTMAX + 1)) - {signal.SIGKILL, signal.SIGSTOP}:
                try:
                    signal.signal(number, signal.SIG_IGN)
                except (OSError, ValueError):  # the C library's two private real-time signals
                    pass
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        if caller.uid is not None:
            os.setgroups(list(caller.groups))
            os.setresgid(caller.gid, caller.gid, caller.gid)
            os.setresuid(caller.uid, caller.uid, caller.uid)
        if no_new_privs:
            _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _LIBC.execve(path, c_argv, c_environment)  # ctypes, because os.execve refuses argv []
    finally:
        os._exit(127)


def wait_for_exit(pid: int, timeout: float) -> Optional[int]:
    """Reap PID within TIMEOUT seconds and return its exit code, or None if it still runs."""
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            return None
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def kill_if_running(pid: int) -> None:
    """SIGKILL and reap PID unless it was reaped already."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def read_messages(
    testcase: SynchronousTestCase, channel: socket.socket, blocking: bool = False
) -> Tuple[List[bytes], List[int]]:
    """The messages and fds on CHANNEL, up to end of file or (not BLOCKING) up to none waiting."""
    messages: List[bytes] = []
    fds = array.array("i")
    flags = socket.MSG_CMSG_CLOEXEC | (0 if blocking else socket.MSG_DONTWAIT)
    while True:
        try:
            data, ancillary, _, _ = channel.recvmsg(65536, _CONTROL_BYTES, flags)
        except BlockingIOError:
            break
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                for fd in received:
                    testcase.addCleanup(os.close, fd)
                fds.extend(received)
        if not data and not ancillary:
            break
        messages.append(data)
    return messages, list(fds)


def read_all(fd: int) -> bytes:
    """Everything left to read on FD, whose writers are all gone; FD is closed."""
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


def standard_input(testcase: SynchronousTestCase, kind: str, channel: socket.socket) -> int:
    """An fd of KIND to give the helper as its standard input (the channel when KIND is so)."""
    if kind == "channel":
        return channel.fileno()
    if kind == "pipe":
        reader, writer = os.pipe()
        testcase.addCleanup(os.close, writer)
        testcase.addCleanup(os.close, reader)
        return reader
    if kind == "regular file":
        stream = tempfile.TemporaryFile()
        testcase.addCleanup(stream.close)
        return stream.fileno()
    families = {
        "AF_INET stream socket": (socket.AF_INET, socket.SOCK_STREAM),
        "AF_INET6 datagram socket": (socket.AF_INET6, socket.SOCK_DGRAM),
    }
    if kind in families:
        other = socket.socket(*families[kind])
        testcase.addCleanup(other.close)
        return other.fileno()
    if kind == "AF_UNIX datagram socket":
        one, two = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        testcase.addCleanup(one.close)
        testcase.addCleanup(two.close)
        return one.fileno()
    raise ValueError(kind)


def run_helper(
    testcase: SynchronousTestCase,
    argv: Sequence[str],
    caller: Caller = NOBODY,
    *,
    stdin: str = "channel",
    closed: Sequence[int] = (),
    timeout: float = 5.0,
    **options: Any,
) -> Outcome:
    """
    Run the helper once with ARGV as CALLER and return what it did. Its standard input is one end
    of a ``SOCK_SEQPACKET`` pair (or another kind of fd, STDIN); fds 1 and 2 are a pipe we read;
    the fds in CLOSED are closed. OPTIONS go to `spawn`. A helper still running after TIMEOUT
    seconds is killed and the test fails.
    """
    channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    testcase.addCleanup(channel.close)
    output, output_writer = os.pipe()
    with theirs:
        layout: Dict[int, Optional[int]] = {
            0: standard_input(testcase, stdin, theirs), 1: output_writer, 2: output_writer,
        }  # fmt: skip
        layout.update((fd, None) for fd in closed)
        try:
            pid = spawn(argv, layout, caller, **options)
        finally:
            os.close(output_writer)
    exit_code = wait_for_exit(pid, timeout)
    if exit_code is None:
        kill_if_running(pid)
        testcase.fail(f"the helper ({' '.join(argv)[:200]}) still ran after {timeout} s")
    replies, fds = read_messages(testcase, channel)
    return Outcome(exit_code, replies, fds, read_all(output))


def fill_send_buffer(sock: socket.socket) -> int:
    """Send on the stream socket SOCK until not one more byte fits; return how many were sent."""
    sent = 0
    sock.setblocking(False)
    for size in (65536, 4096, 256, 1):
        while True:
            try:
                sent += sock.send(bytes(size))
            except BlockingIOError:
                break
    sock.setblocking(True)  # the helper shares this open file description: it must block
    return sent


def process_state(pid: int) -> str:
    """The state letter of PID (R, S, Z...) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rsplit(")", 1)[1].split()[0]


class BlockedHelper:
    """
    A helper frozen in its last step. Its channel is a ``SOCK_STREAM`` pair whose send buffer the
    test filled before starting it, so its final sendmsg blocks: its sockets are open and its
    privileges dropped, ready to be inspected in /proc, until `release` drains the channel or its
    watchdog ends it.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        argv: Sequence[str],
        caller: Caller = NOBODY,
        **options: Any,
    ) -> None:
        self.testcase = testcase
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        testcase.addCleanup(self.channel.close)
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        with theirs:
            self.filler = fill_send_buffer(theirs)
            self.started = time.monotonic()
            try:
                layout = {0: theirs.fileno(), 1: null, 2: null}
                self.pid = spawn(argv, layout, caller, **options)
            finally:
                os.close(null)
        testcase.addCleanup(kill_if_running, self.pid)
        self._wait_until_blocked(os.path.realpath(argv[0]))

    def _wait_until_blocked(self, program: str) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            finished, status = os.waitpid(self.pid, os.WNOHANG)
            if finished:
                self.testcase.fail(
                    f"the helper exited ({os.waitstatus_to_exitcode(status)}) instead of blocking"
                )
            try:
                if os.readlink(f"/proc/{self.pid}/exe") == program:
                    if process_state(self.pid) == "S":  # its only blocking call is the send
                        return
            except OSError:
                pass  # not exec'd yet
            time.sleep(0.005)
        self.testcase.fail("the helper did not block in its send within 5 s")

    def status(self) -> Dict[str, str]:
        """The fields of /proc/PID/status."""
        with open(f"/proc/{self.pid}/status") as status:
            fields = (line.partition(":") for line in status)
            return {key: value.strip() for key, _, value in fields}

    def fds(self) -> Dict[int, str]:
        """The helper's open fds and what each is (``socket:[...]``, a path...)."""
        directory = f"/proc/{self.pid}/fd"
        return {int(fd): os.readlink(os.path.join(directory, fd)) for fd in os.listdir(directory)}

    def core_limit(self) -> List[str]:
        """The helper's soft and hard RLIMIT_CORE, as /proc/PID/limits shows them."""
        with open(f"/proc/{self.pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max core file size"):
                    return line.split()[4:6]
        raise AssertionError("/proc/PID/limits has no core line")

    def c_library_globals(self) -> Tuple[int, bytes]:
        """
        The C library's ``environ`` pointer in the helper, and the string its
        ``program_invocation_name`` points to (its argv[0]: proof that the addresses are right),
        read from its memory. The symbols come from ``nm``, in the helper itself (static) or in
        the C library it maps (dynamic); both are position independent, so an address is the
        object's load base plus the symbol's value.
        """
        wanted = ("__environ", "program_invocation_name")
        with open(f"/proc/{self.pid}/mem", "rb", buffering=0) as memory:

            def read(address: int, size: int) -> bytes:
                memory.seek(address)
                return memory.read(size)

            def pointer(address: int) -> int:
                return int.from_bytes(read(address, _POINTER_BYTES), sys.byteorder)

            for path, base in load_bases(self.pid).items():
                symbols = defined_symbols(path)
                if all(name in symbols for name in wanted):
                    environ, name = (pointer(base + symbols[name]) for name in wanted)
                    return environ, read(name, 4096).split(b"\0")[0]
        raise AssertionError(f"no object mapped by the helper defines {wanted}")

    def release(self) -> Outcome:
        """Drain the channel so that the helper's send completes; return what it did."""
        self.channel.settimeout(5)
        messages, fds = read_messages(self.testcase, self.channel, blocking=True)
        exit_code = wait_for_exit(self.pid, 5)
        if exit_code is None:
            self.testcase.fail("the helper still runs after its send completed")
        return Outcome(exit_code, [b"".join(messages)[self.filler :]], fds)


def load_bases(pid: int) -> Dict[str, int]:
    """Each file mapped by PID and the address where its first byte is mapped."""
    bases: Dict[str, int] = {}
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/") and int(fields[2], 16) == 0:
                bases.setdefault(fields[5].strip(), int(fields[0].split("-")[0], 16))
    return bases


def defined_symbols(path: str) -> Dict[str, int]:
    """The symbols PATH defines (its symbol table, then its dynamic one) and their values."""
    symbols: Dict[str, int] = {}
    for table in ([], ["--dynamic"]):
        listing = subprocess.run(
            ["nm", "--defined-only", *table, path], capture_output=True, text=True
        ).stdout
        for line in listing.splitlines():
            words = line.split()
            if len(words) == 3:
                symbols.setdefault(words[2].split("@")[0], int(words[0], 16))
    return symbols


def helper_processes(helper: str) -> List[int]:
    """The pids of every process running the file HELPER now."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/exe") == helper:
                found.append(int(pid))
        except OSError:
            continue
    return found


class HelperTestCase(SynchronousTestCase):
    """Installs the helper in a fresh prefix with the default policy; picks a free port."""

    maxDiff = None

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix: Prefix = install_prefix(self)
        self.helper = self.prefix.helper
        self.port = free_port()

    def request(self, *specs: str) -> List[str]:
        """The helper's argv for SPECS."""
        return [self.helper, "v1", *specs]

    def assertSucceeded(self, outcome: Outcome, count: int) -> None:
        """OUTCOME is a clean exit after one reply "ok COUNT" with COUNT fds."""
        got = (outcome.exit_code, outcome.replies, len(outcome.fds))
        self.assertEqual(got, (0, [f"ok {count}\n".encode()], count))

    def assertRefused(self, outcome: Outcome, status: int, index: int, step: str, code: int) -> str:
        """OUTCOME is an exit with STATUS and one error reply, no fd: return its text."""
        self.assertEqual(
            (outcome.exit_code, outcome.error(), outcome.fds), (status, (index, step, code), [])
        )
        return outcome.replies[0].decode()


class StandardDescriptorTests(HelperTestCase):
    """Rule 1: fds 0-2 valid, fd 0 an AF_UNIX socket; every other inherited fd closed."""

    def test_closed_standard_descriptor_refused(self) -> None:
        """
        Run by root through sudo (where the C library does not reopen closed standard fds, as it
        does for a setuid program), the helper refuses to start with fd 0, 1 or 2 closed: status
        1, no fd sent, and it says which fd when it has somewhere to say it.
        """
        caller = as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID))
        results = {}
        for fd in (0, 1, 2):
            outcome = run_helper(self, self.request(tcp_spec(self.port)), caller, closed=[fd])
            results[fd] = (outcome.exit_code, outcome.replies, outcome.fds)
            if fd != 2:
                self.assertIn(f"fd {fd} is closed".encode(), outcome.output)
        self.assertEqual(results, {fd: (SETUP, [], []) for fd in (0, 1, 2)})

    def test_standard_input_must_be_a_unix_stream_socket(self) -> None:
        """
        A setuid helper whose standard input is closed, a pipe, a regular file, an AF_INET or
        AF_INET6 socket, or an AF_UNIX datagram socket refuses with status 1 and sends nothing,
        saying why on fd 2.
        """
        kinds = ["closed", "pipe", "regular file", "AF_INET stream socket",
                 "AF_INET6 datagram socket", "AF_UNIX datagram socket"]  # fmt: skip
        results = {}
        for kind in kinds:
            argv = self.request(tcp_spec(self.port))
            if kind == "closed":
                outcome = run_helper(self, argv, closed=[0])
            else:
                outcome = run_helper(self, argv, stdin=kind)
            said = b"standard input must be an AF_UNIX stream or seqpacket socket" in outcome.output
            results[kind] = (outcome.exit_code, outcome.replies, outcome.fds, said)
        self.assertEqual(results, {kind: (SETUP, [], [], True) for kind in kinds})

    def test_inherited_descriptors_closed(self) -> None:
        """
        An fd the caller lets the helper inherit (a pipe's write end without close-on-exec) is
        closed before the helper opens anything: while it waits to send, it holds fds 0, 1 and 2
        and the two sockets asked for, nothing else, and the pipe's reader already sees end of
        file. Released, it sends "ok 2" with both sockets.
        """
        reader, writer = os.pipe()
        self.addCleanup(os.close, reader)
        try:
            blocked = BlockedHelper(
                self, self.request(tcp_spec(self.port), udp_spec(self.port)), inherited=[writer]
            )
        finally:
            os.close(writer)
        extra = {fd: what for fd, what in blocked.fds().items() if fd > 2}
        self.assertEqual(len(extra), 2, extra)
        self.assertTrue(all(what.startswith("socket:") for what in extra.values()), extra)
        self.assertTrue(select.select([reader], [], [], 0)[0], "the pipe is still open")
        self.assertEqual(os.read(reader, 1), b"")
        self.assertSucceeded(blocked.release(), 2)


class EnvironmentTests(HelperTestCase):
    """Rule 2: the environment is cleared; no PATH lookup; nothing is executed."""

    def test_environment_cleared(self) -> None:
        """
        Once it has read SUDO_UID and SUDO_GID, the helper clears its environment: at its last
        step the C library's environ pointer in its memory is NULL, though the caller passed
        variables (the kernel's copy in /proc/PID/environ keeps the original strings whatever
        the process does, so only the pointer can tell).
        """
        blocked = BlockedHelper(self, self.request(tcp_spec(self.port)))
        environ, program_name = blocked.c_library_globals()
        self.assertEqual(program_name, self.helper.encode())
        self.assertEqual(environ, 0)
        self.assertEqual(blocked.release().replies, [b"ok 1\n"])

    def test_no_exec_no_name_service_no_stray_file(self) -> None:
        """
        Traced by strace (root running it through sudo, with a policy naming users and groups),
        the helper executes nothing after its own execve and opens no name-service file or module
        (/etc/passwd, /etc/group, /etc/nsswitch.conf, libnss_*), nothing under /etc at all but the
        loader's cache, and nothing through a relative path (no PATH lookup).
        """
        self.prefix.write_policy(f"allow user={TEST_UID} group={TEST_GID} kind=tcp\n")
        trace = os.path.join(self.prefix.path, "trace")
        strace = ["strace", "-f", "-qq", "-o", trace, "-e",
                  "trace=execve,execveat,open,openat,openat2,creat"]  # fmt: skip
        caller = as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID))
        argv = self.request(tcp_spec(self.port))
        outcome = run_helper(self, strace + argv, caller, program=shutil.which("strace"))
        self.assertSucceeded(outcome, 1)
        with open(trace) as lines:
            calls = [line.split(None, 1)[1] for line in lines]
        executions = [call for call in calls if call.startswith("exec")]
        self.assertEqual(len(executions), 1, executions)
        self.assertTrue(executions[0].startswith(f'execve("{self.helper}"'), executions)
        opened = re.findall(r'open\w*\((\w+), "([^"]*)"', "\n".join(calls))
        name_service = [path for _, path in opened if os.path.basename(path) in NAME_SERVICE_FILES
                        or os.path.basename(path).startswith("libnss_")]  # fmt: skip
        under_etc = [path for _, path in opened if path.startswith("/etc/")]
        relative = [path for where, path in opened if where == "AT_FDCWD" and path[:1] != "/"]
        self.assertEqual(name_service, [])
        self.assertLessEqual(set(under_etc), {"/etc/ld.so.cache"})
        self.assertEqual(relative, [])


class RequestParsingTests(HelperTestCase):
    """Rule 3: argc 0 refused; strict parsing with bounded lengths and allowlists."""

    def test_empty_argv_refused(self) -> None:
        """
        Executed with no argv at all (argc 0, which would make argv[1] the first environment
        string; recent kernels supply an empty argv[0] instead), the helper exits with status 2,
        is not killed by a signal, and sends no fd.
        """
        outcome = run_helper(self, [], program=self.helper)
        self.assertEqual((outcome.exit_code, outcome.fds), (PARSE, []))
        self.assertFalse(any(reply.startswith(b"ok") for reply in outcome.replies))

    def test_malformed_requests_refused(self) -> None:
        """
        Every malformed request is refused at the parse step: status 2 (never a signal), no fd,
        one printable error line "error INDEX parse 22 ..." naming the bad socket (2, after a
        valid one) or 0 for the request as a whole.
        """
        good = tcp_spec(80)
        whole = {
            "no arguments": [],
            "version only": ["v1"],
            "unknown version": ["v2", good],
            "version with a space": ["v1 ", good],
            "254 sockets": ["v1"] + [good] * 254,
        }
        one_spec = {
            "port with a leading zero": tcp_spec("080"),
            "negative port": tcp_spec("-1"),
            "port with a plus sign": tcp_spec("+80"),
            "hexadecimal port": tcp_spec("0x50"),
            "port 65536": tcp_spec(65536),
            "port 2**32 + 80": tcp_spec(2**32 + 80),
            "port of 11 digits": tcp_spec(99999999999),
            "port with a space": tcp_spec(" 80"),
            "port with a trailing space": tcp_spec("80 "),
            "empty port": tcp_spec(""),
            "unknown kind": "kind=raw,family=inet,addr=127.0.0.1,port=80",
            "kind in capitals": "kind=TCP,family=inet,addr=127.0.0.1,port=80",
            "unknown family": tcp_spec(80, family="unix"),
            "host name": tcp_spec(80, address="localhost"),
            "short IPv4 address": tcp_spec(80, address="1.2.3"),
            "IPv4 address with a leading zero": tcp_spec(80, address="0127.0.0.1"),
            "address with a prefix length": tcp_spec(80, address="127.0.0.1/8"),
            "address with a space": tcp_spec(80, address=" 127.0.0.1"),
            "IPv6 address for inet": tcp_spec(80, address="::1"),
            "IPv4 address for inet6": tcp_spec(80, address="127.0.0.1", family="inet6"),
            "scoped IPv6 address": tcp_spec(80, address="fe80::1%lo", family="inet6"),
            "unknown key": good + ",reuse=1",
            "option in capitals": good + ",MARK=1",
            "mark 2**32": good + ",mark=4294967296",
            "negative mark": good + ",mark=-1",
            "priority 2**31": good + ",priority=2147483648",
            "receive buffer over 2**30": good + ",rcvbuf=1073741824",
            "flag given as yes": good + ",transparent=yes",
            "flag given as 0": good + ",reuseport=0",
            "device name of 16 bytes": good + ",device=abcdefghijklmnop",
            "device name with a slash": good + ",device=eth/0",
            "empty device name": good + ",device=",
            "option given twice": good + ",mark=1,mark=2",
            "duplicate key": good + ",port=81",
            "missing kind": "family=inet,addr=127.0.0.1,port=80",
            "missing family": "kind=tcp,addr=127.0.0.1,port=80",
            "missing addr": "kind=tcp,family=inet,port=80",
            "missing port": "kind=tcp,family=inet,addr=127.0.0.1",
            "empty spec": "",
            "trailing comma": good + ",",
            "empty key": good + ",=1",
            "key without value": good + ",backlog",
            "spaces around items": "kind=tcp, family=inet, addr=127.0.0.1, port=80",
            "300 bytes": good + ",backlog=1" + " " * 256,
            "negative backlog": good + ",backlog=-1",
            "backlog 65536": good + ",backlog=65536",
            "backlog for udp": udp_spec(80) + ",backlog=1",
            "v6only=2": tcp_spec(80, address="::1", family="inet6") + ",v6only=2",
            "v6only=01": tcp_spec(80, address="::1", family="inet6") + ",v6only=01",
            "v6only for inet": good + ",v6only=1",
            "control characters": "kind=tcp\n\r\x1b[2J,family=inet,addr=127.0.0.1,port=80",
            "non-ASCII bytes": "kind=tcp\u00e9,family=inet,addr=127.0.0.1,port=80",
        }
        cases = {name: (arguments, 0) for name, arguments in whole.items()}
        cases.update((name, (["v1", good, spec], 2)) for name, spec in one_spec.items())
        results, expected = {}, {}
        for name, (arguments, index) in cases.items():
            outcome = run_helper(self, [self.helper, *arguments])
            try:
                error: object = outcome.error()
            except AssertionError as failure:
                error = str(failure)
            results[name] = (outcome.exit_code, error, outcome.fds)
            expected[name] = (PARSE, (index, "parse", 22), [])
        self.assertEqual(results, expected)


class PolicyFileTests(HelperTestCase):
    """Rule 4: only a root-owned, trusted policy decides, read without NSS or symlinks."""

    def test_unsafe_policy_file_refused(self) -> None:
        """
        A policy file that is writable by its group or by others, owned by the test user, a
        symlink (even to a good file in the same directory) or not a regular file allows
        nothing: status 4, an error at the policy step, no fd.
        """
        good = os.path.join(self.prefix.directory, "good-policy")
        with open(good, "w") as stream:
            stream.write("allow kind=tcp,udp\n")

        def make(mode: int, owner: int = 0) -> None:
            self.prefix.write_policy("allow kind=tcp,udp\n", mode)
            os.chown(self.prefix.policy, owner, 0)

        unsafe = {
            "writable by its group": lambda: make(0o664),
            "writable by others": lambda: make(0o646),
            "owned by the test user": lambda: make(0o644, TEST_UID),
            "a symlink to a good file": lambda: os.symlink(good, self.prefix.policy),
            "a FIFO": lambda: os.mkfifo(self.prefix.policy, 0o644),
            "a directory": lambda: os.mkdir(self.prefix.policy, 0o755),
        }
        results = {}
        for name, create in unsafe.items():
            remove = os.rmdir if stat.S_ISDIR(os.lstat(self.prefix.policy).st_mode) else os.unlink
            remove(self.prefix.policy)
            create()
            outcome = run_helper(self, self.request(tcp_spec(self.port)))
            index, step, _ = outcome.error()
            results[name] = (outcome.exit_code, index, step, outcome.fds)
        self.assertEqual(results, {name: (POLICY, 0, "policy", []) for name in unsafe})

    def test_untrusted_directory_refused(self) -> None:
        """
        When a directory above the helper and its policy is owned by the test user, or writable
        by its group or by others without the sticky bit, the helper refuses everything (status
        4, policy step), naming the directory: whoever can write there could swap the policy.
        """
        libexec = os.path.dirname(self.prefix.directory)
        untrusted = {
            "owned by the test user": (libexec, lambda path: os.chown(path, TEST_UID, 0)),
            "writable by its group": (libexec, lambda path: os.chmod(path, 0o775)),
            "writable by others": (self.prefix.path, lambda path: os.chmod(path, 0o757)),
        }
        results = {}
        for name, (directory, spoil) in untrusted.items():
            spoil(directory)
            try:
                outcome = run_helper(self, self.request(tcp_spec(self.port)))
            finally:
                os.chown(directory, 0, 0)
                os.chmod(directory, 0o755)
            index, step, _ = outcome.error()
            named = f"directory '{directory}' is not owned by root" in outcome.replies[0].decode()
            results[name] = (outcome.exit_code, index, step, named, outcome.fds)
        self.assertEqual(results, {name: (POLICY, 0, "policy", True, []) for name in untrusted})

    def test_hardlink_in_user_directory_refused(self) -> None:
        """
        A hard link to the setuid helper in a directory the test user owns (the kernel's
        protected_hardlinks stops the user making it; root makes it here to simulate an older
        system) runs with no policy beside it, which would mean the default, but the helper
        refuses to run from an untrusted directory at all (the installed policy, which denies
        everything, is not bypassed): status 4, policy step.
        """
        self.prefix.write_policy("deny kind=tcp,udp\n")
        directory = tempfile.mkdtemp(prefix="procket-user-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chown(directory, TEST_UID, TEST_GID)
        os.chmod(directory, 0o755)
        link = os.path.join(directory, "procket-helper")
        os.link(self.helper, link)
        outcome = run_helper(self, [link, "v1", tcp_spec(self.port)])
        text = self.assertRefused(outcome, POLICY, 0, "policy", 1)
        self.assertIn("own path is not trusted", text)

    def test_syntax_error_refused_naming_its_line(self) -> None:
        """
        A policy with a syntax error allows nothing, and the error names the line. User and group
        names are syntax errors too: the helper never resolves a name (no NSS while privileged).
        """
        broken = {
            "allow kind=tcp\nallow port=80x\n": "line 2: bad value '80x' for 'port'",
            "# names\n\nallow group=nogroup kind=tcp\n": "line 3: bad value 'nogroup' for 'group'",
            "allow user=nobody kind=tcp\n": "line 1: bad value 'nobody' for 'user'",
            "permit kind=tcp\n": "line 1: a rule starts with allow or deny",
        }
        results = {}
        for text, message in broken.items():
            self.prefix.write_policy(text)
            outcome = run_helper(self, self.request(tcp_spec(self.port)))
            said = message in outcome.replies[0].decode()
            results[text] = (outcome.exit_code, outcome.error(), said)
        self.assertEqual(results, {text: (POLICY, (0, "policy", 22), True) for text in broken})

    def test_missing_policy_allows_nothing(self) -> None:
        """
        Without a policy file nothing is allowed (fail closed): status 4, ENOENT at the policy
        step, a message that names the missing file and what writes it, no fd.
        """
        os.unlink(self.prefix.policy)
        outcome = run_helper(self, self.request(tcp_spec(self.port), udp_spec(self.port)))
        text = self.assertRefused(outcome, POLICY, 0, "policy", errno.ENOENT)
        self.assertIn(f"there is no {self.prefix.policy}, so nothing is allowed", text)
        self.assertIn("install-helper", text)

    def test_half_written_policy_refused(self) -> None:
        """
        A policy whose last line has no newline (a file cut short while it was written) allows
        nothing, even when what it holds would allow the request.
        """
        self.prefix.write_policy("allow kind=tcp,udp")
        outcome = run_helper(self, self.request(tcp_spec(self.port)))
        text = self.assertRefused(outcome, POLICY, 0, "policy", errno.EINVAL)
        self.assertIn("last line has no newline", text)
        self.prefix.write_policy("allow kind=tcp,udp\n")
        self.assertSucceeded(run_helper(self, self.request(tcp_spec(self.port))), 1)

    def test_sticky_own_directory_refused(self) -> None:
        """
        The helper's own directory must be writable by root alone, sticky or not: mode 1777
        (as /tmp) is refused, while a sticky ancestor (the prefix's own /tmp) is accepted.
        """
        os.chmod(self.prefix.directory, 0o1777)
        try:
            outcome = run_helper(self, self.request(tcp_spec(self.port)))
        finally:
            os.chmod(self.prefix.directory, 0o755)
        text = self.assertRefused(outcome, POLICY, 0, "policy", errno.EPERM)
        self.assertIn(f"directory '{self.prefix.directory}' is not owned by root", text)
        self.assertSucceeded(run_helper(self, self.request(tcp_spec(self.port))), 1)

    def test_hardlink_in_sticky_directory_refused(self) -> None:
        """
        A hard link to the setuid helper in a root-owned sticky directory such as /tmp (where
        fs.protected_hardlinks=0 lets any user make one) has no policy beside it and a directory
        others can write: the helper allows nothing from there.
        """
        link = os.path.join(tempfile.gettempdir(), f"procket-helper-link-{os.getpid()}")
        os.link(self.helper, link)
        self.addCleanup(os.unlink, link)
        outcome = run_helper(self, [link, "v1", tcp_spec(self.port)])
        text = self.assertRefused(outcome, POLICY, 0, "policy", errno.EPERM)
        self.assertIn("own path is not trusted", text)

    def test_deny_rule_refuses_naming_its_line(self) -> None:
        """
        A matching deny rule refuses the request before any socket is opened, naming the socket
        (its index) and the rule's line; the first matching rule decides.
        """
        self.prefix.write_policy(
            f"# web ports only\ndeny kind=udp port={self.port}\nallow kind=tcp,udp\n"
        )
        outcome = run_helper(self, self.request(tcp_spec(self.port), udp_spec(self.port)))
        text = self.assertRefused(outcome, POLICY, 2, "policy", 13)
        self.assertIn(f"denied for uid {TEST_UID} by line 2", text)

    def test_group_rule_uses_callers_own_groups(self) -> None:
        """
        A ``group=GID`` rule matches a supplementary group the caller holds (from its own
        getgroups(), as the kernel says, not from /etc/group) and nothing else: the same request
        is refused when the caller does not hold the group.
        """
        self.prefix.write_policy(f"allow group={OUTSIDER_GID} kind=tcp\n")
        argv = self.request(tcp_spec(self.port))
        member = run_helper(self, argv, Caller(groups=[OUTSIDER_GID]))
        self.assertSucceeded(member, 1)
        outsider = run_helper(self, argv)
        self.assertIn("no rule allows it", self.assertRefused(outsider, POLICY, 1, "policy", 13))


class CallerIdentityTests(HelperTestCase):
    """Rule 5: the caller is the real uid; SUDO_UID and SUDO_GID count only when that is root."""

    def test_sudo_variables_ignored_for_unprivileged_caller(self) -> None:
        """
        The test user running the setuid helper with SUDO_UID=1 and SUDO_GID=1 in its environment
        still gets a socket owned by the test user, not by uid 1.
        """
        caller = Caller(environment={**CALLER_ENVIRONMENT, "SUDO_UID": "1", "SUDO_GID": "1"})
        outcome = run_helper(self, self.request(tcp_spec(self.port)), caller)
        self.assertEqual((outcome.exit_code, outcome.socket_owners()), (0, [(TEST_UID, TEST_GID)]))

    def test_sudo_variables_name_the_caller_when_root_runs_it(self) -> None:
        """Root running the helper as sudo does, with SUDO_UID and SUDO_GID, serves that user."""
        caller = as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID))
        outcome = run_helper(self, self.request(tcp_spec(self.port)), caller)
        self.assertEqual((outcome.exit_code, outcome.socket_owners()), (0, [(TEST_UID, TEST_GID)]))

    def test_root_caller_refused(self) -> None:
        """
        Root without both SUDO_UID and SUDO_GID, or with SUDO_UID=0, is refused at the policy
        step (status 4): root needs no helper, and the helper never hands out root's sockets.
        """
        callers = {
            "no SUDO variables": as_root(),
            "SUDO_UID only": as_root(SUDO_UID=str(TEST_UID)),
            "SUDO_UID=0": as_root(SUDO_UID="0", SUDO_GID="0"),
        }
        results = {}
        for name, caller in callers.items():
            outcome = run_helper(self, self.request(tcp_spec(self.port)), caller)
            results[name] = (outcome.exit_code, outcome.error(), outcome.fds)
        self.assertEqual(results, {name: (POLICY, (0, "policy", 1), []) for name in callers})

    def test_malformed_sudo_variables_refused(self) -> None:
        """
        SUDO_UID values that are not plain decimal ids (hexadecimal, signed, padded, empty, or
        the reserved -1) are refused at setup (status 1, EINVAL) instead of being guessed at.
        """
        values = ["0x10", "-1", "+65534", "065534", " 65534", "", "4294967295", "99999999999"]
        results = {}
        for value in values:
            caller = as_root(SUDO_UID=value, SUDO_GID=str(TEST_GID))
            outcome = run_helper(self, self.request(tcp_spec(self.port)), caller)
            results[value] = (outcome.exit_code, outcome.error(), outcome.fds)
        self.assertEqual(results, {value: (SETUP, (0, "setup", 22), []) for value in values})


class PrivilegeDropTests(HelperTestCase):
    """Rule 6: ids, groups and capabilities dropped for good before sending; no core dumps."""

    def test_privileges_dropped_before_sockets_are_sent(self) -> None:
        """
        At its last step (blocked in the send), the helper run setuid by the test user holding a
        supplementary group, or run by root through sudo, has the caller's uid and gid as real,
        effective, saved and filesystem ids, no supplementary group, no capability in any set,
        and no_new_privs set.
        """
        callers = {
            "setuid, with a supplementary group": Caller(groups=[OUTSIDER_GID]),
            "root through sudo": as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID)),
        }
        dropped = {
            "Uid": [str(TEST_UID)] * 4, "Gid": [str(TEST_GID)] * 4, "Groups": [],
            "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0, "NoNewPrivs": ["1"],
        }  # fmt: skip
        results = {}
        for name, caller in callers.items():
            port = free_port()
            blocked = BlockedHelper(self, self.request(tcp_spec(port)), caller)
            status = blocked.status()
            results[name] = {
                key: int(status[key], 16) if key.startswith("Cap") else status[key].split()
                for key in dropped
            }
            self.assertEqual(blocked.release().replies, [b"ok 1\n"])
        self.assertEqual(results, {name: dropped for name in callers})

    def test_core_dumps_disabled(self) -> None:
        """
        A caller that raised RLIMIT_CORE to unlimited still gets a helper whose core limit is 0,
        so a crash could never dump its privileged memory.
        """
        unlimited = [(resource.RLIMIT_CORE, resource.RLIM_INFINITY)]
        blocked = BlockedHelper(self, self.request(tcp_spec(self.port)), limits=unlimited)
        self.assertEqual(blocked.core_limit(), ["0", "0"])
        self.assertEqual(blocked.release().replies, [b"ok 1\n"])


class SocketOwnershipTests(HelperTestCase):
    """Rule 7: the sockets are created by the caller's uid, not by root."""

    def test_sockets_belong_to_the_caller(self) -> None:
        """
        Every socket of a request mixing TCP and UDP over IPv4 and IPv6 is created by the caller's
        uid and gid (its inode is theirs, so it can only join their SO_REUSEPORT groups), both
        when the setuid helper is run by the test user and when root runs it through sudo.
        """
        callers = {
            "setuid": NOBODY,
            "root through sudo": as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID)),
        }
        results = {}
        for name, caller in callers.items():
            port = free_port()
            specs = [tcp_spec(port), udp_spec(port),
                     tcp_spec(port, "::1", "inet6"), udp_spec(port, "::1", "inet6")]  # fmt: skip
            outcome = run_helper(self, self.request(*specs), caller)
            results[name] = (outcome.exit_code, outcome.socket_owners())
        self.assertEqual(results, {name: (0, [(TEST_UID, TEST_GID)] * 4) for name in callers})


class LifetimeTests(HelperTestCase):
    """Rule 8: the helper never outlives its request."""

    def test_watchdog_ends_a_stuck_helper(self) -> None:
        """
        A helper stuck in its send (its caller never reads) is killed by its own watchdog
        (SIGALRM) within about 10 seconds, even though the caller ignored every signal it could
        (real-time ones too) and blocked every signal before starting it: the helper starts with
        an empty signal mask and default dispositions, except SIGTSTP, SIGTTIN and SIGTTOU, which
        it ignores itself, and the signals its C library keeps for its own threads (glibc: 32 and
        33, which the caller's glibc cannot ignore either; musl: 32 to 34), which no code of a
        single-threaded program receives and which the library refuses to change.
        """
        blocked = BlockedHelper(self, self.request(tcp_spec(self.port)), hostile_signals=True)
        status = blocked.status()
        stoppers = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
        libraries_own = sum(1 << (number - 1) for number in (32, 33, 34))
        self.assertEqual(int(status["SigBlk"], 16), 0)
        ignored = int(status["SigIgn"], 16) & ~libraries_own
        self.assertEqual(ignored, sum(1 << (number - 1) for number in stoppers))
        remaining = WATCHDOG_LIMIT - (time.monotonic() - blocked.started)
        self.assertEqual(wait_for_exit(blocked.pid, remaining), -signal.SIGALRM)

    def test_no_helper_outlives_a_batch_of_requests(self) -> None:
        """
        After 20 requests through the client as the test user, successes and failures of every
        kind (a policy refusal, a bind failure, a refusal of the second socket of two), the
        client has no child left and no process on the machine runs the helper.
        """
        self.prefix.write_policy("deny kind=udp\nallow kind=tcp\n")
        code = f"""
        helper, port = {self.helper!r}, {self.port}
        tcp = SocketRequest(port, ip="127.0.0.1")
        udp = SocketRequest(port, "udp", ip="127.0.0.1")
        outcomes = []
        for call in range(20):
            try:
                if call % 4 == 0:
                    held = listen_many([tcp], progname=helper, direct=False)[0]
                elif call % 4 == 1:
                    listen_many([udp], progname=helper, direct=False)
                elif call % 4 == 2:
                    listen_many([tcp], progname=helper, direct=False)
                else:
                    held.close()
                    listen_many([tcp, udp], progname=helper, direct=False)
                outcomes.append("ok")
            except ProcketError as error:
                outcomes.append(type(error).__name__)
        report({{"outcomes": outcomes, "children": children()}})
        """
        result = run_unprivileged(self, code)
        rounds = ["ok", "PolicyDeniedError", "SocketError", "PolicyDeniedError"]
        self.assertEqual(result, {"outcomes": rounds * 5, "children": []})
        self.assertEqual(helper_processes(self.helper), [])


class UnprivilegedHelperTests(HelperTestCase):
    """An unprivileged or starved helper fails with a clear error, never a crash."""

    def test_no_new_privs_refused_by_the_helper(self) -> None:
        """
        Under no_new_privs the kernel ignores the setuid bit; the helper, running as the plain
        test user, says so at its privilege step (status 3), naming no_new_privs, and sends no fd.
        """
        outcome = run_helper(self, self.request(tcp_spec(self.port)), no_new_privs=True)
        self.assertIn("no_new_privs", self.assertRefused(outcome, PRIVILEGE, 0, "privilege", 1))

    def test_no_new_privs_reported_by_the_client(self) -> None:
        """
        Through the client under ``setpriv --no-new-privs``, the same situation raises
        HelperNotPrivilegedError from the privilege step, with a message naming no_new_privs.
        """
        code = f"""
        try:
            listen({self.port}, ip="127.0.0.1", progname={self.helper!r}, direct=False)
            report("no error")
        except ProcketError as error:
            report(error_facts(error))
        """
        facts = run_unprivileged(self, code, setpriv_options=["--no-new-privs"])
        self.assertEqual(
            (facts["type"], facts["step"], facts["errno"]),
            ("HelperNotPrivilegedError", "privilege", 1),
        )
        self.assertIn("no_new_privs", facts["message"])

    def test_descriptor_limit_below_three(self) -> None:
        """
        With RLIMIT_NOFILE at 0, 1 or 2 (less than the three standard fds it already has), the
        glibc build fails cleanly at its policy step with EMFILE. The musl build cannot: musl's
        start-up checks fds 0-2 of a setuid program with poll(), which the kernel refuses for
        more fds than the limit, and musl then kills the process on purpose (SIGSEGV) before
        main() runs. Either way nothing is sent, no fd, and nothing is printed (SECURITY.md).
        """
        skip_with_sanitizer_build(self, "its loader needs descriptors before main runs")
        glibc = built_against_glibc(self.helper)
        for limit in (0, 1, 2):
            outcome = run_helper(
                self, self.request(tcp_spec(self.port)), limits=[(resource.RLIMIT_NOFILE, limit)]
            )
            if glibc:
                self.assertEqual((outcome.exit_code, outcome.error(), outcome.fds),
                                 (POLICY, (0, "policy", errno.EMFILE), []))  # fmt: skip
            else:
                self.assertEqual((outcome.exit_code, outcome.replies, outcome.fds, outcome.output),
                                 (-signal.SIGSEGV, [], [], b""), limit)  # fmt: skip

    def test_tiny_descriptor_limit_fails_cleanly(self) -> None:
        """
        With RLIMIT_NOFILE at 3, 4 or 5, a request for three sockets ends with an EMFILE error at
        the step that ran out (reading its own path and policy, or the third socket) and that
        step's exit status: never a signal, never an fd.
        """
        skip_with_sanitizer_build(self, "its loader needs descriptors before main runs")
        specs = [tcp_spec(self.port), udp_spec(self.port), tcp_spec(self.port, "::1", "inet6")]
        results = {}
        for limit in (3, 4, 5):
            outcome = run_helper(
                self, self.request(*specs), limits=[(resource.RLIMIT_NOFILE, limit)]
            )
            results[limit] = (outcome.exit_code, outcome.error(), outcome.fds)
        self.assertEqual(
            results,
            {
                3: (POLICY, (0, "policy", errno.EMFILE), []),
                4: (POLICY, (0, "policy", errno.EMFILE), []),
                5: (SOCKET, (3, "socket", errno.EMFILE), []),
            },
        )
