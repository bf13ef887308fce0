"""
examples/fleet.py: one privileged port served by four worker processes as nobody, both ways
(each worker's own SO_REUSEPORT socket, or one socket handed to every worker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    TEST_UID,
    examples_directory,
    free_port,
    install_prefix,
    parent_of,
    process_users,
    server_output,
    skip_unless_privileged,
    start_unprivileged,
    wait_for_tcp,
)

WORKERS = 4


class FleetTests(SynchronousTestCase):
    """Four workers on one privileged port, as nobody."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.site = tempfile.mkdtemp(prefix="procket-fleet-")
        self.addCleanup(shutil.rmtree, self.site)
        os.chmod(self.site, 0o755)
        shutil.copy(os.path.join(examples_directory(), "whoami.rpy"), self.site)
        os.chmod(os.path.join(self.site, "whoami.rpy"), 0o644)

    def serve(self, *mode: str) -> set:
        """Start the fleet, make 60 requests, and return the pids that answered."""
        port = free_port()
        fleet = start_unprivileged(self, [
            sys.executable, os.path.join(examples_directory(), "fleet.py"), "--workers",
            str(WORKERS), "--port", str(port), "--interface", "127.0.0.1", "--path", self.site,
            *mode,
        ], {"PROCKET_HELPER": self.prefix.helper})  # fmt: skip
        wait_for_tcp(self, fleet, "127.0.0.1", port)
        deadline = time.monotonic() + 20
        while len(self.workers(fleet)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.05)
        answered = set()
        for _ in range(60):
            reply = subprocess.run(
                ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/whoami.rpy"],
                capture_output=True,
                text=True,
            )
            self.assertTrue(
                reply.stdout.startswith(f"uid={TEST_UID} "), reply.stdout + reply.stderr
            )
            answered.add(int(reply.stdout.rsplit("pid=", 1)[1]))
        workers = self.workers(fleet)
        self.assertEqual(len(workers), WORKERS, server_output(fleet))
        self.assertTrue(answered <= set(workers), (answered, workers))
        self.assertEqual(set(process_users(self.site).values()), {TEST_UID})
        fleet.terminate()
        fleet.wait(20)
        self.assertEqual(self.workers(fleet), {}, "workers outlived the fleet")
        return answered

    def workers(self, fleet: subprocess.Popen) -> dict:
        """pid -> uid of the fleet's worker processes (its children's children: setpriv execs)."""
        return {
            pid: uid for pid, uid in process_users(self.site).items() if parent_of(pid) == fleet.pid
        }

    def test_reuseport_workers_all_serve(self) -> None:
        """Four twistd web workers, each with its own SO_REUSEPORT socket, all answer."""
        self.assertEqual(len(self.serve()), WORKERS)

    def test_shared_socket_workers_serve(self) -> None:
        """One socket acquired once and handed to four workers: they answer, as nobody."""
        self.assertGreaterEqual(len(self.serve("--shared")), 1)
