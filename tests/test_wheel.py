"""
The release wheel (scripts/wheel): one wheel for every Python 3, tagged
``py3-none-manylinux_2_17_ARCH.manylinux2014_ARCH.musllinux_1_1_ARCH``, carrying the prebuilt
static musl helper and procket-grant with their executable bit. Installed where there is no C
compiler, its helper works: ``install-helper`` as root, then ``doctor`` as nobody gets a
privileged socket through it. pip on the oldest and the newest supported Python takes the same
file; pip on Python 3.8 refuses it (Requires-Python).

The wheel is ``$PROCKET_TEST_WHEEL`` (scripts/test builds it once with scripts/wheel); without
it, and with the source tree beside these tests, one is built here with scripts/wheel (about 15
seconds); otherwise the tests skip, or fail where CI requires privileged tests.
"""

from __future__ import annotations

import atexit
import functools
import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
import zipfile
from typing import List, Optional

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted._admin.doctor import built_against_glibc

from .support import (
    REQUIRE_VARIABLE,
    TEST_UID,
    TIER_VARIABLE,
    run_command_unprivileged,
    skip_unless_privileged,
    skip_with_sanitizer_build,
)

WHEEL_VARIABLE = "PROCKET_TEST_WHEEL"
PROGRAMS = ("procket_twisted/helper/procket-helper", "procket_twisted/grant/procket-grant")
#: The wheel's platforms (setup.py's PORTABLE_PLATFORMS says why these).
PLATFORMS = "manylinux_2_17_{arch}.manylinux2014_{arch}.musllinux_1_1_{arch}"
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The base interpreter of the fresh venvs, as scripts/test's (every user can read it).
SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=None)
def _built_wheel() -> str:
    """A wheel built once per run with the source tree's scripts/wheel."""
    directory = tempfile.mkdtemp(prefix="procket-test-wheel-")
    atexit.register(shutil.rmtree, directory, True)
    finished = subprocess.run(
        ["bash", os.path.join(SOURCE, "scripts", "wheel"), directory],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if finished.returncode != 0:
        raise AssertionError(f"scripts/wheel failed:\n{finished.stdout}{finished.stderr}")
    return finished.stdout.strip().splitlines()[-1]


def wheel_path(testcase: unittest.TestCase) -> str:
    """The wheel under test (see the module's docstring), or skip TESTCASE (fail in CI)."""
    given = os.environ.get(WHEEL_VARIABLE)
    if given:
        if not os.path.isfile(given):
            testcase.fail(f"{WHEEL_VARIABLE}={given}: no such file")
        return given
    if os.environ.get(TIER_VARIABLE) == "unit":
        raise unittest.SkipTest(f"the unit tier builds no wheel (set {WHEEL_VARIABLE})")
    if os.geteuid() == 0 and os.path.isfile(os.path.join(SOURCE, "scripts", "wheel")):
        return _built_wheel()
    reason = f"no wheel: set {WHEEL_VARIABLE} to one built by scripts/wheel (scripts/test does)"
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        testcase.fail(f"{REQUIRE_VARIABLE}=1 but {reason}")
    raise unittest.SkipTest(reason)


def world_readable_directory(testcase: unittest.TestCase, prefix: str) -> str:
    """A temporary directory that the test user can read (removed after the test)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def tools_without_compiler(directory: str) -> str:
    """
    DIRECTORY/bin with links to the few commands pip, install-helper and doctor may run, and no
    C compiler, assembler or linker: the only PATH of the install.
    """
    tools = os.path.join(directory, "bin")
    os.mkdir(tools)
    for name in ("uname", "setpriv", "id"):
        found = shutil.which(name)
        if found is not None:
            os.symlink(found, os.path.join(tools, name))
    return tools


def environment_without_compiler(tools: str) -> dict:
    """This process's environment (pip's index settings) with PATH=TOOLS and no compiler."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("CC", "CXX", "LDSHARED", "PYTHONPATH", WHEEL_VARIABLE)
                   and not key.startswith("VIRTUAL_ENV")}  # fmt: skip
    environment["PATH"] = tools
    return environment


