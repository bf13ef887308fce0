"""
When the Twisted layer starts its helpers: at most one per reactor turn, and only a few at a time.

Starting a helper blocks the reactor until the child has executed it (C{posix_spawn} returns only
then), and that wait grows when every CPU is busy: the new child waits for one, about a
millisecond on Linux. A hundred endpoint listens started together would otherwise start a hundred
helpers within a few turns, and they would compete with the reactor, and with each other's starts,
for the CPUs (benchmarks/README.md, measurement (c), has the numbers).

A helper that is still running after L{SLOW_HELPER} seconds (it normally takes well under a
millisecond; through C{sudo}, about seven) gives up its place, so that one stuck helper does not
hold up the others for its whole timeout.
"""

from __future__ import annotations

import collections
import os
import weakref
from typing import Any, Callable, Deque, Optional

from twisted.internet import defer

__all__ = ["MAX_RUNNING", "SLOW_HELPER", "SpawnPacer", "pacerFor"]

#: How many helpers one reactor runs at a time: half the CPUs this process may use, at least one.
MAX_RUNNING = max(1, len(os.sched_getaffinity(0)) // 2)
#: Seconds after which a running helper no longer counts against `MAX_RUNNING`.
SLOW_HELPER = 0.05

#: A job: starts a helper and returns a Deferred that fires when the helper has ended, or returns
#: None when it started none (cancelled meanwhile, or the start failed).
Spawn = Callable[[], "Optional[defer.Deferred[Any]]"]


class SpawnPacer:
    """The queue of helper starts for one reactor (C{IReactorTime})."""

    def __init__(self, reactor: Any, limit: int = MAX_RUNNING) -> None:
        self._reactor = reactor
        self._limit = limit
        self._waiting: Deque[Spawn] = collections.deque()
        self._scheduled = False
        self.running = 0

    def start(self, spawn: Spawn) -> None:
        """Run SPAWN in a coming reactor turn, after the jobs queued before it, once a place is free."""
        self._waiting.append(spawn)
        self._schedule()

    def _schedule(self) -> None:
        if self._waiting and not self._scheduled and self.running < self._limit:
            self._scheduled = True
            self._reactor.callLater(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        try:
            ended = self._waiting.popleft()()
            if ended is not None:
                ended.addBoth(self._occupy())
        finally:
            self._schedule()

    def _occupy(self) -> Callable[[Any], Any]:
        """
        Take a place; return the callback that gives it back (once: whichever comes first, the
        helper's end or L{SLOW_HELPER} seconds) and passes its result on.
        """
        self.running += 1
        held = True

        def release(result: Any = None) -> Any:
            nonlocal held
            if held:
                held = False
                if timer.active():
                    timer.cancel()
                self.running -= 1
                self._schedule()
            return result

        timer = self._reactor.callLater(SLOW_HELPER, release)
        return release


_pacers: "weakref.WeakKeyDictionary[Any, SpawnPacer]" = weakref.WeakKeyDictionary()


def pacerFor(reactor: Any) -> SpawnPacer:
    """The pacer of REACTOR (one per reactor)."""
    if reactor not in _pacers:
        _pacers[reactor] = SpawnPacer(reactor)
    return _pacers[reactor]
