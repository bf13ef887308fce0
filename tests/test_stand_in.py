"""
The fake helper (procket_twisted.testing) stands in for every acquisition, the plain API's too,
and the examples in its documentation run as written: under trial, and under pytest through the
C{procket_helper} fixture of the plugin the package installs.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

import procket_twisted
from procket_twisted import SocketError, SocketRequest, testing
from procket_twisted.endpoints import acquireSockets


def _example(start: str, end: str) -> str:
    """The code block of procket_twisted.testing's docstring between START and END, dedented."""
    doc = testing.__doc__ or ""
    block = doc[doc.index(start) + len(start) : doc.index(end)]
    return "\n".join(line[4:] for line in block.splitlines()) + "\n"


class PlainAPITests(SynchronousTestCase):
    """listen and listen_many go to the fake too, with its recording and its queued failures."""

    def test_listen_and_listen_many(self) -> None:
        """Both get real sockets on kernel-chosen ports; the requests keep the ports asked for."""
        helper = testing.useFakeHelper(self)
        tcp = procket_twisted.listen(80, ip="127.0.0.1")
        self.addCleanup(tcp.close)
        udp, tcp6 = procket_twisted.listen_many(
            [SocketRequest(53, "udp", "127.0.0.1"), SocketRequest(443, ip="::1")]
        )
        self.addCleanup(udp.close)
        self.addCleanup(tcp6.close)
        self.assertEqual([[r.port for r in batch] for batch in helper.requests], [[80], [53, 443]])
        self.assertEqual((tcp.type, udp.type, tcp6.family),
                         (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.AF_INET6))  # fmt: skip
        for sock in (tcp, udp, tcp6):
            self.assertNotIn(sock.getsockname()[1], (0, 80, 53, 443))

    def test_queued_failure_and_bad_input(self) -> None:
        """failNext is raised by listen; bad input is still refused before the fake is asked."""
        helper = testing.useFakeHelper(self)
        taken = SocketError("in use", errno=errno.EADDRINUSE, step="bind", index=1)
        helper.failNext(taken)
        with self.assertRaises(SocketError) as caught:
            procket_twisted.listen(80)
        self.assertIs(caught.exception, taken)
        with self.assertRaises(ValueError):
            procket_twisted.listen(70000)
        with self.assertRaises(ValueError):
            procket_twisted.listen_many([])
        self.assertEqual(len(helper.requests), 1)

    def test_undone_after_the_test(self) -> None:
        """The undo function restores the helper: nothing is given to the fake afterwards."""
        helper = testing.FakeHelper()
        undo = helper.install()
        procket_twisted.listen(80, ip="127.0.0.1").close()
        undo()
        with self.assertRaises(procket_twisted.ProcketError):
            procket_twisted.listen(
                80, ip="127.0.0.1", progname="/nonexistent/procket-helper", direct=False
            )
        self.assertEqual(len(helper.requests), 1)


class RunningReactorTests(TestCase):
    """acquireSockets with the reactor running (the path that would run the helper)."""

    @defer.inlineCallbacks
    def test_acquire_sockets(self) -> None:
        """The fake's sockets arrive through the reactor path too."""
        helper = testing.useFakeHelper(self)
        (sock,) = yield acquireSockets(reactor, [SocketRequest(80, ip="127.0.0.1")])
        self.addCleanup(sock.close)
        self.assertEqual(helper.requests[0][0].port, 80)
        self.assertNotEqual(sock.getsockname()[1], 80)


#: trial, for every Twisted: not -m twisted.trial, whose __main__ needs pkg_resources before 23.8.
TRIAL = ["-c", "from twisted.scripts.trial import run; run()"]


class DocumentedExampleTests(SynchronousTestCase):
    """The documented examples, written out and run by trial and by pytest in a child process."""

    def _runExample(self, name: str, code: str, command: list) -> str:
        directory = tempfile.mkdtemp(prefix="procket-fake-example-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, name), "w", encoding="utf-8") as stream:
            stream.write(code)
        result = subprocess.run(
            [sys.executable, *command],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return output

    def test_trial_example(self) -> None:
        """The trial example passes both of its tests."""
        code = _example("With trial::\n", "With pytest,")
        output = self._runExample("test_example_trial.py", code, [*TRIAL, "test_example_trial"])
        self.assertIn("PASSED (successes=2)", output)

    def test_pytest_fixture(self) -> None:
        """The pytest example finds the procket_helper fixture through the installed plugin."""
        code = _example("undone when the test ends::\n", "It works with C{MemoryReactor}")
        output = self._runExample(
            "test_example_pytest.py", code, ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
        )
        self.assertIn("1 passed", output)
