"""
Socket options set by the helper before it drops its privileges, as nobody: each is read back
with getsockopt on the received socket, each is refused when the policy does not grant it, and
SO_REUSEPORT groups never span users.
"""

from __future__ import annotations

import errno
import sys
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    PRELUDE,
    TEST_UID,
    free_port,
    install_prefix,
    run_unprivileged,
    server_output,
    skip_unless_privileged,
    start_unprivileged,
)

DAEMON_UID = DAEMON_GID = 1  # Debian's "daemon": a second unprivileged user

#: Each option: the SocketRequest keyword and value, the policy name, and how to read it back.
OPTIONS = {
    "bind_to_device": ("'lo'", "device", "s.getsockopt(SOL_SOCKET, SO_BINDTODEVICE, 16)"),
    "mark": ("42", "mark", "s.getsockopt(SOL_SOCKET, SO_MARK)"),
    "transparent": ("True", "transparent", "s.getsockopt(SOL_IP, IP_TRANSPARENT)"),
    "priority": ("7", "priority", "s.getsockopt(SOL_SOCKET, SO_PRIORITY)"),
    "force_receive_buffer": ("4000000", "rcvbuf", "s.getsockopt(SOL_SOCKET, SO_RCVBUF)"),
    "force_send_buffer": ("3000000", "sndbuf", "s.getsockopt(SOL_SOCKET, SO_SNDBUF)"),
    "freebind": ("True", "freebind", "s.getsockopt(SOL_IP, 15)"),  # IP_FREEBIND
    "reuseport": ("True", "reuseport", "s.getsockopt(SOL_SOCKET, SO_REUSEPORT)"),
}
#: What each reads back as (forced buffer sizes are doubled by the kernel).
EXPECTED = {
    "bind_to_device": "b'lo\\x00'",
    "mark": 42,
    "transparent": 1,
    "priority": 7,
    "force_receive_buffer": 8000000,
    "force_send_buffer": 6000000,
    "freebind": 1,
    "reuseport": 1,
}
ALL_GRANTED = "allow kind=tcp,udp options=" + ",".join(name for _, name, _ in OPTIONS.values())


