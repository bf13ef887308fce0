"""
Unit tests for finding the helper (`procket_twisted.find_helper`): an explicit progname (split with
shlex, never given to a shell), then $PROCKET_HELPER, then the installed locations (through
``sudo -n`` when the installed file is not privileged itself), then an error saying how to
install one.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted._client.locate
from procket_twisted import HelperCommand, HelperNotFoundError, find_helper

from .fake_helper_support import FAKE_HELPER
from .support import set_environment


class LocateTestCase(SynchronousTestCase):
    """Temporary directories and a controlled PATH and installed-helper list."""

    def directory(self) -> str:
        path = tempfile.mkdtemp(prefix="procket-locate-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def executable(self, directory: str, name: str, mode: int = 0o755) -> str:
        path = os.path.join(directory, name)
        with open(path, "w", encoding="ascii") as script:
            script.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, mode)
        return path

    def set_path(self, *directories: str) -> None:
        """Make PATH exactly DIRECTORIES for this test."""
        set_environment(self, "PATH", os.pathsep.join(directories))

    def installed(self, *paths: str) -> None:
        """Pretend the installed locations are PATHS."""
        self.patch(procket_twisted._client.locate, "INSTALLED_HELPERS", tuple(paths))


class ProgramTests(LocateTestCase):
    """An explicit progname, string or list."""

    def test_string_split_with_shlex(self) -> None:
        """A string is split like a shell would split words, quotes included."""
        command = find_helper("/usr/bin/sudo -n '/opt/my dir/procket-helper'", environ={})
        self.assertEqual(command.argv, ("/usr/bin/sudo", "-n", "/opt/my dir/procket-helper"))
        self.assertEqual(command.executable, "/usr/bin/sudo")
        self.assertEqual(command.helper, "/opt/my dir/procket-helper")
        self.assertEqual(command.source, "progname")

    def test_never_a_shell(self) -> None:
        """';', '$(...)', '|' and '&&' are literal arguments: nothing is interpreted."""
        command = find_helper("/bin/echo hi; rm -rf / $(id) `id` | cat && true", environ={})
        self.assertEqual(
            command.argv,
            ("/bin/echo", "hi;", "rm", "-rf", "/", "$(id)", "`id`", "|", "cat", "&&", "true"),
        )
        self.assertEqual(command.executable, "/bin/echo")

    def test_semicolon_in_program_name(self) -> None:
        """A program path that contains ';' is a path, not two commands."""
        command = find_helper("'/tmp/a;b/helper'", environ={})
        self.assertEqual(command.argv, ("/tmp/a;b/helper",))
        self.assertEqual(command.executable, "/tmp/a;b/helper")

    def test_list(self) -> None:
        """A list is used as the argv unchanged; the helper is its last absolute argument."""
        command = find_helper([sys.executable, FAKE_HELPER], environ={})
        self.assertIsInstance(command, HelperCommand)
        self.assertEqual(command.argv, (sys.executable, FAKE_HELPER))
        self.assertEqual(command.executable, sys.executable)
        self.assertEqual(command.helper, FAKE_HELPER)
        self.assertEqual(command.source, "progname")
        spaced = find_helper(["/opt/a b/helper"], environ={})
        self.assertEqual(spaced.argv, ("/opt/a b/helper",))

    def test_bare_name_on_path(self) -> None:
        """A bare program name is looked up on PATH (no shell involved)."""
        directory = self.directory()
        program = self.executable(directory, "my-procket-helper")
        self.set_path(directory)
        command = find_helper("my-procket-helper --flag", environ={})
        self.assertEqual(command.executable, program)
        self.assertEqual(command.argv, ("my-procket-helper", "--flag"))
        self.assertEqual(command.helper, program)

    def test_bare_name_not_on_path(self) -> None:
        """A bare name that is not on PATH is a HelperNotFoundError asking for a full path."""
        self.set_path(self.directory())
        error = self.assertRaises(
            HelperNotFoundError, find_helper, "no-such-procket-helper", environ={}
        )
        self.assertEqual(error.step, "find")
        self.assertIn("no-such-procket-helper", str(error))
        self.assertIn("PATH", str(error))
        self.assertIn("full path", str(error))

    def test_empty(self) -> None:
        """An empty progname (or one that splits to nothing) is a HelperNotFoundError."""
        for progname in ("", "   ", []):
            error = self.assertRaises(HelperNotFoundError, find_helper, progname, environ={})
            self.assertIn("empty", str(error))

    def test_unbalanced_quote(self) -> None:
        """A string shlex cannot split is a HelperNotFoundError that quotes it."""
        error = self.assertRaises(HelperNotFoundError, find_helper, "/opt/helper 'oops", environ={})
        self.assertIn("cannot be split", str(error))

    def test_describe(self) -> None:
        """describe() quotes the argv the way a user would type it, and its source."""
        command = find_helper(["/opt/a b/helper", "x;y"], environ={})
        self.assertEqual(command.describe(), "'/opt/a b/helper' 'x;y' (from progname)")


class EnvironmentTests(LocateTestCase):
    """$PROCKET_HELPER, used when there is no progname."""

    def test_used_without_progname(self) -> None:
        """With no progname, PROCKET_HELPER is split and used."""
        command = find_helper(environ={"PROCKET_HELPER": "/usr/bin/sudo -n /opt/h/procket-helper"})
        self.assertEqual(command.argv, ("/usr/bin/sudo", "-n", "/opt/h/procket-helper"))
        self.assertEqual(command.helper, "/opt/h/procket-helper")
        self.assertEqual(command.source, "PROCKET_HELPER")

    def test_progname_wins(self) -> None:
        """An explicit progname is used even when PROCKET_HELPER is set."""
        command = find_helper("/opt/mine", environ={"PROCKET_HELPER": "/opt/theirs"})
        self.assertEqual(command.argv, ("/opt/mine",))
        self.assertEqual(command.source, "progname")

    def test_os_environ_by_default(self) -> None:
        """Without an environ argument, os.environ is read."""
        set_environment(self, "PROCKET_HELPER", "/opt/from-os-environ")
        self.assertEqual(find_helper().argv, ("/opt/from-os-environ",))

    def test_empty_variable_ignored(self) -> None:
        """An empty PROCKET_HELPER counts as unset: the installed locations are tried."""
        directory = self.directory()
        helper = self.executable(directory, "procket-helper")
        self.installed(helper)
        self.set_path(self.directory())  # no sudo
        self.assertEqual(find_helper(environ={"PROCKET_HELPER": ""}).argv, (helper,))

    def test_shell_syntax_is_literal(self) -> None:
        """PROCKET_HELPER is not given to a shell either."""
        command = find_helper(environ={"PROCKET_HELPER": "/opt/h $(reboot); reboot"})
        self.assertEqual(command.argv, ("/opt/h", "$(reboot);", "reboot"))


class InstalledTests(LocateTestCase):
    """The installed locations, and the error when there is nothing."""

    def test_first_existing(self) -> None:
        """The first installed location that exists is used; absent ones are skipped."""
        directory = self.directory()
        helper = self.executable(directory, "procket-helper")
        self.installed(os.path.join(directory, "absent"), helper)
        self.set_path(self.directory())  # no sudo on PATH
        command = find_helper(environ={})
        self.assertEqual(command, HelperCommand((helper,), helper, helper, "installed"))

    def test_unprivileged_file_through_sudo(self) -> None:
        """An installed helper that is not privileged, with sudo on PATH, is run as sudo -n."""
        directory = self.directory()
        helper = self.executable(directory, "procket-helper")
        bin_directory = self.directory()
        sudo = self.executable(bin_directory, "sudo")
        self.installed(helper)
        self.set_path(bin_directory)
        command = find_helper(environ={})
        self.assertEqual(command.argv, (sudo, "-n", helper))
        self.assertEqual(command.executable, sudo)
        self.assertEqual(command.helper, helper)
        self.assertIn("sudo", command.source)

    def test_setuid_root_file_run_directly(self) -> None:
        """A setuid-root installed helper is run directly even when sudo is on PATH."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root, to make a root-owned setuid file")
        directory = self.directory()
        helper = self.executable(directory, "procket-helper", 0o4755)
        self.assertTrue(os.stat(helper).st_mode & stat.S_ISUID)
        bin_directory = self.directory()
        self.executable(bin_directory, "sudo")
        self.installed(helper)
        self.set_path(bin_directory)
        self.assertEqual(find_helper(environ={}).argv, (helper,))

    def test_nothing_found(self) -> None:
        """No progname, no PROCKET_HELPER, nothing installed: the error says how to install."""
        directory = self.directory()
        self.installed(os.path.join(directory, "a"), os.path.join(directory, "b"))
        error = self.assertRaises(HelperNotFoundError, find_helper, None, environ={})
        self.assertIn("procket-twisted install-helper", str(error))
        self.assertIn("PROCKET_HELPER", str(error))
        self.assertIn(os.path.join(directory, "a"), str(error))
        self.assertEqual(error.step, "find")
        self.assertEqual(error.errno, 2)
