"""
The C{procket-twisted} command: C{install-helper} and C{grant} (as root), C{doctor} (as anyone),
C{run} (socket activation for any program), C{policy} (the policy reference) and C{plugin-cache}
(as the user who installed the package).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .._client.api import DEFAULT_TIMEOUT
from .._client.request import MAX_PORT
from .._client.version import VERSION
from .activation import run
from .doctor import doctor
from .install import DEFAULT_PREFIX, MODES, InstallError, install_helper
from .kernel_grant import GRANT_ACTIONS, policy_path, run_grant, write_unit
from .plugin_cache import regenerate_plugin_cache

__all__ = ["main", "POLICY_REFERENCE"]

#: The policy reference (C{procket-twisted policy}), installed with the package.
POLICY_REFERENCE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "policy.md")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to {MAX_PORT}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procket-twisted",
        description="Privileged sockets for unprivileged programs, from a tiny setuid helper.",
    )
    parser.add_argument("--version", action="version", version=f"procket-twisted {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    install = commands.add_parser(
        "install-helper",
        help="install the helper, privileged, with its default policy (as root)",
        description="Install the helper under PREFIX/libexec/procket-twisted, privileged, with a "
        "default policy (TCP and UDP for every user) unless one exists. Harmless to run twice.",
    )
    install.add_argument("--prefix", default=DEFAULT_PREFIX, help="default: %(default)s")
    install.add_argument(
        "--group",
        help="only root and this group may run the helper (mode 4750); default: every user may "
        "(mode 4755) and the policy decides",
    )
    install.add_argument(
        "--from",
        dest="source",
        metavar="HELPER",
        help="install this helper binary instead of the one built with the package (for example "
        "a sanitizer build)",
    )
    install.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="do not record this helper in /etc/procket-twisted/helper, where programs look after "
        "PROCKET_HELPER (for a second, private install)",
    )
    install.add_argument(
        "--mode",
        choices=MODES,
        default="setuid",
        help="setuid root (default), file capabilities, or a sudoers rule for sudo -n",
    )
    activate = commands.add_parser(
        "run",
        help="run a program with privileged sockets, by socket activation (LISTEN_FDS)",
        description="Acquire the sockets, put them at fds 3, 4... and exec COMMAND with "
        "LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set as systemd does. Example: procket-twisted "
        "run --listen tcp:80 -- twistd -n web --listen systemd:domain=INET:index=0 --path DIR",
    )
    activate.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="SPEC",
        help="a socket, as in endpoint strings: tcp:80, tcp6:443:interface=\\:\\:1, udp:53, "
        "tcp:80:reusePort=yes:mark=42; name=NAME sets its LISTEN_FDNAMES entry (default tcp-80)",
    )
    activate.add_argument(
        "--progname", help="the helper command (default: PROCKET_HELPER, then the installed helper)"
    )
    activate.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for the helper (default %(default)s)",
    )
    activate.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS...")
    grant = commands.add_parser(
        "grant",
        help="kernel-enforced grants: the policy as a cgroup BPF bind hook (as root)",
        description="Compile the policy's TCP and UDP rules into a cgroup BPF program that lets "
        "the processes of a cgroup bind the privileged ports the policy grants them, with a plain "
        "bind(): no helper, no setuid, under no_new_privs too. apply loads it (or replaces it "
        "atomically), remove takes it away, status says what is installed, compile shows the "
        "program and what each rule becomes, loading nothing. Whatever the program cannot decide "
        "falls back to the helper.",
    )
    grant.add_argument("action", choices=GRANT_ACTIONS)
    grant.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="where the helper and its policy are installed (default: %(default)s)",
    )
    grant.add_argument("--policy", help="the policy file (default: the installed helper's)")
    grant.add_argument(
        "--cgroup", help="the cgroup v2 directory (default: the root of the hierarchy)"
    )
    grant.add_argument("--bpffs", help="where to pin it (default: /sys/fs/bpf)")
    grant.add_argument(
        "--unit",
        action="store_true",
        help="with apply: also write the systemd unit that applies it at boot",
    )
    commands.add_parser(
        "policy",
        help="print the policy reference: the format of the helper's policy file, with examples",
        description="Print the reference of the policy file the helper reads (who may ask for "
        "what), installed with the package.",
    )
    commands.add_parser(
        "plugin-cache",
        help="regenerate Twisted's plugin cache (as the user who installed the package)",
        description="Rewrite Twisted's dropin.cache files, so that users who cannot write them "
        "stop seeing 'Unable to write to plugin cache' on every run. install-helper does it too.",
    )
    check = commands.add_parser(
        "doctor",
        help="can this user get a privileged socket now? (as the user)",
        description="Say whether this user can get a privileged socket right now, through which "
        "helper, and if not, exactly what to run. Exit status 0 when it can.",
    )
    check.add_argument(
        "--progname",
        help="the helper command to check (default: PROCKET_HELPER, then the installed helper)",
    )
    check.add_argument(
        "--port", type=_port, help="the privileged port to try (default: a free one from 1023 down)"
    )
    return parser


def _run(options: argparse.Namespace) -> int:
    command = options.program[1:] if options.program[:1] == ["--"] else options.program
    try:
        run(options.listen, command, options.progname, options.timeout)
    except FileNotFoundError:
        print(f"procket-twisted run: error: command not found: {command[0]}", file=sys.stderr)
        return 127
    except (ValueError, OSError) as error:  # ProcketError is an OSError
        print(f"procket-twisted run: error: {error}", file=sys.stderr)
        return 1
    raise AssertionError("exec returned")  # pragma: no cover


def _grant(options: argparse.Namespace) -> int:
    policy = policy_path(options.prefix, options.policy)
    try:
        status = run_grant(options.action, policy, options.cgroup, options.bpffs)
        if options.unit and options.action == "apply" and status == 0:
            for line in write_unit(policy, options.cgroup):
                print(line)
    except (InstallError, OSError) as error:
        print(f"procket-twisted grant: error: {error}", file=sys.stderr)
        return 1
    return status


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return its exit status."""
    options = _parser().parse_args(argv)
    if options.command == "install-helper":
        try:
            for line in install_helper(
                options.prefix, options.group, options.mode, options.source, options.record
            ):
                print(line)
        except (InstallError, OSError) as error:
            print(f"procket-twisted install-helper: error: {error}", file=sys.stderr)
            return 1
        return 0
    if options.command == "run":
        return _run(options)
    if options.command == "grant":
        return _grant(options)
    if options.command == "policy":
        with open(POLICY_REFERENCE, encoding="utf-8") as reference:
            sys.stdout.write(reference.read())
        return 0
    if options.command == "plugin-cache":
        lines, fresh = regenerate_plugin_cache()
        for line in lines:
            print(line, file=sys.stdout if fresh else sys.stderr)
        return 0 if fresh else 1
    return doctor(options.progname, options.port)


if __name__ == "__main__":
    sys.exit(main())
