"""
Memory over many acquisitions through the reactor client, in CI: the benchmark soak
(``benchmarks/soak.py``) measures it at length, as the unprivileged user with the real helper; this
test catches a leak on every run, without root, against the FAKE helper (``fake_helper.py``, run
with ``direct=False`` and port 0 as in ``test_reactor_client``).

It compares checkpoints of this process taken in the same run, never absolute numbers: after a
warm-up (which settles caches and lazily created objects), the memory Python has allocated
(tracemalloc, after a full collection) must not keep growing over the second half of the
acquisitions, nor the resident set grossly.
"""

from __future__ import annotations

import gc
import resource
import tracemalloc
from typing import Any, Dict, Generator, List

from twisted.internet import defer

from procket_twisted import SocketRequest
from procket_twisted.endpoints import acquireSockets

from .fake_helper_support import FAKE
from .test_reactor_client import EchoFactory, RealReactorTestCase, onRealReactor

#: Acquisitions before the first checkpoint, then in each of the two measured halves.
WARMUP = 60
HALF = 120
#: How many acquisitions are started together (more than the pacer runs at a time, so that its
#: queue is exercised too).
TOGETHER = 4
#: The most the memory Python has allocated may grow over the second half, per acquisition: below
#: what a kept helper run leaks (about 1.3 kB each, with its Deferreds), about four times the noise
#: measured (up to 16 kB either way over a half of 120 acquisitions, trial or pytest).
TRACED_LIMIT_PER_ACQUISITION = 512
#: The most the resident set may grow over the second half: generous, as it moves by whole pages
#: and allocator arenas; it catches only a gross leak outside Python's allocator.
RSS_LIMIT = 8 * 1024 * 1024


def residentBytes() -> int:
    """This process's resident set size now, in bytes."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


#: What the measure of Python's memory leaves out: Twisted's log buffer (before logging begins, as
#: under pytest, the last 200 events are kept: it grows over the first acquisitions, then stays)
#: and tracemalloc's own bookkeeping.
NOT_COUNTED = [
    tracemalloc.Filter(False, "*/twisted/logger/*"),
    tracemalloc.Filter(False, tracemalloc.__file__),
]


def measure() -> Dict[str, int]:
    """
    The memory Python has allocated (after a full collection, less NOT_COUNTED) and the resident
    set, now.
    """
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(NOT_COUNTED)
    traced = sum(stat.size for stat in snapshot.statistics("filename"))
    return {"traced": traced, "rss": residentBytes()}


class ReactorMemoryTests(RealReactorTestCase):
    """Many acquisitions on the real reactor leave memory, descriptors and children as they were."""

    @defer.inlineCallbacks
    def acquireMany(self, count: int) -> Generator[Any, Any, None]:
        """
        COUNT acquisitions, TOGETHER at a time, each released once it has succeeded: in turn a
        TCP and a UDP socket through acquireSockets (closed), and a port through an endpoint
        (stopped listening).
        """
        from twisted.internet import reactor

        requests = [SocketRequest(0, "tcp", "127.0.0.1"), SocketRequest(0, "udp", "127.0.0.1")]
        for first in range(0, count, TOGETHER):
            waiting: List[defer.Deferred[Any]] = []
            for number in range(first, min(first + TOGETHER, count)):
                if number % 2:
                    waiting.append(self.endpoint().listen(EchoFactory()))
                else:
                    waiting.append(acquireSockets(reactor, requests, progname=FAKE, direct=False))
            results = yield defer.gatherResults(waiting, consumeErrors=True)
            for result in results:
                if isinstance(result, list):
                    for sock in result:
                        sock.close()
                else:
                    yield result.stopListening()

    @onRealReactor
    def test_no_growth(self) -> Generator[Any, Any, None]:
        """
        Over WARMUP + 2 * HALF acquisitions (see acquireMany), the memory Python has allocated
        grows by less than TRACED_LIMIT_PER_ACQUISITION bytes per acquisition over the second
        half (after the warm-up and the first half), the resident set by less than RSS_LIMIT, and
        afterwards no descriptor is open and no child is left. Fails if every acquisition leaves
        behind an object of a kilobyte or more (a helper run kept in a list, with its Deferreds:
        about 1.3 kB each), or a descriptor, or a child.
        """
        before = self.snapshot()
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        yield self.acquireMany(WARMUP)
        start = measure()
        yield self.acquireMany(HALF)
        middle = measure()
        yield self.acquireMany(HALF)
        end = measure()
        acquisitions = HALF
        report = (
            f"after the warm-up {start}, after the first half {middle}, at the end {end} "
            f"({acquisitions} acquisitions in each half)"
        )
        self.assertLess(
            end["traced"] - middle["traced"],
            TRACED_LIMIT_PER_ACQUISITION * acquisitions,
            f"Python's memory kept growing: {report}",
        )
        self.assertLess(end["rss"] - middle["rss"], RSS_LIMIT, f"the resident set grew: {report}")
        yield self.assertNothingLeft(before)
