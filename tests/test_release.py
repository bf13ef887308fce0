"""
What is acquired and not wanted is given back: an acquired endpoint's C{close} closes its
descriptor at once, L{release} closes a whole batch, and a second C{listen} (after a listen or a
close) fails with C{AlreadyListened} naming the endpoint and what to do.
"""

from __future__ import annotations

import errno
import os

from twisted.internet import protocol
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import AlreadyListened
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from procket_twisted import SocketRequest
from procket_twisted.endpoints import AdoptedStreamEndpoint, acquireEndpoints, release
from procket_twisted.testing import useFakeHelper


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as caught:
        assert caught.errno == errno.EBADF, caught
        return False
    return True


class ReleaseTests(SynchronousTestCase):
    """close, release and the second listen, over real sockets from the fake helper."""

    def setUp(self) -> None:
        useFakeHelper(self)
        self.reactor = MemoryReactor()

    def _acquire(self, *requests: SocketRequest) -> list:
        return self.successResultOf(acquireEndpoints(self.reactor, list(requests)))

    def test_close_closes_the_descriptor_now(self) -> None:
        """close() closes the endpoint's descriptor; a later listen says it was closed."""
        (tcp,) = self._acquire(SocketRequest(80))
        self.assertIsInstance(tcp, AdoptedStreamEndpoint)
        self.assertIsInstance(tcp, AdoptedStreamServerEndpoint)
        self.assertTrue(_isOpen(tcp.fileno))
        tcp.close()
        self.assertFalse(_isOpen(tcp.fileno))
        tcp.close()  # twice is harmless
        failure = self.failureResultOf(tcp.listen(protocol.Factory()), AlreadyListened)
        self.assertIn("closed already", str(failure.value))
        self.assertIn("acquire another", str(failure.value))

    def test_release_closes_a_batch(self) -> None:
        """release() closes every endpoint of a batch that was not listened on, of each kind."""
        endpoints = self._acquire(SocketRequest(80), SocketRequest(53, protocol="udp"))
        fds = [endpoint.fileno for endpoint in endpoints]
        self.assertTrue(all(_isOpen(fd) for fd in fds))
        release(endpoints)
        self.assertEqual([_isOpen(fd) for fd in fds], [False, False])

    def test_second_listen_names_the_endpoint(self) -> None:
        """A second listen fails, naming the endpoint; close after listening leaves the port be."""
        (tcp,) = self._acquire(SocketRequest(80))
        self.successResultOf(tcp.listen(protocol.Factory()))
        self.assertEqual(len(self.reactor.adoptedPorts), 1)
        tcp.close()  # the port owns what was adopted: nothing to close
        failure = self.failureResultOf(tcp.listen(protocol.Factory()), AlreadyListened)
        self.assertIn("listened on already", str(failure.value))
        self.assertIn("AdoptedStreamEndpoint fd=", str(failure.value))
