"""
A grant means what holds after the hand-over (design rule 10, docs/design.md), and the caller's input is parsed
holding no root power (rule 11): each test runs the real helper, installed setuid root, for the
unprivileged test user, and tries what the holder of the descriptor could do with it.

- addresses: a socket is matched as every address it will accept (IPv4-mapped, dual-stack,
  wildcards, prefixes; allow and deny; IPv4 and IPv6);
- option values and deny options;
- packet sockets: after any re-bind, nothing outside the granted ethertype and interface arrives;
- raw sockets: after a re-bind to the wildcard, nothing for another address arrives;
- TUN/TAP: the network asked for must lie in the grant, no route outside it ever appears (router
  advertisements and redirects written into the interface included), and an allow rule names
  the interfaces a holder could leave behind;
- sudo: a deny rule naming groups stops a caller whose groups are unknown;
- capabilities: the caller's input is parsed as the caller with no effective capability, and each
  privileged call raises only its own capability (strace of the real setuid helper).

Tests that change interfaces or routes run in a private network namespace (``unshare -n``), so
that nothing they do can reach the machine's own network.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Dict, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    PRELUDE,
    TEST_GID,
    TEST_UID,
    TEST_USER,
    free_port,
    install_prefix,
    run_unprivileged,
    skip_unless_privileged,
    skip_with_sanitizer_build,
)
from .test_security_rules import POLICY, HelperTestCase, as_root, run_helper, tcp_spec

#: Run as nobody: try CODE (an expression), report ["ok", repr] or the error's facts.
ATTEMPT = """
try:
    handle = {code}
    report(["ok", repr(handle)])
except ProcketError as error:
    report(error_facts(error))
