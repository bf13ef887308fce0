"""
The smoke test scripts/matrix runs on every Python and Twisted it tries: as nobody, through the
installed setuid helper, a real ``procket:tcp`` port and a real ``procket:udp`` port carry
traffic, and ``procket:ssl`` serves HTTPS from a twisted.web Site (a factory that negotiates
ALPN, which is where old Twisted and new pyOpenSSL part ways: every handshake failed with
"Context has already been used" before setup.cfg bounded pyOpenSSL).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    TEST_UID,
    free_port,
    install_prefix,
    run_unprivileged,
    skip_unless_privileged,
)

#: Runs the code's `main(reactor)` coroutine on the real reactor and reports what it returns.
PRELUDE = """
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.logger import formatEvent, globalLogBeginner
from procket_twisted.endpoints import datagramEndpointFromString

errors = []  # what Twisted logged as errors (a failed TLS handshake is only logged)

def keepErrors(event):
    failure = event.get("log_failure") or event.get("failure")  # new-style, legacy log.err
    if failure is not None:
        errors.append(f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300])
    elif event.get("isError"):
        errors.append(formatEvent(event)[:300])

globalLogBeginner.beginLoggingTo([keepErrors], redirectStandardIO=False)

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

class Collect(protocol.Protocol):  # sends SEND, fires done with all it got when the peer closes
    def __init__(self, send, close=True):
        self.send, self.close, self.received, self.done = send, close, b"", defer.Deferred()
    def connectionMade(self):
        self.transport.write(self.send)
    def dataReceived(self, data):
        self.received += data
        if self.close and self.received == self.send:
            self.transport.loseConnection()
    def connectionLost(self, reason):
        self.done.callback(self.received.decode("latin-1"))

class Keep(protocol.DatagramProtocol):  # fires got with the first datagram's text
    def __init__(self):
        self.got = defer.Deferred()
    def datagramReceived(self, data, address):
        self.got.callback(data.decode())

def run(main):
    def start(reactor):
        return defer.ensureDeferred(main(reactor)).addCallback(report)
    task.react(start)
"""


def escaped(path: str) -> str:
    """PATH as a value inside an endpoint string (colons, equals signs and backslashes escaped)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class SmokeTests(SynchronousTestCase):
    """procket:tcp, procket:udp and procket:ssl as nobody, through the setuid helper."""

    maxDiff = None

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)

    def run_twisted(self, code: str) -> dict:
        return run_unprivileged(
            self, PRELUDE + textwrap.dedent(code), {"PROCKET_HELPER": self.prefix.helper}
        )

    def test_tcp_and_udp(self) -> None:
        """A privileged TCP port echoes a real client's bytes; a privileged UDP port receives."""
        tcp, udp = free_port(), free_port()
        result = self.run_twisted(f"""
            async def main(reactor):
                port = await serverFromString(
                    reactor, "procket:tcp:{tcp}:interface=127.0.0.1"
                ).listen(protocol.Factory.forProtocol(Echo))
                client = Collect(b"hello over tcp")
                await connectProtocol(clientFromString(reactor, "tcp:127.0.0.1:{tcp}"), client)
                echoed = await client.done
                keep = Keep()
                datagrams = await datagramEndpointFromString(
                    reactor, "procket:udp:{udp}:interface=127.0.0.1"
                ).listen(keep)
                sender = reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")
                sender.write(b"hello over udp", ("127.0.0.1", {udp}))
                got = await keep.got
                facts = {{"uid": os.getuid(), "tcp": [port.getHost().port, echoed],
                          "udp": [datagrams.getHost().port, got]}}
                for listening in (port, datagrams, sender):
                    await listening.stopListening()
                return facts
            run(main)
        """)
        self.assertEqual(
            result,
            {"uid": TEST_UID, "tcp": [tcp, "hello over tcp"], "udp": [udp, "hello over udp"]},
        )

    def test_tls_site(self) -> None:
        """procket:ssl serves a twisted.web Site (ALPN-negotiating) to a verifying TLS client."""
        try:
            from .test_parser import writeSelfSigned
        except ImportError as error:  # pragma: no cover - cryptography comes with Twisted[tls]
            raise self.skipTest(f"no TLS here: {error}") from error
        directory = tempfile.mkdtemp(prefix="procket-smoke-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chmod(directory, 0o755)
        key, certificate = writeSelfSigned(directory)
        os.chmod(key, 0o644)  # a throwaway key, for the test user to read
        port = free_port()
        description = (
            f"procket:ssl:{port}:interface=127.0.0.1:privateKey={escaped(key)}:"
            f"certKey={escaped(certificate)}"
        )
        result = self.run_twisted(f"""
            from twisted.internet.endpoints import SSL4ClientEndpoint
            from twisted.internet.ssl import Certificate, optionsForClientTLS
            from twisted.web.resource import Resource
            from twisted.web.server import Site
            from twisted.web.static import Data

            async def main(reactor):
                root = Resource()
                root.putChild(b"", Data(b"hello over tls", "text/plain"))
                listening = await serverFromString(reactor, {description!r}).listen(Site(root))
                with open({certificate!r}, "rb") as stream:
                    trust = Certificate.loadPEM(stream.read())
                client = Collect(b"GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n", close=False)
                endpoint = SSL4ClientEndpoint(
                    reactor, "127.0.0.1", {port}, optionsForClientTLS("localhost", trustRoot=trust)
                )
                await connectProtocol(endpoint, client)
                response = await client.done
                await listening.stopListening()
                return {{"uid": os.getuid(), "status": response.split("\\r\\n", 1)[0],
                         "body": response.rsplit("\\r\\n\\r\\n", 1)[-1], "errors": errors}}
            run(main)
        """)
        self.assertEqual(
            result,
            {"uid": TEST_UID, "status": "HTTP/1.0 200 OK", "body": "hello over tls", "errors": []},
        )
