"""
How the helper is compiled (`procket_twisted._admin.helper_build`): against musl when ``musl-gcc`` is
installed, against glibc otherwise or on request, always a static PIE, and each build a working
program. The builds are real compilations of the installed source; a build is recognised by a
symbol only its C library has (musl's ``__init_libc``, glibc's ``__libc_setup_tls``).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import unittest
from typing import Set

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted
from procket_twisted._admin.doctor import built_against_glibc
from procket_twisted._admin.helper_build import compile_helper, musl_directory

from .support import REQUIRE_VARIABLE, set_environment

SOURCE = os.path.join(os.path.dirname(procket_twisted.__file__), "helper")
#: binutils' tools, found once (one test narrows PATH to the compiler alone).
NM = shutil.which("nm") or "nm"
READELF = shutil.which("readelf") or "readelf"
#: scripts/test installs musl-tools; elsewhere the musl test skips, saying so (fails in CI).
MUSL_MISSING = "musl-gcc is not installed (Debian: apt-get install musl-tools)"


def symbols(path: str) -> Set[str]:
    """The names ``nm`` lists for the executable PATH."""
    listed = subprocess.run([NM, path], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in listed.splitlines() if line.strip()}


def is_static_pie(path: str) -> bool:
    """Whether PATH is a position-independent executable with no program interpreter."""
    headers = subprocess.run(
        [READELF, "-h", "-l", path], capture_output=True, text=True, check=True
    ).stdout
    return "DYN (" in headers and "INTERP" not in headers


class HelperBuildTests(SynchronousTestCase):
    """Real builds of the helper into a temporary directory."""

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="procket-build-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def build(self, **options: object) -> str:
        output = os.path.join(self.directory, "procket-helper")
        compile_helper(output, SOURCE, **options)  # type: ignore[arg-type]
        return output

    def assertStaticBuildWith(self, helper: str, library: str) -> None:
        """HELPER is a static PIE linked against LIBRARY (musl or glibc), and it runs."""
        found = symbols(helper)
        ours, theirs = ("__init_libc", "__libc_setup_tls")[:: 1 if library == "musl" else -1]
        self.assertIn(ours, found)
        self.assertNotIn(theirs, found)
        self.assertEqual(built_against_glibc(helper), library == "glibc")  # what doctor says
        self.assertTrue(is_static_pie(helper))
        self.assertRunsAndRefusesATerminal(helper)

    def assertRunsAndRefusesATerminal(self, helper: str) -> None:
        """
        The build runs: started by hand with a pipe for stdin instead of the channel, it refuses
        at its setup step (exit status 1) and says why.
        """
        finished = subprocess.run([helper, "v1"], stdin=subprocess.PIPE, capture_output=True)
        self.assertEqual(finished.returncode, 1)
        self.assertIn(b"standard input must be an AF_UNIX", finished.stdout + finished.stderr)

    def test_musl_when_installed(self) -> None:
        """With musl-gcc installed, the default build is a static PIE linked against musl."""
        if musl_directory() is None:
            if os.environ.get(REQUIRE_VARIABLE) == "1":  # CI installs musl-tools
                self.fail(f"{REQUIRE_VARIABLE}=1 and {MUSL_MISSING}")
            raise unittest.SkipTest(MUSL_MISSING)
        self.assertStaticBuildWith(self.build(), "musl")

    def test_glibc_on_request(self) -> None:
        """musl=False builds against glibc, still a static PIE."""
        self.assertStaticBuildWith(self.build(musl=False), "glibc")

    def test_glibc_without_musl(self) -> None:
        """With no musl-gcc on PATH, the default build falls back to glibc."""
        tools = os.path.join(self.directory, "bin")
        os.mkdir(tools)
        for tool in ("cc", "gcc", "as", "ld"):  # the compiler and what it runs, nothing else
            found = shutil.which(tool)
            if found is None:
                raise unittest.SkipTest(f"no {tool} here")
            os.symlink(found, os.path.join(tools, tool))
        set_environment(self, "PATH", tools)
        set_environment(self, "CC", None)
        self.assertIsNone(musl_directory())
        self.assertIn("__libc_setup_tls", symbols(self.build()))

    def test_wrapper_without_its_files(self) -> None:
        """A musl-gcc whose specs file does not sit beside musl's start files is not used."""
        wrapper = os.path.join(self.directory, "musl-gcc")
        with open(wrapper, "w") as script:
            script.write(f'#!/bin/sh\nexec gcc "$@" -specs "{self.directory}/musl-gcc.specs"\n')
        os.chmod(wrapper, stat.S_IRWXU)
        set_environment(self, "PATH", self.directory + ":" + os.environ.get("PATH", ""))
        self.assertIsNone(musl_directory())

    def test_sanitizer_build_is_glibc(self) -> None:
        """A dynamic build (the sanitizer run's) never uses musl: the sanitizers need glibc."""
        helper = self.build(static=False)
        self.assertFalse(is_static_pie(helper))
        self.assertNotIn("__init_libc", symbols(helper))
        self.assertIs(built_against_glibc(helper), True)

    def test_channel_is_checked(self) -> None:
        """Whatever the C library, a socket that is not AF_UNIX on stdin is refused too."""
        helper = self.build()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as wrong:
            finished = subprocess.run([helper, "v1"], stdin=wrong.fileno(), capture_output=True)
        self.assertEqual(finished.returncode, 1)