"""


class GrantTestCase(SynchronousTestCase):
    """The helper installed for each test; snippets run as the test user."""

    maxDiff = None

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}

    def attempt(self, code: str) -> Any:
        """What CODE, an expression that opens something, gives as the test user."""
        return run_unprivileged(self, ATTEMPT.format(code=code), self.environment)

    def assertAllowed(self, code: str) -> str:
        result = self.attempt(code)
        self.assertEqual(result[0] if isinstance(result, list) else result, "ok", (code, result))
        return str(result[1])

    def assertDenied(self, code: str, words: str = "") -> Dict[str, Any]:
        result = self.attempt(code)
        self.assertIsInstance(result, dict, (code, result))
        self.assertEqual((result["type"], result["step"]), ("PolicyDeniedError", "policy"),
                         (code, result))  # fmt: skip
        self.assertIn(words, result["message"])
        return dict(result)

    def in_namespace(self, setup: str, code: str) -> Any:
        """
        Run CODE (after support.PRELUDE) as the test user in a new network namespace, after SETUP
        (shell commands, run there as root: lo is up first); its last line of JSON output.
        """
        script = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        self.addCleanup(os.unlink, script.name)
        with script:
            script.write(PRELUDE + textwrap.dedent(code))
        os.chmod(script.name, 0o644)
        shell = f'ip link set lo up && {setup or "true"} && exec "$@"'
        command = [
            "unshare", "-n", "sh", "-c", shell, "sh",
            "setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_GID}", "--clear-groups", "--",
            sys.executable, script.name,
        ]  # fmt: skip
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                       **self.environment}  # fmt: skip
        finished = subprocess.run(
            command, capture_output=True, text=True, cwd="/", env=environment, timeout=60
        )
        if finished.returncode != 0:
            self.fail(f"namespace run failed ({finished.returncode}):\n{finished.stdout}\n"
                      f"{finished.stderr}")  # fmt: skip
        import json

        return json.loads(finished.stdout.strip().splitlines()[-1])


class AddressTests(GrantTestCase):
    """Item 5, and the prefix tests the suite lacked: every address a socket will accept."""

    def setUp(self) -> None:
        super().setUp()
        self.port = free_port()

    def listen(self, ip: str, **options: Any) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in options.items())
        return f"listen({self.port}, ip={ip!r}, direct=False{extra})"

    def test_ipv4_mapped_is_ipv4(self) -> None:
        """
        ``deny addr=127.0.0.1 port=P`` refuses ``::ffff:127.0.0.1`` (an IPv6 socket that serves
        the IPv4 address), and ``allow family=inet6`` does not grant a mapped address.
        """
        self.prefix.write_policy(f"deny addr=127.0.0.1 port={self.port}\nallow kind=tcp,udp\n")
        self.assertDenied(self.listen("::ffff:127.0.0.1"), "line 1")
        self.assertDenied(f"listen({self.port}, 'udp', '::ffff:127.0.0.1', direct=False)", "line 1")
        self.assertAllowed(self.listen("127.0.0.2"))
        self.prefix.write_policy("allow family=inet6\n")
        self.assertDenied(self.listen("::ffff:127.0.0.1"), "no rule allows it")
        self.assertAllowed(self.listen("::1"))

    def test_wildcard_accepts_every_address(self) -> None:
        """
        0.0.0.0 accepts connections to 127.0.0.1, so ``deny addr=127.0.0.1 port=P`` refuses it;
        an allow with addr= covers a wildcard only with a /0 network.
        """
        self.prefix.write_policy(f"deny addr=127.0.0.1 port={self.port}\nallow kind=tcp,udp\n")
        self.assertDenied(self.listen("0.0.0.0"), "line 1")
        self.assertDenied(self.listen("::", v6only=False), "line 1")
        self.assertAllowed(self.listen("::", v6only=True))
        self.prefix.write_policy("allow addr=127.0.0.0/8\n")
        self.assertDenied(self.listen("0.0.0.0"), "no rule allows it")
        self.prefix.write_policy("allow addr=0.0.0.0/0\n")
        self.assertAllowed(self.listen("0.0.0.0"))

    def test_dual_stack_is_both_families(self) -> None:
        """
        ``::`` without v6only accepts IPv4 too: ``deny family=inet`` and ``deny addr=0.0.0.0``
        refuse it, ``allow family=inet6`` alone does not grant it, and rules that allow each
        family do; with v6only it is IPv6 only.
        """
        for policy in ("deny family=inet\nallow kind=tcp\n", "deny addr=0.0.0.0\nallow kind=tcp\n"):
            self.prefix.write_policy(policy)
            self.assertDenied(self.listen("::"), "line 1")
            self.assertDenied(self.listen("::", v6only=False), "line 1")
            self.assertAllowed(self.listen("::", v6only=True))
        self.prefix.write_policy("allow family=inet6\n")
        self.assertDenied(self.listen("::"), "no rule allows it")
        self.assertAllowed(self.listen("::", v6only=True))
        self.prefix.write_policy("allow family=inet6\nallow family=inet\n")
        self.assertAllowed(self.listen("::"))

    def test_ipv4_prefixes(self) -> None:
        """
        ``addr=127.0.0.0/8`` is a network of 2^24 addresses (not the single host 127.0.0.0), in
        an allow and in a deny, with real binds on loopback.
        """
        self.prefix.write_policy(f"deny addr=127.0.8.0/24 port={self.port}\n"
                                 "allow addr=127.0.0.0/8\n")  # fmt: skip
        self.assertAllowed(self.listen("127.1.2.3"))
        self.assertDenied(self.listen("127.0.8.77"), "line 1")
        self.assertAllowed(self.listen("127.0.9.77"))
        self.prefix.write_policy("allow addr=127.0.0.0/31\n")
        self.assertAllowed(self.listen("127.0.0.1"))
        self.assertDenied(self.listen("127.0.0.2"), "no rule allows it")

    def test_ipv6_prefixes(self) -> None:
        """
        IPv6 networks in allow and deny rules, with a real bind of ::1 and the helper's own
        decisions (its check request) for addresses this machine does not have.
        """
        self.prefix.write_policy("deny addr=fd00:0:0:8::/64\nallow addr=fd00::/8,::1\n")
        self.assertAllowed(self.listen("::1"))
        decisions = run_unprivileged(self, """
            asks = [SocketRequest(80, ip=ip) for ip in
                    ("fd12:3456::1", "fd00:0:0:8::5", "fd00:0:0:9::5", "fe80::1", "::", "::1")]
            report([[d.allowed, d.line] for d in policy_decisions(asks)])
        """, self.environment)  # fmt: skip
        self.assertEqual(decisions, [[True, 2], [False, 1], [True, 2], [False, 0], [False, 1],
                                     [True, 2]])  # fmt: skip

    def test_ipv4_prefix_decisions(self) -> None:
        """``deny addr=10.0.0.0/8`` refuses all of 10/8 and nothing beside it."""
        self.prefix.write_policy("deny addr=10.0.0.0/8\nallow kind=tcp\n")
        decisions = run_unprivileged(self, """
            asks = [SocketRequest(80, ip=ip) for ip in
                    ("10.0.0.0", "10.1.2.3", "10.255.255.255", "9.255.255.255", "11.0.0.0")]
            report([[d.allowed, d.line] for d in policy_decisions(asks)])
        """, self.environment)  # fmt: skip
        self.assertEqual(decisions, [[False, 1], [False, 1], [False, 1], [True, 2], [True, 2]])


class OptionTests(GrantTestCase):
    """Deny rules with options=, and bounds on option values (H2)."""

    def setUp(self) -> None:
        super().setUp()
        self.port = free_port()

    def test_deny_options(self) -> None:
        """``deny options=mark`` refuses a socket that asks for a mark, and only that."""
        self.prefix.write_policy("deny options=mark\nallow options=mark,device\n")
        self.assertDenied(f"listen({self.port}, ip='127.0.0.1', mark=1, direct=False)", "line 1")
        self.assertAllowed(f"listen({self.port}, ip='127.0.0.1', bind_to_device='lo', "
                           "direct=False)")  # fmt: skip

    def test_option_values_are_bounded(self) -> None:
        """
        ``mark=1-10`` beside ``options=mark`` grants marks 1 to 10 only; the mark the socket
        carries is the one asked for (read back as the test user). A deny rule's bound matches
        only the values in it.
        """
        self.prefix.write_policy("allow options=mark mark=1-10\n")
        got = run_unprivileged(self, f"""
            sock = listen({self.port}, ip="127.0.0.1", mark=7, direct=False)
            report(sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK))
        """, self.environment)  # fmt: skip
        self.assertEqual(got, 7)
        self.assertDenied(f"listen({self.port}, ip='127.0.0.1', mark=11, direct=False)")
        self.prefix.write_policy("deny priority=7-1000\nallow options=priority\n")
        self.assertAllowed(f"listen({self.port}, ip='127.0.0.1', priority=6, direct=False)")
        self.assertDenied(f"listen({self.port}, ip='127.0.0.1', priority=7, direct=False)",
                          "line 1")  # fmt: skip

    def test_bound_without_the_option_is_an_error(self) -> None:
        """An allow rule that bounds an option it does not grant is a policy error."""
        self.prefix.write_policy("allow mark=1-10\n")
        self.assertDenied(f"listen({self.port}, ip='127.0.0.1', direct=False)",
                          "mark= bounds an option this rule does not grant")  # fmt: skip


#: Read every frame a packet socket gets for a while: (interface name, ethertype, length).
FRAMES_SOURCE = """
import select, struct, time
from procket_twisted._client.packet import _bind_link

