"""
Raw sockets, packet sockets and TUN/TAP interfaces through the plain API, as nobody against the
setuid helper: each works when a policy rule names it, and each is refused otherwise, by the
default policy, by a rule that names another protocol, ethertype or interface, and by a rule that
names no kind at all.
"""

from __future__ import annotations

import subprocess
from socket import AF_PACKET

from twisted.trial.unittest import SynchronousTestCase

from .privileged_kinds import unique_interface_name
from .support import TEST_UID, install_prefix, run_unprivileged, skip_unless_privileged

#: Run as nobody: try CODE (an expression), report what came back or the error.
ATTEMPT = """
try:
    handle = {code}
    report({{"ok": repr(handle), "family": int(getattr(handle, "family", -1))}})
except ProcketError as error:
    report(error_facts(error))
"""


class KindTests(SynchronousTestCase):
    """Each kind against the policy."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.environment = {"PROCKET_HELPER": self.prefix.helper}

    def attempt(self, code: str) -> dict:
        return run_unprivileged(self, ATTEMPT.format(code=code), self.environment)

    def assertRefused(self, code: str) -> None:
        result = self.attempt(code)
        self.assertEqual((result.get("type"), result.get("step")),
                         ("PolicyDeniedError", "policy"), result)  # fmt: skip

    def test_default_policy_refuses_every_new_kind(self) -> None:
        """The installed default policy refuses raw, packet, tun and tap, saying so."""
        for code in ('open_raw("icmp")', 'open_packet(0x800, "lo")', "open_tun()",
                     'open_tun(mode="tap")'):  # fmt: skip
            self.assertRefused(code)
        result = self.attempt('open_raw("icmp")')
        self.assertIn("raw icmp (1) over inet", result["message"])
        self.assertIn("no rule allows it", result["message"])

    def test_a_rule_without_kind_grants_only_tcp_and_udp(self) -> None:
        """`allow user=NOBODY` (no kind=) grants TCP, but not raw, packet or tun."""
        self.prefix.write_policy(f"allow user={TEST_UID}\n")
        self.assertIn("ok", self.attempt('listen(0, ip="127.0.0.1", direct=False)'))
        for code in ('open_raw("icmp")', 'open_packet(0x800, "lo")', "open_tun()"):
            self.assertRefused(code)

    def test_raw_sockets_by_protocol(self) -> None:
        """
        proto= grants the named protocols only. IP_HDRINCL comes with every raw grant (its holder
        could set it itself), so options=hdrincl, which once claimed to restrict it, is refused as
        an error naming why.
        """
        self.prefix.write_policy("allow kind=raw proto=1,58\n")
        self.assertIn("proto=1", self.attempt('open_raw("icmp")')["ok"])
        self.assertIn("proto=58", self.attempt('open_raw("icmpv6", "::1")')["ok"])
        self.assertRefused("open_raw(17)")
        self.assertIn("proto=1", self.attempt('open_raw("icmp", header_included=True)')["ok"])
        self.prefix.write_policy("allow kind=raw proto=255 options=hdrincl\n")
        result = self.attempt("open_raw(255, header_included=True)")
        self.assertEqual((result["type"], result["step"]), ("PolicyDeniedError", "policy"))
        self.assertIn("options=hdrincl grants nothing", result["message"])

    def test_raw_icmp_echo_works(self) -> None:
        """A raw ICMP socket from the helper sends an echo request and gets the reply."""
        self.prefix.write_policy("allow kind=raw proto=1\n")
        result = run_unprivileged(self, """
            import struct

            def checksum(data):
                total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
                total = (total >> 16) + (total & 0xFFFF)
                return ~(total + (total >> 16)) & 0xFFFF

            sock = open_raw("icmp")
            header = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 7) + b"procket!"
            sock.sendto(header[:2] + struct.pack("!H", checksum(header)) + header[4:],
                        ("127.0.0.1", 0))
            sock.settimeout(5)
            while True:
                packet, address = sock.recvfrom(200)
                kind, _, _, identifier, sequence = struct.unpack("!BBHHH", packet[20:28])
                if kind == 0 and identifier == 0x4242:
                    report([address[0], sequence, packet[28:].decode()])
                    break
        """, self.environment)  # fmt: skip
        self.assertEqual(result, ["127.0.0.1", 7, "procket!"])

    def test_packet_sockets_by_ethertype_and_interface(self) -> None:
        """
        ethertype= and device= decide. Promiscuous mode comes with every packet grant (its holder
        could turn it on itself), so options=promisc is refused as an error naming why.
        """
        self.prefix.write_policy("allow kind=packet ethertype=0x800 device=lo\n")
        self.assertEqual(self.attempt('open_packet(0x800, "lo")').get("family"), AF_PACKET)
        self.assertRefused('open_packet(0x806, "lo")')
        self.assertRefused("open_packet(0x800)")  # every interface: not the one named
        result = self.attempt('open_packet(0x800, "lo", promiscuous=True)')
        self.assertEqual(result.get("family"), AF_PACKET, result)
        self.prefix.write_policy("allow kind=packet ethertype=0x800 device=lo options=promisc\n")
        result = self.attempt('open_packet(0x800, "lo")')
        self.assertEqual((result["type"], result["step"]), ("PolicyDeniedError", "policy"))
        self.assertIn("options=promisc grants nothing", result["message"])

    def test_packet_socket_sees_loopback_traffic(self) -> None:
        """A packet socket on lo, with a filter for UDP port 9, sees a datagram sent there."""
        self.prefix.write_policy("allow kind=packet ethertype=0x800 device=lo\n")
        result = run_unprivileged(self, """
            # tcpdump -dd 'ip and udp dst port 9' on an Ethernet-like interface (lo)
            program = [(0x28, 0, 0, 12), (0x15, 0, 8, 0x800), (0x30, 0, 0, 23),
                       (0x15, 0, 6, 17), (0x28, 0, 0, 20), (0x45, 4, 0, 0x1FFF),
                       (0xB1, 0, 0, 14), (0x48, 0, 0, 16), (0x15, 0, 1, 9),
                       (0x6, 0, 0, 262144), (0x6, 0, 0, 0)]
            watcher = open_packet(0x800, "lo", filter=program)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.sendto(b"seen on lo", ("127.0.0.1", 9))
            watcher.settimeout(5)
            frame, address = watcher.recvfrom(2000)
            report([address[0], frame.endswith(b"seen on lo")])
        """, self.environment)  # fmt: skip
        self.assertEqual(result, ["lo", True])

    def test_tun_interface_belongs_to_the_caller_and_goes_away(self) -> None:
        """A new TUN interface with its address, up, owned by nobody; gone once closed."""
        self.prefix.write_policy("allow kind=tun device=ptest7\n")
        result = run_unprivileged(self, """
            device = open_tun("ptest7", address="10.214.0.1/30", up=True)
            def read(name):
                with open(f"/sys/class/net/ptest7/{name}") as stream:
                    return stream.read().strip()
            facts = {"name": device.name, "owner": int(read("owner")),
                     "flags": int(read("flags"), 16) & 1,
                     "address": os.popen("ip -o -4 addr show ptest7").read().split()[3]}
            device.close()
            facts["gone"] = not os.path.exists("/sys/class/net/ptest7")
            report(facts)
        """, self.environment)  # fmt: skip
        self.assertEqual(result, {"name": "ptest7", "owner": TEST_UID, "flags": 1,
                                  "address": "10.214.0.1/30", "gone": True})  # fmt: skip
        self.assertRefused('open_tun("other7")')
        self.assertRefused('open_tun("ptest7", mode="tap")')

    def test_existing_interface_is_never_attached(self) -> None:
        """Asked for the name of an existing interface, the helper refuses (EBUSY)."""
        self.prefix.write_policy("allow kind=tun device=ptest8\n")
        subprocess.run(
            ["ip", "tuntap", "add", "dev", "ptest8", "mode", "tun", "user", "root"], check=True
        )
        self.addCleanup(subprocess.run, ["ip", "tuntap", "del", "dev", "ptest8", "mode", "tun"])
        result = self.attempt('open_tun("ptest8")')
        self.assertEqual((result["type"], result["errno"]), ("SocketError", 16))
        self.assertIn("exists already", result["message"])

    def test_one_helper_run_for_every_kind(self) -> None:
        """TCP, raw and TAP from one listen_many call, with a policy that names each."""
        name = unique_interface_name("pkall")
        self.prefix.write_policy(
            f"allow kind=tcp\nallow kind=raw proto=1\nallow kind=tap device={name}\n"
        )
        result = run_unprivileged(self, f"""
            handles = listen_many([SocketRequest(0, ip="127.0.0.1"), RawRequest("icmp"),
                                   TunRequest("tap", "{name}")], direct=False)
            report([type(handle).__name__ for handle in handles] + [handles[2].mode])
        """, self.environment)  # fmt: skip
        self.assertEqual(result, ["socket", "socket", "TunDevice", "tap"])

    def test_policy_decisions_for_new_kinds(self) -> None:
        """policy_decisions names the deciding line for raw, packet and tun requests."""
        self.prefix.write_policy(
            "allow kind=raw proto=1\ndeny kind=packet\nallow kind=tun device=pk0,pk1\n"
        )
        result = run_unprivileged(self, """
            decisions = policy_decisions([RawRequest("icmp"), PacketRequest(0x800, "lo"),
                                          TunRequest(name="pk1"), RawRequest(17), TunRequest()])
            report([[d.allowed, d.line] for d in decisions])
        """, self.environment)  # fmt: skip
        # A tun grant names its interfaces: a request without a name matches none of them.
        self.assertEqual(result, [[True, 1], [False, 2], [True, 3], [False, 0], [False, 0]])
