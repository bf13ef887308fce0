"""
The plain API end to end: the real helper, installed by ``procket-twisted install-helper`` into a
temporary prefix (setuid root, setcap, sudo), used by an unprivileged user (``nobody``).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import tempfile

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted

from .support import (
    TEST_GID,
    TEST_UID,
    cli_command,
    free_port,
    install_prefix,
    run_command_unprivileged,
    run_unprivileged,
    skip_unless_privileged,
)

DAEMON_UID = DAEMON_GID = 1  # Debian's "daemon": a second unprivileged user, not in nogroup


class PlainAPITests(SynchronousTestCase):
    """procket_twisted.listen and listen_many as nobody, against the setuid helper."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}

    def run_client(self, code: str, **environment: str) -> dict:
        return run_unprivileged(self, code, {**self.environment, **environment})

    def test_tcp_below_1024(self) -> None:
        """A listening TCP socket on a privileged port, owned by nobody, accepting connections."""
        port = free_port()
        result = self.run_client(f"""
            server = listen({port}, ip="127.0.0.1")
            client = socket.create_connection(("127.0.0.1", {port}))
            connection, _ = server.accept()
            client.sendall(b"ping")
            report({{"uid": os.getuid(), "owner": os.fstat(server.fileno()).st_uid,
                     "listening": server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                     "address": server.getsockname(), "got": connection.recv(4).decode()}})
        """)
        self.assertEqual(result["uid"], TEST_UID)
        self.assertEqual(result["owner"], TEST_UID)
        self.assertEqual(result["listening"], 1)
        self.assertEqual(result["address"], ["127.0.0.1", port])
        self.assertEqual(result["got"], "ping")

    def test_udp_below_1024(self) -> None:
        """A bound UDP socket on a privileged port that receives datagrams."""
        port = free_port()
        result = self.run_client(f"""
            server = listen({port}, "udp", "127.0.0.1")
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.sendto(b"hello", ("127.0.0.1", {port}))
            data, _ = server.recvfrom(100)
            report({{"type": int(server.type), "data": data.decode(),
                     "owner": os.fstat(server.fileno()).st_uid}})
        """)
        self.assertEqual(result, {"type": 2, "data": "hello", "owner": TEST_UID})

    def test_ipv6_loopback_and_v6only(self) -> None:
        """IPv6 on ::1, with v6only read back; a dual-stack socket on :: accepts IPv4 too."""
        port, other = free_port(), free_port()
        result = self.run_client(f"""
            only = listen({port}, ip="::1", v6only=True)
            dual = listen({other}, ip="::", v6only=False)
            client = socket.create_connection(("127.0.0.1", {other}))
            peer = dual.accept()[1][0]
            report({{"family": int(only.family), "address": only.getsockname()[:2],
                     "only": only.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
                     "dual": dual.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
                     "peer": peer}})
        """)
        self.assertEqual(result["family"], 10)
        self.assertEqual(result["address"], ["::1", port])
        self.assertEqual((result["only"], result["dual"]), (1, 0))
        self.assertEqual(result["peer"], "::ffff:127.0.0.1")

    def test_several_sockets_one_helper_run(self) -> None:
        """listen_many opens TCP, UDP and TCP6 sockets in one helper run, in request order."""
        runs = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, runs)
        os.chmod(runs, 0o777)
        counter = os.path.join(runs, "runs")
        counting_helper = [
            "/bin/sh",
            "-c",
            f'echo run >> {counter}; exec "$0" "$@"',
            self.prefix.helper,
        ]
        ports = [free_port(), free_port(), free_port()]
        result = self.run_client(f"""
            sockets = listen_many([SocketRequest({ports[0]}, "tcp", "127.0.0.1"),
                                   SocketRequest({ports[1]}, "udp", "127.0.0.1"),
                                   SocketRequest({ports[2]}, "tcp", "::1")],
                                  progname={counting_helper!r}, direct=False)
            report([[int(s.family), int(s.type), s.getsockname()[1]] for s in sockets])
        """)
        self.assertEqual(result, [[2, 1, ports[0]], [2, 2, ports[1]], [10, 1, ports[2]]])
        with open(counter) as stream:
            self.assertEqual(stream.read(), "run\n")

    def test_port_in_use(self) -> None:
        """The same port asked for twice: a SocketError with errno EADDRINUSE at the bind step."""
        port = free_port()
        result = self.run_client(f"""
            first = listen({port}, ip="127.0.0.1")
            try:
                listen({port}, ip="127.0.0.1")
            except SocketError as error:
                report(error_facts(error))
        """)
        self.assertEqual(result["type"], "SocketError")
        self.assertEqual(result["errno"], errno.EADDRINUSE)
        self.assertEqual((result["step"], result["index"]), ("bind", 1))
        self.assertIn("already", result["message"])

    def test_denied_by_policy(self) -> None:
        """A port the installed policy denies gives PolicyDeniedError naming the rule's line."""
        denied, allowed = free_port(), free_port()
        self.prefix.write_policy(f"""
            # web ports only, but never {denied}
            deny kind=tcp port={denied}
            allow kind=tcp,udp
        """)
        result = self.run_client(f"""
            ok = listen({allowed}, ip="127.0.0.1")
            try:
                listen({denied}, ip="127.0.0.1")
            except PolicyDeniedError as error:
                report(error_facts(error))
        """)
        self.assertEqual(result["type"], "PolicyDeniedError")
        self.assertEqual(result["step"], "policy")
        self.assertIn("line 3", result["message"])
        self.assertIn(self.prefix.policy, result["message"])

    def test_helper_missing(self) -> None:
        """A PROCKET_HELPER that does not exist: HelperNotFoundError saying how to install."""
        result = self.run_client(
            """
            try:
                listen(80, ip="127.0.0.1")
            except HelperNotFoundError as error:
                report(error_facts(error))
        """,
            PROCKET_HELPER="/nonexistent/procket-helper",
        )
        self.assertEqual(result["type"], "HelperNotFoundError")
        self.assertIn("procket-twisted install-helper", result["message"])

    def test_helper_not_setuid(self) -> None:
        """The helper without its setuid bit: HelperNotPrivilegedError saying what to run."""
        os.chmod(self.prefix.helper, 0o755)
        result = self.run_client(f"""
            try:
                listen({free_port()}, ip="127.0.0.1")
            except HelperNotPrivilegedError as error:
                report(error_facts(error))
        """)
        self.assertEqual(
            (result["type"], result["step"]), ("HelperNotPrivilegedError", "privilege")
        )
        self.assertIn("neither setuid root nor has file capabilities", result["message"])
        self.assertIn("install-helper", result["message"])

    def test_timeout_kills_a_hanging_helper(self) -> None:
        """A helper that hangs is killed at the timeout; nothing is left running or open."""
        result = self.run_client("""
            import time
            before = open_fds()
            started = time.monotonic()
            try:
                listen(80, progname=["/bin/sh", "-c", "exec sleep 30"], timeout=0.5)
            except HelperTimeoutError as error:
                facts = error_facts(error)
            report({"error": facts, "seconds": time.monotonic() - started,
                    "children": children(), "fds_same": open_fds() == before})
        """)
        self.assertEqual(result["error"]["type"], "HelperTimeoutError")
        self.assertLess(result["seconds"], 5)
        self.assertEqual(result["children"], [])
        self.assertTrue(result["fds_same"])

    def test_nothing_leaks(self) -> None:
        """After successes and every kind of failure, no fd is open and no child remains."""
        port = free_port()
        result = self.run_client(f"""
            before = open_fds()
            for _ in range(5):
                with listen({port}, ip="127.0.0.1") as server:
                    try:
                        listen_many([SocketRequest({free_port()}, "udp"),
                                     SocketRequest({port}, "tcp", "127.0.0.1")])
                    except SocketError:
                        pass
                for progname in ("/nonexistent", ["/bin/false"], ["/bin/sh", "-c", "exec sleep 9"]):
                    try:
                        listen({port}, progname=progname, timeout=0.2)
                    except ProcketError:
                        pass
            report({{"fds_same": open_fds() == before, "children": children()}})
        """)
        self.assertEqual(result, {"fds_same": True, "children": []})

    def test_policy_decisions_name_the_rule(self) -> None:
        """policy_decisions says which line decides each request for this user, opening nothing."""
        port = free_port()
        self.prefix.write_policy(f"""
            # comment
            deny kind=tcp port={port}
            allow kind=tcp
        """)
        result = self.run_client(f"""
            decisions = policy_decisions([SocketRequest({port}, ip="127.0.0.1"),
                                          SocketRequest({port} + 1, ip="127.0.0.1"),
                                          SocketRequest({port}, "udp", "127.0.0.1")])
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))  # nothing was bound by the check: a free port stays free
            report([[d.allowed, d.line, d.rule, d.describe()] for d in decisions])
        """)
        self.assertEqual(result[0][:3], [False, 3, f"deny kind=tcp port={port}"])
        self.assertEqual(result[1][:3], [True, 4, "allow kind=tcp"])
        self.assertEqual(result[2][:3], [False, 0, None])
        self.assertIn("no rule in", result[2][3])
        os.unlink(self.prefix.policy)
        missing = self.run_client(f"""
            try:
                policy_decisions([SocketRequest({port})])
            except PolicyDeniedError as error:
                report(error_facts(error))
        """)
        self.assertEqual((missing["step"], missing["errno"]), ("policy", errno.ENOENT))
        self.assertIn(
            f"there is no {self.prefix.policy}, so nothing is allowed", missing["message"]
        )

    def test_documented_policies_are_accepted(self) -> None:
        """Every policy example in the installed policy reference (procket-twisted policy) is accepted
        by the helper and means what it says."""
        with open(os.path.join(os.path.dirname(procket_twisted.__file__), "policy.md")) as page:
            text = page.read()
        examples = re.findall(r"```\n(.*?)```", text.split("## Examples")[1], re.S)[:2]
        self.assertEqual(len(examples), 2)
        self.prefix.write_policy(examples[0])
        result = self.run_client("""
            asks = [SocketRequest(80, ip="127.0.0.1"), SocketRequest(22), SocketRequest(53, "udp"),
                    SocketRequest(8080)]
            report([[d.allowed, d.rule] for d in policy_decisions(asks)])
        """)
        self.assertEqual(result, [
            [False, "deny port=80,443"], [False, "deny port=22,25"],
            [True, "allow kind=tcp,udp"], [True, "allow kind=tcp,udp"],
        ])  # fmt: skip
        self.prefix.write_policy(examples[1])
        result = self.run_client("""
            report([d.allowed for d in policy_decisions([SocketRequest(80)])])
        """)
        self.assertEqual(result, [False])

    def test_policy_check_with_a_refused_file(self) -> None:
        """A policy file others can write: the check fails with PolicyDeniedError saying why."""
        os.chmod(self.prefix.policy, 0o666)
        result = self.run_client("""
            try:
                policy_decisions([SocketRequest(80)])
            except PolicyDeniedError as error:
                report(error_facts(error))
        """)
        self.assertEqual((result["type"], result["step"]), ("PolicyDeniedError", "policy"))
        self.assertIn("group and others", result["message"])

    def test_least_privilege_spawns_nothing(self) -> None:
        """A port this user may bind itself is bound directly: no helper is needed at all."""
        result = self.run_client(
            """
            server = listen(0, ip="127.0.0.1")
            high = listen(server.getsockname()[1] + 1 if server.getsockname()[1] < 65535 else 40000,
                          ip="127.0.0.1")
            try:
                listen(0, ip="127.0.0.1", direct=False)
            except HelperNotFoundError as error:
                report({"direct": [server.getsockname()[1] > 1023, high.getsockname()[1] > 1023],
                        "forced": error_facts(error)["type"]})
        """,
            PROCKET_HELPER="/nonexistent/procket-helper",
        )
        self.assertEqual(result, {"direct": [True, True], "forced": "HelperNotFoundError"})