class OptionTests(SynchronousTestCase):
    """Each option through the plain API and through an endpoint string."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}

    def read_back(self, keyword: str, port: int) -> object:
        value, _, read = OPTIONS[keyword]
        result = run_unprivileged(self, f"""
            from socket import *
            try:
                s = procket_twisted.listen({port}, ip="127.0.0.1", direct=False, {keyword}={value})
                value = {read}
                report({{"value": repr(value) if isinstance(value, bytes) else value,
                         "owner": os.fstat(s.fileno()).st_uid}})
            except ProcketError as error:
                report(error_facts(error))
        """, self.environment)  # fmt: skip
        return result

    def test_each_option_is_set_and_read_back(self) -> None:
        """Granted by the policy, every option is on the received socket, owned by nobody."""
        self.prefix.write_policy(ALL_GRANTED + "\n")
        for keyword, expected in EXPECTED.items():
            result = self.read_back(keyword, free_port())
            self.assertEqual(result, {"value": expected, "owner": TEST_UID}, keyword)

    def test_each_option_is_refused_when_not_granted(self) -> None:
        """
        A rule that grants every option but one refuses that one with PolicyDeniedError; the
        privileged ones are refused by the default policy too.
        """
        names = [name for _, name, _ in OPTIONS.values()]
        for keyword, (_, name, _) in OPTIONS.items():
            others = ",".join(other for other in names if other != name)
            self.prefix.write_policy(f"allow kind=tcp,udp options={others}\n")
            result = self.read_back(keyword, free_port())
            self.assertEqual(
                (result.get("type"), result.get("step")), ("PolicyDeniedError", "policy"), keyword
            )
            self.assertIn(f"{name}=", result["message"], keyword)
        self.prefix.write_policy("allow kind=tcp,udp\n")
        for keyword in ("bind_to_device", "mark", "transparent", "priority"):
            result = self.read_back(keyword, free_port())
            self.assertEqual(result.get("type"), "PolicyDeniedError", keyword)

    def test_v6only_is_a_policy_feature(self) -> None:
        """v6only is granted by a plain allow rule, and refused when options= leaves it out."""
        port = free_port()
        code = f"""
            s = procket_twisted.listen({port}, ip="::1", v6only=True, direct=False)
            report(s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        """
        self.prefix.write_policy("allow kind=tcp\n")
        self.assertEqual(run_unprivileged(self, code, self.environment), 1)
        self.prefix.write_policy("allow kind=tcp options=mark\n")
        refused = run_unprivileged(self, f"""
            try:
                procket_twisted.listen({port}, ip="::1", v6only=True, direct=False)
            except PolicyDeniedError as error:
                report(error_facts(error)["step"])
        """, self.environment)  # fmt: skip
        self.assertEqual(refused, "policy")

    def test_device_condition_in_the_policy(self) -> None:
        """device= in a rule allows binding to the named interface only."""
        self.prefix.write_policy("allow options=device device=lo\n")
        self.assertEqual(self.read_back("bind_to_device", free_port())["value"], "b'lo\\x00'")
        self.prefix.write_policy("allow options=device device=eth9\n")
        self.assertEqual(self.read_back("bind_to_device", free_port())["type"], "PolicyDeniedError")

    def test_endpoint_string_with_device_and_mark(self) -> None:
        """procket:tcp:PORT:bindToDevice=lo:mark=42 as nobody: getsockopt shows both."""
        self.prefix.write_policy("allow kind=tcp options=device,mark\n")
        port = free_port()
        result = run_unprivileged(self, f"""
            from socket import *
            from twisted.internet import defer, task
            from twisted.internet.endpoints import serverFromString
            from twisted.internet.protocol import Factory, Protocol

            async def main(reactor):
                await task.deferLater(reactor, 0)
                description = "procket:tcp:{port}:interface=127.0.0.1:bindToDevice=lo:mark=42"
                port = await serverFromString(reactor, description).listen(
                    Factory.forProtocol(Protocol))
                s = socket(fileno=port.fileno())
                try:
                    report([s.getsockopt(SOL_SOCKET, SO_BINDTODEVICE, 16).decode(),
                            s.getsockopt(SOL_SOCKET, SO_MARK)])
                finally:
                    s.detach()

            task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
        """, self.environment)  # fmt: skip
        self.assertEqual(result, ["lo\x00", 42])

    def test_endpoint_string_refused_without_a_grant(self) -> None:
        """The same string under the default policy fails with a clear policy error."""
        result = run_unprivileged(self, f"""
            from twisted.internet import defer, task
            from twisted.internet.endpoints import serverFromString
            from twisted.internet.error import CannotListenError
            from twisted.internet.protocol import Factory, Protocol

            async def main(reactor):
                await task.deferLater(reactor, 0)
                description = "procket:tcp:{free_port()}:bindToDevice=lo:mark=42"
                try:
                    await serverFromString(reactor, description).listen(
                        Factory.forProtocol(Protocol))
                except CannotListenError as error:
                    report(error_facts(error.socketError))

            task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
        """, self.environment)  # fmt: skip
        self.assertEqual(result["type"], "PolicyDeniedError")
        self.assertIn("device=lo, mark=42", result["message"])
        self.assertIn("no rule allows it", result["message"])


class ReusePortTests(SynchronousTestCase):
    """SO_REUSEPORT groups: the same user can share a port; another user cannot join."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}

    def test_other_user_cannot_join_the_group(self) -> None:
        """
        nobody holds a reuseport socket on PORT; another nobody process joins the group, while
        daemon asking the helper for the same reuseport port gets EADDRINUSE: the helper creates
        each socket as its caller, so the kernel keeps the users' groups apart.
        """
        port = free_port()
        holder = start_unprivileged(self, [sys.executable, "-c", PRELUDE + textwrap.dedent(f"""
            import time
            held = procket_twisted.listen({port}, ip="127.0.0.1", reuseport=True, direct=False)
            print("holding", flush=True)
            time.sleep(60)
        """)], self.environment)  # fmt: skip
        deadline = time.monotonic() + 20
        while "holding" not in server_output(holder):
            self.assertIsNone(holder.poll(), server_output(holder))
            self.assertLess(time.monotonic(), deadline, server_output(holder))
            time.sleep(0.05)
        attempt = f"""
            try:
                s = procket_twisted.listen({port}, ip="127.0.0.1", reuseport=True, direct=False)
                report({{"owner": os.fstat(s.fileno()).st_uid}})
            except ProcketError as error:
                report(error_facts(error))
        """
        same_user = run_unprivileged(self, attempt, self.environment)
        self.assertEqual(same_user, {"owner": TEST_UID})
        intruder = run_unprivileged(self, attempt, self.environment, uid=DAEMON_UID, gid=DAEMON_GID)
        self.assertEqual(intruder.get("type"), "SocketError", (intruder, server_output(holder)))
        self.assertEqual(intruder["errno"], errno.EADDRINUSE)
        self.assertIsNone(holder.poll(), "the holder must still hold the port")
