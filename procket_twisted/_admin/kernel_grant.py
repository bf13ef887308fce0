"""
C{procket-twisted grant}: kernel-enforced grants. The policy's TCP and UDP rules, compiled into a
cgroup BPF program on the bind hooks (INET4_BIND, INET6_BIND) of a cgroup v2 (the root of the
hierarchy by default), let a process of that cgroup bind a privileged port itself, with a plain
C{bind()}, when the policy allows it: no helper, no setuid, and it works under no_new_privs. The
program only ever lets a bind skip the CAP_NET_BIND_SERVICE check; it never refuses a bind the
kernel would allow. What it cannot see (supplementary groups, v6only, most options) it treats as
the helper would at its most careful (SECURITY.md, "Kernel grants").

The work is done by C{procket-grant} (C{procket_twisted/grant/}), built with the package from
the helper's own policy parser, which this module runs as root. The client needs nothing from
here: it tries the bind itself first for a TCP or UDP socket that needs only
CAP_NET_BIND_SERVICE, and asks the helper only when the kernel refuses.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import List, Optional

from .install import DEFAULT_PREFIX, POLICY_NAME, InstallError, helper_directory
from .invocation import as_root

__all__ = [
    "GRANT_ACTIONS",
    "UNIT_PATH",
    "grant_tool",
    "run_grant",
    "unit_text",
    "write_unit",
]

#: What C{procket-grant} does: compile (anyone), apply, remove, status (root).
GRANT_ACTIONS = ("apply", "remove", "status", "compile")
#: The systemd unit that applies the grant at boot.
UNIT_PATH = "/etc/systemd/system/procket-twisted-grant.service"


def grant_tool() -> str:
    """
    The C{procket-grant} program built with this package.

    @raise InstallError: when this copy of the package has none.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(package, "grant", "procket-grant")
    if not os.access(path, os.X_OK):
        raise InstallError(
            f"this copy of procket-twisted has no procket-grant ({path}): install the package "
            "with 'pip install .' (a regular install compiles it)"
        )
    return path


def policy_path(prefix: str = DEFAULT_PREFIX, policy: Optional[str] = None) -> str:
    """The policy the grant is compiled from: POLICY, or the one beside the installed helper."""
    return policy or os.path.join(helper_directory(os.path.normpath(prefix)), POLICY_NAME)


def grant_command(
    action: str, policy: Optional[str], cgroup: Optional[str], bpffs: Optional[str]
) -> List[str]:
    """C{procket-grant}'s argv for ACTION."""
    if action not in GRANT_ACTIONS:
        raise InstallError(
            f"grant: the action is one of {', '.join(GRANT_ACTIONS)}, not {action!r}"
        )
    argv = [grant_tool(), action]
    if action in ("apply", "compile"):
        if policy is None:
            raise InstallError(f"grant {action} needs a policy file")
        argv.append(policy)
    if action != "compile":
        argv += ["--cgroup", cgroup] if cgroup else []
        argv += ["--bpffs", bpffs] if bpffs else []
    return argv


def run_grant(
    action: str,
    policy: Optional[str] = None,
    cgroup: Optional[str] = None,
    bpffs: Optional[str] = None,
) -> int:
    """
    Run C{procket-grant ACTION} (its output goes to ours) and return its exit status.

    @raise InstallError: when the tool is missing, or ACTION needs root and this is not root.
    """
    if action != "compile" and os.geteuid() != 0:
        raise InstallError(
            f"grant {action} must run as root (it loads BPF programs): "
            f"{as_root(_grant_arguments(action, policy, cgroup, bpffs))}"
        )
    return subprocess.run(grant_command(action, policy, cgroup, bpffs)).returncode


def _grant_arguments(
    action: str, policy: Optional[str], cgroup: Optional[str], bpffs: Optional[str]
) -> List[str]:
    """The command-line arguments of C{procket-twisted grant ACTION} with these options."""
    arguments = ["grant", action]
    for option, value in (("--policy", policy), ("--cgroup", cgroup), ("--bpffs", bpffs)):
        if value is not None:
            arguments += [option, value]
    return arguments


def unit_text(policy: str, cgroup: Optional[str] = None) -> str:
    """The systemd unit that applies the grant at boot, and removes it when stopped."""
    apply = shlex.join(grant_command("apply", policy, cgroup, None))
    remove = shlex.join(grant_command("remove", None, cgroup, None))
    return (
        "# Written by procket-twisted grant --unit: the policy's TCP and UDP rules as a cgroup\n"
        "# BPF bind hook, applied at boot. Re-apply after editing the policy:\n"
        "#   systemctl reload procket-twisted-grant\n"
        "[Unit]\n"
        "Description=procket-twisted kernel grants (the policy as a cgroup BPF bind hook)\n"
        "After=sys-fs-bpf.mount local-fs.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={apply}\n"
        f"ExecReload={apply}\n"
        f"ExecStop=-{remove}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def write_unit(policy: str, cgroup: Optional[str] = None, path: str = UNIT_PATH) -> List[str]:
    """
    Write the boot unit to PATH (atomically) and return what to run next, a line each.

    @raise InstallError: when not root.
    """
    if os.geteuid() != 0:
        raise InstallError("grant --unit must run as root (it writes " + path + ")")
    temporary = path + ".new"
    with open(temporary, "w", encoding="ascii") as stream:
        stream.write(unit_text(policy, cgroup))
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return [
        f"wrote {path}",
        "enable it with: systemctl daemon-reload && systemctl enable --now procket-twisted-grant",
        "without systemd, apply it at boot from root's crontab: "
        f"@reboot {shlex.join(grant_command('apply', policy, cgroup, None))}",
    ]
