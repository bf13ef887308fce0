"""
End-to-end unit tests of the blocking client (`procket_twisted.listen`, `listen_many`) against a
FAKE helper (``fake_helper.py``, run with this interpreter) that speaks the real protocol without
privilege: real sockets come back over a real SOCK_SEQPACKET channel from a real child process.
Every failure mode gives its typed error, and no fd or child process is ever left behind.

Tests pass ``direct=False`` wherever the least-privilege path would otherwise open the socket in
this process (always for port 0 or high ports, and for every port as root), so that the helper
path is what runs.
"""

from __future__ import annotations

import errno
import os
import resource
import shlex
import shutil
import socket
import tempfile
import time
from typing import Any, Callable, List, Set

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted
import procket_twisted._client.api
import procket_twisted._client.direct
import procket_twisted._client.exchange
import procket_twisted._client.request
import procket_twisted._client.spawn
import procket_twisted._client.system
from procket_twisted import (
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    HelperTimeoutError,
    PolicyDeniedError,
    ProcketError,
    SocketError,
    SocketRequest,
    listen,
    listen_many,
)
from procket_twisted._client.options import CAP_NET_BIND_SERVICE
from procket_twisted._client.request import OpenInetError, open_inet

from .fake_helper_support import (
    FAKE,
    FAKE_HELPER,
    log_fake_helper_runs,
    reset_fake_helper,
    set_fake_helper_mode,
)
from .support import children, ipv6_loopback, set_environment

MISSING_HELPER = "/nonexistent/procket-helper"


def open_fds() -> Set[int]:
    """The fds open in this process now."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def free_port(kind: int = socket.SOCK_STREAM, ip: str = "127.0.0.1") -> int:
    """A port (from the ephemeral range, so above 1024) that is free on IP right now."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.bind((ip, 0))
        return int(probe.getsockname()[1])


