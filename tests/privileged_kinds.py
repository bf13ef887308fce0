"""
Test machinery shared by the tests of two kinds that are not plain sockets: packet sockets
(``test_packet``) and TUN/TAP interfaces (``test_tun``). A protocol that records what it
receives; a test case for an endpoint's strings and for listen with the helper replaced; and, for
the tests run as nobody against the setuid helper, the start of every snippet they run on the real
reactor, unique interface names, and test cases that install the helper for each test and run
snippets or an example script against it.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from typing import Any, Callable, Dict, Iterable, List, Tuple

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase

from procket_twisted import PolicyDeniedError
from procket_twisted._twisted.endpoints import _HelperEndpoint

from .support import (
    examples_directory,
    install_prefix,
    run_unprivileged,
    server_output,
    skip_unless_privileged,
    start_unprivileged,
)


class Recorder(DatagramProtocol):
    """Keeps what it receives."""

    def __init__(self) -> None:
        self.received: List[Tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, address: Any) -> None:
        self.received.append((datagram, address))


class EndpointUnitTestCase(SynchronousTestCase):
    """Unit tests of an endpoint: its string form, and listen with the helper replaced."""

    def replaceHelper(self, acquire: Callable[..., Any]) -> None:
        """
        Until this test ends, make every helper endpoint call ``ACQUIRE(reactor, requests,
        **options)`` (which returns a Deferred of the handles) instead of running the helper.
        """
        original = _HelperEndpoint.__dict__["_acquire"]  # the staticmethod itself, not unwrapped
        _HelperEndpoint._acquire = staticmethod(acquire)
        self.addCleanup(setattr, _HelperEndpoint, "_acquire", original)

    def recordHelperCalls(self, handles: List[Any]) -> List[Tuple[List[Any], Dict[str, Any]]]:
        """
        Replace the helper (`replaceHelper`) with one whose every run gives the next of HANDLES
        (one a run); returns the list to which each run's requests and options are added.
        """
        calls: List[Tuple[List[Any], Dict[str, Any]]] = []

        def acquire(reactor: Any, requests: Any, **options: Any) -> defer.Deferred[List[Any]]:
            calls.append((list(requests), options))
            return defer.succeed([handles.pop(0)])

        self.replaceHelper(acquire)
        return calls

    def refuseByPolicy(self) -> PolicyDeniedError:
        """
        Replace the helper (`replaceHelper`) with one that fails every run with a
        PolicyDeniedError (EACCES at step policy); returns that error.
        """
        denied = PolicyDeniedError("no", errno=errno.EACCES, step="policy")
        self.replaceHelper(lambda *args, **kwargs: defer.fail(denied))
        return denied

    def assertStringErrors(
        self, parse: Callable[[Any, str], Any], cases: Iterable[Tuple[str, str]]
    ) -> None:
        """
        Each of CASES, an endpoint string and some words, makes ``PARSE(None, string)`` raise a
        ValueError whose message contains the words.
        """
        for text, words in cases:
            with self.assertRaises(ValueError, msg=text) as raised:
                parse(None, text)
            self.assertIn(words, str(raised.exception), text)


#: The start of every snippet run as nobody (after support.PRELUDE): the Twisted names they use,
#: a Recorder, ``later(reactor, seconds)`` to let the reactor work a while, and ``run(main)``,
#: which runs the snippet's ``main(reactor)`` coroutine with the real reactor and reports its
#: result. A test module adds its own helpers after it (``prelude_additions``).
REACTOR_PRELUDE = """
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.pair.ethernet import EthernetProtocol
from twisted.pair.rawudp import RawUDPProtocol
from procket_twisted.endpoints import *

class Recorder(DatagramProtocol):
    def __init__(self):
        self.received = []
    def datagramReceived(self, data, address):
        self.received.append((data, address))

async def later(reactor, seconds=0.3):
    await task.deferLater(reactor, seconds)

def run(main):
    def start(reactor):
        return defer.ensureDeferred(main(reactor)).addCallback(report)
    task.react(start)
"""


def unique_interface_name(prefix: str, room: int = 0) -> str:
    """
    An interface name starting with PREFIX that no other test run uses now, short enough for the
    kernel (15 characters) with ROOM characters to spare for a suffix.
    """
    return f"{prefix}{os.getpid() % 100000}{random.randrange(100)}"[: 15 - room]


class HelperAsNobodyTestCase(SynchronousTestCase):
    """Tests run as nobody against the setuid helper, installed for each test (``self.prefix``)."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)

    def helper_environment(self) -> Dict[str, str]:
        """The environment that makes the client run this test's helper."""
        return {"PROCKET_HELPER": self.prefix.helper}


class TwistedAsNobodyTestCase(HelperAsNobodyTestCase):
    """Snippets that drive endpoints with the real reactor, run as nobody."""

    #: What the test module's snippets need besides `REACTOR_PRELUDE` (its own helpers' source).
    prelude_additions = ""

    def run_twisted(self, code: str) -> Any:
        """
        Run CODE, which defines ``main(reactor)`` and calls ``run(main)``, as nobody after
        `REACTOR_PRELUDE` and `prelude_additions`; the result it reported.
        """
        program = REACTOR_PRELUDE + self.prelude_additions + textwrap.dedent(code)
        return run_unprivileged(self, program, self.helper_environment())


class ExampleAsNobodyTestCase(HelperAsNobodyTestCase):
    """An example script run as nobody, with the real ``ping`` (``self.ping``) to drive it."""

    #: The example's file name in examples/.
    example: str

    def setUp(self) -> None:
        super().setUp()
        ping = shutil.which("ping")
        if ping is None:
            self.fail("ping is not installed; scripts/test installs it (scripts/packages.sh)")
        self.ping = ping
        self.script = os.path.join(examples_directory(), self.example)

    def start(self, *arguments: str) -> subprocess.Popen[bytes]:
        """Start the example with ARGUMENTS in the background (stopped when the test ends)."""
        return start_unprivileged(
            self, [sys.executable, self.script, *arguments], self.helper_environment()
        )

    def wait_for(self, process: subprocess.Popen[bytes], text: str, seconds: float = 20) -> str:
        """
        Wait until PROCESS has printed TEXT, and return all it printed; fail with its output if it
        exits first or SECONDS pass.
        """
        deadline = time.monotonic() + seconds
        while text not in server_output(process):
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"never printed {text!r}:\n{server_output(process)}")
            time.sleep(0.05)
        return server_output(process)
