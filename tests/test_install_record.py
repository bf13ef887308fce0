"""
The install record: install-helper writes where it put the helper to /etc/procket-twisted/helper,
and a client with no progname and no PROCKET_HELPER uses it, as nobody, whatever the --prefix.
The record is used only when root alone could have written it and what it names: a record or a
helper (or a directory above either) that another user owns or can write, a symbolic link on the
way, or a record that is not one absolute path, is ignored, and doctor says why. PROCKET_HELPER
still comes first; --no-record leaves the record alone.

These tests change the machine's record and put back what was there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted._client.install_record import RECORD

from .support import (
    TEST_GID,
    TEST_UID,
    cli_command,
    free_port,
    install_prefix,
    keep_install_record,
    run_command_unprivileged,
    run_unprivileged,
    skip_unless_privileged,
)

#: As the test user, with no PROCKET_HELPER: which helper is found, and a socket from it.
_LISTEN = """
from procket_twisted._client.locate import find_helper
command = find_helper()
sock = procket_twisted.listen(PORT, ip="127.0.0.1", direct=False)
report([command.helper, command.source, sock.getsockname()[1]])
"""

#: As the test user, with no PROCKET_HELPER: the helper found, or the error's type.
_FOUND = """
from procket_twisted._client.locate import find_helper
from procket_twisted._client.install_record import record_problem
try:
    found = find_helper().helper
except ProcketError as error:
    found = type(error).__name__
report([found, record_problem()])
"""


class InstallRecordTests(SynchronousTestCase):
    """install-helper records, clients find, and a record root did not alone write is ignored."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        keep_install_record(self)

    def _install(self, *options: str) -> str:
        """install-helper (recording) into a fresh prefix; the helper's path."""
        prefix = install_prefix(self)  # --no-record, then again with the record:
        result = subprocess.run(
            cli_command() + ["install-helper", "--prefix", prefix.path, *options],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"recorded it in {RECORD}", result.stdout)
        self.assertNotIn("export PROCKET_HELPER", result.stdout)
        return prefix.helper

    def _writeRecord(self, text: str, uid: int = 0, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(RECORD), mode=0o755, exist_ok=True)
        with open(RECORD, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chown(RECORD, uid, 0)
        os.chmod(RECORD, mode)

    def _found(self) -> list:
        return list(run_unprivileged(self, _FOUND))

    def test_client_finds_the_recorded_helper(self) -> None:
        """As nobody, no PROCKET_HELPER: the recorded helper (any prefix) opens a port."""
        helper = self._install()
        with open(RECORD, encoding="utf-8") as stream:
            self.assertEqual(stream.read(), helper + "\n")
        self.assertEqual(os.stat(RECORD).st_uid, 0)
        port = free_port()
        found, source, bound = run_unprivileged(self, _LISTEN.replace("PORT", str(port)))
        self.assertEqual((found, source, bound), (helper, f"recorded in {RECORD}", port))
        doctor = run_command_unprivileged(cli_command() + ["doctor"], {})
        self.assertEqual(doctor.returncode, 0, doctor.stdout + doctor.stderr)
        self.assertIn(f"(from recorded in {RECORD})", doctor.stdout)

    def test_environment_comes_first_and_no_record_keeps_it(self) -> None:
        """PROCKET_HELPER wins over the record; install-helper --no-record leaves it as it was."""
        helper = self._install()
        other = install_prefix(self)  # --no-record
        with open(RECORD, encoding="utf-8") as stream:
            self.assertEqual(stream.read(), helper + "\n")
        found = run_unprivileged(self, _FOUND, {"PROCKET_HELPER": other.helper})
        self.assertEqual(found, [other.helper, None])

    def test_untrusted_records_are_ignored(self) -> None:
        """Each way a record could be another user's doing is ignored, and doctor says why."""
        helper = self._install()
        cases = {
            "writable by group or others": dict(text=helper + "\n", mode=0o666),
            "owned by uid": dict(text=helper + "\n", uid=TEST_UID),
            "not one absolute path on one line": dict(text=helper + "\n/bin/sh\n"),
            "not one absolute path": dict(text="procket-helper\n"),
        }
        for phrase, record in cases.items():
            self._writeRecord(**record)  # type: ignore[arg-type]
            found, problem = self._found()
            self.assertNotEqual(found, helper, phrase)
            self.assertIn(phrase, problem or "", phrase)
        self._writeRecord(helper + "\n")
        self.assertEqual(self._found(), [helper, None])
        doctor_check = run_command_unprivileged(cli_command() + ["doctor"], {})
        self.assertNotIn("install record: ignored", doctor_check.stdout)
        self._writeRecord(helper + "\n", mode=0o666)
        doctor_check = run_command_unprivileged(cli_command() + ["doctor"], {})
        self.assertIn("install record: ignored", doctor_check.stdout)

    def test_a_helper_another_user_could_replace_is_ignored(self) -> None:
        """
        A record that names a helper whose prefix root deleted and a user made again (their own
        directory, their own program) is ignored; so is one through a symbolic link.
        """
        parent = tempfile.mkdtemp(prefix="procket-record-")  # root's, mode 700
        self.addCleanup(shutil.rmtree, parent, True)
        os.chmod(parent, 0o1777)  # a sticky directory such as /tmp
        planted = os.path.join(parent, "prefix", "libexec", "procket-twisted", "procket-helper")
        os.makedirs(os.path.dirname(planted))
        for directory in ("prefix", "prefix/libexec", "prefix/libexec/procket-twisted"):
            os.chown(os.path.join(parent, directory), TEST_UID, TEST_GID)
        shutil.copy("/bin/true", planted)
        os.chown(planted, TEST_UID, TEST_GID)
        self._writeRecord(planted + "\n")
        found, problem = self._found()
        self.assertNotEqual(found, planted)
        self.assertIn(f"owned by uid {TEST_UID}", problem or "")
        helper = self._install()
        link = os.path.join(parent, "link")
        os.symlink(os.path.dirname(helper), link)
        self._writeRecord(os.path.join(link, "procket-helper") + "\n")
        found, problem = self._found()
        self.assertNotEqual(found, os.path.join(link, "procket-helper"))
        self.assertIn("is a symbolic link", problem or "")
