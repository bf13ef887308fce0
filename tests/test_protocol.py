"""
Unit tests for the wire protocol (`procket_twisted._client.wire`), for turning a reply into sockets
or a typed error (`procket_twisted._client.reply`), and for checking received fds
(`procket_twisted._client.validate`). They use real socket pairs and real sockets, and the C helper's
source as installed with the package, so that the Python and C sides cannot drift apart.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import signal
import socket
import sys
from typing import List

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted
from procket_twisted import (
    HelperCommand,
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    PolicyDeniedError,
    ProcketError,
    SocketError,
    SocketRequest,
)
from procket_twisted._client.reply import sockets_from_reply
from procket_twisted._client.validate import mismatch, sockets_from_fds
from procket_twisted._client.wire import (
    HELPER_STEPS,
    MAX_SOCKETS,
    PROTOCOL_VERSION,
    Answer,
    Packet,
    helper_arguments,
    parse_answer,
    receive_packets,
)

from .support import ipv6_loopback

HELPER_DIRECTORY = os.path.join(os.path.dirname(procket_twisted.__file__), "helper")
COMMAND = HelperCommand(
    ("/nonexistent/procket-helper",), "/nonexistent/procket-helper",
    "/nonexistent/procket-helper", "progname",
)  # fmt: skip


def helper_source() -> str:
    """The helper's C sources and header, one after another."""
    texts = []
    for name in sorted(os.listdir(HELPER_DIRECTORY)):
        if name.endswith((".c", ".h")):
            with open(os.path.join(HELPER_DIRECTORY, name), encoding="utf-8") as source:
                texts.append(source.read())
    return "\n".join(texts)


def is_closed(fd: int) -> bool:
    """Whether FD is not open in this process."""
    try:
        os.fstat(fd)
    except OSError as error:
        return error.errno == errno.EBADF
    return False


class SocketsMixin:
    """Real sockets, closed after the test unless handed over as bare fds."""

    def tcp(self, ip: str = "127.0.0.1", listening: bool = True) -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)  # type: ignore[attr-defined]
        sock.bind((ip, 0))
        if listening:
            sock.listen(1)
        return sock

    def udp(self, ip: str = "127.0.0.1") -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)  # type: ignore[attr-defined]
        sock.bind((ip, 0))
        return sock

    def fd_of(self, sock: socket.socket) -> int:
        """A new fd for SOCK that the code under test now owns."""
        return os.dup(sock.fileno())

    def received(self, sock: socket.socket) -> socket.socket:
        """SOCK as the client sees a received one: wrapped from its fd (which reads its protocol)."""
        wrapped = socket.socket(fileno=self.fd_of(sock))
        self.addCleanup(wrapped.close)  # type: ignore[attr-defined]
        return wrapped

    def closing(self, sockets: List[socket.socket]) -> None:
        for sock in sockets:
            self.addCleanup(sock.close)  # type: ignore[attr-defined]


class ParseAnswerTests(SynchronousTestCase):
    """parse_answer: the helper's two answers, and everything else is not one."""

    def test_ok(self) -> None:
        """'ok N' (with or without its newline) is success with a count."""
        self.assertEqual(parse_answer(b"ok 3\n"), Answer(ok=True, count=3))
        self.assertEqual(parse_answer(b"ok 1"), Answer(ok=True, count=1))
        self.assertEqual(parse_answer(b"ok 253\n"), Answer(ok=True, count=253))

    def test_error(self) -> None:
        """'error INDEX STEP ERRNO TEXT' keeps every field; the text may hold spaces."""
        self.assertEqual(
            parse_answer(b"error 2 bind 98 bind() failed: in use\n"),
            Answer(ok=False, index=2, step="bind", errno=98, text="bind() failed: in use"),
        )
        self.assertEqual(
            parse_answer(b"error 0 parse 22\n"), Answer(ok=False, step="parse", errno=22)
        )

    def test_every_step_parses(self) -> None:
        """An error at each of the helper's steps is recognised."""
        for step in HELPER_STEPS:
            answer = parse_answer(f"error 1 {step} 1 x\n".encode())
            self.assertIsNotNone(answer)
            assert answer is not None
            self.assertEqual(answer.step, step)

    def test_garbage(self) -> None:
        """Text that is not exactly an answer is None (it is diagnostics, e.g. from sudo)."""
        for data in (
            b"", b"\n", b"ok", b"ok \n", b"ok x\n", b"ok -1\n", b"ok 1 2\n", b"OK 1\n",
            b"error\n", b"error 1 bind\n", b"error x bind 98 t\n", b"error 1 nostep 98 t\n",
            b"error 1 bind x t\n", b"sudo: a password is required\n",
            b"ld.so: error while loading shared libraries\n", b" ok 1\n",
        ):  # fmt: skip
            self.assertIsNone(parse_answer(data), data)

    def test_non_ascii(self) -> None:
        """Bytes that are not ASCII are never an answer, even around a valid one."""
        for data in (
            b"ok \xd9\xa1\n",
            "ok \u0661".encode(),
            b"\xff\xfe",
            b"error 1 bind 98 \xe9\n",
        ):
            self.assertIsNone(parse_answer(data), data)