def frames(sock, seconds):
    found, end = [], time.monotonic() + seconds
    sock.setblocking(False)
    while time.monotonic() < end:
        if select.select([sock], [], [], 0.05)[0]:
            data, address = sock.recvfrom(4096)
            found.append([address[0], address[1], len(data)])
    return found
"""

#: An Ethernet frame: broadcast destination, a made-up source, ETHERTYPE, PAYLOAD padded to 46.
ETHERNET_SOURCE = """
def ethernet(ethertype, payload):
    return b"\\xff" * 6 + b"\\x02\\x00\\x00\\x00\\x00\\x07" + struct.pack("!H", ethertype) + \\
        payload.ljust(46, b"\\0")
"""


class PacketGrantTests(GrantTestCase):
    """Item 1: a packet grant holds however the holder re-binds the socket."""

    def test_rebind_sees_nothing_outside_the_grant(self) -> None:
        """
        Granted ARP on pk1, the holder re-binds its socket to every ethertype on every interface
        (ETH_P_ALL, ifindex 0: no capability needed) and sends an IPv4 frame and an ARP frame
        into the veth pair, and UDP over lo: only the ARP frame arriving on pk1 reaches it.
        """
        setup = ("ip link add pk0 type veth peer name pk1 && ip link set pk0 up && "
                 "ip link set pk1 up")  # fmt: skip
        self.prefix.write_policy(f"allow user={TEST_UID} kind=packet ethertype=0x806 device=pk1\n")
        got = self.in_namespace(
            setup,
            FRAMES_SOURCE
            + ETHERNET_SOURCE
            + textwrap.dedent("""
            sock = open_packet(0x806, "pk1")
            _bind_link(sock, 0x0003, None)           # every ethertype, every interface
            # the holder may send any frame on any interface: into pk0, to arrive on pk1
            sock.sendto(ethernet(0x0800, b"an IPv4 frame"), ("pk0", 0))
            sock.sendto(ethernet(0x0806, b"an ARP frame"), ("pk0", 0))
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(3):
                udp.sendto(b"over lo", ("127.0.0.1", 9))
            report(frames(sock, 1.0))
        """),
        )
        self.assertTrue(got, "the ARP frame on pk1 did not arrive either")
        self.assertEqual({(name, ethertype) for name, ethertype, _ in got}, {("pk1", 0x806)})

    def test_callers_filter_still_applies(self) -> None:
        """
        The caller's own filter runs after the grant's checks: a filter that accepts only frames
        of 100 bytes or more drops a short ARP frame and passes a long one.
        """
        setup = ("ip link add pk0 type veth peer name pk1 && ip link set pk0 up && "
                 "ip link set pk1 up")  # fmt: skip
        self.prefix.write_policy(f"allow user={TEST_UID} kind=packet ethertype=0x806 device=pk1\n")
        got = self.in_namespace(
            setup,
            FRAMES_SOURCE
            + ETHERNET_SOURCE
            + textwrap.dedent("""
            # ld len; jge #100, accept, drop
            program = [(0x80, 0, 0, 0), (0x35, 0, 1, 100), (0x6, 0, 0, 0xFFFF), (0x6, 0, 0, 0)]
            sock = open_packet(0x806, "pk1", filter=program)
            _bind_link(sock, 0x0003, None)
            sock.sendto(ethernet(0x0806, b"short"), ("pk0", 0))
            sock.sendto(ethernet(0x0806, b"long" * 30), ("pk0", 0))
            sock.sendto(ethernet(0x0800, b"long" * 30), ("pk0", 0))
            report(frames(sock, 1.0))
        """),
        )
        self.assertEqual([(name, ethertype) for name, ethertype, _ in got], [("pk1", 0x806)])
        self.assertGreaterEqual(got[0][2], 100)


#: Send ICMP messages of type 253 (experimental: the kernel answers none) to two addresses, from
#: a raw socket the namespace's root opened before the test user's code runs.
RAW_SENDER = """
import struct

