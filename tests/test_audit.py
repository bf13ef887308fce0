"""
The helper's audit trail (issue 15, item 5; procket_twisted/helper/audit.c): every grant, denial,
refusal and later error goes to the system log when there is one, and the request never depends
on it.

Each test runs the real setuid helper in a private mount namespace (``unshare -m``) whose /dev is
a fresh tmpfs holding /dev/null and, when the test wants a log, a test-owned Unix socket
bind-mounted on /dev/log; nothing changes outside the namespace, whatever the host's /dev/log is
(a socket, a link to journald's, or nothing). Inside, the caller is the test user: a small driver
run by ``setpriv`` starts the helper with a ``SOCK_SEQPACKET`` channel as its standard input, as
the client does, and reports what it answered; so the helper's parent is the caller's own
process. The test reads the messages on its socket.
"""

from __future__ import annotations

import calendar
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    TEST_GID,
    TEST_UID,
    TEST_USER,
    free_port,
    install_prefix,
    skip_unless_privileged,
    skip_with_sanitizer_build,
)
from .test_grants import CAPSET, capability_names

AUTHPRIV = 10
INFO, NOTICE = 6, 5
#: Generous for a loaded machine; without a log (or with a full one) a request takes milliseconds.
QUICK = 5.0
_SO_SNDBUFFORCE = 32

#: Run by root in the new mount namespace: /dev becomes a tmpfs with /dev/null and, when LOG is
#: not empty, the socket LOG on /dev/log; then the rest of the arguments are executed.
NAMESPACE_SCRIPT = r"""
set -e
work=$1 log=$2
shift 2
: > "$work/null"
mount --bind /dev/null "$work/null"
mount -t tmpfs -o mode=755 procket-audit /dev
: > /dev/null
mount --bind "$work/null" /dev/null
if [ -n "$log" ]; then
    : > /dev/log
    mount --bind "$log" /dev/log
fi
exec "$@"
"""

#: The caller: runs HELPER with the argv in hex (argv[2], JSON) on a channel, reports in JSON.
DRIVER = r"""
import array, json, os, socket, subprocess, sys, time
helper, arguments = sys.argv[1], [bytes.fromhex(item) for item in json.loads(sys.argv[2])]
mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
started = time.monotonic()
process = subprocess.Popen([os.fsencode(helper), *arguments], stdin=theirs,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
theirs.close()
output = process.communicate(timeout=30)[0]
elapsed = time.monotonic() - started
replies, fds = [], 0
mine.setblocking(False)
while True:
    try:
        data, ancillary, _, _ = mine.recvmsg(65536, socket.CMSG_SPACE(253 * 4))
    except BlockingIOError:
        break
    for _, _, payload in ancillary:
        received = array.array("i")
        received.frombytes(payload[: len(payload) - len(payload) % 4])
        fds += len(received)
        for fd in received:
            os.close(fd)
    if not data and not ancillary:
        break
    replies.append(data.decode("ascii", "replace"))
print(json.dumps({"pid": process.pid, "status": process.returncode, "replies": replies,
                  "fds": fds, "elapsed": elapsed, "output": output.decode("ascii", "replace"),
                  "me": os.getpid(), "exe": os.readlink("/proc/self/exe")}))
"""

_MESSAGE = re.compile(
    r"<(\d+)>([A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d) procket-helper\[(\d+)\]: ([a-z]+)"
    r'((?: [a-z]+=(?:"(?:[^"\\]|\\.)*"(?:\.\.\.)?|[^ "]*))*)'
)
_FIELD = re.compile(r' ([a-z]+)=("(?:[^"\\]|\\.)*"(?:\.\.\.)?|[^ "]*)')


def unescape(value: str) -> bytes:
    """A quoted value of a message, as the bytes it stands for."""
    if value.startswith('"'):
        value = value[1 : value.rindex('"')]
    out = bytearray()
    index = 0
    while index < len(value):
        if value[index] == "\\" and value[index + 1] == "x":
            out.append(int(value[index + 2 : index + 4], 16))
            index += 4
        elif value[index] == "\\":
            out.append(ord(value[index + 1]))
            index += 2
        else:
            out.append(ord(value[index]))
            index += 1
    return bytes(out)


