"""How to tell a user to run this command again as root: the script's full path, the same options."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import List, Sequence

__all__ = ["this_command", "as_root"]


def this_command() -> List[str]:
    """How this process was started, as a command a user can paste (the script's full path)."""
    script = shutil.which(sys.argv[0]) or os.path.abspath(sys.argv[0])
    if os.path.basename(script) == "procket-twisted":
        return [script]
    return [sys.executable, "-m", "procket_twisted._admin.cli"]


def as_root(arguments: Sequence[str]) -> str:
    """The line that runs this command with ARGUMENTS as root (sudo's secure_path may lack it)."""
    return f"sudo {shlex.join([*this_command(), *arguments])}"
