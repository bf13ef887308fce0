"""
Adversarial tests, part two: attacks by an unprivileged caller on the real setuid helper that
``test_security_rules.py`` does not cover (issue 4). Each test shows both that the attack fails and
that nothing privileged happened: nothing was loaded into the helper, no socket was handed out or
left open, no helper process is left, no other user's port was taken.

- `EnvironmentAttackTests`: dynamic-loader, C library and shell variables (LD_PRELOAD, LD_AUDIT,
  LD_LIBRARY_PATH with a fake libc.so.6, GCONV_PATH, GLIBC_TUNABLES as in CVE-2023-4911,
  MALLOC_CHECK_...) change nothing, and the helper maps no shared object at all.
- `SignalAttackTests`: a caller stopping, continuing or killing its helper at any moment gets
  either every socket or none, and can always end the helper (it keeps the caller as real uid);
  terminal stop signals do not stop it.
- `TakeoverTests`: another user cannot take over a port that one user holds.
- `SymlinkedPrefixTests`: a symlink cannot make the helper trust another directory or policy.

The machinery (starting the helper as the test user for good, freezing it in its final send so
that root can inspect it in /proc) is `test_security_rules`'s. Code that must run as the caller
itself, to send it signals with the caller's own rights, runs as the test user through
`support.run_unprivileged`.
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    TEST_GID,
    TEST_UID,
    free_port,
    ipv6_loopback,
    run_unprivileged,
    server_output,
    skip_with_sanitizer_build,
    start_unprivileged,
)
from .test_security_rules import (
    CALLER_ENVIRONMENT,
    POLICY,
    BlockedHelper,
    Caller,
    HelperTestCase,
    helper_processes,
    kill_if_running,
    process_state,
    read_messages,
    run_helper,
    spawn,
    tcp_spec,
    udp_spec,
    wait_for_exit,
)

#: The helper's exit status for a failed bind (its header comment).
BIND = 7
#: The probe sources: ``probe.c`` (a shared object that leaves a marker file when loaded) and the
#: version script that lets it pose as libc.so.6.
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attack_data")
#: An address of TEST-NET-1 (RFC 5737), never configured here: binding it fails with EADDRNOTAVAIL,
#: which takes the helper through its error path.
UNASSIGNED_ADDRESS = "192.0.2.1"
#: Commands a helper that ran anything through PATH might run; each is a fake in the attacker's
#: PATH directory that leaves a marker.
FAKE_COMMANDS = ("sh", "bash", "cc", "gcc", "ld", "ldconfig", "iconv", "getent", "id", "sudo")


def _user_ids(name: str) -> Optional[Tuple[int, int]]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


#: The second unprivileged user of the takeover tests (uid 1 on Debian).
OTHER_USER = _user_ids("daemon")


def signal_as(pid: int, number: int, uid: int = TEST_UID, gid: int = TEST_GID) -> int:
    """
    Send signal NUMBER to PID from a process that is UID:GID for good (real, effective and saved
    ids, no group, no capability), as the caller itself would. Returns 0 or the errno of kill().
    """
    child = os.fork()
    if child == 0:
        code = 127
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            try:
                os.kill(pid, number)
                code = 0
            except OSError as error:
                code = error.errno or 127
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])


def wait_for_state(pid: int, states: str, timeout: float = 5.0) -> str:
    """Poll PID's state letter until it is one of STATES (or TIMEOUT passes); return the last."""
    deadline = time.monotonic() + timeout
    while True:
        state = process_state(pid)
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.001)


def mapped_files(pid: int) -> Set[str]:
    """Every file PID has mapped into memory (its program, shared objects, locale files...)."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                found.add(fields[5].strip().removesuffix(" (deleted)"))
    return found


def elf_interpreter(path: str) -> Optional[str]:
    """The dynamic loader a 64-bit ELF executable names (PT_INTERP), or None when it is static."""
    with open(path, "rb") as stream:
        header = stream.read(64)
        if header[:5] != b"\x7fELF\x02":
            raise AssertionError(f"{path} is not a 64-bit ELF file")
        order = "<" if header[5] == 1 else ">"
        (table,) = struct.unpack_from(order + "Q", header, 0x20)
        size, count = struct.unpack_from(order + "HH", header, 0x36)
        for number in range(count):
            stream.seek(table + number * size)
            kind, _, offset, _, _, length = struct.unpack(order + "IIQQQQ", stream.read(40))
            if kind == 3:  # PT_INTERP
                stream.seek(offset)
                return stream.read(length).rstrip(b"\0").decode()
    return None


def port_is_free(port: int) -> bool:
    """Whether root can bind TCP and UDP on 127.0.0.1:PORT now: nothing, anywhere, holds them."""
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def tcp_listeners(port: int) -> List[Tuple[str, int, int]]:
    """(table, uid, inode) of every listening TCP socket on PORT, from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as stream:
                rows = stream.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "0A":  # TCP_LISTEN
                found.append((os.path.basename(table), int(fields[7]), int(fields[9])))
    return found


