"""
``procket-twisted run``: socket activation for any program. Unit tests of its pieces, then real
programs as nobody on privileged ports: twistd's systemd: endpoint and gunicorn.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted._admin.activation import FIRST_FD, activation_environment, parse_listen

from .support import (
    TEST_UID,
    cli_command,
    free_port,
    install_prefix,
    run_command_unprivileged,
    server_output,
    skip_unless_privileged,
    start_unprivileged,
    wait_for_tcp,
)


class ParseListenTests(SynchronousTestCase):
    """--listen specs mean what endpoint strings mean."""

    def test_specs_and_names(self) -> None:
        """Protocols, interfaces, options and names; a name defaults to PROTOCOL-PORT."""
        requests, names = parse_listen(
            ["tcp:80", "udp:53:interface=127.0.0.1:name=dns", "tcp6:443:interface=\\:\\:1:mark=7"]
        )
        self.assertEqual(names, ["tcp-80", "dns", "tcp-443"])
        self.assertEqual([r.describe() for r in requests], [
            "tcp 0.0.0.0 port 80", "udp 127.0.0.1 port 53", "tcp ::1 port 443 (mark=7)",
        ])  # fmt: skip

    def test_bad_specs(self) -> None:
        """A bad protocol, port, keyword or name is a ValueError naming it."""
        for spec, part in [
            ("sctp:80", "sctp"),
            ("tcp:8o", "'8o'"),
            ("tcp:80:bogus=1", "bogus"),
            ("tcp:80:name=a:b", "ip 'b' is not a numeric"),
            ("tcp:80:name=with space", "name 'with space'"),
            ("tcp:80:progname=/x", "progname"),
        ]:
            with self.assertRaises(ValueError, msg=spec) as caught:
                parse_listen([spec])
            self.assertIn(part, str(caught.exception), spec)

    def test_environment(self) -> None:
        """The variables systemd sets: count, pid, names joined by colons."""
        self.assertEqual(activation_environment({"A": "1"}, ["web", "dns"], 42), {
            "A": "1", "LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "web:dns",
        })  # fmt: skip

    def test_sockets_land_at_fd_3_and_up(self) -> None:
        """run execs the command with the sockets at fds 3, 4... in order, and LISTEN_PID = its pid."""
        shell = textwrap.dedent("""
            import json, os, socket
            fds = [socket.socket(fileno=fd) for fd in range(3, 3 + int(os.environ["LISTEN_FDS"]))]
            print(json.dumps({"pid": os.getpid() == int(os.environ["LISTEN_PID"]),
                              "names": os.environ["LISTEN_FDNAMES"],
                              "ports": [s.getsockname()[1] for s in fds],
                              "types": [int(s.type) for s in fds]}))
            for s in fds:
                s.detach()
        """)
        result = subprocess.run(
            cli_command() + ["run", "--listen", "tcp:0:interface=127.0.0.1:name=a",
                             "--listen", "udp:0:interface=127.0.0.1", "--", sys.executable, "-c",
                             shell],
            capture_output=True, text=True,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        facts = json.loads(result.stdout)
        self.assertEqual((facts["pid"], facts["names"], facts["types"]), (True, "a:udp-0", [1, 2]))
        self.assertTrue(all(port > 0 for port in facts["ports"]))

    def test_errors(self) -> None:
        """A missing command exits 127; a bad spec or no command exits 1 with the reason."""
        missing = subprocess.run(
            cli_command() + ["run", "--listen", "tcp:0", "--", "no-such-cmd"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(missing.returncode, 127)
        self.assertIn("command not found: no-such-cmd", missing.stderr)
        bad = subprocess.run(
            cli_command() + ["run", "--listen", "tcp:8o", "--", "true"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(bad.returncode, 1)
        self.assertIn("port '8o'", bad.stderr)
        empty = subprocess.run(
            cli_command() + ["run", "--listen", "tcp:0", "--"], capture_output=True, text=True
        )
        self.assertEqual(empty.returncode, 1)
        self.assertIn("no command given", empty.stderr)


#: Run in a fresh interpreter, as place_fds moves the fds 3, 4... of its process: put a real socket
#: for each position at the fd ARRANGEMENT (argv[1], JSON) gives it (TCP for even positions, UDP
#: for odd ones, each on its own port), a bystander file at fd 50, then call place_fds and report
#: what each fd holds.
PLACE_FDS_SCRIPT = """
import json, os, socket, sys
from procket_twisted._admin.activation import place_fds

def open_fds():
    found = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # the listing's own fd, closed meanwhile
        found.append(int(entry))
    return sorted(found)

arrangement = json.loads(sys.argv[1])
start = open_fds()
bystander = os.open("/dev/null", os.O_RDONLY)
os.dup2(bystander, 50, inheritable=False)
os.close(bystander)
names, types = [], []
for position in range(len(arrangement)):
    kind = socket.SOCK_STREAM if position % 2 == 0 else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen(1)
    names.append(list(sock.getsockname()))
    types.append(int(kind))
    fd = sock.detach()
    os.dup2(fd, 100 + position, inheritable=False)  # out of the way until all exist
    os.close(fd)