class HelperArgumentsTests(SynchronousTestCase):
    """helper_arguments: the version, then one argument per socket, 1 to 253 of them."""

    def test_arguments(self) -> None:
        """The version comes first, then each request's argument in order."""
        requests = [SocketRequest(80), SocketRequest(53, "udp", "::1")]
        self.assertEqual(
            helper_arguments(requests),
            [
                "v1",
                "kind=tcp,family=inet,addr=0.0.0.0,port=80,backlog=128",
                "kind=udp,family=inet6,addr=::1,port=53",
            ],
        )

    def test_limits(self) -> None:
        """0 and 254 sockets are ValueErrors; 1 and 253 are fine."""
        request = SocketRequest(80)
        for count in (0, MAX_SOCKETS + 1):
            error = self.assertRaises(ValueError, helper_arguments, [request] * count)
            self.assertIn(str(count), str(error))
        self.assertEqual(len(helper_arguments([request])), 2)
        self.assertEqual(len(helper_arguments([request] * MAX_SOCKETS)), MAX_SOCKETS + 1)


class AgreesWithHelperSourceTests(SynchronousTestCase):
    """The Python constants match the C helper's (the installed copy of its source)."""

    def test_steps_match_enum(self) -> None:
        """HELPER_STEPS is the C enum step, in order, starting at 1 (the exit statuses)."""
        enum = re.search(r"enum\s+step\s*\{([^}]*)\}", helper_source())
        self.assertIsNotNone(enum, "no 'enum step' in the helper source")
        assert enum is not None
        names = re.findall(r"STEP_([A-Z]+)", enum.group(1))
        self.assertEqual(tuple(name.lower() for name in names), HELPER_STEPS)
        self.assertRegex(enum.group(1), r"STEP_SETUP\s*=\s*1\b")

    def test_step_names_match(self) -> None:
        """The C step_names table spells each step as HELPER_STEPS does."""
        table = dict(re.findall(r'\[STEP_([A-Z]+)\]\s*=\s*"([a-z]+)"', helper_source()))
        self.assertEqual(
            {key.lower(): value for key, value in table.items()},
            {step: step for step in HELPER_STEPS},
        )

    def test_documented_exit_statuses(self) -> None:
        """The header comment's exit statuses are each step's position plus one."""
        documented = re.search(r"\((setup 1, parse 2[^)]*)\)", helper_source())
        self.assertIsNotNone(documented)
        assert documented is not None
        pairs = re.findall(r"([a-z]+) (\d+)", documented.group(1))
        self.assertEqual(
            [(step, int(number)) for step, number in pairs],
            [(step, number) for number, step in enumerate(HELPER_STEPS, 1)],
        )

    def test_protocol_version(self) -> None:
        """PROTOCOL_VERSION is the C helper's PROTOCOL_VERSION."""
        define = re.search(r'#define\s+PROTOCOL_VERSION\s+"([^"]+)"', helper_source())
        self.assertIsNotNone(define)
        assert define is not None
        self.assertEqual(define.group(1), PROTOCOL_VERSION)

    def test_options_match_the_helpers_table(self) -> None:
        """
        Every socket option has the same name, the same largest value and the same capability
        in the Python table (`OPTIONS`) as in the helper's (kinds.c): one fact, checked twice.
        """
        from procket_twisted._client.options import CAP_NET_ADMIN, CAP_NET_RAW, OPTIONS

        rows = re.findall(
            r'\[OPT_[A-Z0-9]+\] = \{"([a-z0-9]+)", [A-Z_ |]+, ([^,]+), (VALUE_[A-Z]+), ([^,]+),',
            helper_source(),
        )
        numbers = {"UINT32_MAX": 0xFFFFFFFF, "INT32_MAX": 0x7FFFFFFF, "INT32_MAX / 2": 0x3FFFFFFF}
        capabilities = {"0": None, "CAP_BIT(CAP_NET_ADMIN)": CAP_NET_ADMIN,
                        "CAP_BIT(CAP_NET_RAW)": CAP_NET_RAW}  # fmt: skip
        helper = {
            name: (capabilities[needs], numbers.get(largest.strip(), None), value)
            for name, needs, value, largest in rows
        }
        self.assertEqual(set(helper), {option.name for option in OPTIONS})
        for option in OPTIONS:
            needs, largest, value = helper[option.name]
            self.assertEqual(option.capability, needs, option.name)
            if option.limits is not None:
                self.assertEqual((value, option.limits[1]), ("VALUE_NUMBER", largest), option.name)
            else:
                self.assertIn(value, ("VALUE_FLAG", "VALUE_NAME", "VALUE_NUMBER"), option.name)

    def test_max_sockets(self) -> None:
        """MAX_SOCKETS is the C helper's MAX_SOCKETS."""
        define = re.search(r"#define\s+MAX_SOCKETS\s+(\d+)", helper_source())
        self.assertIsNotNone(define)
        assert define is not None
        self.assertEqual(int(define.group(1)), MAX_SOCKETS)