class Probes:
    """
    The probes of ``attack_data/probe.c``, built for one test into a fresh world-readable
    directory: each leaves ``KIND-euidE-ruidR`` in the world-writable ``marks`` directory when
    anything loads (or runs) it, as whoever that is, root or the caller.

    - ``preload``: a shared object for LD_PRELOAD; ``audit``: the same for LD_AUDIT;
    - ``fake_libc``: a directory for LD_LIBRARY_PATH holding a fake ``libc.so.6``;
    - ``gconv``: a directory for GCONV_PATH whose ``gconv-modules`` names a probe module;
    - ``bin``: a directory for PATH of fake commands (shell scripts);
    - ``program``: a tiny dynamic program that needs libc.so.6, for the LD_LIBRARY_PATH control.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        if platform.machine() not in ("x86_64", "aarch64"):
            testcase.skipTest(f"the probes know x86_64 and aarch64 only, not {platform.machine()}")
        self.compiler = shlex.split(os.environ.get("CC", "cc"))
        if shutil.which(self.compiler[0]) is None:
            testcase.fail(f"no C compiler ({self.compiler[0]}) to build the probes")
        self.root = tempfile.mkdtemp(prefix="procket-probes-")
        testcase.addCleanup(shutil.rmtree, self.root, True)
        os.chmod(self.root, 0o755)
        self.marks = self._directory("marks", 0o1777)
        source = os.path.join(DATA, "probe.c")
        self.preload = self._build("libprocket-probe.so", "preload", source)
        self.audit = self._build("libprocket-audit.so", "audit", source)
        self.fake_libc = self._directory("lib")
        self._build(
            "lib/libc.so.6", "fake-libc", source, "-Wl,-soname,libc.so.6",
            "-Wl,--version-script=" + os.path.join(DATA, "fake-libc.map"),
        )  # fmt: skip
        self.gconv = self._directory("gconv")
        self._build("gconv/PROCKETPROBE.so", "gconv", source)
        with open(os.path.join(self.gconv, "gconv-modules"), "w") as modules:
            modules.write("module\tPROCKETPROBE//\tINTERNAL\tPROCKETPROBE\t1\n")
            modules.write("module\tINTERNAL\tPROCKETPROBE//\tPROCKETPROBE\t1\n")
        os.chmod(os.path.join(self.gconv, "gconv-modules"), 0o644)
        self.bin = self._directory("bin")
        identity = shutil.which("id") or "/usr/bin/id"  # by its path: the fakes include id
        for name in FAKE_COMMANDS:
            path = os.path.join(self.bin, name)
            marker = f"{self.marks}/exec-{name}-euid$({identity} -u)-ruid$({identity} -ru)"
            with open(path, "w") as script:
                script.write(f'#!/bin/sh\n: > "{marker}"\n')
            os.chmod(path, 0o755)
        self.program = os.path.join(self.root, "needs-libc")
        self._compile(self.program, "-nostdlib", "-fPIE", "-pie", "-DPROBE_PROGRAM", source,
                      "-Wl,--no-as-needed", "-lc")  # fmt: skip

    def _directory(self, name: str, mode: int = 0o755) -> str:
        path = os.path.join(self.root, name)
        os.mkdir(path)
        os.chmod(path, mode)
        return path

    def _compile(self, output: str, *arguments: str) -> None:
        command = [*self.compiler, "-O2", "-o", output, *arguments]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"cannot build a probe: {shlex.join(command)}\n{result.stderr}")
        os.chmod(output, 0o755)

    def _build(self, name: str, kind: str, source: str, *extra: str) -> str:
        output = os.path.join(self.root, name)
        self._compile(output, "-shared", "-fPIC", "-nostdlib", f'-DMARKER_DIR="{self.marks}"',
                      f'-DPROBE_KIND="{kind}"', source, *extra)  # fmt: skip
        return output

    def markers(self) -> List[str]:
        """The markers left so far."""
        return sorted(os.listdir(self.marks))

    def clear(self) -> None:
        """Remove every marker."""
        for name in os.listdir(self.marks):
            os.unlink(os.path.join(self.marks, name))

    def attacks(self) -> Dict[str, Dict[str, str]]:
        """Each attack: the variables the caller adds to its environment."""
        overlong = "A" * 100_000  # MAX_ARG_STRLEN is 128 KiB
        attacks = {
            "LD_PRELOAD": {"LD_PRELOAD": self.preload},
            "LD_PRELOAD, two objects": {"LD_PRELOAD": f"{self.preload}:{self.audit}"},
            "LD_AUDIT": {"LD_AUDIT": self.audit},
            "LD_LIBRARY_PATH with a fake libc.so.6": {"LD_LIBRARY_PATH": self.fake_libc},
            "GCONV_PATH": {"GCONV_PATH": self.gconv, "CHARSET": "PROCKETPROBE"},
            "PATH of fake commands": {"PATH": self.bin},
            "IFS": {"IFS": "/ \t\n=,"},
            "TMPDIR": {"TMPDIR": self.marks, "TMP": self.marks, "TEMP": self.marks},
            "locale": {
                "LOCPATH": self.root,
                "LC_ALL": "xx_XX.UTF-8",
                "LANGUAGE": "xx",
                "NLSPATH": f"{self.root}/%N",
            },  # fmt: skip
            "MALLOC_CHECK_=3": {"MALLOC_CHECK_": "3"},
            "MALLOC_PERTURB_=165": {"MALLOC_PERTURB_": "165"},
            "GLIBC_TUNABLES=glibc.malloc.check=3": {"GLIBC_TUNABLES": "glibc.malloc.check=3"},
            "GLIBC_TUNABLES, CVE-2023-4911 pattern": {
                "GLIBC_TUNABLES": "glibc.malloc.mxfast=glibc.malloc.mxfast=" + overlong
            },
            "GLIBC_TUNABLES, CVE-2023-4911 pattern on mem.tagging": {
                "GLIBC_TUNABLES": "glibc.mem.tagging=glibc.mem.tagging=" + overlong
            },
            "GLIBC_TUNABLES, overlong value": {
                "GLIBC_TUNABLES": "glibc.malloc.tcache_count=" + "9" * 100_000
            },
            "GLIBC_TUNABLES, malformed": {"GLIBC_TUNABLES": "=:=::glibc..malloc=:" * 2000},
        }
        everything: Dict[str, str] = {}
        for variables in attacks.values():
            everything.update(variables)
        everything["GLIBC_TUNABLES"] = attacks["GLIBC_TUNABLES, CVE-2023-4911 pattern"][
            "GLIBC_TUNABLES"
        ]
        attacks["everything at once"] = everything
        return attacks

    def run_controls(self) -> List[str]:
        """
        Load every probe into an ordinary (not setuid) program as the test user, which the same
        variables do affect, and return the markers that left: the proof that the probes work, so
        that no marker after an attack on the helper means that nothing loaded them.
        """
        controls = [
            (["/bin/true"], {"LD_PRELOAD": self.preload}),
            (["/bin/true"], {"LD_AUDIT": self.audit}),
            ([self.program], {"LD_LIBRARY_PATH": self.fake_libc}),
            (["iconv", "-f", "PROCKETPROBE", "-t", "UTF-8"], {"GCONV_PATH": self.gconv}),
            (["sh", "-c", "sh"], {"PATH": self.bin}),
        ]
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            for argv, variables in controls:
                program = shutil.which(argv[0]) or argv[0]
                caller = Caller(environment={**CALLER_ENVIRONMENT, **variables})
                pid = spawn(argv, {0: null, 1: null, 2: null}, caller, program=program)
                if wait_for_exit(pid, 10) is None:
                    kill_if_running(pid)
                    raise AssertionError(f"the control {argv} still runs after 10 s")
        finally:
            os.close(null)
        return self.markers()


#: What each control leaves (all as the test user: none of them is privileged).
CONTROL_MARKERS = sorted(
    f"{kind}-euid{TEST_UID}-ruid{TEST_UID}"
    for kind in ("preload", "audit", "fake-libc", "gconv", "exec-sh")
)


class EnvironmentAttackTests(HelperTestCase):
    """
    Issue 4, environment attacks: the helper is static and setuid, so the dynamic loader never
    runs and the C library is in secure mode; whatever the caller puts in its environment, the
    helper loads nothing, runs nothing, and works as usual.
    """

    def setUp(self) -> None:
        super().setUp()
        self.probes = Probes(self)

    def test_hostile_environment_changes_nothing(self) -> None:
        """
        With each hostile environment (and all of them at once), the setuid helper run by the test
        user opens one TCP socket as usual ("ok 1", exit 0, the socket owned by the test user),
        and fails a bind to an unassigned address with its usual clean error (status 7,
        EADDRNOTAVAIL): no crash, no other behaviour. No probe left a marker, as root or as the
        caller, though each left one when the same environment was given to an ordinary program
        (the control, run first).
        """
        self.assertEqual(self.probes.run_controls(), CONTROL_MARKERS)
        self.probes.clear()
        results: Dict[str, object] = {}
        expected: Dict[str, object] = {}
        for name, variables in self.probes.attacks().items():
            port = free_port()  # the sockets of earlier attacks stay open until the end
            good = self.request(tcp_spec(port))
            bad = self.request(tcp_spec(port, UNASSIGNED_ADDRESS))
            caller = Caller(environment={**CALLER_ENVIRONMENT, **variables})
            works = run_helper(self, good, caller)
            fails = run_helper(self, bad, caller)
            results[name] = (
                works.exit_code, works.replies, works.socket_owners(),
                fails.exit_code, fails.error(), fails.fds,
            )  # fmt: skip
            expected[name] = (
                0, [b"ok 1\n"], [(TEST_UID, TEST_GID)], BIND, (1, "bind", 99), [],
            )  # fmt: skip
        self.assertEqual(results, expected)
        self.assertEqual(self.probes.markers(), [])

    def test_no_shared_object_mapped(self) -> None:
        """
        Frozen in its final send with every hostile variable in its environment, the helper has
        mapped no file but its own executable: no shared object at all (it is statically linked,
        so no LD_PRELOAD, LD_LIBRARY_PATH or GCONV_PATH object could be in it), nothing from the
        attacker's directory, no marker left. A dynamic build of the helper fails this test,
        saying so: its dynamic loader would be one more thing the environment could reach.
        """
        skip_with_sanitizer_build(self, "the sanitizer runtimes are shared objects")
        everything = self.probes.attacks()["everything at once"]
        caller = Caller(environment={**CALLER_ENVIRONMENT, **everything})
        blocked = BlockedHelper(self, self.request(tcp_spec(self.port)), caller)
        mapped = mapped_files(blocked.pid)
        released = blocked.release()
        helper = os.path.realpath(self.helper)
        from_attacker = sorted(path for path in mapped if path.startswith(self.probes.root))
        self.assertEqual(from_attacker, [])
        self.assertEqual(released.replies, [b"ok 1\n"])
        self.assertEqual(self.probes.markers(), [])
        interpreter = elf_interpreter(helper)
        self.assertIsNone(interpreter, f"the installed helper is dynamic: it maps {sorted(mapped)}")
        self.assertEqual(mapped, {helper})


#: Code the caller runs (after support.PRELUDE) to drive the helper itself: HELPER and SPECS are
#: set before it. `start` runs the helper as procket_twisted does (a SOCK_SEQPACKET pair as fds
#: 0, 1 and 2, an empty environment); `collect` reads what it sent once it has exited.
CALLER_TOOLS = """
import array, random, select, signal, stat, time

