"""
When an event loop starts its helpers: at most one per turn of the loop, and only a few at a time.
The reactor's driver (C{_twisted/pacer.py}) and asyncio's (L{procket_twisted.aio}) share it.

Starting a helper blocks the loop until the child has executed it (C{posix_spawn} returns only
then), and that wait grows when every CPU is busy: the new child waits for one, about a
millisecond on Linux. A hundred listens started together would otherwise start a hundred helpers
in one turn, and they would compete with the loop, and with each other's starts, for the CPUs
(benchmarks/README.md, measurement (c), has the numbers).

A helper that is still running after L{SLOW_HELPER} seconds (it normally takes well under a
millisecond; through C{sudo}, about seven) gives up its place, so that one stuck helper does not
hold up the others for its whole timeout.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Deque, Optional

__all__ = ["MAX_RUNNING", "SLOW_HELPER", "Pacer", "Job", "OnEnd"]

#: How many helpers one loop runs at a time: half the CPUs this process may use, at least one.
MAX_RUNNING = max(1, len(os.sched_getaffinity(0)) // 2)
#: Seconds after which a running helper no longer counts against `MAX_RUNNING`.
SLOW_HELPER = 0.05

#: Given a callback, calls it once when the helper has ended.
OnEnd = Callable[[Callable[[], None]], None]
#: A job: starts a helper and returns how to learn that it has ended, or returns None when it
#: started none (cancelled meanwhile, or the start failed).
Job = Callable[[], Optional[OnEnd]]


class Pacer:
    """
    The queue of helper starts of one event loop.

    @ivar running: how many helpers hold a place now.
    """

    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], Any],
        cancel: Callable[[Any], None],
        limit: int = MAX_RUNNING,
    ) -> None:
        """
        @param call_later: the loop's C{call_later(seconds, function)}, returning a handle; with 0
            seconds, the function runs in a coming turn, after the work of the present one.
        @param cancel: cancels a handle of CALL_LATER's whose call has not run yet.
        @param limit: how many helpers may hold a place at once.
        """
        self._call_later = call_later
        self._cancel = cancel
        self._limit = limit
        self._waiting: Deque[Job] = collections.deque()
        self._scheduled = False
        self.running = 0

    def start(self, job: Job) -> None:
        """Run JOB in a coming turn, after the jobs queued before it, once a place is free."""
        self._waiting.append(job)
        self._schedule()

    def _schedule(self) -> None:
        if self._waiting and not self._scheduled and self.running < self._limit:
            self._scheduled = True
            self._call_later(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        try:
            on_end = self._waiting.popleft()()
            if on_end is not None:
                on_end(self._occupy())
        finally:
            self._schedule()

    def _occupy(self) -> Callable[[], None]:
        """
        Take a place; return the function that gives it back (once: whichever comes first, the
        helper's end or L{SLOW_HELPER} seconds).
        """
        self.running += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._cancel(timer)
                self.running -= 1
                self._schedule()

        timer = self._call_later(SLOW_HELPER, release)
        return release
