"""
The pacer of helper starts (`procket_twisted._twisted.pacer`): one start per reactor turn, at most a few
helpers at a time, a slow helper's place given back, and no place lost whatever a job does.

A reactor turn is modelled by `TurnClock.turn`, which runs the calls due when the turn began, as a
real reactor does (``task.Clock.advance`` would also run the ``callLater(0)`` calls they add).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from procket_twisted._twisted.pacer import MAX_RUNNING, SLOW_HELPER, SpawnPacer, pacerFor


class TurnClock(task.Clock):
    """A `task.Clock` that can also run one reactor turn."""

    def turn(self) -> None:
        """Run the calls due now that were scheduled before this turn, like one reactor turn."""
        due = [call for call in self.getDelayedCalls() if call.getTime() <= self.seconds()]
        for call in sorted(due, key=lambda call: call.getTime()):
            if call.active():
                self.calls.remove(call)
                call.called = True
                call.func(*call.args, **call.kw)


class Jobs:
    """
    Spawn jobs that record that they ran and, when STARTED, return a Deferred standing for their
    helper's end; ``end(N)`` fires job N's.
    """

    def __init__(self) -> None:
        self.ran: List[int] = []
        self.ends: List["defer.Deferred[Any]"] = []

    def job(
        self, number: int, started: bool = True
    ) -> Callable[[], "Optional[defer.Deferred[Any]]"]:
        def spawn() -> "Optional[defer.Deferred[Any]]":
            self.ran.append(number)
            if not started:
                return None
            ended: defer.Deferred[Any] = defer.Deferred()
            self.ends.append(ended)
            return ended

        return spawn

    def end(self, position: int) -> None:
        """The helper of the POSITION-th started job ends."""
        self.ends[position].callback(0)


class PacerTests(SynchronousTestCase):
    """`SpawnPacer` on a clock whose turns the test runs one by one."""

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.jobs = Jobs()

    def pacer(self, limit: int) -> SpawnPacer:
        return SpawnPacer(self.clock, limit)

    def test_one_per_turn(self) -> None:
        """Jobs queued in one turn run one per turn, in order, even with places free."""
        pacer = self.pacer(limit=10)
        for number in range(3):
            pacer.start(self.jobs.job(number))
        self.assertEqual(self.jobs.ran, [])
        for expected in ([0], [0, 1], [0, 1, 2], [0, 1, 2]):
            self.clock.turn()
            self.assertEqual(self.jobs.ran, expected)

    def test_limit(self) -> None:
        """
        No more than LIMIT helpers run; the next job runs in the turn after one ends, a failed
        one too.
        """
        pacer = self.pacer(limit=2)
        for number in range(4):
            pacer.start(self.jobs.job(number))
        for _ in range(5):
            self.clock.turn()
        self.assertEqual(self.jobs.ran, [0, 1])
        self.assertEqual(pacer.running, 2)
        failed = self.jobs.ends[1]
        failed.errback(RuntimeError("the helper's reply made no sense"))
        self.failureResultOf(failed, RuntimeError)
        self.assertEqual(pacer.running, 1)
        self.clock.turn()
        self.assertEqual(self.jobs.ran, [0, 1, 2])
        self.clock.turn()
        self.assertEqual(self.jobs.ran, [0, 1, 2])

    def test_not_started(self) -> None:
        """A job that started no helper (cancelled, or failed to start) takes no place."""
        pacer = self.pacer(limit=1)
        pacer.start(self.jobs.job(0, started=False))
        pacer.start(self.jobs.job(1))
        self.clock.turn()
        self.assertEqual(pacer.running, 0)
        self.clock.turn()
        self.assertEqual((self.jobs.ran, pacer.running), ([0, 1], 1))

    def test_slow_helper_gives_back_its_place(self) -> None:
        """
        A helper still running after SLOW_HELPER seconds no longer holds its place; its end
        later changes nothing, and no timer is left pending once every helper has ended.
        """
        pacer = self.pacer(limit=1)
        pacer.start(self.jobs.job(0))
        pacer.start(self.jobs.job(1))
        self.clock.turn()
        self.clock.advance(SLOW_HELPER * 0.9)
        self.clock.turn()
        self.assertEqual(self.jobs.ran, [0])
        self.clock.advance(SLOW_HELPER * 0.2)  # runs the release, then the next job
        self.assertEqual((self.jobs.ran, pacer.running), ([0, 1], 1))
        self.jobs.end(0)
        self.assertEqual(pacer.running, 1)
        self.jobs.end(1)
        self.assertEqual(pacer.running, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_raising_job(self) -> None:
        """A job that raises takes no place; the queue goes on in the next turn."""
        pacer = self.pacer(limit=1)

        def broken() -> "Optional[defer.Deferred[Any]]":
            raise RuntimeError("boom")

        pacer.start(broken)
        pacer.start(self.jobs.job(1))
        self.assertRaises(RuntimeError, self.clock.turn)
        self.assertEqual(pacer.running, 0)
        self.clock.turn()
        self.assertEqual(self.jobs.ran, [1])

    def test_one_pacer_per_reactor(self) -> None:
        """Each reactor has its own pacer, with the default limit, at least one."""
        other = TurnClock()
        self.assertIs(pacerFor(self.clock), pacerFor(self.clock))
        self.assertIsNot(pacerFor(self.clock), pacerFor(other))
        self.assertGreaterEqual(MAX_RUNNING, 1)