ARGV = [HELPER, "v1", *SPECS]
CONTROL = socket.CMSG_SPACE(253 * array.array("i").itemsize)

def start():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), fd) for fd in (0, 1, 2)]
    pid = os.posix_spawn(HELPER, ARGV, {}, file_actions=actions)
    theirs.close()
    return pid, ours

def state(pid):
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rsplit(")", 1)[1].split()[0]

def wait_state(pid, states, timeout=5.0):
    deadline = time.monotonic() + timeout
    while state(pid) not in states and time.monotonic() < deadline:
        time.sleep(0.0005)
    return state(pid)

def reap(pid, timeout=5.0):
    pidfd = os.pidfd_open(pid)
    finished = bool(select.select([pidfd], [], [], timeout)[0])
    os.close(pidfd)
    if not finished:
        os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), finished

def collect(channel):
    # Every message on CHANNEL (the helper has exited: its end is closed), the owner uid of every
    # fd received (-1 for an fd that is not a socket), whether any control data was cut short.
    messages, owners, truncated = [], [], False
    while True:
        try:
            data, ancillary, flags, _ = channel.recvmsg(
                4096, CONTROL, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            break
        truncated = truncated or bool(flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC))
        for level, kind, payload in ancillary:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                info = os.fstat(fd)
                owners.append(info.st_uid if stat.S_ISSOCK(info.st_mode) else -1)
                os.close(fd)
        if not data and not ancillary:
            break
        messages.append(data.decode("ascii", "replace"))
    channel.close()
    return messages, owners, truncated