for position, fd in enumerate(arrangement):
    os.dup2(100 + position, fd, inheritable=False)
    os.close(100 + position)
before = open_fds()
place_fds(arrangement)
after = open_fds()
held = {}
for fd in after:
    if fd > 2 and fd != 50:
        sock = socket.socket(fileno=fd)
        held[fd] = [list(sock.getsockname()), int(sock.type), os.get_inheritable(fd)]
        sock.detach()
print(json.dumps({"start": start, "before": before, "after": after, "held": held,
                  "names": names, "types": types, "bystander": os.readlink("/proc/self/fd/50"),
                  "bystander_inheritable": os.get_inheritable(50)}))
"""


class PlaceFdsTests(SynchronousTestCase):
    """place_fds, called directly (in a fresh interpreter), with sockets placed to trip it up."""

    def place(self, arrangement: List[int]) -> Dict[str, Any]:
        """Run PLACE_FDS_SCRIPT for ARRANGEMENT; the facts it reports."""
        result = subprocess.run(
            [sys.executable, "-c", PLACE_FDS_SCRIPT, json.dumps(arrangement)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        facts: Dict[str, Any] = json.loads(result.stdout)
        return facts

    def test_overlapping_fds(self) -> None:
        """
        Whatever fds the sockets start at, place_fds leaves the socket for position N at fd
        FIRST_FD + N (the very socket: same address and type), inheritable, and no other fd but
        the untouched bystander: no copy left over, no original left open. The arrangements are
        those a naive dup2 in order would get wrong: position 0 at fd 4 and position 1 at fd 3
        (the first dup2 would clobber the second socket), a socket already at its target (a
        dup2 onto itself, then a close of the original, would lose it), all already in place,
        three in a cycle, and one far above.
        """
        for arrangement in ([4, 3], [3, 5], [3, 4], [5, 3, 4], [4, 5, 3], [9], [3]):
            facts = self.place(arrangement)
            count = len(arrangement)
            self.assertTrue(set(facts["start"]) <= {0, 1, 2}, facts["start"])
            self.assertEqual(
                sorted(facts["before"]), sorted([0, 1, 2, 50, *arrangement]), arrangement
            )
            targets = list(range(FIRST_FD, FIRST_FD + count))
            self.assertEqual(facts["after"], [0, 1, 2, *targets, 50], arrangement)
            for position, target in enumerate(targets):
                self.assertEqual(
                    facts["held"][str(target)],
                    [facts["names"][position], facts["types"][position], True],
                    f"{arrangement}: fd {target} does not hold position {position}'s socket",
                )
            self.assertEqual(
                (facts["bystander"], facts["bystander_inheritable"]),
                (os.devnull, False),
                arrangement,
            )


class RunAsNobodyTests(SynchronousTestCase):
    """Real servers that speak the protocol, as nobody, on privileged ports."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}
        self.directory = tempfile.mkdtemp(prefix="procket-run-")
        self.addCleanup(shutil.rmtree, self.directory)
        os.chmod(self.directory, 0o755)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w") as stream:
            stream.write(text)
        os.chmod(path, 0o644)
        return path

    def curl(self, url: str) -> str:
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "10", url], capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_twistd_systemd_endpoint(self) -> None:
        """run --listen tcp:PORT -- twistd web --listen systemd:domain=INET:index=0 serves curl."""
        self.write("index.html", "activated\n")
        port = free_port()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        server = start_unprivileged(self, cli_command() + [
            "run", "--listen", f"tcp:{port}:interface=127.0.0.1", "--",
            twistd, "-n", "--pidfile=", "web", "--listen", "systemd:domain=INET:index=0",
            "--path", self.directory,
        ], self.environment)  # fmt: skip
        wait_for_tcp(self, server, "127.0.0.1", port)
        self.assertEqual(self.curl(f"http://127.0.0.1:{port}/"), "activated\n")
        self.assertEqual(run_command_unprivileged(["true"], {}).returncode, 0)
        self.assertNotIn("Traceback", server_output(server))

    def test_gunicorn(self) -> None:
        """A program that is not Twisted's, gunicorn, serves the port it was given, as nobody."""
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        if not os.path.exists(gunicorn):
            self.fail("gunicorn is not installed: it is in the test extras (pip install .[test])")
        self.write(
            "app.py",
            textwrap.dedent("""
            import os

            def app(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [f"uid={os.getuid()}\\n".encode()]
        """),
        )
        port = free_port()
        server = start_unprivileged(self, cli_command() + [
            "run", "--listen", f"tcp:{port}:interface=127.0.0.1", "--",
            gunicorn, "--chdir", self.directory, "--workers", "2", "app:app",
        ], {**self.environment, "HOME": self.directory})  # fmt: skip
        wait_for_tcp(self, server, "127.0.0.1", port)
        self.assertEqual(self.curl(f"http://127.0.0.1:{port}/"), f"uid={TEST_UID}\n")