def icmp(payload):
    header = struct.pack("!BBHI", 253, 0, 0, 0) + payload.ljust(16, b"\\0")
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    return header[:2] + struct.pack("!H", checksum) + header[4:]
"""


class RawGrantTests(GrantTestCase):
    """Item 4: what a raw grant keeps after the holder re-binds the socket."""

    def test_rebind_to_wildcard_sees_only_the_bound_address(self) -> None:
        """
        A raw ICMP socket granted on 127.0.0.1 (``addr=127.0.0.1``) is re-bound by its holder
        to 0.0.0.0; of ICMP sent to 127.0.0.1 and to 127.0.0.3 only the first reaches it (the
        locked filter), and a grant on one address does not cover the unbound socket.
        """
        self.prefix.write_policy("allow kind=raw proto=1 addr=127.0.0.1\n")
        self.assertDenied('open_raw("icmp")', "no rule allows it")
        got = run_unprivileged(self, RAW_SENDER + textwrap.dedent("""
            import select, struct, time
            sock = open_raw("icmp", "127.0.0.1")
            sock.bind(("0.0.0.0", 0))                  # the holder may re-bind a raw socket
            for target in ("127.0.0.3", "127.0.0.1", "127.0.0.3"):
                sock.sendto(icmp(target.encode()), (target, 0))
            seen, end = [], time.monotonic() + 1.0
            sock.setblocking(False)
            while time.monotonic() < end:
                if select.select([sock], [], [], 0.05)[0]:
                    packet = sock.recv(200)
                    if packet[20] == 253:
                        seen.append([socket.inet_ntoa(packet[16:20]),
                                     packet[28:].rstrip(b"\\0").decode()])
            report(seen)
        """), self.environment)  # fmt: skip
        self.assertEqual(got, [["127.0.0.1", "127.0.0.1"]])

    def test_ipv6_rebind_to_wildcard_sees_only_the_bound_address(self) -> None:
        """The same for ICMPv6 on fd00::5 beside fd00::6 (in a namespace that has both)."""
        self.prefix.write_policy("allow kind=raw proto=58 addr=fd00::5\n")
        got = self.in_namespace(
            "ip addr add fd00::5/128 dev lo nodad && ip addr add fd00::6/128 dev lo nodad",
            """
            import select, time
            sock = open_raw("icmpv6", "fd00::5")
            sock.bind(("::", 0))
            sock.setsockopt(58, 1, b"\\0" * 32)   # IPPROTO_ICMPV6, ICMP6_FILTER: pass all
            for target in ("fd00::6", "fd00::5", "fd00::6"):
                sock.sendto(bytes([253, 0, 0, 0, 0, 0, 0, 0]) + target.encode(), (target, 0))
            seen, end = [], time.monotonic() + 1.0
            sock.setblocking(False)
            while time.monotonic() < end:
                if select.select([sock], [], [], 0.05)[0]:
                    packet = sock.recv(200)
                    if packet[0] == 253:
                        seen.append(packet[8:].decode())
            report(seen)
        """,
        )
        self.assertEqual(got, ["fd00::5"])

    def test_header_included_is_in_every_raw_grant(self) -> None:
        """
        The holder of a raw ICMP socket sets IP_HDRINCL itself (no capability) and could write
        any IPv4 packet: what SECURITY.md says a raw grant is. The policy keyword that claimed
        to restrict it is an error.
        """
        self.prefix.write_policy("allow kind=raw proto=1\n")
        got = run_unprivileged(self, """
            sock = open_raw("icmp")
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            report(sock.getsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL))
        """, self.environment)  # fmt: skip
        self.assertEqual(got, 1)
        self.prefix.write_policy("deny kind=raw options=hdrincl\nallow kind=raw proto=1\n")
        self.assertDenied('open_raw("icmp")', "options=hdrincl grants nothing")


#: Build an IPv6 packet with an ICMPv6 message (checksum computed) and IPv4 ICMP redirects.
INJECT_SOURCE = """
import ipaddress, struct, time