"""


class SignalAttackTests(HelperTestCase):
    """
    Issue 4, signals mid-request: the caller may stop, continue or kill its helper at any moment
    (it keeps the caller as its real uid, so the caller always can), and that never leaves a
    socket half-sent or a helper process behind.
    """

    def setUp(self) -> None:
        super().setUp()
        self.other_port = free_port()
        self.specs = [tcp_spec(self.port), udp_spec(self.port), tcp_spec(self.other_port)]

    def write_slow_policy(self) -> None:
        """
        A policy of 255 rules that match no caller (16 other users each) before the one that
        allows: the helper spends most of its run checking it, so a signal can land meanwhile.
        """
        rules = [
            "deny kind=tcp,udp user=" + ",".join(str(1000 + 16 * rule + n) for n in range(16))
            for rule in range(255)
        ]
        self.prefix.write_policy("\n".join(rules) + "\nallow kind=tcp,udp\n")

    def run_as_caller(self, code: str, specs: Optional[List[str]] = None) -> Dict[str, Any]:
        """Run CODE as the test user after `CALLER_TOOLS`, for SPECS (default: `specs`)."""
        wanted = self.specs if specs is None else specs
        program = f"HELPER = {self.helper!r}\nSPECS = {wanted!r}\n" + CALLER_TOOLS + code
        result: Dict[str, Any] = run_unprivileged(self, program)
        return result

    def assertNothingLeft(self) -> None:
        """No process runs the helper, and every port asked for is free again."""
        self.assertEqual(helper_processes(self.helper), [])
        self.assertEqual(
            {port: port_is_free(port) for port in (self.port, self.other_port)},
            {self.port: True, self.other_port: True},
        )

    def test_sigkill_at_random_moments_never_half_sends(self) -> None:
        """
        The caller starts the setuid helper for three sockets 50 times and SIGKILLs it after a
        random delay of 0 to 2 ms (it takes about 1 ms): every kill is allowed, and each time the
        caller got either the whole reply, "ok 3" with exactly three sockets it owns, or nothing
        at all (no message, no fd, the helper killed). Its fds are back to what they were, it has
        no child left, no process runs the helper, and no socket stays open on the ports.
        """
        result = self.run_as_caller(
            """