class ReceivePacketsTests(SocketsMixin, SynchronousTestCase):
    """receive_packets on a real SOCK_SEQPACKET pair."""

    def pair(self) -> "tuple[socket.socket, socket.socket]":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.closing([ours, theirs])
        return ours, theirs

    def test_nothing_yet(self) -> None:
        """With nothing sent and the peer open, it returns at once: no packets, no EOF."""
        ours, _ = self.pair()
        self.assertEqual(receive_packets(ours), ([], False))

    def test_packets_and_fds(self) -> None:
        """Each packet keeps its boundaries and its fds, which arrive close-on-exec."""
        ours, theirs = self.pair()
        sockets = [self.tcp(), self.udp()]
        rights = array.array("i", [sock.fileno() for sock in sockets]).tobytes()
        theirs.sendmsg([b"hello\n"])
        theirs.sendmsg([b"ok 2\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        theirs.close()
        packets, eof = receive_packets(ours)
        self.assertTrue(eof)
        self.assertEqual([packet.data for packet in packets], [b"hello\n", b"ok 2\n"])
        self.assertEqual(packets[0].fds, [])
        fds = packets[1].fds
        self.assertEqual(len(fds), 2)
        for fd in fds:
            self.addCleanup(os.close, fd)
            self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        self.assertFalse(packets[1].truncated)
        received = socket.socket(fileno=os.dup(fds[0]))
        self.addCleanup(received.close)
        self.assertEqual(received.getsockname(), sockets[0].getsockname())

    def test_eof(self) -> None:
        """A closed peer is reported as end of file."""
        ours, theirs = self.pair()
        theirs.close()
        self.assertEqual(receive_packets(ours), ([], True))


class ReplyTests(SocketsMixin, SynchronousTestCase):
    """sockets_from_reply: packets and exit status to sockets, or to one typed error."""

    def reply(
        self, requests: List[SocketRequest], packets: List[Packet], exit_code: int
    ) -> List[socket.socket]:
        sockets = sockets_from_reply(requests, COMMAND, packets, exit_code)
        self.closing(sockets)
        return sockets

    def error(
        self,
        kind: type,
        packets: List[Packet],
        exit_code: int,
        requests: "List[SocketRequest] | None" = None,
    ) -> ProcketError:
        requests = requests or [SocketRequest(80, ip="127.0.0.1")]
        error = self.assertRaises(kind, sockets_from_reply, requests, COMMAND, packets, exit_code)
        self.assertIsInstance(error, ProcketError)
        self.assertIsInstance(error, OSError)
        return error

    def test_success(self) -> None:
        """'ok N' with N matching fds and exit 0 gives the sockets, in order."""
        first, second = self.tcp(), self.udp()
        requests = [
            SocketRequest(first.getsockname()[1], ip="127.0.0.1"),
            SocketRequest(second.getsockname()[1], "udp", "127.0.0.1"),
        ]
        sockets = self.reply(
            requests, [Packet(b"ok 2\n", [self.fd_of(first), self.fd_of(second)])], 0
        )
        self.assertEqual(
            [sock.getsockname() for sock in sockets], [first.getsockname(), second.getsockname()]
        )
        self.assertEqual([sock.type for sock in sockets], [socket.SOCK_STREAM, socket.SOCK_DGRAM])

    def test_diagnostics_ignored_on_success(self) -> None:
        """Diagnostic packets before the answer do not spoil a success."""
        sock = self.tcp()
        request = SocketRequest(sock.getsockname()[1], ip="127.0.0.1")
        sockets = self.reply(
            [request], [Packet(b"warning: something\n"), Packet(b"ok 1\n", [self.fd_of(sock)])], 0
        )
        self.assertEqual(len(sockets), 1)

    def test_count_mismatch_closes_fds(self) -> None:
        """'ok 2' with one fd is a HelperFailedError at step reply, and the fd is closed."""
        sock = self.tcp()
        fd = self.fd_of(sock)
        error = self.error(
            HelperFailedError, [Packet(b"ok 2\n", [fd])], 0, [SocketRequest(0, ip="127.0.0.1")] * 2
        )
        self.assertEqual(error.step, "reply")
        self.assertIn("2", str(error))
        self.assertTrue(is_closed(fd))

    def test_more_fds_than_requests_closes_fds(self) -> None:
        """'ok 2' with two fds for one request fails at validate and closes both fds."""
        fds = [self.fd_of(self.tcp()), self.fd_of(self.tcp())]
        error = self.error(
            HelperFailedError, [Packet(b"ok 2\n", fds)], 0, [SocketRequest(0, ip="127.0.0.1")]
        )
        self.assertEqual(error.step, "validate")
        self.assertTrue(all(is_closed(fd) for fd in fds))

    def test_truncated_closes_fds(self) -> None:
        """A packet whose fds were truncated (MSG_CTRUNC) fails and closes what did arrive."""
        fd = self.fd_of(self.tcp())
        error = self.error(
            HelperFailedError,
            [Packet(b"ok 1\n", [fd], truncated=True)],
            0,
            [SocketRequest(0, ip="127.0.0.1")],
        )
        self.assertEqual(error.step, "reply")
        self.assertTrue(is_closed(fd))

    def test_ok_but_failed_exit_closes_fds(self) -> None:
        """An 'ok' from a helper that then exits non-zero is a failure, and its fds are closed."""
        fd = self.fd_of(self.tcp())
        error = self.error(
            HelperFailedError, [Packet(b"ok 1\n", [fd])], 9, [SocketRequest(0, ip="127.0.0.1")]
        )
        self.assertIn("status 9", str(error))
        self.assertTrue(is_closed(fd))

    def test_fds_with_error_closed(self) -> None:
        """fds that arrive with an error answer are closed (the helper never sends any)."""
        fd = self.fd_of(self.tcp())
        self.error(SocketError, [Packet(b"error 1 bind 98 in use\n", [fd])], 7)
        self.assertTrue(is_closed(fd))

    def test_bind_eaddrinuse(self) -> None:
        """'error 1 bind 98' is a SocketError with errno EADDRINUSE, the step, index and a hint."""
        request = SocketRequest(80, ip="127.0.0.1")
        error = self.error(SocketError, [Packet(b"error 1 bind 98 bind() failed\n")], 7, [request])
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertEqual((error.step, error.index, error.detail), ("bind", 1, "bind() failed"))
        self.assertIn("tcp 127.0.0.1 port 80", str(error))
        self.assertIn(os.strerror(errno.EADDRINUSE), str(error))
        self.assertIn("ss -lnp", str(error))

    def test_socket_steps(self) -> None:
        """Errors at socket, setsockopt, bind and listen are SocketErrors naming their socket."""
        requests = [SocketRequest(80, ip="127.0.0.1"), SocketRequest(53, "udp", "::1")]
        for step in ("socket", "setsockopt", "bind", "listen"):
            error = self.error(
                SocketError,
                [Packet(f"error 2 {step} 97 x\n".encode())],
                HELPER_STEPS.index(step) + 1,
                requests,
            )
            self.assertEqual((error.step, error.index, error.errno), (step, 2, 97))
            self.assertIn("udp ::1 port 53", str(error))

    def test_policy(self) -> None:
        """A policy refusal is a PolicyDeniedError with the helper's reason and who to ask."""
        error = self.error(PolicyDeniedError, [Packet(b"error 1 policy 13 denied by line 3\n")], 4)
        self.assertEqual((error.step, error.index, error.errno), ("policy", 1, errno.EACCES))
        self.assertIn("denied by line 3", str(error))
        self.assertIn("tcp 127.0.0.1 port 80", str(error))
        self.assertIn("policy", str(error))

    def test_privilege(self) -> None:
        """A privilege failure is a HelperNotPrivilegedError that names the helper and a fix."""
        error = self.error(
            HelperNotPrivilegedError, [Packet(b"error 0 privilege 1 no capability\n")], 3
        )
        self.assertEqual((error.step, error.errno), ("privilege", errno.EPERM))
        self.assertIn(COMMAND.helper, str(error))

    def test_other_helper_steps(self) -> None:
        """Errors at parse, drop, send and setup are HelperFailedErrors keeping the step."""
        for step in ("parse", "drop", "send", "setup"):
            error = self.error(
                HelperFailedError,
                [Packet(f"error 1 {step} 22 went wrong\n".encode())],
                HELPER_STEPS.index(step) + 1,
            )
            self.assertEqual((error.step, error.errno), (step, 22))
            self.assertIn("went wrong", str(error))
        parse = self.error(HelperFailedError, [Packet(b"error 1 parse 22 bad\n")], 2)
        self.assertIn("install-helper", str(parse))

    def test_killed_by_signal(self) -> None:
        """A helper killed by a signal: the message names the signal."""
        for number in (signal.SIGSEGV, signal.SIGKILL, signal.SIGABRT):
            error = self.error(HelperFailedError, [], -number)
            self.assertIn(number.name, str(error))
            self.assertEqual(error.step, "reply")

    def test_killed_by_realtime_signal(self) -> None:
        """
        A helper killed by a real-time signal, which has no name in signal.Signals
        (SIGRTMIN+1...SIGRTMAX-1), is still a HelperFailedError that gives the signal's number.
        """
        for number in range(signal.SIGRTMIN, signal.SIGRTMAX + 1):
            error = self.error(HelperFailedError, [], -number)
            self.assertIn("killed by", str(error))
            if number not in (signal.SIGRTMIN, signal.SIGRTMAX):
                self.assertIn(str(number), str(error))

    def test_silent_exit(self) -> None:
        """A helper that exits without answering: the status is in the message."""
        error = self.error(HelperFailedError, [], 3)
        self.assertIn("status 3", str(error))
        self.assertEqual(error.errno, errno.EPROTO)

    def test_diagnostics_in_message(self) -> None:
        """What something else printed (the loader, say) is quoted in the error."""
        error = self.error(
            HelperFailedError, [Packet(b"error while loading shared libraries: libc.so\n")], 127
        )
        self.assertIn("loading shared libraries", str(error))
        self.assertIn("127", str(error))

    def test_sudo_password(self) -> None:
        """sudo asking for a password is a HelperNotPrivilegedError pointing at --mode sudo."""
        error = self.error(HelperNotPrivilegedError, [Packet(b"sudo: a password is required\n")], 1)
        self.assertIn("--mode sudo", str(error))
        self.assertEqual(error.step, "spawn")

    def test_sudo_not_found(self) -> None:
        """sudo unable to find the helper is a HelperNotFoundError."""
        self.error(
            HelperNotFoundError, [Packet(b"sudo: /x/procket-helper: command not found\n")], 1
        )


class ErrorTests(SynchronousTestCase):
    """The typed errors: OSErrors with a default errno, a step, an index and the helper's words."""

    def test_defaults(self) -> None:
        """Each class has its errno by default; str() is the message alone."""
        for kind, code in (
            (HelperNotFoundError, errno.ENOENT),
            (HelperNotPrivilegedError, errno.EPERM),
            (PolicyDeniedError, errno.EACCES),
            (procket_twisted.HelperTimeoutError, errno.ETIMEDOUT),
            (HelperFailedError, errno.EPROTO),
            (SocketError, None),
        ):
            error = kind("what happened", step="find")
            self.assertIsInstance(error, ProcketError)
            self.assertIsInstance(error, OSError)
            self.assertEqual(error.errno, code)
            self.assertEqual(str(error), "what happened")
            self.assertEqual((error.step, error.index, error.detail), ("find", 0, ""))

    def test_pickle(self) -> None:
        """Errors survive pickling (multiprocessing, trial's reporters) with every attribute."""
        import pickle

        error = SocketError(
            "cannot bind", errno=errno.EADDRINUSE, step="bind", index=3, detail="bind() failed"
        )
        copy = pickle.loads(pickle.dumps(error))
        self.assertIs(type(copy), SocketError)
        self.assertEqual(
            (copy.errno, copy.step, copy.index, copy.detail, str(copy)),
            (errno.EADDRINUSE, "bind", 3, "bind() failed", "cannot bind"),
        )


class ValidateTests(SocketsMixin, SynchronousTestCase):
    """sockets_from_fds and mismatch: the sockets are what was asked for, or all fds close."""

    def test_mismatches(self) -> None:
        """mismatch names the first difference: family, type, listening, address, port."""
        sock = self.received(self.tcp())
        port = sock.getsockname()[1]
        self.assertIsNone(mismatch(sock, SocketRequest(port, ip="127.0.0.1")))
        self.assertIsNone(mismatch(sock, SocketRequest(0, ip="127.0.0.1")))
        self.assertIn("type", mismatch(sock, SocketRequest(port, "udp", "127.0.0.1")) or "")
        self.assertIn("family", mismatch(sock, SocketRequest(port, ip="::1")) or "")
        self.assertIn("bound to 127.0.0.1", mismatch(sock, SocketRequest(port)) or "")
        other = 1 if port != 1 else 2
        self.assertIn("port", mismatch(sock, SocketRequest(other, ip="127.0.0.1")) or "")
        idle = self.received(self.tcp(listening=False))
        self.assertIn("not listening", mismatch(idle, SocketRequest(0, ip="127.0.0.1")) or "")
        udp = self.received(self.udp())
        self.assertIn("type", mismatch(udp, SocketRequest(0, ip="127.0.0.1")) or "")

    def test_protocol(self) -> None:
        """
        A listening stream socket of another protocol on the right address (MPTCP, where TCP
        was asked for) is refused by its protocol number.
        """
        IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)  # named from Python 3.10 on
        try:
            mptcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        except OSError as error:
            raise self.skipTest(f"no MPTCP in this kernel: {error.strerror}") from None
        self.addCleanup(mptcp.close)
        mptcp.bind(("127.0.0.1", 0))
        mptcp.listen(1)
        sock = self.received(mptcp)
        request = SocketRequest(sock.getsockname()[1], ip="127.0.0.1")
        self.assertEqual(mismatch(sock, request), f"protocol {IPPROTO_MPTCP}, not tcp")

    def test_each_socket_checked(self) -> None:
        """
        In a batch, the socket that differs is named by its position after sockets that were
        right, and every fd closes.
        """
        fds = [self.fd_of(self.tcp()), self.fd_of(self.udp()), self.fd_of(self.tcp())]
        requests = [SocketRequest(0, ip="127.0.0.1")] * 3
        error = self.assertRaises(HelperFailedError, sockets_from_fds, fds, requests)
        self.assertEqual((error.step, error.index), ("validate", 2))
        self.assertIn("type SOCK_DGRAM, not SOCK_STREAM", str(error))
        self.assertTrue(all(is_closed(fd) for fd in fds))

    def listeningIPv6(self, address: str, v6only: bool) -> socket.socket:
        """A listening TCP socket on ADDRESS with IPV6_V6ONLY as V6ONLY, as if received."""
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback here")
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((address, 0))
        sock.listen(1)
        return self.received(sock)

    def test_address_written_differently(self) -> None:
        """
        An address the kernel writes differently from Python (an IPv4-mapped IPv6 address:
        ``::ffff:127.0.0.1`` against ``::ffff:7f00:1``) still matches its request; another
        address does not.
        """
        sock = self.listeningIPv6("::ffff:127.0.0.1", v6only=False)
        request = SocketRequest(0, ip="::ffff:127.0.0.1")
        if sys.version_info < (3, 13):  # from 3.13 on, Python writes it as the kernel does
            self.assertNotEqual(sock.getsockname()[0], request.ip)
        self.assertIsNone(mismatch(sock, request))
        self.assertIn("bound to", mismatch(sock, SocketRequest(0, ip="::ffff:127.0.0.2")) or "")

    def test_v6only(self) -> None:
        """For IPv6 with v6only set, the socket's IPV6_V6ONLY must match."""
        sock = self.listeningIPv6("::1", v6only=True)
        self.assertIsNone(mismatch(sock, SocketRequest(0, ip="::1", v6only=True)))
        self.assertIsNone(mismatch(sock, SocketRequest(0, ip="::1")))
        self.assertIn("v6only", mismatch(sock, SocketRequest(0, ip="::1", v6only=False)) or "")

    def test_count(self) -> None:
        """A wrong number of fds is a validate error, and every fd is closed."""
        fds = [self.fd_of(self.tcp())]
        error = self.assertRaises(
            HelperFailedError, sockets_from_fds, fds, [SocketRequest(0, ip="127.0.0.1")] * 2
        )
        self.assertEqual(error.step, "validate")
        self.assertTrue(is_closed(fds[0]))

    def test_not_a_socket_closes_all(self) -> None:
        """A pipe among the fds is refused, naming its position; every fd is closed."""
        read, write = os.pipe()
        self.addCleanup(os.close, write)
        fds = [self.fd_of(self.tcp()), read, self.fd_of(self.udp())]
        requests = [
            SocketRequest(0, ip="127.0.0.1"),
            SocketRequest(0, ip="127.0.0.1"),
            SocketRequest(0, "udp", "127.0.0.1"),
        ]
        error = self.assertRaises(HelperFailedError, sockets_from_fds, fds, requests)
        self.assertEqual((error.step, error.index), ("validate", 2))
        self.assertIn("not a socket", str(error))
        self.assertEqual([is_closed(fd) for fd in fds], [True, True, True])

    def test_wrong_socket_closes_all(self) -> None:
        """A UDP socket for a TCP request is refused, naming both; every fd is closed."""
        fds = [self.fd_of(self.tcp()), self.fd_of(self.udp())]
        requests = [SocketRequest(0, ip="127.0.0.1"), SocketRequest(0, ip="127.0.0.1")]
        error = self.assertRaises(HelperFailedError, sockets_from_fds, fds, requests)
        self.assertEqual((error.step, error.index), ("validate", 2))
        self.assertIn("SOCK_DGRAM", str(error))
        self.assertEqual([is_closed(fd) for fd in fds], [True, True])

    def test_good(self) -> None:
        """Matching fds become sockets in order, owning the fds."""
        tcp, udp = self.tcp(), self.udp()
        fds = [self.fd_of(tcp), self.fd_of(udp)]
        sockets = sockets_from_fds(
            fds,
            [
                SocketRequest(0, ip="127.0.0.1"),
                SocketRequest(udp.getsockname()[1], "udp", "127.0.0.1"),
            ],
        )
        self.closing(sockets)
        self.assertEqual([sock.fileno() for sock in sockets], fds)
