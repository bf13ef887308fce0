"""
How the helper is compiled: one place for the compiler flags, used by ``setup.py`` (which loads
this file by path, before the package is importable) and by the tests that build variants.

The helper is built with every warning an error and hardened (fortify, stack protector, full
RELRO, PIE), and statically linked when the C library allows it: a static helper starts faster
and has no dynamic loader for an environment to influence.
"""

import os
import shlex
import subprocess
from typing import List, Optional, Sequence

WARNINGS = [
    "-Wall", "-Wextra", "-Werror", "-Wformat=2", "-Wconversion", "-Wsign-conversion",
    "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wcast-qual",
    "-Wwrite-strings", "-Wnull-dereference", "-Wvla",
]  # fmt: skip
HARDENING = [
    "-O2", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-fPIE",
    "-Wl,-z,relro,-z,now,-z,noexecstack",
]  # fmt: skip
#: The test build (scripts/test's sanitizer run): every sanitizer report aborts the helper.
SANITIZERS = [
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g",
]  # fmt: skip
STATIC = ["-static-pie"]
DYNAMIC = ["-pie"]


def compiler() -> List[str]:
    """The C compiler command: ``$CC`` or ``cc``."""
    return shlex.split(os.environ.get("CC", "cc"))


def compile_helper(
    source: str, output: str, extra: Sequence[str] = (), static: Optional[bool] = None
) -> List[str]:
    """
    Compile SOURCE into the executable OUTPUT and return the command used.

    @param extra: more flags (sanitizers, defines).
    @param static: True or False to force; None tries static first, then dynamic.
    @raise subprocess.CalledProcessError: when the compiler fails (its output shows why).
    """
    base = compiler() + ["-std=c11"] + WARNINGS + HARDENING + list(extra)
    attempts = [STATIC, DYNAMIC] if static is None else [STATIC if static else DYNAMIC]
    for number, link in enumerate(attempts, 1):
        command = base + link + ["-o", output, source]
        last = number == len(attempts)
        result = subprocess.run(command, capture_output=not last)
        if result.returncode == 0:
            return command
        if last:
            raise subprocess.CalledProcessError(result.returncode, command)
    raise AssertionError("unreachable")