def checksum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def icmpv6(source, destination, message):
    src, dst = ipaddress.IPv6Address(source).packed, ipaddress.IPv6Address(destination).packed
    pseudo = src + dst + struct.pack("!I3xB", len(message), 58)
    message = message[:2] + struct.pack("!H", checksum(pseudo + message)) + message[4:]
    return struct.pack("!IHBB", 6 << 28, len(message), 58, 255) + src + dst + message

def router_advertisement():
    # hop limit 64, router preference high, lifetime 1800; a prefix to autoconfigure
    # (2001:db8:77::/64), a route for ::/0 and for 8000::/1 (route information, preference high)
    message = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0x08, 1800, 0, 0)
    message += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
    message += ipaddress.IPv6Address("2001:db8:77::").packed
    message += struct.pack("!BBBBI", 24, 1, 0, 0x08, 1800)
    message += struct.pack("!BBBBI", 24, 2, 1, 0x08, 1800) + bytes(8)
    return icmpv6("fe80::1", "ff02::1", message)

def redirect6(target, destination):
    message = struct.pack("!BBHI", 137, 0, 0, 0)
    message += ipaddress.IPv6Address(target).packed + ipaddress.IPv6Address(destination).packed
    return icmpv6("fe80::1", "fd77::1", message)

def redirect4(gateway, new_gateway, destination, me):
    quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                         ipaddress.IPv4Address(me).packed,
                         ipaddress.IPv4Address(destination).packed) + bytes(8)
    icmp = struct.pack("!BBH4s", 5, 1, 0, ipaddress.IPv4Address(new_gateway).packed) + quoted
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                         ipaddress.IPv4Address(gateway).packed, ipaddress.IPv4Address(me).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp

