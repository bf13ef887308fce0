"""
``procket-twisted install-helper`` against directories that other users can change.

install-helper runs as root and makes and changes directories under the prefix. Every directory of
PREFIX/libexec/procket-twisted that exists must pass the helper's own rule (a directory, not a
symbolic link, root's, not writable by group or others unless sticky; the helper's own directory
writable by root alone even when sticky) before anything is made or changed, and what is made is
made and changed through descriptors, so a symbolic link planted or raced into the path cannot
redirect root's mkdir, chown or chmod to another file. Each test here runs the real command as
root; the racing user is ``nobody``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from .support import TEST_GID, TEST_UID, cli_command, skip_unless_privileged

ERROR_START = "procket-twisted install-helper: error: cannot install under "

#: Run as nobody inside the sticky directory argv[1]: make a directory of its own (holding a
#: symbolic link libexec -> the victim) and a symbolic link to the victim (argv[2]), then keep
#: renaming each in turn to argv[1]/p and back, for argv[3] seconds at most; print the number of
#: swaps. A rename fails while root's own p is there (sticky), and the loop goes on.
SWAPPER = """\
import os, sys, time
sticky, victim, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
mine, link, target = (os.path.join(sticky, name) for name in ("mine", "link", "p"))
os.mkdir(mine, 0o755)
os.symlink(victim, os.path.join(mine, "libexec"))
os.symlink(victim, link)
print("ready", flush=True)
swaps = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for prepared in (mine, link):
        try:
            os.rename(prepared, target)
        except OSError:
            continue
        swaps += 1
        try:
            os.rename(target, prepared)
        except OSError:
            pass
