"""
When the Twisted layer starts its helpers: the shared pacing (L{procket_twisted._client.pacing}:
at most one start per reactor turn, only a few helpers at a time, a slow helper's place given
back), on a reactor's clock, for jobs whose helper's end is a Deferred.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Optional

from twisted.internet import defer

from .._client.pacing import MAX_RUNNING, SLOW_HELPER, OnEnd, Pacer

__all__ = ["MAX_RUNNING", "SLOW_HELPER", "SpawnPacer", "pacerFor"]

#: A job: starts a helper and returns a Deferred that fires when the helper has ended, or returns
#: None when it started none (cancelled meanwhile, or the start failed).
Spawn = Callable[[], "Optional[defer.Deferred[Any]]"]


def _cancelPending(call: Any) -> None:
    if call.active():
        call.cancel()


class SpawnPacer:
    """
    The queue of helper starts for one reactor (C{IReactorTime}).

    @ivar running: how many helpers hold a place now.
    """

    def __init__(self, reactor: Any, limit: int = MAX_RUNNING) -> None:
        self._pacer = Pacer(reactor.callLater, _cancelPending, limit)

    @property
    def running(self) -> int:
        """How many helpers hold a place now."""
        return self._pacer.running

    def start(self, spawn: Spawn) -> None:
        """
        Run SPAWN in a coming reactor turn, after the jobs queued before it, once a place is
        free.
        """

        def job() -> Optional[OnEnd]:
            ended = spawn()
            if ended is None:
                return None

            def onEnd(release: Callable[[], None]) -> None:
                def released(result: Any) -> Any:
                    release()
                    return result

                ended.addBoth(released)

            return onEnd

        self._pacer.start(job)


_pacers: "weakref.WeakKeyDictionary[Any, SpawnPacer]" = weakref.WeakKeyDictionary()


def pacerFor(reactor: Any) -> SpawnPacer:
    """The pacer of REACTOR (one per reactor)."""
    if reactor not in _pacers:
        _pacers[reactor] = SpawnPacer(reactor)
    return _pacers[reactor]
