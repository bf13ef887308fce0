"""
Unit tests of the ``procket-twisted`` command line (`procket_twisted._admin.cli.main`) that need no
privilege: argument checking, install-helper refusing to run as a normal user, and doctor's
report when there is no helper, a missing one, or a (fake) working one.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import socket
import tempfile
from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted._admin.doctor
import procket_twisted._client.locate
from procket_twisted._admin.cli import main
from procket_twisted._admin.invocation import this_command

from .fake_helper_support import FAKE
from .support import (
    cli_command,
    run_command_unprivileged,
    set_environment,
    skip_unless_privileged,
)

FAKE_COMMAND = shlex.join(FAKE)
MISSING_HELPER = "/nonexistent/procket-twisted/procket-helper"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CommandLineTestCase(SynchronousTestCase):
    """Run main() with captured output and a controlled environment."""

    def setUp(self) -> None:
        set_environment(self, "PROCKET_HELPER", None)
        set_environment(self, "FAKE_HELPER_MODE", None)
        set_environment(self, "FAKE_HELPER_LOG", None)

    def directory(self) -> str:
        path = tempfile.mkdtemp(prefix="procket-cli-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def run_main(self, argv: List[str]) -> Tuple[int, str, str]:
        """main(ARGV) as (exit status, stdout, stderr); argparse's SystemExit becomes a status."""
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = main(argv)
            except SystemExit as exit:
                status = exit.code if isinstance(exit.code, int) else 1
        return status, stdout.getvalue(), stderr.getvalue()

    def without_bind_capability(self) -> None:
        """
        Make doctor believe this process lacks CAP_NET_BIND_SERVICE (as a normal user does), and
        that no kernel grant lets it bind a privileged port (its real bind, as root, would).
        """
        self.patch(procket_twisted._admin.doctor, "has_bind_capability", lambda: False)
        self.patch(procket_twisted._admin.doctor, "_kernel_grant", lambda port, say: False)


class ArgumentTests(CommandLineTestCase):
    """argparse refuses what makes no sense, with status 2 and a message."""

    def test_no_command(self) -> None:
        """A command is required."""
        status, _, err = self.run_main([])
        self.assertEqual(status, 2)
        self.assertIn("required", err)

    def test_unknown_command(self) -> None:
        """An unknown command is refused."""
        status, _, err = self.run_main(["frobnicate"])
        self.assertEqual(status, 2)
        self.assertIn("invalid choice", err)

    def test_bogus_mode(self) -> None:
        """install-helper --mode bogus is refused, listing the modes."""
        status, _, err = self.run_main(["install-helper", "--mode", "bogus"])
        self.assertEqual(status, 2)
        self.assertIn("bogus", err)
        for mode in ("setuid", "setcap", "sudo"):
            self.assertIn(mode, err)

    def test_bad_ports(self) -> None:
        """doctor --port takes 1 to 65535 only: 0, 65536, -1, 08x and empty are refused."""
        for port in ("0", "65536", "-1", "8x", "", "1e3"):
            status, _, err = self.run_main(["doctor", "--port", port])
            self.assertEqual(status, 2, port)
            self.assertIn("is not a port from 1 to 65535", err)

    def test_help(self) -> None:
        """--help names both commands and exits 0."""
        status, out, _ = self.run_main(["--help"])
        self.assertEqual(status, 0)
        self.assertIn("install-helper", out)
        self.assertIn("doctor", out)


class InstallHelperTests(CommandLineTestCase):
    """install-helper needs root, and says so."""

    def check_refused(self) -> None:
        prefix = self.directory()
        status, out, err = self.run_main(["install-helper", "--prefix", prefix])
        self.assertEqual(status, 1)
        self.assertIn("must run as root", err)
        # The line to paste keeps --prefix and names the command by its full path.
        self.assertIn(f"sudo {shlex.join(this_command())} install-helper --prefix {prefix}", err)
        self.assertTrue(this_command()[0].startswith("/"), this_command())
        self.assertEqual(out, "")
        self.assertEqual(os.listdir(prefix), [], "it changed the prefix anyway")

    def test_refused_as_normal_user(self) -> None:
        """
        As a normal user it exits 1, says it must run as root, and touches nothing. Run as root,
        the test runs the real command as the unprivileged test user instead.
        """
        if os.geteuid() != 0:
            self.check_refused()
            return
        skip_unless_privileged(self)
        prefix = self.directory()
        os.chmod(prefix, 0o777)
        result = run_command_unprivileged(
            cli_command() + ["install-helper", "--prefix", prefix], {}
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("must run as root", result.stderr)
        self.assertIn(f"sudo {cli_command()[0]} ", result.stderr)
        self.assertIn(f"install-helper --prefix {prefix}", result.stderr)
        self.assertEqual(os.listdir(prefix), [], "it changed the prefix anyway")

    def test_refused_when_not_effectively_root(self) -> None:
        """The check is on the effective uid (also checked here as root, by pretending)."""
        self.patch(os, "geteuid", lambda: 65534)
        self.check_refused()


class DoctorTests(CommandLineTestCase):
    """doctor's verdict and advice, without privilege."""

    def test_missing_helper(self) -> None:
        """PROCKET_HELPER naming a missing file: status 1 and the install command."""
        self.without_bind_capability()
        set_environment(self, "PROCKET_HELPER", MISSING_HELPER)
        status, out, _ = self.run_main(["doctor"])
        self.assertEqual(status, 1)
        self.assertIn(MISSING_HELPER, out)
        self.assertIn("procket-twisted install-helper", out)
        self.assertIn("HelperNotFoundError", out)
        self.assertIn("RESULT: this user cannot get privileged sockets", out)

    def test_no_helper_at_all(self) -> None:
        """No progname, no PROCKET_HELPER, nothing installed: status 1 and the install command."""
        self.without_bind_capability()
        directory = self.directory()
        self.patch(
            procket_twisted._client.locate, "INSTALLED_HELPERS", (os.path.join(directory, "x"),)
        )
        status, out, _ = self.run_main(["doctor"])
        self.assertEqual(status, 1)
        self.assertIn("helper: none", out)
        self.assertIn("procket-twisted install-helper", out)

    def test_working_helper(self) -> None:
        """With a (fake) helper that delivers, doctor reports success and status 0."""
        self.without_bind_capability()
        port = free_port()
        status, out, _ = self.run_main(["doctor", "--progname", FAKE_COMMAND, "--port", str(port)])
        self.assertEqual(status, 0, out)
        self.assertIn(f"port {port}", out)
        self.assertIn("RESULT: this user can get privileged sockets", out)

    def test_refusing_helper(self) -> None:
        """With a helper that refuses by policy, doctor says which error and returns 1."""
        self.without_bind_capability()
        set_environment(self, "FAKE_HELPER_MODE", "error-policy")
        status, out, _ = self.run_main(
            ["doctor", "--progname", FAKE_COMMAND, "--port", str(free_port())]
        )
        self.assertEqual(status, 1)
        self.assertIn("PolicyDeniedError", out)
        self.assertIn("step policy", out)

    def test_capability_needs_no_helper(self) -> None:
        """A process with CAP_NET_BIND_SERVICE needs no helper: status 0 even without one."""
        self.patch(procket_twisted._admin.doctor, "has_bind_capability", lambda: True)
        set_environment(self, "PROCKET_HELPER", MISSING_HELPER)
        status, out, _ = self.run_main(["doctor"])
        self.assertEqual(status, 0)
        self.assertIn("CAP_NET_BIND_SERVICE", out)
