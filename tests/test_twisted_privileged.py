"""
The Twisted layer with the real reactor, as nobody, against the setuid helper: errors arrive as
CannotListenError with the typed error and its errno, cancelling kills the helper and leaves
nothing behind, and one helper run can serve many endpoints.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    TEST_UID,
    free_port,
    install_prefix,
    process_users,
    run_unprivileged,
    skip_unless_privileged,
    wait_for_tcp,
)

#: Runs the code's `main(reactor)` coroutine with the real reactor and reports its result.
TWISTED_PRELUDE = """
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from procket_twisted.endpoints import *

def run(main):
    def start(reactor):
        return defer.ensureDeferred(main(reactor)).addCallback(report)
    task.react(start)

class Keep(DatagramProtocol):  # fires got with the first datagram's text
    def __init__(self):
        self.got = defer.Deferred()
    def datagramReceived(self, data, address):
        self.got.callback(data.decode())
"""


class TwistedAsNobodyTests(SynchronousTestCase):
    """Endpoints driven by the real reactor in a process running as nobody."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)

    def run_twisted(self, code: str) -> dict:
        return run_unprivileged(
            self, TWISTED_PRELUDE + textwrap.dedent(code), {"PROCKET_HELPER": self.prefix.helper}
        )

    def test_listen_errors_are_cannot_listen_errors(self) -> None:
        """A taken port and a denied port fail listen() with CannotListenError and the errno."""
        taken, denied = free_port(), free_port()
        self.prefix.write_policy(f"deny port={denied}\nallow kind=tcp,udp\n")
        result = self.run_twisted(f"""
            async def main(reactor):
                first = await serverFromString(reactor, "procket:tcp:{taken}:interface=127.0.0.1"
                                               ).listen(Factory.forProtocol(Protocol))
                facts = {{"uid": os.getuid(), "port": first.getHost().port}}
                for name, port in (("taken", {taken}), ("denied", {denied})):
                    try:
                        await serverFromString(reactor, f"procket:tcp:{{port}}:interface=127.0.0.1"
                                               ).listen(Factory.forProtocol(Protocol))
                    except CannotListenError as error:
                        facts[name] = [error.port, error.interface,
                                       type(error.socketError).__name__, error.socketError.errno]
                await first.stopListening()
                return facts
            run(main)
        """)
        self.assertEqual(result["uid"], TEST_UID)
        self.assertEqual(result["port"], taken)
        self.assertEqual(result["taken"], [taken, "127.0.0.1", "SocketError", errno.EADDRINUSE])
        self.assertEqual(result["denied"], [denied, "127.0.0.1", "PolicyDeniedError", errno.EACCES])

    def test_cancel_leaves_nothing_behind(self) -> None:
        """Cancelling listen() while the helper runs kills it: no child, no fd left."""
        result = self.run_twisted("""
            async def main(reactor):
                # Inside the running reactor: before reactor.run(), listen() is synchronous.
                await task.deferLater(reactor, 0)
                before = open_fds()
                endpoint = ProcketServerEndpoint(
                    reactor, 80, "127.0.0.1", progname=["/bin/sh", "-c", "exec sleep 30"])
                pending = endpoint.listen(Factory.forProtocol(Protocol))
                await task.deferLater(reactor, 0.2)
                running = children()
                pending.cancel()
                try:
                    await pending
                except defer.CancelledError:
                    cancelled = True
                await task.deferLater(reactor, 0.5)
                return {"running": len(running), "cancelled": cancelled,
                        "children": children(), "fds_same": open_fds() == before}
            run(main)
        """)
        self.assertEqual(
            result, {"running": 1, "cancelled": True, "children": [], "fds_same": True}
        )

    def test_many_endpoints_one_helper_run(self) -> None:
        """acquireEndpoints: TCP and UDP endpoints from one helper run, each single-use."""
        tcp, udp = free_port(), free_port()
        result = self.run_twisted(f"""
            from procket_twisted import SocketRequest
            from twisted.internet.error import AlreadyListened

            async def main(reactor):
                stream, datagram = await acquireEndpoints(reactor, [
                    SocketRequest({tcp}, "tcp", "127.0.0.1"), SocketRequest({udp}, "udp", "127.0.0.1")
                ], direct=False)
                tcp_port = await stream.listen(Factory.forProtocol(Protocol))
                udp_port = await datagram.listen(DatagramProtocol())
                try:
                    await stream.listen(Factory.forProtocol(Protocol))
                except AlreadyListened:
                    again = "AlreadyListened"
                return {{"ports": [tcp_port.getHost().port, udp_port.getHost().port],
                         "again": again}}
            run(main)
        """)
        self.assertEqual(result, {"ports": [tcp, udp], "again": "AlreadyListened"})

    def test_udp_endpoint_receives(self) -> None:
        """procket:udp from datagramEndpointFromString receives a datagram on a privileged port."""
        port = free_port()
        result = self.run_twisted(f"""
            import socket as sockets

            async def main(reactor):
                protocol = Keep()
                endpoint = datagramEndpointFromString(reactor, "procket:udp:{port}:interface=127.0.0.1")
                listening = await endpoint.listen(protocol)
                sender = sockets.socket(sockets.AF_INET, sockets.SOCK_DGRAM)
                sender.sendto(b"datagram", ("127.0.0.1", {port}))
                return {{"got": await protocol.got, "port": listening.getHost().port}}
            run(main)
        """)
        self.assertEqual(result, {"got": "datagram", "port": port})


