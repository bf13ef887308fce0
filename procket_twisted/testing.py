"""
Testing code that uses procket, without root and without the helper.

C{useFakeHelper(testCase)} replaces the helper for the rest of the test: every acquisition (an
endpoint's C{listen}, C{acquireEndpoints}, C{acquireSockets}, and the plain C{listen} and
C{listen_many}) gets a real socket on the same address, on a port the kernel picks (an
unprivileged process cannot bind the real privileged port), so a test can connect to it through
C{listeningPort.getHost().port} or C{sock.getsockname()}. Requests are recorded, and a failure can
be queued. With trial::

    import errno

    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.error import CannotListenError
    from twisted.internet.protocol import Factory, Protocol
    from twisted.trial import unittest

    from procket_twisted import SocketError
    from procket_twisted.testing import useFakeHelper

    class MyServerTests(unittest.TestCase):
        @defer.inlineCallbacks
        def test_serves(self):
            helper = useFakeHelper(self)
            endpoint = serverFromString(reactor, "procket:tcp:80")
            port = yield endpoint.listen(Factory.forProtocol(Protocol))
            self.addCleanup(port.stopListening)  # really listening, on port.getHost().port
            self.assertEqual(helper.requests[0][0].port, 80)

        def test_port_taken(self):
            taken = SocketError("in use", errno=errno.EADDRINUSE, step="bind")
            useFakeHelper(self).failNext(taken)
            listening = serverFromString(reactor, "procket:tcp:80").listen(Factory())
            return self.assertFailure(listening, CannotListenError)

With pytest, the C{procket_helper} fixture (a pytest plugin this package installs) is the same
L{FakeHelper}, undone when the test ends::

    import procket_twisted

    def test_serves(procket_helper):
        sock = procket_twisted.listen(80)  # bound to a port the kernel picked
        assert sock.getsockname()[1] != 80
        assert procket_helper.requests[0][0].port == 80
        sock.close()

It works with C{MemoryReactor} too (the adopted descriptor is then only recorded).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, cast

from ._client.direct import open_directly
from ._client.errors import HelperFailedError, ProcketError
from ._client.kinds import AnyRequest
from ._client.request import SocketRequest
from ._client.standin import install

__all__ = ["FakeHelper", "useFakeHelper"]


class FakeHelper:
    """
    Stands in for the helper: grants every TCP and UDP request on a kernel-chosen port (same
    address, same options), and records it. Raw, packet and TUN/TAP requests fail with a
    L{HelperFailedError} that says so: they need the privilege a test does not have.

    @ivar requests: the requests of each acquisition, in order (a list of lists).
    """

    def __init__(self) -> None:
        self.requests: List[List[AnyRequest]] = []
        self._failures: List[ProcketError] = []

    def failNext(self, error: ProcketError) -> None:
        """Make the next acquisition fail with ERROR (queued: call again for the one after)."""
        self._failures.append(error)

    def open(self, requests: List[AnyRequest]) -> List[Any]:
        """
        What an acquisition does instead of running the helper.

        @return: real sockets on port 0, in request order.
        @raise ProcketError: the queued failure, or what the kernel refused (nothing stays open).
        """
        self.requests.append(list(requests))
        if self._failures:
            raise self._failures.pop(0)
        wanted = [cast(SocketRequest, r) for r in requests if r.kind in ("tcp", "udp")]
        others = [r.describe() for r in requests if r.kind not in ("tcp", "udp")]
        if others:
            raise HelperFailedError(
                f"the fake helper opens TCP and UDP sockets only, not {', '.join(others)}; "
                "test those with the real helper, or replace the endpoint",
                step="fake",
            )
        sockets: List[Any] = []
        try:
            for index, request in enumerate(wanted, 1):
                sockets.append(open_directly(dataclasses.replace(request, port=0), index))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def install(self) -> Callable[[], None]:
        """
        Stand in for the helper from now on, in this process.

        @return: a function that undoes it.
        """
        return install(self.open)


def useFakeHelper(testCase: Any) -> FakeHelper:
    """
    Replace the helper with a L{FakeHelper} for every acquisition until TESTCASE ends (a trial or
    unittest TestCase: it is undone with C{addCleanup}).
    """
    fake = FakeHelper()
    testCase.addCleanup(fake.install())
    return fake
