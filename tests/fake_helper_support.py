"""
How the unprivileged unit tests drive the FAKE helper (``fake_helper.py``): the command that runs
it with this interpreter, and its mode and run log, which it reads from the environment (set here
for one test at a time).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import unittest
from typing import Callable, List

from .support import set_environment

#: The fake helper script, beside this module.
FAKE_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_helper.py")
#: The command (a ``progname``) that runs the fake helper with this interpreter.
FAKE = [sys.executable, FAKE_HELPER]


def set_fake_helper_mode(testcase: unittest.TestCase, mode: str) -> None:
    """Make the fake helper behave as MODE (see ``fake_helper.py``) until TESTCASE ends."""
    set_environment(testcase, "FAKE_HELPER_MODE", mode)


def reset_fake_helper(testcase: unittest.TestCase) -> None:
    """
    Start TESTCASE with a well-behaved fake helper (mode ``ok``) that logs no runs, whatever the
    environment said before; both are restored when it ends.
    """
    set_fake_helper_mode(testcase, "ok")
    set_environment(testcase, "FAKE_HELPER_LOG", None)


def log_fake_helper_runs(testcase: unittest.TestCase) -> Callable[[], List[List[str]]]:
    """
    Log each fake helper run until TESTCASE ends; returns a function giving each run's arguments
    so far (without the program), to count runs and see exactly what each was asked.
    """
    directory = tempfile.mkdtemp(prefix="procket-fake-helper-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "runs")
    set_environment(testcase, "FAKE_HELPER_LOG", path)

    def runs() -> List[List[str]]:
        try:
            with open(path, encoding="utf-8") as log:
                return [json.loads(line) for line in log]
        except FileNotFoundError:
            return []

    return runs
