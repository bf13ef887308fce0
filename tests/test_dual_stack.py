"""
"Address in use" between the two families of one process: an IPv4 socket and a dual-stack IPv6
socket on C{::} take the same port, and the error says that this process holds the other side and
how to have both (v6only, or C{::} alone), instead of blaming something else on the machine.
No privilege needed: the ports are ones the kernel picks.
"""

from __future__ import annotations

import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted import SocketError, SocketRequest


class CollisionTests(SynchronousTestCase):
    """The hint for each order of the two binds, and where it must not be given."""

    def _listening(self, family: int, host: str, v6only: bool = False) -> int:
        sock = socket.socket(family)
        self.addCleanup(sock.close)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((host, 0))
        sock.listen()
        return int(sock.getsockname()[1])

    def _refused(self, request: SocketRequest) -> str:
        with self.assertRaises(SocketError) as caught:
            request.open_here(1).close()
        self.assertEqual(caught.exception.step, "bind")
        return str(caught.exception)

    def test_dual_stack_after_ipv4(self) -> None:
        """:: (not v6only) after this process's IPv4 socket: 'this process holds the IPv4 side'."""
        port = self._listening(socket.AF_INET, "0.0.0.0")
        message = self._refused(SocketRequest(port, ip="::", v6only=False))
        self.assertIn(f"this process holds the IPv4 side of tcp port {port}", message)
        self.assertIn(f"procket:tcp6:{port}:interface=\\:\\::v6only=yes", message)
        self.assertIn("listen on :: alone", message)
        self.assertNotIn("something already uses", message)

    def test_ipv4_after_dual_stack(self) -> None:
        """IPv4 after this process's dual-stack ::, for UDP too: 'an IPv6 socket on ::'."""
        port = self._listening(socket.AF_INET6, "::")
        message = self._refused(SocketRequest(port, ip="127.0.0.1"))
        self.assertIn(f"this process holds an IPv6 socket on :: tcp port {port}", message)
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        udp.bind(("::", 0))
        udp_port = udp.getsockname()[1]
        message = self._refused(SocketRequest(udp_port, "udp"))
        self.assertIn(f"IPv6 socket on :: udp port {udp_port}", message)
        self.assertIn(f"procket:udp6:{udp_port}:", message)

    def test_v6only_needs_no_hint(self) -> None:
        """With v6only both binds succeed: the fix the hint gives works."""
        port = self._listening(socket.AF_INET, "0.0.0.0")
        SocketRequest(port, ip="::", v6only=True).open_here(1).close()

    def test_other_collisions_keep_the_plain_hint(self) -> None:
        """Same family, or a v6only IPv6 socket in the way: the plain 'something already uses'."""
        port = self._listening(socket.AF_INET, "127.0.0.1")
        self.assertIn("something already uses tcp port", self._refused(SocketRequest(port)))
        port = self._listening(socket.AF_INET6, "::", v6only=True)
        message = self._refused(SocketRequest(port, ip="::1"))
        self.assertIn("something already uses tcp port", message)

    def test_another_process_holds_the_ipv4_side(self) -> None:
        """Another process's IPv4 socket: the plain hint, plus that :: needs the IPv4 port free."""
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)  # type: ignore[union-attr]
        port = int(holder.stdout.readline())  # type: ignore[union-attr]
        message = self._refused(SocketRequest(port, ip="::", v6only=False))
        self.assertIn("something already uses tcp port", message)
        self.assertIn("on :: without v6only the IPv4 port must be free too", message)
        self.assertNotIn("this process holds", message)


#: Listens on an IPv4 port the kernel picks, prints it, and holds it until stdin closes.
_HOLDER = """
import socket, sys
sock = socket.socket()
sock.bind(("0.0.0.0", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
sys.stdin.read()
"""