print(swaps, flush=True)
"""

Entry = Tuple[object, ...]


def snapshot(top: str) -> Dict[str, Entry]:
    """
    Everything under TOP (TOP included), without following links: each entry's type, mode, owner
    and group, and a link's target, a file's inode, mtime and content digest, a directory's mtime.
    """
    found: Dict[str, Entry] = {}

    def visit(path: str, relative: str) -> None:
        info = os.lstat(path)
        entry: Entry = (
            stat.S_IFMT(info.st_mode),
            stat.S_IMODE(info.st_mode),
            info.st_uid,
            info.st_gid,
        )
        if stat.S_ISLNK(info.st_mode):
            entry += (os.readlink(path),)
        elif stat.S_ISREG(info.st_mode):
            with open(path, "rb") as stream:
                digest = hashlib.sha256(stream.read()).hexdigest()
            entry += (info.st_ino, info.st_mtime_ns, digest)
        elif stat.S_ISDIR(info.st_mode):
            entry += (info.st_mtime_ns,)
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), os.path.join(relative, name))
        found[relative] = entry

    visit(top, ".")
    return found


class InstallSecurityTests(SynchronousTestCase):
    """install-helper checks the whole path before it changes anything, and works through fds."""

    def setUp(self) -> None:
        skip_unless_privileged(self)

    def directory(self, mode: int = 0o755, owner: int = 0) -> str:
        """A fresh directory with MODE and OWNER under the temporary directory, removed later."""
        path = tempfile.mkdtemp(prefix="procket-install-")
        self.addCleanup(shutil.rmtree, path, True)
        os.chown(path, owner, owner and TEST_GID)
        os.chmod(path, mode)
        return path

    def victim(self) -> str:
        """A root-owned directory (mode 700) holding a secret file (mode 600): not to be touched."""
        path = self.directory(0o700)
        secret = os.path.join(path, "secret")
        with open(secret, "w", encoding="ascii") as stream:
            stream.write("root's secret\n")
        os.chmod(secret, 0o600)
        return path

    def install(self, prefix: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            cli_command() + ["install-helper", "--no-record", "--prefix", prefix],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def assert_refused(self, result: subprocess.CompletedProcess, *phrases: str) -> None:
        """RESULT is a refusal (exit status 1, no traceback) whose message has each of PHRASES."""
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertTrue(result.stderr.startswith(ERROR_START), output)
        self.assertNotIn("Traceback", output)
        for phrase in phrases:
            self.assertIn(phrase, result.stderr)

    def assert_refused_changing_nothing(
        self, top: str, prefix: str, *phrases: str
    ) -> subprocess.CompletedProcess:
        """install-helper --prefix PREFIX is refused with PHRASES, and nothing under TOP changes."""
        before = snapshot(top)
        result = self.install(prefix)
        self.assert_refused(result, *phrases)
        self.assertEqual(snapshot(top), before)
        return result

    def bad_ancestor(self, mode: int, owner: int, *phrases: str) -> None:
        """
        A directory with MODE and OWNER above the prefix: refused, naming it with PHRASES (where
        ``{bad}`` stands for it), and nothing is made below it or changed anywhere.
        """
        top = self.directory()
        bad = os.path.join(top, "bad")
        os.mkdir(bad)
        good = os.path.join(bad, "good")
        os.mkdir(good, 0o755)
        os.chown(bad, owner, owner and TEST_GID)
        os.chmod(bad, mode)
        self.assert_refused_changing_nothing(
            top, os.path.join(good, "prefix"), *(phrase.format(bad=bad) for phrase in phrases)
        )
        self.assertEqual(os.listdir(good), [])

    def test_group_writable_ancestor_is_refused_first(self) -> None:
        """
        A root-owned ancestor with mode 775 is refused before anything is made: the old
        installer made PREFIX/libexec/procket-twisted below it first, then refused.
        """
        self.bad_ancestor(
            0o775,
            0,
            "{bad} is writable by group or others (mode 775) and not sticky",
            "chmod go-w {bad}",
        )

    def test_world_writable_ancestor_is_refused_first(self) -> None:
        """
        A root-owned, world-writable, non-sticky ancestor (777) is refused before anything is
        made (the old installer made the directories below it first).
        """
        self.bad_ancestor(
            0o777,
            0,
            "{bad} is writable by group or others (mode 777) and not sticky",
            "chmod go-w {bad}",
        )

    def test_user_owned_ancestor_is_refused_first(self) -> None:
        """
        An ancestor owned by nobody (mode 755) is refused before anything is made: the old
        installer made, chowned and chmodded directories inside it first, where nobody could
        have swapped one for a link.
        """
        self.bad_ancestor(
            0o755,
            TEST_UID,
            f"{{bad}} is owned by uid {TEST_UID}, not root",
            "chown root {bad}",
        )

    def test_symlinked_component_is_refused(self) -> None:
        """
        A symbolic link in the prefix, even to a good root-owned directory, is refused with the
        realpath fix, and nothing is made where it points: the old installer followed it and
        made PREFIX/libexec/procket-twisted in the target before refusing.
        """
        top = self.directory()
        real = os.path.join(top, "real")
        os.mkdir(real, 0o755)
        link = os.path.join(top, "link")
        os.symlink(real, link)
        for prefix in (link, os.path.join(link, "prefix")):
            self.assert_refused_changing_nothing(
                top, prefix, f"{link} is a symbolic link; give the real path (realpath {link})"
            )
        self.assertEqual(os.listdir(real), [])

    def test_sticky_helper_directory_is_refused_sticky_ancestor_is_not(self) -> None:
        """
        A sticky world-writable ancestor (1777, like /tmp) is accepted, but the helper's own
        directory with mode 1777 is refused (anyone could add a file beside the policy), and the
        installed helper is left as it was: the old installer accepted both.
        """
        top = self.directory()
        sticky = os.path.join(top, "sticky")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        prefix = os.path.join(sticky, "prefix")
        first = self.install(prefix)
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(sticky).st_mode), 0o1777)
        own = os.path.join(prefix, "libexec", "procket-twisted")
        os.chmod(own, 0o1777)
        self.assert_refused_changing_nothing(
            top,
            prefix,
            f"{own}, the helper's own directory, is writable by group or others (mode 1777)",
            "sticky or not",
            f"chmod go-w {own}",
        )

    def test_planted_symlinks_are_not_followed(self) -> None:
        """
        A symbolic link where install-helper would make a directory (PREFIX/libexec, or the
        helper's own directory, to a root-owned victim or to a name not yet made in it) is
        refused, and the victim's modes, owners and contents stay as they were: the old
        installer made its procket-twisted directory inside the victim through the first link,
        set owner and mode on it, then refused.
        """
        victim = self.victim()
        cases: List[Tuple[str, str]] = [
            ("libexec", victim),
            ("libexec/procket-twisted", victim),
            ("libexec", os.path.join(victim, "new")),
            ("libexec/procket-twisted", os.path.join(victim, "new")),
        ]
        for planted, target in cases:
            prefix = self.directory()
            link = os.path.join(prefix, planted)
            os.makedirs(os.path.dirname(link), 0o755, exist_ok=True)
            os.symlink(target, link)
            before = snapshot(victim)
            self.assert_refused_changing_nothing(
                prefix, prefix, f"{link} is a symbolic link; give the real path (realpath {link})"
            )
            self.assertEqual(snapshot(victim), before, (planted, target))
        self.assertEqual(os.listdir(victim), ["secret"])

    def test_racing_swapper_cannot_redirect_anything(self) -> None:
        """
        In a sticky 1777 directory S, nobody keeps swapping S/p between a directory of its own
        (holding libexec -> a root-owned victim) and a symbolic link to the victim, while root
        runs install-helper --prefix S/p again and again. Each run either refuses with a clear
        message or, when S/p was absent and root made it, installs into a root-owned S/p; the
        victim (700, holding a 600 file) never changes and nothing appears in S or in nobody's
        directory. The old installer created directories in the victim through the links.
        """
        top = self.directory()
        sticky = os.path.join(top, "sticky")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        victim = self.victim()
        prefix = os.path.join(sticky, "p")
        swapper = subprocess.Popen(
            [
                "setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_GID}", "--clear-groups", "--",
                sys.executable, "-I", "-c", SWAPPER, sticky, victim, "30",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )  # fmt: skip

        def stop() -> None:
            if swapper.poll() is None:
                swapper.kill()
            swapper.communicate()

        self.addCleanup(stop)
        self.assertEqual(swapper.stdout.readline() if swapper.stdout else "", "ready\n")
        victim_before = snapshot(victim)
        outcomes = {"refused": 0, "installed": 0}
        deadline = time.monotonic() + 15
        while sum(outcomes.values()) < 40 and time.monotonic() < deadline:
            result = self.install(prefix)
            if result.returncode == 0:
                info = os.lstat(prefix)
                self.assertTrue(stat.S_ISDIR(info.st_mode), result.stdout)
                self.assertEqual((info.st_uid, stat.S_IMODE(info.st_mode)), (0, 0o755))
                helper = os.stat(
                    os.path.join(prefix, "libexec", "procket-twisted", "procket-helper")
                )
                self.assertEqual((helper.st_uid, stat.S_IMODE(helper.st_mode)), (0, 0o4755))
                outcomes["installed"] += 1
                shutil.rmtree(prefix)  # root's, in a sticky directory: nobody cannot swap it
            else:
                self.assert_refused(result, prefix)
                outcomes["refused"] += 1
            self.assertEqual(snapshot(victim), victim_before, outcomes)
            self.assertLessEqual(set(os.listdir(sticky)), {"p", "mine", "link"}, outcomes)
            self.assertEqual(stat.S_IMODE(os.stat(sticky).st_mode), 0o1777)
        swapper.kill()
        _, err = swapper.communicate()
        self.assertEqual(err, "")
        # nobody's directory (back at its name, or left at p when the swapper stopped) holds only
        # its own link: root made nothing through it
        held = [
            os.listdir(path)
            for path in (os.path.join(sticky, "mine"), prefix)
            if os.path.lexists(path) and os.lstat(path).st_uid == TEST_UID
            and stat.S_ISDIR(os.lstat(path).st_mode)
        ]  # fmt: skip
        self.assertEqual(held, [["libexec"]])
        self.assertGreater(outcomes["refused"], 0, outcomes)
        self.assertEqual(os.listdir(victim), ["secret"])

    def test_private_prefix_install_and_policy_kept(self) -> None:
        """
        A fresh mkdtemp prefix (mode 700) still works: it is made searchable, the directories
        are root's with mode 755, the policy is the default one ending with a newline, and
        nothing else is left in the helper's directory. A second run keeps an edited policy
        and warns when its last line has no newline (the helper refuses such a half-written
        file; the old installer kept it without a word); a third keeps a good one silently.
        """
        prefix = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, prefix, True)
        first = self.install(prefix)
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        self.assertIn(f"made {prefix} searchable by every user (mode 711)", first.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(prefix).st_mode), 0o711)
        own = os.path.join(prefix, "libexec", "procket-twisted")
        for path in (os.path.dirname(own), own):
            info = os.lstat(path)
            self.assertEqual((info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)), (0, 0, 0o755))
        self.assertEqual(sorted(os.listdir(own)), ["policy", "procket-helper"])
        policy = os.path.join(own, "policy")
        info = os.lstat(policy)
        self.assertEqual((info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)), (0, 0, 0o644))
        from procket_twisted._admin.install import DEFAULT_POLICY

        with open(policy, encoding="ascii") as stream:
            text = stream.read()
        self.assertEqual(text, DEFAULT_POLICY)
        self.assertTrue(text.endswith("\n"))

        for edited, warned in (
            ("allow kind=tcp port=80", True),
            ("allow kind=tcp port=80\n", False),
        ):
            with open(policy, "w", encoding="ascii") as stream:
                stream.write(edited)
            again = self.install(prefix)
            self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
            self.assertIn(f"kept the existing policy {policy}", again.stdout)
            warning = (
                "the helper refuses a policy whose last line has no newline (a half-written "
                "file): add one"
            )
            if warned:
                self.assertIn(warning, again.stdout)
            else:
                self.assertIn(f"kept the existing policy {policy}\n", again.stdout)
                self.assertNotIn("BUT", again.stdout)
            with open(policy, encoding="ascii") as stream:
                self.assertEqual(stream.read(), edited)
            self.assertEqual(sorted(os.listdir(own)), ["policy", "procket-helper"])