class InstallHelperTests(SynchronousTestCase):
    """procket-twisted install-helper: modes, groups, running twice, doctor afterwards."""

    def setUp(self) -> None:
        skip_unless_privileged(self)

    def get_socket(self, helper_command: str, uid: int = TEST_UID, gid: int = TEST_GID) -> dict:
        port = free_port()
        return run_unprivileged(
            self,
            f"""
            try:
                server = listen({port}, ip="127.0.0.1")
                report({{"owner": os.fstat(server.fileno()).st_uid}})
            except ProcketError as error:
                report(error_facts(error))
        """,
            {"PROCKET_HELPER": helper_command},
            uid=uid,
            gid=gid,
        )

    def test_setuid_default_mode(self) -> None:
        """The default install: setuid root, mode 4755, group root, and the default policy."""
        prefix = install_prefix(self)
        info = os.stat(prefix.helper)
        self.assertEqual((info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)), (0, 0, 0o4755))
        policy = os.stat(prefix.policy)
        self.assertEqual((policy.st_uid, stat.S_IMODE(policy.st_mode)), (0, 0o644))
        self.assertEqual(self.get_socket(prefix.helper), {"owner": TEST_UID})

    def test_group_restricts_who_may_run_it(self) -> None:
        """--group: mode 4750; a member runs it, another user gets PolicyDeniedError (spawn)."""
        prefix = install_prefix(self, "--group", "nogroup")
        info = os.stat(prefix.helper)
        self.assertEqual((info.st_gid, stat.S_IMODE(info.st_mode)), (TEST_GID, 0o4750))
        self.assertEqual(self.get_socket(prefix.helper), {"owner": TEST_UID})
        outsider = self.get_socket(prefix.helper, DAEMON_UID, DAEMON_GID)
        self.assertEqual((outsider["type"], outsider["step"]), ("PolicyDeniedError", "spawn"))
        self.assertIn("group", outsider["message"])

    def test_twice_is_harmless_and_keeps_the_policy(self) -> None:
        """A second install replaces the binary, keeps an edited policy, and still works."""
        prefix = install_prefix(self)
        prefix.write_policy("allow kind=tcp port=1-1023\n")
        again = subprocess.run(
            cli_command() + ["install-helper", "--no-record", "--prefix", prefix.path],
            capture_output=True,
            text=True,
        )
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("kept the existing policy", again.stdout)
        with open(prefix.policy) as stream:
            self.assertEqual(stream.read(), "allow kind=tcp port=1-1023\n")
        self.assertEqual(sorted(os.listdir(prefix.directory)), ["policy", "procket-helper"])
        self.assertEqual(self.get_socket(prefix.helper), {"owner": TEST_UID})

    def test_setcap_mode(self) -> None:
        """--mode setcap: no setuid bit, file capabilities, and the socket still comes back."""
        prefix = install_prefix(self, "--mode", "setcap")
        info = os.stat(prefix.helper)
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o755)
        self.assertTrue(os.getxattr(prefix.helper, "security.capability"))
        self.assertEqual(self.get_socket(prefix.helper), {"owner": TEST_UID})

    def test_sudo_mode(self) -> None:
        """--mode sudo: a sudoers rule lets nobody run the helper with sudo -n."""
        if shutil.which("sudo") is None:
            self.fail("sudo is not installed; scripts/test installs it (apt-get install sudo)")
        prefix = install_prefix(self, "--mode", "sudo")
        from procket_twisted._admin.install import sudoers_file

        rule = sudoers_file(prefix.path)
        self.addCleanup(os.unlink, rule)
        self.assertEqual(stat.S_IMODE(os.stat(prefix.helper).st_mode), 0o755)
        self.assertEqual(self.get_socket(f"sudo -n {prefix.helper}"), {"owner": TEST_UID})

    def test_private_prefix_is_made_reachable(self) -> None:
        """A prefix from mktemp -d (mode 700) is made searchable, so nobody can use the helper."""
        prefix = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, prefix)
        result = subprocess.run(
            cli_command() + ["install-helper", "--no-record", "--prefix", prefix],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"made {prefix} searchable by every user", result.stdout)
        helper = os.path.join(prefix, "libexec", "procket-twisted", "procket-helper")
        self.assertEqual(self.get_socket(helper), {"owner": TEST_UID})

    def test_unreachable_helper_names_the_directory(self) -> None:
        """A helper below a directory the user cannot enter: the error names that directory."""
        prefix = install_prefix(self)
        os.chmod(prefix.path, 0o700)
        result = self.get_socket(prefix.helper)
        self.assertEqual((result["type"], result["step"]), ("PolicyDeniedError", "spawn"))
        self.assertIn(f"cannot enter {prefix.path}", result["message"])
        self.assertIn(f"chmod o+x {prefix.path}", result["message"])

    def test_unsafe_prefix_is_refused(self) -> None:
        """A prefix under a directory another user owns is refused, naming that directory."""
        parent = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, parent)
        os.chown(parent, TEST_UID, TEST_GID)
        result = subprocess.run(
            cli_command()
            + ["install-helper", "--no-record", "--prefix", os.path.join(parent, "p")],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{parent} is owned by uid {TEST_UID}", result.stderr)

    def test_doctor(self) -> None:
        """doctor exits 0 for a user who can get a socket, and 1 with the fix for one who can't."""
        prefix = install_prefix(self)
        doctor = cli_command() + ["doctor"]
        good = run_command_unprivileged(doctor, {"PROCKET_HELPER": prefix.helper})
        self.assertEqual(good.returncode, 0, good.stdout + good.stderr)
        self.assertIn("RESULT: this user can get privileged sockets", good.stdout)
        self.assertIn("for this user: allowed by line", good.stdout)
        self.assertIn("allow kind=tcp,udp", good.stdout)
        os.chmod(prefix.helper, 0o755)
        bad = run_command_unprivileged(doctor, {"PROCKET_HELPER": prefix.helper})
        self.assertEqual(bad.returncode, 1)
        self.assertIn("fix: ", bad.stdout)
        self.assertIn("install-helper", bad.stdout)

    def test_doctor_without_a_policy(self) -> None:
        """Without a policy file, doctor says that nothing is allowed and what writes one."""
        prefix = install_prefix(self)
        os.unlink(prefix.policy)
        said = run_command_unprivileged(
            cli_command() + ["doctor"], {"PROCKET_HELPER": prefix.helper}
        )
        self.assertEqual(said.returncode, 1, said.stdout + said.stderr)
        self.assertIn(f"{prefix.policy} is absent, so the helper allows nothing", said.stdout)
        self.assertIn("there is no", said.stdout)  # the helper's own answer, from the probe
