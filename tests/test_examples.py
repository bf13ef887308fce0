"""
The examples, run as nobody against the setuid helper and checked with the real clients a user
would use: curl (HTTP, HTTPS, IPv6), dig (DNS over UDP and TCP), and sockets (echo).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    TEST_UID,
    examples_directory,
    free_port,
    install_prefix,
    process_users,
    server_output,
    skip_unless_privileged,
    start_unprivileged,
    wait_for_tcp,
)


def _tool(testcase: SynchronousTestCase, name: str) -> str:
    path = shutil.which(name)
    if path is None:
        testcase.fail(f"{name} is not installed; scripts/test installs it (scripts/packages.sh)")
    return path


class ExampleTests(SynchronousTestCase):
    """Each example serves a privileged port as nobody, and no root process runs meanwhile."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}
        self.site = tempfile.mkdtemp(prefix="procket-site-")
        self.addCleanup(shutil.rmtree, self.site)
        os.chmod(self.site, 0o755)
        with open(os.path.join(self.site, "index.html"), "w") as page:
            page.write("served by procket\n")
        os.chmod(os.path.join(self.site, "index.html"), 0o644)
        self.twistd = os.path.join(os.path.dirname(sys.executable), "twistd")

    def assertNoRootServers(self, marker: str) -> None:
        """Every process running MARKER is nobody's, and no helper process remains."""
        servers = process_users(marker)
        self.assertTrue(servers, f"no process runs {marker}")
        self.assertEqual(set(servers.values()), {TEST_UID}, servers)
        self.assertEqual(process_users(self.prefix.helper), {})

    def curl(self, *arguments: str) -> str:
        result = subprocess.run(
            [_tool(self, "curl"), "-sS", "--max-time", "10", *arguments],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_twistd_web_tcp_and_tcp6(self) -> None:
        """twistd web --listen procket:tcp:PORT and procket:tcp6 serve files to curl, as nobody."""
        port = free_port()
        server = start_unprivileged(self, [
            self.twistd, "-n", "--pidfile=", "web",
            "--listen", f"procket:tcp:{port}:interface=127.0.0.1",
            "--listen", f"procket:tcp6:{port}:interface=\\:\\:1",
            "--path", self.site,
        ], self.environment)  # fmt: skip
        wait_for_tcp(self, server, "127.0.0.1", port)
        wait_for_tcp(self, server, "::1", port)
        self.assertEqual(self.curl(f"http://127.0.0.1:{port}/"), "served by procket\n")
        self.assertEqual(self.curl(f"http://[::1]:{port}/"), "served by procket\n")
        self.assertNoRootServers(self.site)

    def test_twistd_web_https(self) -> None:
        """procket:ssl with a generated certificate answers curl --cacert over TLS, as nobody."""
        subprocess.run(
            [sys.executable, os.path.join(examples_directory(), "make_certificate.py"), self.site],
            check=True,
            capture_output=True,
        )
        for name in ("key.pem", "cert.pem"):
            os.chmod(os.path.join(self.site, name), 0o644)
        port = free_port()
        key, cert = os.path.join(self.site, "key.pem"), os.path.join(self.site, "cert.pem")
        server = start_unprivileged(self, [
            self.twistd, "-n", "--pidfile=", "web",
            "--listen", f"procket:ssl:{port}:privateKey={key}:certKey={cert}:interface=127.0.0.1",
            "--path", self.site,
        ], self.environment)  # fmt: skip
        wait_for_tcp(self, server, "127.0.0.1", port)
        page = self.curl("--cacert", cert, f"https://localhost:{port}/")
        self.assertEqual(page, "served by procket\n")
        self.assertNoRootServers(self.site)

    def test_bad_endpoint_string_names_the_bad_part(self) -> None:
        """A malformed endpoint string stops twistd with an error line naming the bad part."""
        server = start_unprivileged(self, [
            self.twistd, "-n", "--pidfile=", "web", "--listen", "procket:tcp:8o", "--path", self.site,
        ], self.environment)  # fmt: skip
        self.assertEqual(server.wait(30), 1)
        self.assertIn("procket:tcp: port '8o' is not a number", server_output(server))

    def test_dns_tac_answers_dig(self) -> None:
        """examples/dns.tac answers dig over UDP and TCP on a privileged port, as nobody."""
        dig = _tool(self, "dig")
        port = free_port()
        tac = os.path.join(examples_directory(), "dns.tac")
        server = start_unprivileged(self, [self.twistd, "-n", "--pidfile=", "-y", tac], {
            **self.environment, "PROCKET_DNS_PORT": str(port),
        })  # fmt: skip
        wait_for_tcp(self, server, "127.0.0.1", port)

        def ask(*options: str) -> str:
            result = subprocess.run(
                [dig, "+short", "+time=5", "+tries=1", "-p", str(port), "@127.0.0.1", *options],
                capture_output=True,
                text=True,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            return result.stdout.strip()

        self.assertEqual(ask("example.test", "A"), "127.0.0.1")
        self.assertEqual(ask("+notcp", "example.test", "AAAA"), "::1")
        self.assertEqual(ask("+tcp", "example.test", "A"), "127.0.0.1")
        self.assertNoRootServers(tac)

    def test_echo_tcp_and_udp(self) -> None:
        """examples/echo.py echoes over TCP and UDP on one privileged port, as nobody."""
        port = free_port()
        echo = os.path.join(examples_directory(), "echo.py")
        server = start_unprivileged(
            self, [sys.executable, echo, str(port), "--interface", "127.0.0.1"], self.environment
        )
        wait_for_tcp(self, server, "127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as stream:
            stream.sendall(b"over tcp")
            self.assertEqual(stream.recv(100), b"over tcp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagrams:
            datagrams.settimeout(5)
            datagrams.sendto(b"over udp", ("127.0.0.1", port))
            self.assertEqual(datagrams.recv(100), b"over udp")
        self.assertIn(f"as uid {TEST_UID}", server_output(server))
        self.assertNoRootServers(echo)


class FrameWatchTests(SynchronousTestCase):
    """examples/framewatch.py: a packet socket on lo sees the frames of loopback traffic."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}
        self.watcher = os.path.join(examples_directory(), "framewatch.py")

    def test_sees_loopback_traffic(self) -> None:
        """As nobody, framewatch on lo prints the UDP datagrams sent to 127.0.0.1 and ::1."""
        self.prefix.write_policy("allow kind=packet ethertype=0x3 device=lo\n")
        watcher = start_unprivileged(
            self, [sys.executable, self.watcher, "lo", "--count", "20"], self.environment
        )
        deadline = time.monotonic() + 20
        while "listening on lo" not in server_output(watcher):
            self.assertIsNone(watcher.poll(), server_output(watcher))
            self.assertLess(time.monotonic(), deadline, server_output(watcher))
            time.sleep(0.05)
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"watched", (address, 9))
        while not ("127.0.0.1 > 127.0.0.1: udp" in server_output(watcher)
                   and "::1 > ::1: udp" in server_output(watcher)):  # fmt: skip
            self.assertLess(time.monotonic(), deadline, server_output(watcher))
            time.sleep(0.05)

    def test_refused_by_the_default_policy(self) -> None:
        """Under the default policy it stops with the policy's words, not a traceback."""
        result = subprocess.run(
            ["setpriv", f"--reuid={TEST_UID}", "--regid=65534", "--clear-groups", sys.executable,
             self.watcher, "lo", "--count", "1"],
            capture_output=True, text=True, timeout=60, cwd="/",
            env={"PATH": "/usr/bin:/bin", **self.environment},
        )  # fmt: skip
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("no rule allows it", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
