"""
What the README says about C{task.react}: its main runs before the reactor, so a C{listen} at its
start blocks (up to the timeout, and the Deferred has fired when listen returns), and after
C{await task.deferLater(reactor, 0)} the same C{listen} leaves the reactor free and can be
cancelled, killing the helper. Run in a child process with the real reactor and the fake helper
(which hangs here, as a stuck helper would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from .fake_helper_support import FAKE

_PROGRAM = """
import json, os, sys, time
from twisted.internet import defer, task
from twisted.internet.protocol import Factory
from procket_twisted.endpoints import ProcketServerEndpoint

FAKE = json.loads(os.environ["FAKE_COMMAND"])
WAIT_FIRST = sys.argv[1] == "wait"

async def main(reactor):
    if WAIT_FIRST:
        await task.deferLater(reactor, 0)
    started = time.monotonic()
    listening = ProcketServerEndpoint(reactor, 8080, progname=FAKE, timeout=1.5, direct=False).listen(
        Factory()
    )
    returned = time.monotonic() - started
    fired = listening.called
    ticks = []
    clock = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    clock.start(0.01)
    reactor.callLater(0.3, listening.cancel)
    try:
        await listening
        outcome = "listening"
    except BaseException as error:
        outcome = type(error).__name__ + ": " + str(error)[:80]
    clock.stop()
    print(json.dumps({"returned": returned, "fired": fired, "outcome": outcome,
                      "ticks": len(ticks), "total": time.monotonic() - started}))

task.react(main)
"""


class ReactTests(SynchronousTestCase):
    """task.react main, with and without letting the reactor start first."""

    def _reactMain(self, mode: str) -> dict:
        environment = dict(os.environ, FAKE_HELPER_MODE="hang", FAKE_COMMAND=json.dumps(FAKE))
        result = subprocess.run(
            [sys.executable, "-c", _PROGRAM, mode],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def test_before_the_reactor_runs_listen_blocks(self) -> None:
        """At main's start listen returns only after the timeout, its Deferred already failed."""
        seen = self._reactMain("now")
        self.assertGreaterEqual(seen["returned"], 1.4, seen)
        self.assertTrue(seen["fired"], seen)
        self.assertIn("did not answer within 1.5 s", seen["outcome"])

    def test_after_defer_later_listen_is_cancellable(self) -> None:
        """After deferLater(reactor, 0) listen returns at once, the clock ticks, cancel works."""
        seen = self._reactMain("wait")
        self.assertLess(seen["returned"], 0.2, seen)
        self.assertFalse(seen["fired"], seen)
        self.assertTrue(seen["outcome"].startswith("CancelledError"), seen)
        self.assertLess(seen["total"], 1.4, seen)
        self.assertGreaterEqual(seen["ticks"], 10, seen)
