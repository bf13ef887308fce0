"""
The small things a user meets in the first hour (issue 14, item 7): the package's version;
doctor's result as root, for a port that is taken, and when PROCKET_HELPER names nothing; the
plugin found and its cache fresh (plugin-cache failing when it cannot write); the messages that
name the group, the port asked for, and the policy reference the package installs
(procket-twisted policy).
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted

from .support import (
    TEST_USER,
    cli_command,
    free_port,
    install_prefix,
    keep_install_record,
    run_command_unprivileged,
    run_unprivileged,
    skip_unless_privileged,
)


class VersionAndReferenceTests(SynchronousTestCase):
    """What needs no privilege: __version__ and the installed policy reference."""

    def test_version(self) -> None:
        """__version__ is the installed distribution's, as --version prints it."""
        version = importlib.metadata.version("procket-twisted")
        self.assertEqual(procket_twisted.__version__, version)
        printed = subprocess.run(cli_command() + ["--version"], capture_output=True, text=True)
        self.assertEqual(printed.stdout.strip(), f"procket-twisted {version}")
        with self.assertRaises(AttributeError):
            procket_twisted.no_such_name  # noqa: B018

    def test_package_has_no_module_getattr(self) -> None:
        """
        procket_twisted defines no module C{__getattr__}: one keeps Python from specializing any
        attribute lookup on the package, C{procket_twisted.listen} included (_client/version.py).
        """
        self.assertNotIn("__getattr__", vars(procket_twisted))

    def test_policy_reference_is_installed(self) -> None:
        """procket-twisted policy prints the reference the package installs."""
        printed = subprocess.run(cli_command() + ["policy"], capture_output=True, text=True)
        self.assertEqual(printed.returncode, 0, printed.stderr)
        self.assertTrue(printed.stdout.startswith("# The policy: who may ask the helper for what"))
        installed = os.path.join(os.path.dirname(procket_twisted.__file__), "policy.md")
        with open(installed, encoding="utf-8") as reference:
            self.assertEqual(printed.stdout, reference.read())


class DoctorTests(SynchronousTestCase):
    """doctor's answers, as root and as the test user against the real setuid helper."""

    def setUp(self) -> None:
        skip_unless_privileged(self)

    def test_result_as_root(self) -> None:
        """As root (who needs no helper) doctor still ends with a RESULT line, exit 0."""
        done = subprocess.run(cli_command() + ["doctor"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("RESULT: root binds privileged TCP and UDP ports itself", done.stdout)
        self.assertIn("- twisted plugin: found", done.stdout)

    def test_port_taken(self) -> None:
        """A port that is busy is reported as taken, not as 'cannot get privileged sockets'."""
        prefix = install_prefix(self)
        port = free_port()
        with socket.socket() as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("127.0.0.1", port))
            holder.listen()
            done = run_command_unprivileged(
                cli_command() + ["doctor", "--port", str(port)], {"PROCKET_HELPER": prefix.helper}
            )
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn(
            f"RESULT: the helper works, but port {port} on 127.0.0.1 is taken", done.stdout
        )
        self.assertNotIn("cannot get privileged sockets", done.stdout)

    def test_procket_helper_names_nothing(self) -> None:
        """PROCKET_HELPER pointing nowhere: doctor names the helper and policy there would be."""
        keep_install_record(self)
        prefix = install_prefix(self)
        recorded = subprocess.run(
            cli_command() + ["install-helper", "--prefix", prefix.path],
            capture_output=True,
            text=True,
        )
        self.assertEqual(recorded.returncode, 0, recorded.stderr)
        done = run_command_unprivileged(
            cli_command() + ["doctor"], {"PROCKET_HELPER": "/nonexistent/procket-helper"}
        )
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn(
            f"PROCKET_HELPER names a helper that does not exist; without it this user would run "
            f"{prefix.helper}",
            done.stdout,
        )
        self.assertIn(f"whose policy is {prefix.policy}", done.stdout)
        self.assertNotIn("/nonexistent/policy", done.stdout)

    def test_group_and_port_in_messages(self) -> None:
        """A --group helper names the group; a refusal names doctor --port and the reference."""
        grouped = install_prefix(self, "--group", "daemon")
        result = run_unprivileged(self, """
            try:
                procket_twisted.listen(80, ip="127.0.0.1", direct=False)
            except ProcketError as error:
                report(str(error))
        """, {"PROCKET_HELPER": grouped.helper})  # fmt: skip
        self.assertIn("members of group daemon (gid 1)", result)
        self.assertIn(f"usermod -aG daemon {TEST_USER}", result)
        denying = install_prefix(self, policy="allow kind=tcp port=1-79\n")
        result = run_unprivileged(self, """
            try:
                procket_twisted.listen(443, ip="127.0.0.1", direct=False)
            except ProcketError as error:
                report(str(error))
        """, {"PROCKET_HELPER": denying.helper})  # fmt: skip
        self.assertIn("procket-twisted doctor --port 443 shows which rule decides", result)
        self.assertIn("procket-twisted policy prints the format", result)


class PluginCacheTests(SynchronousTestCase):
    """A stale plugin cache the user cannot write: doctor says so, plugin-cache fails until root."""

    def setUp(self) -> None:
        skip_unless_privileged(self)

    def test_stale_cache(self) -> None:
        """Make the procket plugin newer than its cache, then look as the test user and as root."""
        import twisted.plugins

        plugin = next(
            os.path.join(d, "procket_twisted_endpoints.py")
            for d in twisted.plugins.__path__
            if os.path.exists(os.path.join(d, "procket_twisted_endpoints.py"))
        )
        self.addCleanup(
            subprocess.run, cli_command() + ["plugin-cache"], capture_output=True, check=True
        )
        later = time.time() + 2
        os.utime(plugin, (later, later))
        doctor = run_command_unprivileged(cli_command() + ["doctor"], {})
        self.assertIn("is stale and this user cannot write it", doctor.stdout)
        refused = run_command_unprivileged(cli_command() + ["plugin-cache"], {})
        self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
        self.assertIn("cannot write", refused.stderr)
        time.sleep(max(0.0, later - time.time()) + 0.05)
        fixed = subprocess.run(cli_command() + ["plugin-cache"], capture_output=True, text=True)
        self.assertEqual(fixed.returncode, 0, fixed.stdout + fixed.stderr)
        self.assertIn("plugin cache rewritten", fixed.stdout)
        again = run_command_unprivileged(cli_command() + ["doctor"], {})
        self.assertNotIn("stale", again.stdout)
        self.assertIn("- twisted plugin: found", again.stdout)