baseline = open_fds()
runs = []
for run in range(50):
    pid, channel = start()
    time.sleep(random.uniform(0, 0.002))
    try:
        os.kill(pid, signal.SIGKILL)
        kill = "allowed"
    except OSError as error:
        kill = errno.errorcode[error.errno]
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    messages, owners, truncated = collect(channel)
    runs.append([kill, status, messages, owners, truncated])
report({"runs": runs, "fds back": open_fds() == baseline, "children": children()})
"""
        )
        whole = [["ok 3\n"], [TEST_UID] * 3, False]
        nothing = [-signal.SIGKILL, [], [], False]
        kinds = {"whole": 0, "nothing": 0}
        odd = []
        for kill, status, *received in result.pop("runs"):
            if kill == "allowed" and received == whole and status in (0, -signal.SIGKILL):
                kinds["whole"] += 1
            elif kill == "allowed" and [status, *received] == nothing:
                kinds["nothing"] += 1
            else:
                odd.append([kill, status, *received])
        self.assertEqual((odd, result), ([], {"fds back": True, "children": []}), kinds)
        self.assertNothingLeft()

    def test_caller_keeps_the_right_to_stop_and_kill_at_every_step(self) -> None:
        """
        With a policy of 255 rules that do not match before the one that allows, and a request
        for 253 UDP sockets (port 0), the helper spends most of its few milliseconds privileged,
        checking its policy. The caller stops it at 60 random moments over its whole life, looks
        at its ids, and SIGKILLs it: every kill is allowed; whenever it was caught stopped its real
        uid was the caller's, including the many times it was caught privileged (effective uid 0,
        or, once it has become the caller, capabilities in its permitted set);
        and each run gave the caller either the whole reply ("ok 253" with 253 sockets it owns)
        or nothing. No fd, child or helper process is left.
        """
        self.write_slow_policy()
        specs = [udp_spec(0)] * 253
        result = self.run_as_caller(
            """
baseline = open_fds()
runs = []
for run in range(60):
    pid, channel = start()
    time.sleep(random.uniform(0, 0.004))
    try:
        os.kill(pid, signal.SIGSTOP)
        seen = wait_state(pid, "TZ")
    except OSError as error:
        seen = "stop " + errno.errorcode[error.errno]
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    ids = fields["Uid"].split() + [fields["CapPrm"].strip()]
    try:
        os.kill(pid, signal.SIGKILL)
        kill = "allowed"
    except OSError as error:
        kill = errno.errorcode[error.errno]
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    messages, owners, truncated = collect(channel)
    runs.append([seen, ids, kill, status, messages, owners, truncated])