def routes(name):
    found = []
    for family in ("-4", "-6"):
        for table in ("show table all", "show cache"):
            out = os.popen(f"ip {family} route {table} 2>/dev/null").read()
            found += [line.strip() for line in out.splitlines() if f"dev {name}" in line]
    return found

def addresses(name):
    out = os.popen(f"ip -o addr show dev {name}").read()
    return [line.split()[3] for line in out.splitlines()]
"""


def outside_routes(found: List[str], networks: Tuple[str, ...]) -> List[str]:
    """The routes of FOUND (``ip route`` lines) whose destination is not in one of NETWORKS."""
    import ipaddress

    granted = [ipaddress.ip_network(network) for network in networks]
    outside = []
    for line in found:
        words = line.split()
        if words[0] in ("local", "broadcast", "multicast", "anycast"):
            kind, destination = words[0], words[1]
        else:
            kind, destination = "unicast", words[0]
        if kind == "multicast" and destination == "ff00::/8":
            continue  # every IPv6 interface has it (local table); it carries no unicast
        if destination == "default":
            outside.append(line)
            continue
        network = ipaddress.ip_network(destination, strict=False)
        if not any(network.version == g.version and network.subnet_of(g) for g in granted):
            outside.append(line)
    return outside


class TunGrantTests(GrantTestCase):
    """Items 2 and 3: what a TUN/TAP grant lets its holder route and leave behind."""

    def test_network_must_lie_inside_the_grant(self) -> None:
        """
        One address inside a granted 10.213.0.0/24, asked for with /5, would route 8.0.0.0/5 to
        the caller: refused; /24 and /30 are granted; an IPv6 /0 is refused the same way.
        """
        name = f"pg{os.getpid() % 100000}"
        self.prefix.write_policy(f"allow kind=tun device={name} addr=10.213.0.0/24,fd77::/64\n")
        self.assertDenied(f'open_tun("{name}", address="10.213.0.1/5")', "no rule allows it")
        self.assertDenied(f'open_tun("{name}", address="fd77::1/0")', "no rule allows it")
        self.assertIn(name, self.assertAllowed(f'open_tun("{name}", address="10.213.0.1/24")'))
        self.assertIn(name, self.assertAllowed(f'open_tun("{name}", address="fd77::1/64")'))

    def test_allow_rule_must_name_its_interfaces(self) -> None:
        """
        ``allow kind=tun`` without device= is a policy error (the holder could leave behind any
        number of interfaces of any name); a request without a name matches no named grant.
        """
        self.prefix.write_policy("allow kind=tun\nallow kind=tcp\n")
        self.assertDenied("open_tun()", "must name its interfaces with device=")
        self.prefix.write_policy("allow kind=tun device=pgnamed0\n")
        self.assertDenied("open_tun()", "no rule allows it")

    def test_what_outlives_the_holder_is_what_the_grant_names(self) -> None:
        """
        The holder can make its interface persistent (TUNSETPERSIST needs no capability, as
        SECURITY.md says): it outlives the holder, but only under a name the rule lists, and the
        helper never attaches to it again (a new request for the name fails with EBUSY).
        """
        name = f"pgp{os.getpid() % 100000}"
        self.prefix.write_policy(f"allow kind=tun device={name}\n")
        self.addCleanup(subprocess.run, ["ip", "tuntap", "del", "dev", name, "mode", "tun"],
                        capture_output=True)  # fmt: skip
        run_unprivileged(self, f"""
            import fcntl
            device = open_tun("{name}")
            fcntl.ioctl(device.fileno(), 0x400454CB, 1)        # TUNSETPERSIST
            device.close()
            report("closed")
        """, self.environment)  # fmt: skip
        self.assertTrue(os.path.exists(f"/sys/class/net/{name}"))
        again = self.attempt(f'open_tun("{name}")')
        self.assertEqual((again["type"], again["errno"]), ("SocketError", errno.EBUSY))
        self.assertDenied('open_tun("pgother0")', "no rule allows it")

    def test_no_route_outside_the_grant_ever_appears(self) -> None:
        """
        In a private namespace, a TUN interface with fd77::1/64 and 10.213.0.1/24 (two
        requests) is up; the holder writes a router advertisement (default route, preference
        high, a prefix to autoconfigure, route information for ::/0 and 8000::/1), an ICMPv6
        redirect and an IPv4 redirect into each. No route outside the granted networks appears
        in any table or in the route cache, and no address appears that the helper did not give.
        """
        self.prefix.write_policy("allow kind=tun device=pgr6,pgr4 addr=fd77::/64,10.213.0.0/24\n")
        got = self.in_namespace(
            "true",
            INJECT_SOURCE
            + textwrap.dedent("""
            six = open_tun("pgr6", address="fd77::1/64", up=True)
            four = open_tun("pgr4", address="10.213.0.1/24", up=True)
            time.sleep(0.3)
            for _ in range(3):
                six.write(router_advertisement())
                six.write(redirect6("fe80::2", "fd77::99"))
                six.write(redirect6("fe80::2", "2001:db8:99::1"))
                four.write(router_advertisement())
                four.write(redirect4("10.213.0.254", "10.213.0.253", "8.8.8.8", "10.213.0.1"))
                time.sleep(0.2)
            time.sleep(0.5)
            report({"routes": routes("pgr6") + routes("pgr4"),
                    "addresses": addresses("pgr6") + addresses("pgr4")})
        """),
        )
        self.assertEqual(outside_routes(got["routes"], ("fd77::/64", "10.213.0.0/24")), [],
                         got["routes"])  # fmt: skip
        self.assertEqual(sorted(got["addresses"]), ["10.213.0.1/24", "fd77::1/64"])
        self.assertTrue(any(line.startswith("fd77::/64") for line in got["routes"]), got)


class SudoGroupTests(HelperTestCase):
    """Item 8: under sudo the caller's groups are unknown, so group= denies fail closed."""

    def test_deny_naming_groups_stops_an_unknown_caller(self) -> None:
        """
        ``deny group=4000`` (a group the test user is not in) then ``allow kind=tcp``: the
        setuid helper knows the caller's groups and allows; run as sudo does (SUDO_UID,
        SUDO_GID), the groups are unknown and the deny matches.
        """
        self.prefix.write_policy("deny group=4000\nallow kind=tcp\n")
        self.assertSucceeded(run_helper(self, self.request(tcp_spec(self.port))), 1)
        sudo = as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID))
        outcome = run_helper(self, self.request(tcp_spec(self.port)), sudo)
        text = self.assertRefused(outcome, POLICY, 1, "policy", errno.EACCES)
        self.assertIn("by line 1", text)

    def test_real_sudo(self) -> None:
        """
        The same through real sudo (install-helper --mode sudo, the client run as the test user
        with ``sudo -n HELPER``): the deny naming a group the caller is not in refuses it.
        """
        if shutil.which("sudo") is None:
            self.fail("sudo is not installed; scripts/test installs it (scripts/packages.sh)")
        from procket_twisted._admin.install import sudoers_file

        prefix = install_prefix(self, "--mode", "sudo")
        self.addCleanup(os.unlink, sudoers_file(prefix.path))
        prefix.write_policy("deny group=4000\nallow kind=tcp\n")
        result = run_unprivileged(self, f"""
            try:
                listen({self.port}, ip="127.0.0.1", direct=False)
                report("opened")
            except ProcketError as error:
                report(error_facts(error))
        """, {"PROCKET_HELPER": f"sudo -n {prefix.helper}"})  # fmt: skip
        self.assertEqual((result["type"], result["step"]), ("PolicyDeniedError", "policy"), result)
        self.assertIn("by line 1", result["message"])

    def test_allow_naming_the_primary_group_still_works(self) -> None:
        """Under sudo, ``allow group=SUDO_GID`` matches the primary group."""
        self.prefix.write_policy(f"allow group={TEST_GID} kind=tcp\n")
        sudo = as_root(SUDO_UID=str(TEST_UID), SUDO_GID=str(TEST_GID))
        self.assertSucceeded(run_helper(self, self.request(tcp_spec(self.port)), sudo), 1)