class AsyncioReactorAsNobodyTests(SynchronousTestCase):
    """The same endpoints on Twisted's asyncio reactor, as nobody, against the setuid helper."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)

    def test_tcp_tcp6_udp_errors_and_cancel(self) -> None:
        """
        On the asyncio reactor: procket:tcp and procket:tcp6 accept connections, procket:udp
        receives, a taken port is a CannotListenError with EADDRINUSE, and a cancelled listen
        leaves no child behind.
        """
        tcp, tcp6, udp = free_port(), free_port(), free_port()
        code = f"""
            from twisted.internet import asyncioreactor
            asyncioreactor.install()
            import socket as sockets
            from twisted.internet import reactor as installed

            async def main(reactor):
                await task.deferLater(reactor, 0)
                facts = {{"reactor": type(reactor).__name__}}
                factory = Factory.forProtocol(Protocol)
                await serverFromString(reactor, "procket:tcp:{tcp}:interface=127.0.0.1").listen(factory)
                await serverFromString(reactor, "procket:tcp6:{tcp6}:interface=\\:\\:1").listen(factory)
                protocol = Keep()
                await datagramEndpointFromString(reactor, "procket:udp:{udp}:interface=127.0.0.1").listen(protocol)
                for family, address, port in ((sockets.AF_INET, "127.0.0.1", {tcp}),
                                              (sockets.AF_INET6, "::1", {tcp6})):
                    client = sockets.socket(family)
                    client.setblocking(False)
                    client.connect_ex((address, port))
                    await task.deferLater(reactor, 0.05)
                    facts[address] = client.getpeername()[1]
                    client.close()
                sender = sockets.socket(sockets.AF_INET, sockets.SOCK_DGRAM)
                sender.sendto(b"asyncio", ("127.0.0.1", {udp}))
                facts["udp"] = await protocol.got
                try:
                    await serverFromString(reactor, "procket:tcp:{tcp}:interface=127.0.0.1").listen(factory)
                except CannotListenError as error:
                    facts["taken"] = error.socketError.errno
                pending = ProcketServerEndpoint(
                    reactor, 80, "127.0.0.1", progname=["/bin/sh", "-c", "exec sleep 30"]
                ).listen(factory)
                await task.deferLater(reactor, 0.2)
                pending.cancel()
                try:
                    await pending
                except defer.CancelledError:
                    pass
                await task.deferLater(reactor, 0.3)
                facts["children"] = children()
                return facts
            run(main)
        """
        result = run_unprivileged(
            self, TWISTED_PRELUDE + textwrap.dedent(code), {"PROCKET_HELPER": self.prefix.helper}
        )
        self.assertEqual(result, {"reactor": "AsyncioSelectorReactor", "127.0.0.1": tcp,
                                  "::1": tcp6, "udp": "asyncio", "taken": errno.EADDRINUSE,
                                  "children": []})  # fmt: skip


class TwistdAsRootTests(SynchronousTestCase):
    """twistd started as root with --uid and --gid: the port is opened, then root is dropped."""

    def setUp(self) -> None:
        skip_unless_privileged(self)

    def test_uid_gid_drop(self) -> None:
        """As root, procket:tcp binds directly (no helper needed), then serves as nobody."""
        port = free_port()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        server = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "--uid", "nobody", "--gid", "nogroup", "web",
             "--listen", f"procket:tcp:{port}:interface=127.0.0.1", "--path", "/usr/share"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                 "PROCKET_HELPER": "/nonexistent/procket-helper"},
        )  # fmt: skip
        self.addCleanup(lambda: (server.terminate(), server.wait()))
        wait_for_tcp(self, server, "127.0.0.1", port)
        self.assertEqual(process_users(f"procket:tcp:{port}"), {server.pid: TEST_UID})
        reply = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(reply.stdout, "200")