report({"runs": runs, "fds back": open_fds() == baseline, "children": children()})
""",
            specs,
        )
        caller = str(TEST_UID)
        whole = [["ok 253\n"], [TEST_UID] * 253, False]
        privileged, odd = 0, []
        for seen, ids, kill, status, *received in result.pop("runs"):
            stopped_right = seen == "Z" or (seen == "T" and ids[0] == caller)
            answer_right = received == whole or (received == [[], [], False] and status == -9)
            # Privileged: root's effective uid (before the switch to the caller), or
            # capabilities kept in the permitted set (after it, while the policy is checked).
            if seen == "T" and (ids[1] == "0" or int(ids[4], 16) != 0):
                privileged += 1
            if not (stopped_right and kill == "allowed" and answer_right):
                odd.append([seen, ids, kill, status, received[0], len(received[1])])
        self.assertEqual((odd, result), ([], {"fds back": True, "children": []}))
        self.assertGreater(privileged, 0, "no stop landed while the helper was privileged")
        self.assertEqual(helper_processes(self.helper), [])

    def test_client_timeout_kills_a_stopped_privileged_helper(self) -> None:
        """
        The caller SIGSTOPs its helper right after starting it, while it is still privileged
        (root's effective uid before the switch to the caller, or capabilities still permitted
        while the policy is checked); procket_twisted.listen(timeout=0.5) then raises
        HelperTimeoutError saying the helper "was killed": the caller's own SIGKILL ended the
        setuid helper (not the helper's watchdog). The helper's pid is gone, the caller has no
        child and its fds are back to what they were, no process runs the helper, and the port is
        free. The slow policy keeps the privileged part of the run long enough for the stop to
        land in it (the musl build is otherwise often done first: CI once lost the race 20 times
        in a row); the test retries until it does.
        """
        self.write_slow_policy()
        result = self.run_as_caller(
            f"""
PORT = {self.port}
stopped = []
real_spawn = os.posix_spawn

def spawn_and_stop(path, argv, environment, **options):
    pid = real_spawn(path, argv, environment, **options)
    os.kill(pid, signal.SIGSTOP)
    seen = wait_state(pid, "TZ")
    with open(f"/proc/{{pid}}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    privileged = fields["Uid"].split()[1] == "0" or int(fields["CapPrm"], 16) != 0
    stopped.append({{"pid": pid, "state": seen, "privileged": privileged}})
    return pid

baseline = open_fds()
os.posix_spawn = spawn_and_stop
attempts = []
for attempt in range(200):  # until the stop lands while the helper is privileged
    try:
        listen(PORT, ip="127.0.0.1", progname=HELPER, direct=False, timeout=0.5).close()
        outcome = {{"type": "no error"}}
    except ProcketError as error:
        outcome = error_facts(error)
    try:
        os.kill(stopped[-1]["pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    attempts.append({{**stopped[-1], **outcome, "alive": alive}})
    if stopped[-1]["state"] == "T" and stopped[-1]["privileged"]:
        break
os.posix_spawn = real_spawn
report({{"last": attempts[-1], "tries": len(attempts), "fds back": open_fds() == baseline,
        "children": children()}})
"""
        )
        last: Dict[str, Any] = result.pop("last")
        facts = {
            "state": last["state"], "privileged": last["privileged"], "type": last["type"],
            "step": last.get("step"), "killed": "was killed" in str(last.get("message")),
            "alive": last["alive"],
        }  # fmt: skip
        result.pop("tries")
        self.assertEqual(
            (facts, result),
            (
                {
                    "state": "T", "privileged": True,
                    "type": "HelperTimeoutError", "step": "timeout", "killed": True,
                    "alive": False,
                },
                {"fds back": True, "children": []},
            ),
        )  # fmt: skip
        self.assertNothingLeft()

    def test_stopped_then_continued_helper_completes(self) -> None:
        """
        The caller SIGSTOPs its helper (three sockets) at 30 random moments (the first right
        after starting it), holds it stopped for 10 ms when the stop landed in time, then SIGCONTs
        it: every run completes normally, exit 0 with "ok 3" and three sockets the caller owns.
        A policy of 255 rules that do not match keeps the helper running long enough (the musl
        build otherwise ends in about 0.1 ms, often before the caller's first stop lands).
        """
        self.write_slow_policy()
        result = self.run_as_caller(
            """
baseline = open_fds()
runs, stopped = [], 0
for run in range(30):
    pid, channel = start()
    time.sleep(0 if run == 0 else random.uniform(0, 0.0005))
    os.kill(pid, signal.SIGSTOP)
    seen = wait_state(pid, "TZ")
    held = None
    if seen == "T":
        stopped += 1
        time.sleep(0.01)
        held = state(pid)
    os.kill(pid, signal.SIGCONT)
    status, finished = reap(pid)
    runs.append([status, finished, held in (None, "T"), *collect(channel)])
report({"runs": runs, "stopped": stopped, "fds back": open_fds() == baseline,
        "children": children()})
"""
        )
        runs: List[Any] = result.pop("runs")
        normal = [0, True, True, ["ok 3\n"], [TEST_UID] * 3, False]
        self.assertEqual([run for run in runs if run != normal], [])
        self.assertGreater(result.pop("stopped"), 0, "no stop landed before the helper was done")
        self.assertEqual(result, {"fds back": True, "children": []})
        self.assertNothingLeft()

    def test_caller_stops_and_kills_its_blocked_helper(self) -> None:
        """
        A helper frozen in its final send (sockets open, privileges dropped) is stopped by its
        caller's SIGSTOP and ended by its caller's SIGKILL, both sent with the caller's own rights
        (the kernel allows it because the helper keeps the caller as its real uid): the caller
        then reads nothing on its channel but its own filler, receives no fd, and no process runs
        the helper.
        """
        blocked = BlockedHelper(self, self.request(*self.specs))
        stop = signal_as(blocked.pid, signal.SIGSTOP)
        stopped = wait_for_state(blocked.pid, "T")
        kill = signal_as(blocked.pid, signal.SIGKILL)
        exit_code = wait_for_exit(blocked.pid, 5)
        blocked.channel.settimeout(5)
        messages, fds = read_messages(self, blocked.channel, blocking=True)
        self.assertEqual(
            (stop, stopped, kill, exit_code, b"".join(messages)[blocked.filler :], fds),
            (0, "T", 0, -signal.SIGKILL, b"", []),
        )
        self.assertNothingLeft()

    def test_stopped_blocked_helper_completes_when_continued(self) -> None:
        """
        A helper frozen in its final send, stopped by its caller for 100 ms, then continued by
        its caller, completes normally once the channel drains: "ok 3", three sockets, exit 0.
        """
        blocked = BlockedHelper(self, self.request(*self.specs))
        stop = signal_as(blocked.pid, signal.SIGSTOP)
        stopped = wait_for_state(blocked.pid, "T")
        time.sleep(0.1)
        held = process_state(blocked.pid)
        resume = signal_as(blocked.pid, signal.SIGCONT)
        self.assertEqual((stop, stopped, held, resume), (0, "T", "T", 0))
        self.assertSucceeded(blocked.release(), 3)

    def test_terminal_stop_signals_do_not_stop_it(self) -> None:
        """
        SIGTSTP, SIGTTIN and SIGTTOU sent by the caller (allowed by the kernel) do not stop the
        helper, which ignores them itself (so a Ctrl-Z cannot leave a root helper stopped where
        its caller, through sudo, could not end it): 100 ms after each it is still sleeping in
        its send, not stopped, and it then completes normally.
        """
        blocked = BlockedHelper(self, self.request(tcp_spec(self.port)))
        results = {}
        for number in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            sent = signal_as(blocked.pid, number)
            time.sleep(0.1)
            results[number.name] = (sent, process_state(blocked.pid))
        self.assertEqual(results, {name: (0, "S") for name in ("SIGTSTP", "SIGTTIN", "SIGTTOU")})
        self.assertSucceeded(blocked.release(), 1)


class TakeoverTests(HelperTestCase):
    """
    Issue 4, another user cannot take over: the helper sets SO_REUSEADDR on TCP sockets, and
    SO_REUSEPORT only when asked, and creates them as the caller, so a port one user holds is
    refused to another. (SO_REUSEPORT groups, which the same user may share and another may not
    join, are tested in test_options.py.)
    """

    def setUp(self) -> None:
        super().setUp()
        if OTHER_USER is None:
            self.skipTest("needs the user daemon as a second unprivileged user")

    def start_holder(self) -> Tuple[int, Dict[str, int]]:
        """
        Start a server as the test user that gets a TCP socket on 127.0.0.1:port from the helper
        through the client and keeps it, answering every connection with its uid. Returns its pid
        and what it says about its socket.
        """
        code = f"""
import json, os, socket
from procket_twisted import listen
server = listen({self.port}, ip="127.0.0.1", progname={self.helper!r}, direct=False)
info = os.fstat(server.fileno())
print("ready", json.dumps({{
    "inode": info.st_ino, "owner": info.st_uid,
    "SO_REUSEADDR": server.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
    "SO_REUSEPORT": server.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
}}), flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(str(os.getuid()).encode())
    connection.close()
"""
        process = start_unprivileged(self, [sys.executable, "-c", code], {})
        deadline = time.monotonic() + 20
        while True:
            output = server_output(process)
            if output.startswith("ready "):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"the holder did not get its socket:\n{output}")
            time.sleep(0.02)
        facts: Dict[str, int] = json.loads(output.splitlines()[0].split(" ", 1)[1])
        return process.pid, facts

    def ask_as(
        self, uid: int, gid: int, attempts: List[Tuple[str, Optional[bool]]]
    ) -> Dict[str, Any]:
        """
        As UID:GID, ask the helper through the client for the port on each (address, v6only) of
        ATTEMPTS; report each outcome (a socket is closed at once), and whether the caller's fds
        are back to what they were and it has no child.
        """
        code = f"""
baseline = open_fds()
results = {{}}
for ip, v6only in {attempts!r}:
    try:
        sock = listen({self.port}, ip=ip, v6only=v6only, progname={self.helper!r}, direct=False)
        results[ip] = {{"type": "no error", "owner": os.fstat(sock.fileno()).st_uid}}
        sock.close()
    except ProcketError as error:
        results[ip] = {{key: error_facts(error)[key] for key in ("type", "errno", "step")}}
report({{"results": results, "fds back": open_fds() == baseline, "children": children()}})
"""
        result: Dict[str, Any] = run_unprivileged(self, code, uid=uid, gid=gid)
        return result

    def addresses(self) -> List[Tuple[str, Optional[bool]]]:
        """127.0.0.1, 0.0.0.0 and (where IPv6 works) [::] dual-stack: all overlap 127.0.0.1."""
        attempts: List[Tuple[str, Optional[bool]]] = [("127.0.0.1", None), ("0.0.0.0", None)]
        if ipv6_loopback():
            attempts.append(("::", False))
        return attempts

    def assertOnlyListener(self, holder: int, inode: int) -> None:
        """The only listener on the port is HOLDER's socket INODE, and it answers as the test user."""
        holder_fds = {
            os.readlink(f"/proc/{holder}/fd/{fd}") for fd in os.listdir(f"/proc/{holder}/fd")
        }
        self.assertIn(f"socket:[{inode}]", holder_fds)
        self.assertEqual(tcp_listeners(self.port), [("tcp", TEST_UID, inode)])
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
            self.assertEqual(connection.recv(64), str(TEST_UID).encode())

    def test_other_user_cannot_take_over_a_held_port(self) -> None:
        """
        While the test user holds a listening TCP socket on port P from the helper (its own: the
        inode is the test user's; SO_REUSEADDR set, SO_REUSEPORT not), the user daemon asking the
        helper for P on 127.0.0.1, on 0.0.0.0 and on [::] dual-stack gets SocketError EADDRINUSE
        from the bind step through the client, and status 7 (bind, EADDRINUSE) with no fd when
        running the helper itself. Afterwards the only listener on P in the kernel's tables is
        the test user's socket (same inode and uid), daemon has no fd or child left, and a
        connection to P still reaches the test user's server.
        """
        assert OTHER_USER is not None
        other_uid, other_gid = OTHER_USER
        holder, facts = self.start_holder()
        self.assertEqual(
            {key: value for key, value in facts.items() if key != "inode"},
            {"owner": TEST_UID, "SO_REUSEADDR": 1, "SO_REUSEPORT": 0},
        )
        attempts = self.addresses()
        refused = {"type": "SocketError", "errno": 98, "step": "bind"}
        self.assertEqual(
            self.ask_as(other_uid, other_gid, attempts),
            {"results": {ip: refused for ip, _ in attempts}, "fds back": True, "children": []},
        )
        direct = run_helper(self, self.request(tcp_spec(self.port)), Caller(other_uid, other_gid))
        self.assertRefused(direct, BIND, 1, "bind", 98)
        self.assertOnlyListener(holder, facts["inode"])


class SymlinkedPrefixTests(HelperTestCase):
    """
    Issue 4, symlinks around the prefix: the helper finds its policy from the file the kernel
    executed (/proc/self/exe), never from the path it was started by, and checks every directory
    of that real path.
    """

    def caller_directory(self) -> str:
        """A fresh directory owned by the test user."""
        directory = tempfile.mkdtemp(prefix="procket-caller-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chown(directory, TEST_UID, TEST_GID)
        os.chmod(directory, 0o755)
        return directory

    def test_prefix_symlinked_into_a_callers_directory_refused(self) -> None:
        """
        PREFIX/libexec/procket-twisted replaced by a symlink to a root-owned copy (setuid helper
        and an allow-everything policy, in a root-owned directory) that lives inside a directory
        the test user owns (so the user could rename it away and put its own policy there): run
        through the symlinked prefix path, the helper refuses at the policy step (status 4),
        naming the test user's directory, and sends no fd.
        """
        directory = self.caller_directory()
        copy = os.path.join(directory, "copy")
        os.mkdir(copy, 0o755)
        shutil.copy2(self.helper, os.path.join(copy, "procket-helper"))
        os.chmod(os.path.join(copy, "procket-helper"), 0o4755)
        with open(os.path.join(copy, "policy"), "w") as policy:
            policy.write("allow kind=tcp,udp\n")
        shutil.rmtree(self.prefix.directory)
        os.symlink(copy, self.prefix.directory)
        outcome = run_helper(self, self.request(tcp_spec(self.port)))
        text = self.assertRefused(outcome, POLICY, 0, "policy", 1)
        self.assertIn("own path is not trusted", text)
        self.assertIn(f"directory '{directory}' is not owned by root", text)

    def test_symlink_to_the_helper_beside_a_permissive_policy(self) -> None:
        """
        A symlink to the installed helper beside a permissive policy (root-owned), in a directory
        the test user owns and in a trusted root-owned one (as an administrator's convenience
        link would be): run through either symlink, the helper still reads the installed policy
        beside its real path, which denies, and refuses at the policy step (status 4, EACCES)
        naming that policy's rule, with no fd. (The kernel resolves a symlinked path; the helper
        never looks at the name it was started by.)
        """
        self.prefix.write_policy("deny kind=tcp,udp\n")
        trusted = tempfile.mkdtemp(prefix="procket-links-")
        self.addCleanup(shutil.rmtree, trusted, True)
        os.chmod(trusted, 0o755)
        places = {"owned by the test user": self.caller_directory(), "owned by root": trusted}
        results: Dict[str, object] = {}
        expected: Dict[str, object] = {}
        for name, directory in places.items():
            link = os.path.join(directory, "procket-helper")
            os.symlink(self.helper, link)
            with open(os.path.join(directory, "policy"), "w") as policy:
                policy.write("allow kind=tcp,udp\n")
            outcome = run_helper(self, [link, "v1", tcp_spec(self.port)])
            text = outcome.replies[0].decode() if outcome.replies else ""
            rule = f"denied for uid {TEST_UID} by line 1 of {self.prefix.policy}"
            results[name] = (outcome.exit_code, outcome.error(), outcome.fds, rule in text)
            expected[name] = (POLICY, (1, "policy", 13), [], True)
        self.assertEqual(results, expected)
