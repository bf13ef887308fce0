"""
Testing code that uses procket endpoints, without root and without the helper.

C{useFakeHelper(testCase)} replaces the helper for the rest of the test: every endpoint that
would ask the helper for a socket gets a real one on the same address, on a port the kernel picks
(an unprivileged process cannot bind the real privileged port), so a test can connect to it
through C{listeningPort.getHost().port}. Requests are recorded, and a failure can be queued::

    from procket_twisted.testing import useFakeHelper

    class MyServerTests(unittest.TestCase):
        def test_serves(self):
            helper = useFakeHelper(self)
            endpoint = serverFromString(reactor, "procket:tcp:80")
            port = yield endpoint.listen(factory)          # really listening, on port.getHost().port
            self.assertEqual(helper.requests[0][0].port, 80)

        def test_port_taken(self):
            useFakeHelper(self).failNext(SocketError("in use", errno=errno.EADDRINUSE, step="bind"))
            ...                                           # listen fails with CannotListenError

It works with C{MemoryReactor} too (the adopted descriptor is then only recorded).
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any, List

from twisted.internet import defer

from ._client.direct import open_directly
from ._client.errors import HelperFailedError, ProcketError
from ._client.request import SocketRequest
from ._twisted.endpoints import _HelperEndpoint

__all__ = ["FakeHelper", "useFakeHelper"]


class FakeHelper:
    """
    Stands in for the helper: grants every request on a kernel-chosen port, and records it.

    @ivar requests: the requests of each acquisition, in order (a list of lists).
    """

    def __init__(self) -> None:
        self.requests: List[List[SocketRequest]] = []
        self._failures: List[ProcketError] = []

    def failNext(self, error: ProcketError) -> None:
        """Make the next acquisition fail with ERROR (queued: call again for the one after)."""
        self._failures.append(error)

    def acquire(
        self, reactor: Any, requests: Any, **options: Any
    ) -> defer.Deferred[List[socket.socket]]:
        """What endpoints call instead of the helper: real sockets on port 0, or a queued error."""
        wanted = list(requests)
        self.requests.append(wanted)
        if self._failures:
            return defer.fail(self._failures.pop(0))
        others = [r.describe() for r in wanted if r.kind not in ("tcp", "udp")]
        if others:
            # Raw, packet and TUN/TAP need the privilege a test does not have: no stand-in.
            return defer.fail(
                HelperFailedError(
                    f"the fake helper opens TCP and UDP sockets only, not {', '.join(others)}; "
                    "test those with the real helper, or replace the endpoint",
                    step="fake",
                )
            )
        sockets: List[socket.socket] = []
        try:
            for index, request in enumerate(wanted, 1):
                sockets.append(open_directly(dataclasses.replace(request, port=0), index))
        except ProcketError:
            for sock in sockets:
                sock.close()
            return defer.fail()
        return defer.succeed(sockets)


def useFakeHelper(testCase: Any) -> FakeHelper:
    """
    Replace the helper with a L{FakeHelper} for every procket endpoint until TESTCASE ends
    (a trial or unittest TestCase: the original is restored with C{addCleanup}).
    """
    fake = FakeHelper()
    original = _HelperEndpoint.__dict__["_acquire"]
    _HelperEndpoint._acquire = staticmethod(fake.acquire)
    testCase.addCleanup(setattr, _HelperEndpoint, "_acquire", original)
    return fake