@dataclass
class Message:
    """One datagram the helper sent to /dev/log, parsed."""

    raw: bytes
    facility: int
    severity: int
    timestamp: str
    pid: int
    word: str
    fields: Dict[str, bytes]

    @classmethod
    def parse(cls, raw: bytes) -> "Message":
        text = raw.decode("ascii")  # printable ASCII only, or this raises
        match = _MESSAGE.fullmatch(text)
        assert match is not None, f"not a syslog message of the helper: {raw!r}"
        priority = int(match.group(1))
        fields = {key: unescape(value) for key, value in _FIELD.findall(match.group(5))}
        assert len(fields) == len(_FIELD.findall(match.group(5))), f"a field twice: {raw!r}"
        return cls(raw, priority >> 3, priority & 7, match.group(2), int(match.group(3)),
                   match.group(4), fields)  # fmt: skip


class LogSocket:
    """A socket of the test's own, for the namespace's /dev/log (``path``)."""

    def __init__(self, testcase: SynchronousTestCase, kind: int = socket.SOCK_DGRAM) -> None:
        directory = tempfile.mkdtemp(prefix="procket-audit-log-")
        testcase.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "log")
        self.socket = socket.socket(socket.AF_UNIX, kind)
        testcase.addCleanup(self.socket.close)
        self.socket.bind(self.path)
        os.chmod(self.path, 0o666)
        if kind == socket.SOCK_STREAM:
            self.socket.listen(1)  # and never accepts
        self.testcase = testcase

    def datagrams(self) -> List[bytes]:
        """Every datagram waiting, in order."""
        found = []
        while True:
            try:
                found.append(self.socket.recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                return found

    def messages(self) -> List[Message]:
        return [Message.parse(datagram) for datagram in self.datagrams()]

    def fill(self) -> int:
        """Queue datagrams until the socket takes no more (it never reads); return how many."""
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.testcase.addCleanup(filler.close)
        filler.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, 1 << 24)
        filler.connect(self.path)
        sent = 0
        while True:
            try:
                filler.send(b"filler", socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            sent += 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect(self.path)
            try:
                probe.send(b"probe", socket.MSG_DONTWAIT)
            except BlockingIOError:
                return sent  # the queue is full, not the filler's buffer
        raise AssertionError("the log socket's queue could not be filled")


class AuditTestCase(SynchronousTestCase):
    """The helper installed with a policy whose lines the tests know."""

    maxDiff = None

    def setUp(self) -> None:
        skip_unless_privileged(self)
        for tool in ("unshare", "mount", "setpriv"):
            if shutil.which(tool) is None:
                self.fail(f"{tool} is not installed (util-linux)")
        self.port, self.denied_port = free_port(), free_port()
        self.prefix = install_prefix(self)
        self.prefix.write_policy(
            "# the audit tests' policy\n"
            f"deny kind=tcp port={self.denied_port}\n"  # line 2
            "allow kind=tcp\n"  # line 3
            "allow kind=udp\n"  # line 4
        )
        self.work = tempfile.mkdtemp(prefix="procket-audit-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def tcp(self, port: Optional[int] = None) -> str:
        return f"kind=tcp,family=inet,addr=127.0.0.1,port={port or self.port}"

    def in_namespace(
        self, argv: Sequence[str], log: Optional[str], stdin: Any = subprocess.DEVNULL,
        environment: Optional[Dict[str, str]] = None,
    ) -> subprocess.CompletedProcess:  # fmt: skip
        """Run ARGV as root in a new mount namespace whose /dev/log is LOG (None: none)."""
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT,
                   "sh", self.work, log or "", *argv]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **(environment or {})}
        result = subprocess.run(command, stdin=stdin, capture_output=True, text=True, env=env,
                                cwd="/", timeout=60)  # fmt: skip
        if result.returncode != 0:
            self.fail(f"the namespace run failed ({result.returncode}): {result.stderr}")
        return result

    def run_caller(
        self, arguments: Sequence[bytes], log: Optional[str], as_user: bool = True,
        environment: Optional[Dict[str, str]] = None,
    ) -> Dict[str, Any]:  # fmt: skip
        """The helper run with ARGUMENTS (after argv[0]) by a caller process, and what it did."""
        driver = [sys.executable, "-I", "-c", DRIVER, self.prefix.helper,
                  json.dumps([argument.hex() for argument in arguments])]  # fmt: skip
        if as_user:
            driver = ["setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_GID}", "--clear-groups",
                      "--", *driver]  # fmt: skip
        result = self.in_namespace(driver, log, environment=environment)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def request(self, *specs: str, log: Optional[str], check: bool = False) -> Dict[str, Any]:
        words = ["v1"] + (["check"] if check else []) + list(specs)
        return self.run_caller([word.encode() for word in words], log)

    def assertGranted(self, run: Dict[str, Any], count: int) -> None:
        self.assertEqual((run["status"], run["replies"], run["fds"], run["output"]),
                         (0, [f"ok {count}\n"], count, ""))  # fmt: skip

    def assertCommon(self, message: Message, run: Dict[str, Any]) -> None:
        """MESSAGE is authpriv, from the helper's pid, about the test user, its parent and exe."""
        self.assertEqual((message.facility, message.pid), (AUTHPRIV, run["pid"]))
        self.assertEqual(message.fields["uid"], str(TEST_UID).encode())
        self.assertEqual(message.fields["gid"], str(TEST_GID).encode())
        self.assertEqual(message.fields["ppid"], str(run["me"]).encode())
        self.assertEqual(message.fields["exe"], run["exe"].encode())
        self.assertEqual(message.fields["policy"], self.prefix.policy.encode())
        self.assertNotIn("sudo", message.fields)