class ClientTestCase(SynchronousTestCase):
    """The fake helper's mode and run log, and leak checks."""

    def setUp(self) -> None:
        reset_fake_helper(self)

    def mode(self, mode: str) -> None:
        """Make the fake helper misbehave as MODE."""
        set_fake_helper_mode(self, mode)

    def directory(self) -> str:
        path = tempfile.mkdtemp(prefix="procket-client-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def run_log(self) -> Callable[[], List[List[str]]]:
        """Log each fake helper run; returns a function giving each run's arguments."""
        return log_fake_helper_runs(self)

    def listen(self, *args: Any, **kwargs: Any) -> socket.socket:
        """procket_twisted.listen through the fake helper; the socket is closed afterwards."""
        kwargs.setdefault("progname", FAKE)
        kwargs.setdefault("direct", False)
        sock = listen(*args, **kwargs)
        self.addCleanup(sock.close)
        return sock

    def listen_many(self, requests: List[SocketRequest], **kwargs: Any) -> List[socket.socket]:
        """procket_twisted.listen_many through the fake helper; sockets closed afterwards."""
        kwargs.setdefault("progname", FAKE)
        kwargs.setdefault("direct", False)
        sockets = listen_many(requests, **kwargs)
        for sock in sockets:
            self.addCleanup(sock.close)
        return sockets

    def assertLeavesNothing(self, function: Callable[[], Any]) -> Any:
        """Call FUNCTION; fail if it leaves an fd open or a child process behind."""
        fds, kids = open_fds(), children()
        try:
            return function()
        finally:
            self.assertEqual(open_fds() - fds, set(), "fds leaked")
            self.assertEqual(children() - kids, set(), "child process left behind")

    def assertFailsWith(self, kind: type, mode: str, *args: Any, **kwargs: Any) -> ProcketError:
        """In fake helper MODE, listen(*ARGS) raises KIND and leaves no fd or process behind."""
        self.mode(mode)
        kwargs.setdefault("progname", FAKE)
        kwargs.setdefault("direct", False)
        if not args:
            args = (0, "tcp", "127.0.0.1")

        def attempt() -> ProcketError:
            error: ProcketError = self.assertRaises(kind, listen, *args, **kwargs)
            return error

        error = self.assertLeavesNothing(attempt)
        self.assertIsInstance(error, ProcketError)
        self.assertIsInstance(error, OSError)
        return error


class SuccessTests(ClientTestCase):
    """The fake helper's sockets arrive, are checked, and work."""

    def test_tcp(self) -> None:
        """A TCP socket from the helper accepts a connection and carries data, blocking."""
        runs = self.run_log()
        server = self.listen(0, "tcp", "127.0.0.1")
        self.assertEqual(len(runs()), 1)
        self.assertEqual((server.family, server.type), (socket.AF_INET, socket.SOCK_STREAM))
        self.assertTrue(server.getblocking())
        self.assertFalse(os.get_inheritable(server.fileno()))
        server.settimeout(5)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            connection, _ = server.accept()
            with connection:
                client.sendall(b"ping")
                self.assertEqual(connection.recv(4), b"ping")

    def test_tcp_fixed_port(self) -> None:
        """A TCP socket asked for on a given port is bound to that port, with the backlog sent."""
        runs = self.run_log()
        port = free_port()
        server = self.listen(port, ip=(127, 0, 0, 1), backlog=7)
        self.assertEqual(server.getsockname(), ("127.0.0.1", port))
        self.assertEqual(
            runs(), [["v1", f"kind=tcp,family=inet,addr=127.0.0.1,port={port},backlog=7"]]
        )

    def test_udp(self) -> None:
        """A UDP socket from the helper receives a datagram."""
        port = free_port(socket.SOCK_DGRAM)
        server = self.listen(port, "udp", "127.0.0.1")
        self.assertEqual(server.type, socket.SOCK_DGRAM)
        self.assertEqual(server.getsockname(), ("127.0.0.1", port))
        server.settimeout(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"hello", ("127.0.0.1", port))
            data, _ = server.recvfrom(100)
        self.assertEqual(data, b"hello")

    def test_ipv6(self) -> None:
        """An IPv6 TCP socket (v6only) and an IPv6 UDP socket from the helper both work."""
        if not ipv6_loopback():
            raise self.skipTest("no IPv6 loopback here")
        server = self.listen(0, "tcp", "::1", v6only=True)
        self.assertEqual(server.family, socket.AF_INET6)
        self.assertEqual(server.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 1)
        server.settimeout(5)
        with socket.create_connection(server.getsockname()[:2], timeout=5) as client:
            connection, _ = server.accept()
            connection.close()
            self.assertEqual(client.family, socket.AF_INET6)
        udp = self.listen(0, "udp", (0, 0, 0, 0, 0, 0, 0, 1))
        udp.settimeout(5)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.sendto(b"six", udp.getsockname()[:2])
            self.assertEqual(udp.recvfrom(10)[0], b"six")

    def test_listen_many_one_run(self) -> None:
        """Three sockets come from ONE helper run, in the order asked."""
        runs = self.run_log()
        tcp_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
        requests = [
            SocketRequest(tcp_port, ip="127.0.0.1"),
            SocketRequest(udp_port, "udp", "127.0.0.1"),
            SocketRequest(0, ip="127.0.0.1", backlog=3),
        ]
        sockets = self.listen_many(requests)
        self.assertEqual(len(runs()), 1)
        self.assertEqual(runs()[0], ["v1"] + [request.helper_argument() for request in requests])
        self.assertEqual(
            [sock.type for sock in sockets],
            [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_STREAM],
        )
        self.assertEqual([sock.getsockname()[1] for sock in sockets[:2]], [tcp_port, udp_port])

    def test_procket_helper_variable(self) -> None:
        """With no progname, $PROCKET_HELPER (a command line) runs the helper."""
        runs = self.run_log()
        set_environment(self, "PROCKET_HELPER", shlex.join(FAKE))
        sock = self.listen(0, ip="127.0.0.1", progname=None)
        self.assertEqual(sock.type, socket.SOCK_STREAM)
        self.assertEqual(len(runs()), 1)

    def test_never_a_shell(self) -> None:
        """A progname with ';' and '$(...)' runs no shell: they reach the helper as arguments."""
        runs = self.run_log()
        marker = os.path.join(self.directory(), "pwned")
        extra = [f"$(touch {marker})", f";touch {marker}", f"`touch {marker}`"]
        self.listen(0, ip="127.0.0.1", progname=shlex.join(FAKE + extra))
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(runs()[0][: len(extra)], extra)


class FailureTests(ClientTestCase):
    """Each way a helper can fail gives its own typed error, and leaves nothing behind."""

    def test_error_bind(self) -> None:
        """'error 1 bind 98' is a SocketError with errno EADDRINUSE at step bind."""
        error = self.assertFailsWith(SocketError, "error-bind")
        self.assertEqual((error.errno, error.step, error.index), (errno.EADDRINUSE, "bind", 1))
        self.assertIn("127.0.0.1", str(error))

    def test_real_address_in_use(self) -> None:
        """A port something already listens on: the kernel's EADDRINUSE, naming the port."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        error = self.assertFailsWith(SocketError, "ok", port, "tcp", "127.0.0.1")
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertIn(f"port {port}", str(error))

    def test_error_policy(self) -> None:
        """A policy refusal is a PolicyDeniedError (EACCES)."""
        error = self.assertFailsWith(PolicyDeniedError, "error-policy")
        self.assertEqual((error.errno, error.step), (errno.EACCES, "policy"))
        self.assertIn("fake policy failure", str(error))

    def test_error_privilege(self) -> None:
        """A helper without privilege is a HelperNotPrivilegedError (EPERM) naming the helper."""
        error = self.assertFailsWith(HelperNotPrivilegedError, "error-privilege")
        self.assertEqual((error.errno, error.step), (errno.EPERM, "privilege"))
        self.assertIn(FAKE_HELPER, str(error))

    def test_other_steps(self) -> None:
        """Failures at setup, parse, drop and send are HelperFailedErrors keeping the step."""
        for step in ("setup", "parse", "drop", "send"):
            error = self.assertFailsWith(HelperFailedError, f"error-{step}")
            self.assertEqual(error.step, step)
            self.assertIn(f"fake {step} failure", str(error))

    def test_crash(self) -> None:
        """A helper killed by SIGSEGV: HelperFailedError naming the signal."""
        error = self.assertFailsWith(HelperFailedError, "crash")
        self.assertIn("SIGSEGV", str(error))
        self.assertEqual(error.step, "reply")

    def test_crash_realtime_signal(self) -> None:
        """A helper killed by a real-time signal (no Signals name): HelperFailedError too."""
        error = self.assertFailsWith(HelperFailedError, "crash-realtime")
        self.assertIn("killed", str(error))
        self.assertEqual(error.step, "reply")

    def test_wrong_count(self) -> None:
        """One socket more than asked for is refused (validate); every fd is closed."""
        error = self.assertFailsWith(HelperFailedError, "wrong-count")
        self.assertEqual(error.step, "validate")

    def test_missing_fds(self) -> None:
        """'ok 1' carrying no fd is refused (reply)."""
        error = self.assertFailsWith(HelperFailedError, "missing-fds")
        self.assertEqual(error.step, "reply")
        self.assertIn("0 arrived", str(error))

    def test_wrong_socket(self) -> None:
        """A UDP socket for a TCP request is refused, saying what it got."""
        error = self.assertFailsWith(HelperFailedError, "wrong-socket")
        self.assertEqual((error.step, error.index), ("validate", 1))
        self.assertIn("SOCK_DGRAM", str(error))

    def test_not_a_socket(self) -> None:
        """A pipe instead of a socket is refused."""
        error = self.assertFailsWith(HelperFailedError, "not-a-socket")
        self.assertEqual(error.step, "validate")
        self.assertIn("not a socket", str(error))

    def test_garbage(self) -> None:
        """Non-protocol text and exit 0: HelperFailedError quoting the text."""
        error = self.assertFailsWith(HelperFailedError, "garbage")
        self.assertIn("not the protocol", str(error))
        self.assertIn("status 0", str(error))

    def test_sudo_password(self) -> None:
        """sudo wanting a password: HelperNotPrivilegedError pointing at the sudo install."""
        error = self.assertFailsWith(HelperNotPrivilegedError, "sudo-password")
        self.assertIn("password", str(error))
        self.assertIn("install-helper --mode sudo", str(error))

    def test_sudo_not_found(self) -> None:
        """sudo not finding the helper: HelperNotFoundError."""
        self.assertFailsWith(HelperNotFoundError, "sudo-not-found")

    def test_silent_exit(self) -> None:
        """Exit status 3 without a word: HelperFailedError with the status."""
        error = self.assertFailsWith(HelperFailedError, "silent-exit-3")
        self.assertIn("status 3", str(error))

    def test_missing_helper(self) -> None:
        """A helper path that does not exist: HelperNotFoundError saying how to install one."""
        error = self.assertFailsWith(HelperNotFoundError, "ok", progname=MISSING_HELPER)
        self.assertEqual(error.step, "spawn")
        self.assertIn(MISSING_HELPER, str(error))
        self.assertIn("procket-twisted install-helper", str(error))

    def test_not_executable(self) -> None:
        """A helper file nobody may execute: PolicyDeniedError at spawn, saying so."""
        helper = os.path.join(self.directory(), "procket-helper")
        with open(helper, "w", encoding="ascii") as stream:
            stream.write("#!/bin/sh\n")
        os.chmod(helper, 0o644)
        error = self.assertFailsWith(PolicyDeniedError, "ok", progname=helper)
        self.assertEqual(error.step, "spawn")
        self.assertIn("permission denied", str(error))

    def test_bad_arguments_run_nothing(self) -> None:
        """Bad ports, addresses, timeouts and request lists fail before any helper runs."""
        runs = self.run_log()
        self.assertRaises(ValueError, listen, 70000, progname=FAKE, direct=False)
        self.assertRaises(ValueError, listen, 80, ip="localhost", progname=FAKE, direct=False)
        self.assertRaises(TypeError, listen, "80", progname=FAKE, direct=False)
        for timeout in (0, -1, True, float("nan")):
            self.assertRaises(ValueError, listen, 0, progname=FAKE, direct=False, timeout=timeout)
        self.assertRaises(ValueError, listen_many, [], progname=FAKE, direct=False)
        self.assertRaises(TypeError, listen_many, [80], progname=FAKE, direct=False)
        self.assertRaises(
            ValueError, listen_many, [SocketRequest(0)] * 254, progname=FAKE, direct=False
        )
        self.assertEqual(runs(), [])


class TimeoutTests(ClientTestCase):
    """A helper that does not answer in time is killed and reaped."""

    def test_huge_timeouts(self) -> None:
        """
        A huge or infinite timeout ("wait as long as it takes") is either refused up front with
        a ValueError, before any helper runs, or honoured: never an OverflowError from the wait.
        """
        runs = self.run_log()
        for timeout in (float("inf"), 1e10, 3e6):
            before = len(runs())
            try:
                sock = listen(0, ip="127.0.0.1", progname=FAKE, direct=False, timeout=timeout)
            except ValueError:
                self.assertEqual(len(runs()), before, f"timeout={timeout}: a helper ran")
            else:
                sock.close()

    def test_hang(self) -> None:
        """A hung helper: HelperTimeoutError within about the timeout; no zombie, no fd."""
        started = time.monotonic()
        error = self.assertFailsWith(HelperTimeoutError, "hang", timeout=0.5)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 1.5)
        self.assertEqual((error.errno, error.step), (errno.ETIMEDOUT, "timeout"))
        self.assertIn("0.5 s", str(error))
        self.assertIn("killed", str(error))

    def test_answer_then_hang(self) -> None:
        """A helper that answers but never exits times out; the fds it sent are closed."""
        self.assertFailsWith(HelperTimeoutError, "ok-then-hang", timeout=0.5)

    def test_closed_channel_then_hang(self) -> None:
        """
        A helper that closes its end of the channel and keeps running times out, and the wait
        does not spin on the closed channel meanwhile: it reads the channel a few times, not
        thousands, and uses well under half a CPU.
        """
        real_receive = procket_twisted._client.spawn.receive_packets
        reads = []

        def counting_receive(channel: socket.socket) -> Any:
            reads.append(1)
            return real_receive(channel)

        self.patch(procket_twisted._client.spawn, "receive_packets", counting_receive)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        self.assertFailsWith(HelperTimeoutError, "close-and-hang", timeout=1.0)
        elapsed = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.assertLess(
            len(reads), 50, f"the channel was read {len(reads)} times in {elapsed:.2f} s"
        )
        self.assertLess(cpu, elapsed / 2, f"{cpu:.2f} s of CPU in {elapsed:.2f} s of waiting")


class InterruptTests(ClientTestCase):
    """KeyboardInterrupt while waiting: the helper is killed and reaped, every fd closed."""

    def test_interrupted_poll(self) -> None:
        """Interrupted while polling a hung helper: it is killed and reaped; nothing leaks."""
        real_poll = procket_twisted._client.spawn.select.poll

        class InterruptingPoll:
            def __init__(self) -> None:
                self.poller = real_poll()

            def register(self, *args: Any) -> None:
                self.poller.register(*args)

            def poll(self, timeout: float) -> Any:
                raise KeyboardInterrupt()

        self.patch(procket_twisted._client.spawn.select, "poll", InterruptingPoll)
        self.mode("hang")
        self.assertLeavesNothing(
            lambda: self.assertRaises(
                KeyboardInterrupt, listen, 0, ip="127.0.0.1", progname=FAKE, direct=False
            )
        )

    def test_interrupted_receive(self) -> None:
        """Interrupted while receiving the answer: the helper is reaped; nothing leaks."""

        def interrupted(channel: socket.socket) -> Any:
            raise KeyboardInterrupt()

        self.patch(procket_twisted._client.spawn, "receive_packets", interrupted)
        self.mode("ok-then-hang")
        self.assertLeavesNothing(
            lambda: self.assertRaises(
                KeyboardInterrupt, listen, 0, ip="127.0.0.1", progname=FAKE, direct=False
            )
        )


class LeakTests(ClientTestCase):
    """Many calls, mixed outcomes: the fd table and the process table end as they began."""

    def test_thirty_mixed_calls(self) -> None:
        """30 calls (successes, errors, crashes, bad replies, a timeout) leak no fd, no child."""
        modes = [
            "ok",
            "error-bind",
            "crash",
            "wrong-socket",
            "not-a-socket",
            "garbage",
            "wrong-count",
            "missing-fds",
            "sudo-password",
            "error-policy",
        ]
        outcomes = []

        def calls() -> None:
            for number in range(30):
                mode = modes[number % len(modes)]
                self.mode(mode if number != 29 else "hang")
                try:
                    if number % 3 == 0:
                        sockets = listen_many(
                            [
                                SocketRequest(0, ip="127.0.0.1"),
                                SocketRequest(0, "udp", "127.0.0.1"),
                            ],
                            progname=FAKE,
                            direct=False,
                            timeout=0.3 if number == 29 else 5,
                        )
                    else:
                        sockets = [
                            listen(
                                0,
                                "udp" if number % 2 else "tcp",
                                "127.0.0.1",
                                progname=FAKE,
                                direct=False,
                                timeout=0.3 if number == 29 else 5,
                            )
                        ]
                except ProcketError as error:
                    outcomes.append(type(error).__name__)
                else:
                    outcomes.append("ok")
                    for sock in sockets:
                        sock.close()

        self.assertLeavesNothing(calls)
        self.assertEqual(len(outcomes), 30)
        self.assertEqual(outcomes.count("ok"), 3)
        self.assertEqual(outcomes[-1], "HelperTimeoutError")


class LeastPrivilegeTests(ClientTestCase):
    """What needs no privilege is opened in this process, and no helper runs for it."""

    def test_port_zero_direct(self) -> None:
        """listen(0) works with a helper that does not exist: none was run."""
        sock = self.listen(0, ip="127.0.0.1", progname=MISSING_HELPER, direct=True)
        self.assertNotEqual(sock.getsockname()[1], 0)
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))

    def test_high_port_direct(self) -> None:
        """A free high port works with a helper that does not exist, TCP and UDP."""
        port = free_port()
        sock = self.listen(port, ip="127.0.0.1", progname=MISSING_HELPER, direct=True)
        self.assertEqual(sock.getsockname(), ("127.0.0.1", port))
        port = free_port(socket.SOCK_DGRAM)
        udp = self.listen(port, "udp", progname=MISSING_HELPER, direct=True)
        self.assertEqual(udp.getsockname(), ("0.0.0.0", port))

    def test_short_way_is_the_whole_way(self) -> None:
        """
        listen's short way (TCP or UDP on an IPv4 address with no socket option, bound here at
        once) gives the socket the whole way gives (asked for with an option that changes
        nothing), and leaves every unusual argument to the whole way, which refuses it as always:
        True or 70000 as a port, a name (never resolved) or another spelling of an IPv4 address,
        a UDP backlog, a timeout of 0.
        """

        def facts(sock: socket.socket) -> List[object]:
            return [
                sock.family, sock.type, sock.proto, sock.getsockname()[0], sock.getblocking(),
                sock.get_inheritable(), sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
            ]  # fmt: skip

        def no_request(*args: object, **kwargs: object) -> SocketRequest:
            raise AssertionError("the short way makes no request")

        for protocol, ip in (("tcp", "127.0.0.1"), ("udp", None), ("tcp", None)):
            kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
            self.patch(procket_twisted._client.api, "SocketRequest", no_request)
            short = self.listen(free_port(kind), protocol, ip, progname=MISSING_HELPER, direct=True)
            self.patch(procket_twisted._client.api, "SocketRequest", SocketRequest)
            whole = self.listen(free_port(kind), protocol, ip, reuseport=False, direct=True)
            self.assertEqual(facts(short), facts(whole))
        refused = [
            (TypeError, (True,), {}), (ValueError, (70000,), {}),
            (ValueError, (0,), {"ip": "localhost"}), (ValueError, (0,), {"ip": "127.1"}),
            (ValueError, (0, "udp"), {"backlog": 5}), (ValueError, (0,), {"timeout": 0}),
            (ValueError, (0, "sctp"), {}),
        ]  # fmt: skip
        for error, args, kwargs in refused:
            with self.assertRaises(error, msg=(args, kwargs)):
                listen(*args, progname=MISSING_HELPER, **kwargs)

    def test_direct_false_asks_the_helper(self) -> None:
        """With direct=False the same calls need the helper: HelperNotFoundError."""
        for port in (0, free_port()):
            self.assertFailsWith(
                HelperNotFoundError,
                "ok",
                port,
                "tcp",
                "127.0.0.1",
                progname=MISSING_HELPER,
                direct=False,
            )

    def test_direct_error_is_socket_error(self) -> None:
        """A direct bind to a busy port is the same SocketError (EADDRINUSE) as from the helper."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        error = self.assertFailsWith(
            SocketError, "ok", port, "tcp", "127.0.0.1", progname=MISSING_HELPER, direct=True
        )
        self.assertEqual((error.errno, error.step, error.index), (errno.EADDRINUSE, "bind", 1))

    def privileged_below(self) -> "tuple[int, int]":
        """
        Two free ports, LOW < HIGH, with this process made to treat ports below HIGH as
        privileged (so LOW goes to the helper, which as a fake can still bind it).
        """
        ports: Set[int] = set()
        while len(ports) < 2:
            ports.add(free_port())
        low, high = sorted(ports)
        self.patch(procket_twisted._client.request, "unprivileged_port_start", lambda: high)
        self.patch(
            procket_twisted._client.direct,
            "has_capability",
            lambda capability: capability != CAP_NET_BIND_SERVICE,
        )
        # As if no kernel grant could stand for the capability (test_kernel_grant_attempt).
        self.patch(procket_twisted._client.direct, "_GRANTABLE_KINDS", ())
        return low, high

    def refuse_binds_here(self) -> List[int]:
        """
        Make every bind tried in this process fail with EACCES, as the kernel refuses one that
        no grant covers, in both ways that bind here (listen's short way and a request's
        C{open_here}, which share L{open_inet}).

        @return: the ports tried since, in order.
        """
        tried: List[int] = []

        def refused(identity: Any, address: Any, backlog: int, request: Any = None) -> Any:
            tried.append(address[1])
            raise OpenInetError("bind", errno.EACCES)

        self.patch(procket_twisted._client.api, "open_inet", refused)
        self.patch(procket_twisted._client.request, "open_inet", refused)
        return tried

    def test_kernel_grant_attempt(self) -> None:
        """
        A TCP or UDP socket that lacks only CAP_NET_BIND_SERVICE is tried here first, as a kernel
        grant would let it bind: when the bind succeeds (this test runs as root, which stands in
        for the grant) no helper runs; when the kernel refuses (EACCES), the helper is asked.
        """
        runs = self.run_log()
        ports: Set[int] = set()
        while len(ports) < 2:
            ports.add(free_port())
        low, high = sorted(ports)
        self.patch(procket_twisted._client.request, "unprivileged_port_start", lambda: high)
        self.patch(
            procket_twisted._client.direct,
            "has_capability",
            lambda capability: capability != CAP_NET_BIND_SERVICE,
        )
        if not procket_twisted._client.system.has_bind_capability():
            raise self.skipTest("this process cannot bind a privileged port (as a grant would)")
        sock = self.listen(low, ip="127.0.0.1", direct=True)
        self.assertEqual((sock.getsockname()[1], runs()), (low, []))
        sock.close()
        tried = self.refuse_binds_here()
        ways = {  # listen's short way, and the batch's
            "listen": lambda: self.listen(low, ip="127.0.0.1", direct=True),
            "listen_many": lambda: self.listen_many(
                [SocketRequest(low, ip="127.0.0.1")], direct=True
            )[0],
        }
        for count, way in enumerate(ways.values(), 1):
            del tried[:]
            sock = way()
            self.assertEqual((len(runs()), tried[:1]), (count, [low]))
            sock.close()
        self.patch(procket_twisted._client.api, "open_inet", open_inet)
        self.patch(procket_twisted._client.request, "open_inet", open_inet)
        self.listen(low, ip="127.0.0.1", direct=False).close()  # direct=False: never tried here
        self.assertEqual(len(runs()), 3)

    def test_mixed_direct_and_helper(self) -> None:
        """listen_many opens the direct ones here, runs the helper once for the rest, in order."""
        runs = self.run_log()
        low, high = self.privileged_below()
        requests = [
            SocketRequest(high, ip="127.0.0.1"),
            SocketRequest(low, ip="127.0.0.1"),
            SocketRequest(0, "udp", "127.0.0.1"),
        ]
        sockets = self.listen_many(requests, direct=True)
        self.assertEqual([sock.getsockname()[1] for sock in sockets[:2]], [high, low])
        self.assertEqual(sockets[2].type, socket.SOCK_DGRAM)
        self.assertEqual(runs(), [["v1", requests[1].helper_argument()]])

    def test_error_index_is_original_position(self) -> None:
        """An error from the helper's part names the socket's position in the caller's list."""
        runs = self.run_log()
        low, high = self.privileged_below()
        requests = [
            SocketRequest(high, ip="127.0.0.1"),
            SocketRequest(0, "udp", "127.0.0.1"),
            SocketRequest(low, ip="127.0.0.1"),
        ]
        self.mode("error-bind")

        def attempt() -> SocketError:
            error: SocketError = self.assertRaises(
                SocketError, listen_many, requests, progname=FAKE, direct=True
            )
            return error

        error = self.assertLeavesNothing(attempt)
        self.assertEqual(error.index, 3)
        self.assertIn(f"port {low}", str(error))
        self.assertEqual(len(runs()), 1)
        # The sockets opened directly were closed: their ports are free again.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", high))

    def test_validate_index_is_original_position(self) -> None:
        """A bad socket from the helper's part also carries the caller's position."""
        low, _ = self.privileged_below()
        self.mode("wrong-socket")
        error = self.assertRaises(
            HelperFailedError,
            listen_many,
            [SocketRequest(0, ip="127.0.0.1"), SocketRequest(low, ip="127.0.0.1")],
            progname=FAKE,
            direct=True,
        )
        self.assertEqual((error.step, error.index), ("validate", 2))

    def test_denied_direct_attempt_falls_back_to_helper(self) -> None:
        """When binding here is denied after all (EACCES, e.g. by an LSM), the helper is asked."""
        runs = self.run_log()

        self.refuse_binds_here()
        sock = self.listen(0, ip="127.0.0.1", direct=True)
        self.assertEqual(sock.type, socket.SOCK_STREAM)
        self.assertEqual(len(runs()), 1)

    def test_missing_helper_closes_direct_sockets(self) -> None:
        """When the helper part cannot run, the sockets already opened here are closed."""
        low, high = self.privileged_below()
        requests = [SocketRequest(high, ip="127.0.0.1"), SocketRequest(low, ip="127.0.0.1")]
        self.assertLeavesNothing(
            lambda: self.assertRaises(
                HelperNotFoundError, listen_many, requests, progname=MISSING_HELPER, direct=True
            )
        )

    def test_root_binds_privileged_ports_itself(self) -> None:
        """As root (CAP_NET_BIND_SERVICE) a port below 1024 is opened directly, no helper."""
        if not procket_twisted._client.direct.has_bind_capability():
            raise self.skipTest("this process has no CAP_NET_BIND_SERVICE")
        for port in range(1023, 900, -1):
            try:
                sock = self.listen(port, ip="127.0.0.1", progname=MISSING_HELPER, direct=True)
            except SocketError as error:
                if error.errno == errno.EADDRINUSE:
                    continue
                raise
            self.assertEqual(sock.getsockname(), ("127.0.0.1", port))
            return
        self.fail("no free port from 1023 down to 901")
