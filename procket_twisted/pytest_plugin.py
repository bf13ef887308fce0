"""
The pytest plugin this package installs (entry point C{pytest11}): the C{procket_helper} fixture,
a L{procket_twisted.testing.FakeHelper} standing in for the helper for one test.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from .testing import FakeHelper


@pytest.fixture
def procket_helper() -> Iterator[FakeHelper]:
    """
    Every procket acquisition in the test gets a real socket on a kernel-chosen port instead of
    the helper's (see L{procket_twisted.testing}); undone when the test ends.
    """
    fake = FakeHelper()
    uninstall = fake.install()
    try:
        yield fake
    finally:
        uninstall()