class GrantTests(AuditTestCase):
    def test_grant_logged(self) -> None:
        """
        A granted request for one socket logs exactly one message, before the answer: authpriv
        at info, "<86>Mmm dd hh:mm:ss procket-helper[PID]: allow ..." with the helper's pid and
        the time in UTC, the caller's uid and gid, its parent (the caller's process) and that
        process's executable, the socket's spec as asked, the deciding rule's line and the
        policy's path.
        """
        log = LogSocket(self)
        before = time.time()
        run = self.request(self.tcp(), log=log.path)
        self.assertGranted(run, 1)
        messages = log.messages()
        self.assertEqual(len(messages), 1, messages)
        message = messages[0]
        self.assertEqual((message.severity, message.word), (INFO, "allow"))
        self.assertTrue(message.raw.startswith(f"<{AUTHPRIV * 8 + INFO}>".encode()))
        self.assertCommon(message, run)
        self.assertEqual(
            {key: message.fields[key] for key in ("socket", "line", "spec")},
            {"socket": b"1/1", "line": b"3", "spec": self.tcp().encode()},
        )
        stamp = time.strptime(f"{time.gmtime(before).tm_year} {message.timestamp}",
                              "%Y %b %d %H:%M:%S")  # fmt: skip
        self.assertLess(abs(calendar.timegm(stamp) - before), 120, message.timestamp)

    def test_one_message_per_socket(self) -> None:
        """
        A request for a TCP and a UDP socket logs two grants, socket=1/2 and socket=2/2, each
        with its own spec and its own deciding line (3 and 4).
        """
        log = LogSocket(self)
        udp = f"kind=udp,family=inet,addr=127.0.0.1,port={self.port}"
        run = self.request(self.tcp(), udp, log=log.path)
        self.assertGranted(run, 2)
        got = [(m.word, m.fields["socket"], m.fields["line"], m.fields["spec"])
               for m in log.messages()]  # fmt: skip
        self.assertEqual(got, [
            ("allow", b"1/2", b"3", self.tcp().encode()),
            ("allow", b"2/2", b"4", udp.encode()),
        ])  # fmt: skip

    def test_sudo_caller(self) -> None:
        """
        Run by root with SUDO_UID and SUDO_GID (the sudo path), the grant names that uid and gid
        and says sudo=1; the parent is root's process, whose executable the helper (by then the
        caller, with nothing effective) cannot read, so no exe is logged.
        """
        log = LogSocket(self)
        environment = {"SUDO_UID": str(TEST_UID), "SUDO_GID": str(TEST_GID)}
        run = self.run_caller([b"v1", self.tcp().encode()], log.path, as_user=False,
                              environment=environment)  # fmt: skip
        self.assertGranted(run, 1)
        [message] = log.messages()
        self.assertEqual((message.word, message.fields["uid"], message.fields["gid"]),
                         ("allow", str(TEST_UID).encode(), str(TEST_GID).encode()))  # fmt: skip
        self.assertEqual(message.fields["sudo"], b"1")
        self.assertNotIn("exe", message.fields)

    def test_error_after_the_grant_logged(self) -> None:
        """
        A granted socket whose bind fails (the port is in use) logs the grant, then an error at
        notice naming the socket, the step (bind) and the errno (EADDRINUSE), before the caller
        gets its error.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", self.port))
        busy.listen(1)
        log = LogSocket(self)
        run = self.request(self.tcp(), log=log.path)
        self.assertEqual((run["status"], run["fds"]), (7, 0))
        self.assertTrue(run["replies"][0].startswith(f"error 1 bind {errno.EADDRINUSE} "))
        grant, error = log.messages()
        self.assertEqual((grant.word, grant.severity), ("allow", INFO))
        self.assertEqual((error.word, error.severity), ("error", NOTICE))
        self.assertCommon(error, run)
        self.assertEqual(
            {key: error.fields[key] for key in ("socket", "step", "errno", "spec")},
            {"socket": b"1/1", "step": b"bind", "errno": str(errno.EADDRINUSE).encode(),
             "spec": self.tcp().encode()},
        )  # fmt: skip
        self.assertNotIn("line", error.fields)


class DenialTests(AuditTestCase):
    def test_denial_by_a_rule_logged(self) -> None:
        """
        A request whose second socket a deny rule refuses logs one message, no grant: "deny" at
        notice (authpriv), socket=2/2, step=policy, errno=13, the deny rule's line (2), the
        refused spec, and the reason the caller is given.
        """
        log = LogSocket(self)
        run = self.request(self.tcp(), self.tcp(self.denied_port), log=log.path)
        self.assertEqual((run["status"], run["fds"]), (4, 0))
        [message] = log.messages()
        self.assertTrue(message.raw.startswith(f"<{AUTHPRIV * 8 + NOTICE}>".encode()))
        self.assertEqual((message.word, message.severity), ("deny", NOTICE))
        self.assertCommon(message, run)
        self.assertEqual(
            {key: message.fields[key] for key in ("socket", "step", "errno", "line", "spec")},
            {"socket": b"2/2", "step": b"policy", "errno": b"13", "line": b"2",
             "spec": self.tcp(self.denied_port).encode()},
        )  # fmt: skip
        self.assertIn(b"by line 2 of", message.fields["reason"])

    def test_denial_by_no_rule_logged(self) -> None:
        """A socket no rule matches (raw) logs "deny" with line=0 and the reason "no rule"."""
        log = LogSocket(self)
        run = self.request("kind=raw,family=inet,proto=1", log=log.path)
        self.assertEqual((run["status"], run["fds"]), (4, 0))
        [message] = log.messages()
        self.assertEqual((message.word, message.severity, message.fields["line"]),
                         ("deny", NOTICE, b"0"))  # fmt: skip
        self.assertIn(b"no rule allows it", message.fields["reason"])

    def test_refused_spec_logged_printable(self) -> None:
        """
        A malformed spec carrying control characters, a newline, DEL, a byte above 0x7f, quotes
        and backslashes (a forged field and a forged message) is refused and logged as one
        printable line ("refuse" at notice, step=parse): every such byte escaped (\\xHH, \\",
        \\\\), so that the spec field reads back as exactly the bytes asked for and no other
        field appears.
        """
        spec = self.tcp().encode() + b'\x1b[31m\n<86>x" line=1 allow \\"\x7f\xff\x01'
        log = LogSocket(self)
        run = self.run_caller([b"v1", spec], log.path)
        self.assertEqual((run["status"], run["fds"]), (2, 0))
        [datagram] = log.datagrams()
        self.assertRegex(datagram.decode("ascii"), r"\A[\x20-\x7e]+\Z")
        message = Message.parse(datagram)
        self.assertEqual((message.word, message.severity), ("refuse", NOTICE))
        self.assertEqual(message.fields["spec"], spec)
        self.assertEqual(set(message.fields), {"uid", "gid", "ppid", "exe", "socket", "step",
                                               "errno", "policy", "spec", "reason"})  # fmt: skip
        self.assertEqual((message.fields["socket"], message.fields["step"]), (b"1/1", b"parse"))
        self.assertIn(b"\\x1b", datagram)

    def test_check_mode_logs_nothing(self) -> None:
        """ "v1 check" (which opens nothing) answers as always and logs nothing, allowed or not."""
        log = LogSocket(self)
        run = self.request(self.tcp(), self.tcp(self.denied_port), log=log.path, check=True)
        self.assertEqual(run["status"], 0)
        self.assertTrue(run["replies"][0].startswith("check 2 allow:3 deny:2 "), run)
        self.assertEqual(log.datagrams(), [])


class NoLogTests(AuditTestCase):
    """The request never depends on the log."""

    def assertUnaffected(self, log: Optional[str]) -> None:
        """With /dev/log as LOG, a grant and a denial answer at once, exactly as ever."""
        run = self.request(self.tcp(), log=log)
        self.assertGranted(run, 1)
        self.assertLess(run["elapsed"], QUICK)
        run = self.request(self.tcp(self.denied_port), log=log)
        self.assertEqual((run["status"], run["fds"], run["output"]), (4, 0, ""))
        self.assertTrue(run["replies"][0].startswith("error 1 policy 13 "), run)
        self.assertLess(run["elapsed"], QUICK)

    def test_no_dev_log(self) -> None:
        """With no /dev/log at all, requests succeed or are refused quickly, as without logging."""
        self.assertUnaffected(None)

    def test_refusing_dev_log(self) -> None:
        """
        With a /dev/log that refuses the connection (a socket file nothing listens on) or is of
        the wrong type (a stream socket that never accepts), requests are unaffected.
        """
        stale = LogSocket(self)
        stale.socket.close()
        self.assertUnaffected(stale.path)
        stream = LogSocket(self, socket.SOCK_STREAM)
        self.assertUnaffected(stream.path)

    def test_full_dev_log(self) -> None:
        """
        With a /dev/log that never reads and whose queue is full, a grant (and a denial) answer
        at once with exactly the fds asked for, no error; the helper's messages are dropped, not
        queued behind the others.
        """
        log = LogSocket(self)
        queued = log.fill()
        self.assertUnaffected(log.path)
        self.assertEqual(log.datagrams(), [b"filler"] * queued)


class LogSocketTests(AuditTestCase):
    def test_log_socket_opened_as_the_caller_and_closed(self) -> None:
        """
        Traced by strace (run by root with -u, so the setuid bit takes effect): the log socket is
        opened once, after the switch to the caller, with nothing effective and nothing permitted
        but what the request needs (CAP_NET_BIND_SERVICE); non-blocking and close-on-exec; it is
        connected to the fixed path /dev/log, sent to with MSG_DONTWAIT|MSG_NOSIGNAL, and closed
        before the first socket for the caller is created, so it is never among the fds sent.
        """
        skip_with_sanitizer_build(self, "strace -u of the dynamic ASan build is not the release")
        if shutil.which("strace") is None:
            self.fail("strace is not installed; scripts/test installs it (scripts/packages.sh)")
        log = LogSocket(self)
        trace = os.path.join(self.work, "trace")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(mine.close)
        with theirs:
            self.in_namespace(["strace", "-qq", "-u", TEST_USER, "-o", trace, "-e",
                               "trace=setresuid,capset,socket,connect,sendto,close",
                               self.prefix.helper, "v1", self.tcp()], log.path, stdin=theirs)  # fmt: skip
        reply, ancillary, _, _ = mine.recvmsg(64, socket.CMSG_SPACE(4))
        for _, _, payload in ancillary:
            os.close(int.from_bytes(payload[:4], sys.byteorder))
        self.assertEqual((reply, len(ancillary)), (b"ok 1\n", 1))
        self.assertEqual(len(log.datagrams()), 1)
        with open(trace) as stream:
            lines = [line.strip() for line in stream if line.strip()]
        opened = [i for i, line in enumerate(lines) if line.startswith("socket(AF_UNIX")]
        self.assertEqual(len(opened), 1, lines)
        at = opened[0]
        self.assertRegex(lines[at], r"SOCK_DGRAM\|SOCK_CLOEXEC\|SOCK_NONBLOCK, 0\) += \d+$")
        fd = lines[at].rsplit("= ", 1)[1]
        switch = next(i for i, line in enumerate(lines) if line.startswith("setresuid("))
        self.assertLess(switch, at)
        effective, permitted = next(
            CAPSET.search(line).groups()  # type: ignore[union-attr]
            for line in reversed(lines[:at])
            if CAPSET.search(line)
        )
        self.assertEqual((effective, capability_names(permitted)),
                         ("0", {"CAP_NET_BIND_SERVICE"}))  # fmt: skip
        after = lines[at + 1 :]
        self.assertRegex(after[0], rf'^connect\({fd}, \{{sa_family=AF_UNIX, sun_path="/dev/log"\}}')
        self.assertRegex(after[1], rf"^sendto\({fd}, .*MSG_DONTWAIT\|MSG_NOSIGNAL")
        self.assertRegex(after[2], rf"^close\({fd}\) += 0$")
        first_socket = next(i for i, line in enumerate(lines) if line.startswith("socket(AF_INET"))
        self.assertLess(at + 3, first_socket)