def pyenv_python(version: str) -> Optional[str]:
    """The newest pyenv interpreter of VERSION (``3.9``) when there is a readable one."""
    roots: List[str] = []
    if shutil.which("pyenv"):
        found = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        roots.append(found.stdout.strip())
    roots += [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    for root in filter(None, roots):
        candidates = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python3"))
        candidates = [path for path in candidates if os.access(path, os.X_OK)]
        if candidates:  # the newest patch release: versions/3.9.18/bin/python3
            return max(candidates, key=lambda path: int(path.split(os.sep)[-3].split(".")[2]))
    return None


class WheelFileTests(SynchronousTestCase):
    """What the wheel says about itself and what it holds."""

    def setUp(self) -> None:
        self.wheel = wheel_path(self)

    def test_tags_and_requires_python(self) -> None:
        """py3-none-(every Linux libc), not pure, Requires-Python >=3.9, in name and metadata."""
        arch = os.uname().machine
        platforms = PLATFORMS.format(arch=arch)
        name = os.path.basename(self.wheel)
        self.assertEqual(name.split("-", 2)[2], f"py3-none-{platforms}.whl", name)
        with zipfile.ZipFile(self.wheel) as archive:
            info = next(name for name in archive.namelist() if name.endswith(".dist-info/WHEEL"))
            wheel = archive.read(info).decode().splitlines()
            metadata = archive.read(info[: -len("WHEEL")] + "METADATA").decode().splitlines()
        self.assertEqual(
            [line for line in wheel if line.startswith("Tag:")],
            [f"Tag: py3-none-{platform}" for platform in platforms.split(".")],
        )
        self.assertIn("Root-Is-Purelib: false", wheel)
        self.assertIn("Requires-Python: >=3.9", metadata)

    def test_programs_are_static_executables(self) -> None:
        """Both programs are there, mode 755 in the zip, static and not linked against glibc."""
        directory = world_readable_directory(self, "procket-wheel-programs-")
        with zipfile.ZipFile(self.wheel) as archive:
            for name in PROGRAMS:
                member = archive.getinfo(name)
                mode = member.external_attr >> 16
                self.assertEqual((stat.S_ISREG(mode), stat.S_IMODE(mode)), (True, 0o755), name)
                path = archive.extract(member, directory)
                self.assertIs(built_against_glibc(path), False, name)
                segments = subprocess.run(
                    ["readelf", "-lW", path], capture_output=True, text=True, check=True
                ).stdout
                self.assertNotIn("program interpreter", segments, name)


class WheelInstallTests(SynchronousTestCase):
    """The wheel installed where there is no C compiler, and run."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        skip_with_sanitizer_build(self, "the wheel carries the static release build")
        self.wheel = wheel_path(self)

    def test_installs_without_compiler_and_serves_nobody(self) -> None:
        """
        A fresh venv with no compiler on PATH and no CC installs the wheel (its dependencies
        from the index); install-helper installs the wheel's own static musl helper, and doctor,
        as nobody, gets a privileged socket through it (exit status 0).
        """
        work = world_readable_directory(self, "procket-wheel-install-")
        tools = tools_without_compiler(work)
        for compiler in ("cc", "gcc", "clang", "musl-gcc", "as", "ld"):
            self.assertIsNone(shutil.which(compiler, path=tools), compiler)
        environment = environment_without_compiler(tools)
        venv = os.path.join(work, "venv")
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", venv], check=True, env=environment)
        python = os.path.join(venv, "bin", "python")
        installed = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", self.wheel],
            capture_output=True, text=True, env=environment, timeout=300,
        )  # fmt: skip
        self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
        package = subprocess.run(
            [python, "-c", "import os, procket_twisted; print(os.path.dirname(procket_twisted.__file__))"],
            capture_output=True, text=True, env=environment, check=True, cwd="/",
        ).stdout.strip()  # fmt: skip
        self.assertTrue(package.startswith(venv), package)
        with zipfile.ZipFile(self.wheel) as archive:
            shipped = {name: archive.read(name) for name in PROGRAMS}
        for name in PROGRAMS:
            path = os.path.join(os.path.dirname(package), name)
            with open(path, "rb") as program:
                self.assertEqual(program.read(), shipped[name], f"{path} is not the wheel's")
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o111, 0o111, path)

        prefix = world_readable_directory(self, "procket-wheel-prefix-")
        command = os.path.join(venv, "bin", "procket-twisted")
        result = subprocess.run(
            [command, "install-helper", "--no-record", "--prefix", prefix],
            capture_output=True, text=True, env=environment, cwd="/",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        helper = os.path.join(prefix, "libexec", "procket-twisted", "procket-helper")
        with open(helper, "rb") as program:
            self.assertEqual(program.read(), shipped[PROGRAMS[0]], "not the wheel's helper")
        self.assertIs(built_against_glibc(helper), False)
        self.assertEqual(os.stat(helper).st_mode & (stat.S_ISUID | 0o777), stat.S_ISUID | 0o755)

        doctor = run_command_unprivileged(
            [command, "doctor"], {"PROCKET_HELPER": helper, "PATH": tools}
        )
        report = doctor.stdout + doctor.stderr
        self.assertEqual(doctor.returncode, 0, report)
        self.assertIn(f"as uid {TEST_UID}", report)
        self.assertIn("through the helper", report)
        self.assertNotIn("helper build: glibc", report)


class OtherPythonTests(SynchronousTestCase):
    """pip of other interpreters (pyenv's, readable by root) on the same wheel."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.wheel = wheel_path(self)

    def install(self, version: str, target: str) -> subprocess.CompletedProcess:
        python = pyenv_python(version)
        if python is None:
            raise unittest.SkipTest(f"no Python {version} from pyenv here")
        return subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-index", "--target", target, self.wheel],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def test_oldest_and_newest_python_accept_it(self) -> None:
        """
        Python 3.9's and 3.13's pip install the very same file, and the package imports there
        (its plain API needs no Twisted) with the helper executable.
        """
        for version in ("3.9", "3.13"):
            target = tempfile.mkdtemp(prefix=f"procket-wheel-{version}-")
            self.addCleanup(shutil.rmtree, target, True)
            installed = self.install(version, target)
            self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
            probe = subprocess.run(
                [pyenv_python(version) or "", "-c",
                 "import json, os, sys, procket_twisted as p\n"
                 "helper = os.path.join(os.path.dirname(p.__file__), 'helper', 'procket-helper')\n"
                 "print(json.dumps([sys.version_info[:2], callable(p.listen),"
                 " os.access(helper, os.X_OK)]))"],
                capture_output=True, text=True, env={"PYTHONPATH": target, "PATH": "/usr/bin:/bin"},
                cwd="/",
            )  # fmt: skip
            self.assertEqual(probe.returncode, 0, probe.stderr)
            major, minor = (int(part) for part in version.split("."))
            self.assertEqual(json.loads(probe.stdout), [[major, minor], True, True])

    def test_python_38_refuses_it(self) -> None:
        """Requires-Python >=3.9 is honoured: Python 3.8's pip will not install it."""
        target = tempfile.mkdtemp(prefix="procket-wheel-3.8-")
        self.addCleanup(shutil.rmtree, target, True)
        refused = self.install("3.8", target)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("requires a different Python", refused.stdout + refused.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(unittest.main())