#: A capset call as strace prints it.
CAPSET = re.compile(r"capset\(\{[^}]*\}, \{effective=([^,]*), permitted=([^,]*), inheritable")
#: The capabilities an unprivileged caller's request could ever need.
POSSIBLE = {"CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_DAC_OVERRIDE"}


def capability_names(text: str) -> set:
    """The CAP_ names in strace's rendering of a set (``1<<CAP_X|1<<CAP_Y``, ``0``)."""
    return set(re.findall(r"CAP_[A-Z_]+", text))


class CapabilityTests(HelperTestCase):
    """
    H1 and rule 11, seen by strace (run by root with ``-u``, so the setuid bit takes effect):
    the helper becomes the caller, with nothing effective, before it parses the request, and
    each privileged call raises only the capability that call needs.
    """

    def setUp(self) -> None:
        super().setUp()
        skip_with_sanitizer_build(self, "strace -u of the dynamic ASan build is not the release")
        if shutil.which("strace") is None:
            self.fail("strace is not installed; scripts/test installs it (scripts/packages.sh)")

    def trace(self, *specs: str) -> Tuple[List[str], "Any"]:
        """The helper's system calls for SPECS, run for the test user, and what it did."""
        log = os.path.join(tempfile.mkdtemp(), "trace")
        self.addCleanup(shutil.rmtree, os.path.dirname(log), True)
        calls = "setresuid,setresgid,setgroups,capset,socket,bind,setsockopt,ioctl,openat,sendto,sendmsg"
        argv = ["strace", "-qq", "-u", TEST_USER, "-o", log, "-e", f"trace={calls}",
                self.helper, "v1", *specs]  # fmt: skip
        outcome = run_helper(self, argv, as_root(), program=shutil.which("strace"), timeout=20)
        with open(log) as stream:
            return [line.strip() for line in stream if line.strip()], outcome

    def test_input_is_parsed_as_the_caller(self) -> None:
        """
        A malformed request is refused at the parse step after the switch to the caller's ids
        and a capset that leaves nothing effective and only what some request could need
        permitted: the parse never held root power.
        """
        lines, outcome = self.trace("kind=tcp,family=inet,addr=127.0.0.1,port=99999")
        self.assertEqual(outcome.error()[1], "parse")
        switch = next(i for i, line in enumerate(lines) if line.startswith("setresuid("))
        self.assertIn(f"setresuid({TEST_UID}, {TEST_UID}, {TEST_UID})", lines[switch])
        limit = next(i for i, line in enumerate(lines) if i > switch and CAPSET.search(line))
        effective, permitted = CAPSET.search(lines[limit]).groups()  # type: ignore[union-attr]
        self.assertEqual((effective, capability_names(permitted) <= POSSIBLE), ("0", True))
        answer = next(i for i, line in enumerate(lines) if "error " in line and "parse" in line)
        self.assertLess(limit, answer)
        self.assertFalse([line for line in lines[limit + 1 : answer] if CAPSET.search(line)])

    def test_each_call_raises_only_its_own_capability(self) -> None:
        """
        For a TCP socket with a mark and a raw ICMP socket: socket() of the raw one runs with
        CAP_NET_RAW alone effective, bind() of the TCP one with CAP_NET_BIND_SERVICE alone,
        SO_MARK with CAP_NET_ADMIN alone, and nothing else runs with a capability effective.
        """
        self.prefix.write_policy("allow kind=tcp options=mark\nallow kind=raw proto=1\n")
        lines, outcome = self.trace(tcp_spec(self.port) + ",mark=3",
                                    "kind=raw,family=inet,proto=1")  # fmt: skip
        self.assertEqual(outcome.exit_code, 0, outcome.replies)
        effective: set = set()
        privileged: List[Tuple[str, frozenset]] = []  # each call made with a capability effective
        switched = False
        for line in lines:
            match = CAPSET.search(line)
            if line.startswith("setresuid("):
                switched = True
            elif match is not None:
                effective = capability_names(match.group(1))
                if switched:
                    self.assertLessEqual(capability_names(match.group(2)), POSSIBLE, line)
            elif switched and effective:
                privileged.append((line, frozenset(effective)))
        calls = {(line.split("(")[0], caps) for line, caps in privileged}
        self.assertEqual(calls, {
            ("bind", frozenset({"CAP_NET_BIND_SERVICE"})),
            ("setsockopt", frozenset({"CAP_NET_ADMIN"})),
            ("socket", frozenset({"CAP_NET_RAW"})),
        })  # fmt: skip
        raw = [line for line, _ in privileged if line.startswith("socket(")]
        self.assertEqual(len(raw), 1)
        self.assertIn("SOCK_RAW", raw[0])
