"""
The kernel grant that measurement (a) times, set up and taken down by ``run.py`` (as root).

`KernelGrant` makes a child cgroup of its own under the cgroup v2 mount, writes a policy that
grants the unprivileged user TCP on 127.0.0.1 at the kernel-grant variant's port(s), applies it
to that child cgroup alone with ``procket-twisted grant apply --policy FILE --cgroup CHILD
--bpffs DIR`` (DIR: a directory of its own, on which the tool mounts a private bpffs), checks
with ``grant status`` that exactly its two programs run for the child's binds, and gives the
command prefix that starts a worker inside the child cgroup (a shell that writes its own pid to
``cgroup.procs``, then execs the worker, so every socket the worker creates belongs there).

On the way out, whatever happened (each step tried even when an earlier one failed): ``grant
remove``, ``grant status`` to see that nothing is left, the bpffs unmounted, the policy and the
directories removed, the child cgroup removed (waiting for its last process to be gone). Nothing
is ever attached to any other cgroup.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["KernelGrant", "cgroup2_mount", "policy_text"]

HOST = "127.0.0.1"
#: How long to wait for the child cgroup's last process to be gone before giving up on rmdir.
RMDIR_SECONDS = 20.0
#: ``procket-grant status``'s exit status when nothing is installed for the cgroup.
STATUS_ABSENT = 4
#: The shell that moves itself into the cgroup "$0" before it execs the command "$@".
ENTER_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def cgroup2_mount() -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (the first cgroup2 line of mountinfo)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            before, _, after = line.partition(" - ")
            if after.split(" ", 1)[0] == "cgroup2":
                point = before.split(" ")[4]
                return re.sub(r"\\([0-7]{3})", lambda found: chr(int(found.group(1), 8)), point)
    return None


def policy_text(uid: int, ports: Sequence[int]) -> str:
    """The grant's policy: UID may have TCP on HOST at PORTS, nothing else."""
    return f"allow user={uid} kind=tcp addr={HOST} port={','.join(map(str, ports))}\n"


def parse_status(output: str) -> Dict[str, str]:
    """``grant status``'s lines as {"state": "installed", "inet4 effective": "1 42", ...}."""
    lines: Dict[str, str] = {}
    for line in output.splitlines():
        words = line.split(" ", 2)
        if words[0] in ("inet4", "inet6") and len(words) > 1:
            lines[f"{words[0]} {words[1]}"] = words[2] if len(words) > 2 else ""
        elif words[0]:
            lines[words[0]] = " ".join(words[1:])
    return lines


class KernelGrant:
    """
    A grant for UID at PORTS in a child cgroup made for it (CGROUP, which must not exist; by
    default a new one under the cgroup v2 mount), its policy and bpffs in SCRATCH (made, must
    not exist; by default a new temporary directory). A context manager: entering applies it,
    leaving removes everything it made.
    """

    def __init__(
        self,
        uid: int,
        ports: Sequence[int],
        cgroup: Optional[str] = None,
        scratch: Optional[str] = None,
    ) -> None:
        self.uid = uid
        self.ports = list(ports)
        self.cli = os.path.join(os.path.dirname(sys.executable), "procket-twisted")
        self.cgroup = cgroup
        self.scratch = scratch
        self.made: List[str] = []  # what exists now and is ours to remove, in order made
        self.report: Dict[str, Any] = {}

    @property
    def policy(self) -> str:
        return os.path.join(str(self.scratch), "policy")

    @property
    def bpffs(self) -> str:
        return os.path.join(str(self.scratch), "bpffs")

    def enter_command(self, command: List[str]) -> List[str]:
        """COMMAND, run inside the child cgroup from its very start."""
        return ["sh", "-c", ENTER_CGROUP, str(self.cgroup), *command]

    def grant(self, action: str, *extra: str) -> "subprocess.CompletedProcess[str]":
        """``procket-twisted grant ACTION ... --cgroup CHILD --bpffs DIR``."""
        command = [self.cli, "grant", action, *extra, "--cgroup", str(self.cgroup)]
        return subprocess.run(
            command + ["--bpffs", self.bpffs], capture_output=True, text=True, timeout=120
        )

    def __enter__(self) -> "KernelGrant":
        try:
            self._make_directories()
            self._write_policy()
            self._apply()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _make_directories(self) -> None:
        if self.cgroup is None:
            mount = cgroup2_mount()
            if mount is None:
                raise RuntimeError("no cgroup v2 hierarchy is mounted: the kernel grant needs one")
            self.cgroup = tempfile.mkdtemp(prefix="procket-twisted-benchmark-", dir=mount)
        else:
            os.mkdir(self.cgroup)
        self.made.append("cgroup")
        if self.scratch is None:
            self.scratch = tempfile.mkdtemp(prefix="procket-twisted-benchmark-grant-")
        else:
            os.mkdir(self.scratch, 0o700)
        self.made.append("scratch")
        os.mkdir(self.bpffs, 0o700)

    def _write_policy(self) -> None:
        """The policy, root's and written by no one else (grant apply refuses any other)."""
        text = policy_text(self.uid, self.ports)
        descriptor = os.open(self.policy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(text)
        self.report["policy"] = text

    def _apply(self) -> None:
        """Apply the grant; fail unless exactly its two programs run for the child's binds."""
        self.made.append("grant")
        applied = self.grant("apply", "--policy", self.policy)
        if applied.returncode != 0:
            raise RuntimeError(f"grant apply failed:\n{applied.stdout}{applied.stderr}")
        status = self.grant("status")
        lines = parse_status(status.stdout)
        for family in ("inet4", "inet6"):
            if lines.get(f"{family} effective", "").split()[:1] != ["1"]:
                raise RuntimeError(
                    f"other programs run for the child cgroup's {family} binds:\n{status.stdout}"
                )
        if status.returncode != 0 or lines.get("state") != "installed":
            raise RuntimeError(f"grant status after apply:\n{status.stdout}{status.stderr}")
        self.report.update(cgroup=self.cgroup, status_after_apply=status.stdout)

    def __exit__(self, *_: Any) -> None:
        """Remove everything made, each step even when one before it failed; then raise."""
        failures: List[str] = []
        steps = {"grant": self._remove_grant, "scratch": self._remove_scratch,
                 "cgroup": self._remove_cgroup}  # fmt: skip
        for name in reversed(list(self.made)):
            try:
                steps[name]()
                self.made.remove(name)
            except Exception as error:  # report all, after trying every step
                failures.append(f"{name}: {error}")
        if failures:
            raise RuntimeError("the kernel grant's clean-up failed: " + "; ".join(failures))

    def _remove_grant(self) -> None:
        removed = self.grant("remove")
        status = self.grant("status")
        self.report["status_after_remove"] = status.stdout
        absent = parse_status(status.stdout).get("state") == "absent"
        if status.returncode != STATUS_ABSENT or not absent:
            raise RuntimeError(
                f"still installed after grant remove ({removed.returncode}: {removed.stderr}):\n"
                + status.stdout
            )

    def _remove_scratch(self) -> None:
        if os.path.ismount(self.bpffs):
            subprocess.run(["umount", self.bpffs], check=True)
        if os.path.lexists(self.policy):
            os.unlink(self.policy)
        if os.path.isdir(self.bpffs):
            os.rmdir(self.bpffs)
        os.rmdir(str(self.scratch))

    def _remove_cgroup(self) -> None:
        deadline = time.monotonic() + RMDIR_SECONDS
        while True:
            try:
                os.rmdir(str(self.cgroup))
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
