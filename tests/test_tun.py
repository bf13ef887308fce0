"""
TUN and TAP in Twisted: Twisted's ``TuntapPort`` on the helper's descriptor, ``TunnelIPProtocol``,
the endpoint and its ``procket:tun:`` / ``procket:tap:`` strings; and, as nobody against the
setuid helper, the tunping example answering the real ``ping``, interfaces owned by the caller
that disappear with the port, existing names refused (EBUSY) rather than attached, names the
policy does not grant refused, and the default policy refusing both kinds.
"""

from __future__ import annotations

import errno
import os
import random
import re
import socket
import struct
import subprocess
from typing import Any, List, Tuple

from twisted.internet import error
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.pair.ethernet import EthernetProtocol
from twisted.pair.ip import IPProtocol
from twisted.pair.rawudp import RawUDPProtocol
from twisted.pair.tuntap import TunnelAddress, TunnelFlags, TuntapPort
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from procket_twisted import TunDevice, TunRequest
from procket_twisted._twisted import tun as _tun_twisted
from procket_twisted.endpoints import (
    AdoptedTunnelEndpoint,
    IDatagramServerEndpoint,
    ProcketTunnelEndpoint,
    TunnelIPProtocol,
    adoptTunnel,
    tunEndpointFromString,
)

from .privileged_kinds import (
    EndpointUnitTestCase,
    ExampleAsNobodyTestCase,
    Recorder,
    TwistedAsNobodyTestCase,
    unique_interface_name,
)
from .support import TEST_GID, TEST_UID, server_output


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(payload: bytes, options: bytes = b"", padding: bytes = b"") -> bytes:
    """An IPv4 packet 10.1.0.2:4000 -> 10.1.0.1:5000 with OPTIONS in its header and PADDING."""
    udp = struct.pack("!HHHH", 4000, 5000, 8 + len(payload), 0) + payload
    length = 20 + len(options)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | length // 4, 0, length + len(udp), 7, 0, 33, 17, 0,
        socket.inet_aton("10.1.0.2"), socket.inet_aton("10.1.0.1"),
    ) + options  # fmt: skip
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp + padding


class HeaderRecorder(RawUDPProtocol):
    """A RawUDPProtocol that also keeps the IP fields it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: List[dict] = []

    def datagramReceived(self, data: bytes, partial: int, **fields: Any) -> None:  # type: ignore[override]
        self.headers.append(fields)
        super().datagramReceived(data, partial, **fields)


def udp_stack() -> Tuple[TunnelIPProtocol, HeaderRecorder, Recorder]:
    ip, udp, top = TunnelIPProtocol(), HeaderRecorder(), Recorder()
    ip.addProto(17, udp)
    udp.addProto(5000, top)
    return ip, udp, top


class TunnelIPProtocolTests(SynchronousTestCase):
    """TunnelIPProtocol: IPProtocol for TUN packets."""

    def test_delivers_without_link_layer_arguments(self) -> None:
        """It takes (packet, partial), as TuntapPort calls it; Twisted's IPProtocol cannot."""
        ip, udp, top = udp_stack()
        ip.datagramReceived(ipv4_udp(b"hello"), partial=0)
        self.assertEqual(top.received, [(b"hello", ("10.1.0.2", 4000))])
        self.assertRaises(TypeError, IPProtocol().datagramReceived, ipv4_udp(b"x"), partial=0)

    def test_options_padding_and_true_header_fields(self) -> None:
        """IP options are skipped, padding cut; ihl and version are given right."""
        ip, udp, top = udp_stack()
        ip.datagramReceived(ipv4_udp(b"opts", options=b"\x01" * 4, padding=b"\0" * 10))
        self.assertEqual(top.received, [(b"opts", ("10.1.0.2", 4000))])
        [fields] = udp.headers
        self.assertEqual((fields["version"], fields["ihl"], fields["ttl"], fields["tot_len"],
                          fields["source"], fields["dest"]),
                         (4, 24, 33, 24 + 8 + 4, "10.1.0.2", "10.1.0.1"))  # fmt: skip

    def test_ignores_what_is_not_ipv4(self) -> None:
        """IPv6 packets, short packets and bad header lengths are dropped quietly."""
        ip, udp, top = udp_stack()
        for packet in (b"\x60" + bytes(47), b"\x45\x00", b"\x43" + bytes(30),
                       ipv4_udp(b"x")[:2] + b"\x00\x05" + ipv4_udp(b"x")[4:]):  # fmt: skip
            ip.datagramReceived(packet)
        self.assertEqual(top.received, [])


class FakeTunnel:
    """A TunDevice on one end of a datagram socketpair, and what the kernel would say of it."""

    def __init__(self, testcase: SynchronousTestCase, mode: str = "tun", flags: int = 0x1001):
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        testcase.addCleanup(self.ours.close)
        testcase.addCleanup(self.theirs.close)
        self.fd = self.theirs.detach()
        self.device = TunDevice(self.fd, "tun7", mode, False)
        self.flags = flags
        original = _tun_twisted.interface_of
        _tun_twisted.interface_of = self.interface_of  # type: ignore[assignment]
        testcase.addCleanup(setattr, _tun_twisted, "interface_of", original)

    def interface_of(self, fd: int) -> Tuple[str, int]:
        assert fd == self.fd
        return "tun7", self.flags

    def closed(self) -> bool:
        try:
            os.fstat(self.fd)
        except OSError as problem:
            return problem.errno == errno.EBADF
        return False


class AdoptTunnelTests(SynchronousTestCase):
    """adoptTunnel: Twisted's TuntapPort on a descriptor it did not open."""

    def test_tuntap_port_reads_and_writes_the_descriptor(self) -> None:
        """The TuntapPort delivers the descriptor's packets, writes to it, and closes it."""
        fake = FakeTunnel(self)
        ip, _, top = udp_stack()
        reactor = MemoryReactorClock()
        port = adoptTunnel(reactor, fake.device, ip, 1500)
        self.assertIsInstance(port, TuntapPort)
        verifyObject(IListeningPort, port)
        self.assertEqual(port.getHost(), TunnelAddress(TunnelFlags.IFF_TUN, b"tun7"))
        self.assertIn(port, reactor.readers)
        self.assertEqual(fake.device.fileno(), -1)  # the port owns it now
        self.assertFalse(os.get_blocking(fake.fd))
        fake.ours.send(ipv4_udp(b"through the tunnel"))
        port.doRead()
        self.assertEqual(top.received, [(b"through the tunnel", ("10.1.0.2", 4000))])
        port.write(b"out")
        self.assertEqual(fake.ours.recv(10), b"out")
        stopped = port.stopListening()
        reactor.advance(0)
        self.successResultOf(stopped)
        self.assertTrue(fake.closed())

    def test_descriptor_of_another_mode_is_refused_and_closed(self) -> None:
        """A descriptor whose flags are not the port's mode: CannotListenError, closed."""
        fake = FakeTunnel(self, flags=0x1002)  # a tap, said to be a tun
        with self.assertRaises(error.CannotListenError) as raised:
            adoptTunnel(MemoryReactorClock(), fake.device, TunnelIPProtocol())
        self.assertIn("flags 0x1002", str(raised.exception))
        self.assertTrue(fake.closed())

    def test_protocol_must_fit_the_mode(self) -> None:
        """TAP needs an IEthernetProtocol, TUN an IRawPacketProtocol; the device is closed."""
        for mode, protocol in (("tap", TunnelIPProtocol()), ("tun", EthernetProtocol()),
                               ("tun", Recorder())):  # fmt: skip
            fake = FakeTunnel(self, mode)
            self.assertRaises(TypeError, adoptTunnel, MemoryReactorClock(), fake.device, protocol)
            self.assertTrue(fake.closed(), mode)

    def test_packet_information_is_refused(self) -> None:
        """TuntapPort reads no packet information header: such a device is refused."""
        fake = FakeTunnel(self)
        fake.device.packet_info = True
        self.assertRaises(
            TypeError, adoptTunnel, MemoryReactorClock(), fake.device, TunnelIPProtocol()
        )
        self.assertTrue(fake.closed())

    def test_tap_with_ethernet_protocol(self) -> None:
        """A TAP device delivers frames to an EthernetProtocol and its IP stack."""
        fake = FakeTunnel(self, "tap", 0x1002)
        ethernet, (ip, _, top) = EthernetProtocol(), udp_stack()
        ethernet.addProto(0x800, ip)
        port = adoptTunnel(MemoryReactorClock(), fake.device, ethernet)
        self.assertEqual(port.getHost(), TunnelAddress(TunnelFlags.IFF_TAP, b"tun7"))
        fake.ours.send(bytes(12) + b"\x08\x00" + ipv4_udp(b"framed", padding=bytes(4)))
        port.doRead()
        self.assertEqual(top.received, [(b"framed", ("10.1.0.2", 4000))])

    def test_adopted_endpoint_is_single_use(self) -> None:
        """AdoptedTunnelEndpoint listens once."""
        fake = FakeTunnel(self)
        endpoint = AdoptedTunnelEndpoint(MemoryReactorClock(), fake.device)
        verifyObject(IDatagramServerEndpoint, endpoint)
        self.assertIsInstance(self.successResultOf(endpoint.listen(TunnelIPProtocol())), TuntapPort)
        self.failureResultOf(endpoint.listen(TunnelIPProtocol()), error.AlreadyListened)


class TunnelEndpointTests(EndpointUnitTestCase):
    """The endpoint and its strings, with the helper replaced."""

    def test_strings(self) -> None:
        """procket:tun and procket:tap with their keywords become the request."""
        for text, request, size in (
            ("procket:tun", TunRequest(), 65536),
            ("procket:tun:tun7:address=10.0.0.1/24:up=yes", TunRequest("tun", "tun7", "10.0.0.1/24", True), 65536),
            ("procket:tap:name=tap3:maxPacketSize=1600:up=no", TunRequest("tap", "tap3"), 1600),
            ("procket:tun:address=fd00\\:\\:1/64", TunRequest("tun", None, "fd00::1/64"), 65536),
        ):  # fmt: skip
            endpoint = tunEndpointFromString(None, text)
            verifyObject(IDatagramServerEndpoint, endpoint)
            self.assertEqual((endpoint._request, endpoint._maxPacketSize), (request, size), text)
        endpoint = tunEndpointFromString(None, "procket:tun:progname=/bin/helper:timeout=3")
        self.assertEqual((endpoint._progname, endpoint._timeout), ("/bin/helper", 3.0))

    def test_string_errors(self) -> None:
        """Each malformed string raises ValueError naming its bad part."""
        self.assertStringErrors(
            tunEndpointFromString,
            (
                ("procket:tunnel", "not a TUN or TAP endpoint"),
                ("procket:tun:address=fd00::1/64", "colons escaped"),
                ("procket:tun:address=10.0.0.1/33", "address must be"),
                ("procket:tun:address=somewhere", "address must be"),
                ("procket:tun:tun7:tun8", "unexpected value 'tun8'"),
                ("procket:tap:colour=red", "unknown keyword 'colour'"),
                ("procket:tun:up=maybe", "up 'maybe' is not yes or no"),
                ("procket:tun:name=a/b", "name"),
                ("procket:tun:name=much-too-long-a-name", "name"),
                ("procket:tun:maxPacketSize=x", "maxPacketSize"),
                ("procket:tun:timeout=0", "timeout"),
            ),
        )

    def test_listen_adopts_the_device(self) -> None:
        """listen gives the helper the request, and adopts the device it returns."""
        fake = FakeTunnel(self)
        calls = self.recordHelperCalls([fake.device])
        endpoint = ProcketTunnelEndpoint(MemoryReactorClock(), "tun", "tun7", "10.0.0.1/24", True)
        port = self.successResultOf(endpoint.listen(TunnelIPProtocol()))
        self.assertIsInstance(port, TuntapPort)
        self.assertEqual(calls[0][0], [TunRequest("tun", "tun7", "10.0.0.1/24", True)])

    def test_mode_mismatch_fails_before_the_helper_runs(self) -> None:
        """A protocol that does not fit the mode fails listen with TypeError, no helper run."""
        self.replaceHelper(lambda *args, **kwargs: self.fail("the helper ran"))
        for mode, protocol in (("tap", TunnelIPProtocol()), ("tun", EthernetProtocol())):
            self.failureResultOf(ProcketTunnelEndpoint(None, mode).listen(protocol), TypeError)

    def test_refusal_is_cannot_listen(self) -> None:
        """A helper error fails listen with CannotListenError carrying it."""
        denied = self.refuseByPolicy()
        failure = self.failureResultOf(
            ProcketTunnelEndpoint(None, "tap").listen(EthernetProtocol()), error.CannotListenError
        )
        self.assertEqual(failure.value.port, "(a new tap interface)")
        self.assertIs(failure.value.socketError, denied)


#: What the TUN and TAP snippets run as nobody add to the reactor prelude: an ARP request recorder,
#: an interface's owner, group, state and address, and IPv4 UDP packets.
TUNNEL_PRELUDE = """
import struct, subprocess
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.pair.raw import IRawPacketProtocol
from zope.interface import implementer

@implementer(IRawPacketProtocol)
class ARPRecorder(AbstractDatagramProtocol):
    def __init__(self):
        self.requests = []
    def addProto(self, num, proto):
        pass
    def datagramReceived(self, data, partial, dest, source, protocol):
        if len(data) >= 28 and struct.unpack("!H", data[6:8])[0] == 1:
            self.requests.append([socket.inet_ntoa(data[24:28]), socket.inet_ntoa(data[14:18])])

def interface_facts(name):
    def read(what):
        with open(f"/sys/class/net/{name}/{what}") as stream:
            return stream.read().strip()
    return {"owner": int(read("owner")), "group": int(read("group")),
            "up": int(read("flags"), 16) & 1,
            "address": subprocess.run(["ip", "-o", "-4", "addr", "show", name],
                                      capture_output=True, text=True).stdout.split()[3]}

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def udp_packet(payload, source, source_port, destination, destination_port):
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + udp
"""


def unique_subnet() -> str:
    """The first three octets of a /24 for this test (10.215.X)."""
    return f"10.215.{random.randrange(1, 255)}"


class TunnelAsNobodyTests(TwistedAsNobodyTestCase):
    """TUN and TAP endpoints driven by the real reactor, as nobody, against the setuid helper."""

    prelude_additions = TUNNEL_PRELUDE

    def test_tun_belongs_to_the_caller_carries_ip_and_goes_away(self) -> None:
        """
        A TUN endpoint's interface is nobody's, up, with its address; UDP sent through it
        reaches RawUDPProtocol, a packet written into it reaches a socket; after stopListening
        the interface and the descriptor are gone.
        """
        name, subnet = unique_interface_name("ptn"), unique_subnet()
        self.prefix.write_policy(f"allow user={TEST_UID} kind=tun device={name}\n")
        result = self.run_twisted(f"""
            async def main(reactor):
                await later(reactor, 0)
                before = open_fds()
                ip, udp, top = TunnelIPProtocol(), RawUDPProtocol(), Recorder()
                ip.addProto(17, udp)
                udp.addProto(9999, top)
                endpoint = tunEndpointFromString(
                    reactor, "procket:tun:{name}:address={subnet}.1/24:up=yes")
                port = await endpoint.listen(ip)
                facts = interface_facts("{name}")
                facts["host"] = [port.getHost().type.name, port.getHost().name.decode()]
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("{subnet}.1", 0))
                sock.setblocking(False)
                sock.sendto(b"into the tunnel", ("{subnet}.2", 9999))
                await later(reactor)
                facts["received"] = [[data.decode(), list(source)] for data, source in top.received]
                port.write(udp_packet(b"out of the tunnel", "{subnet}.2", 9999,
                                      "{subnet}.1", sock.getsockname()[1]))
                await later(reactor)
                data, source = sock.recvfrom(100)
                facts["answer"] = [data.decode(), list(source)]
                facts["local_port"] = sock.getsockname()[1]
                sock.close()
                await port.stopListening()
                facts["gone"] = not os.path.exists("/sys/class/net/{name}")
                facts["fds_same"] = open_fds() == before
                return facts
            run(main)
        """)  # fmt: skip
        local = result.pop("local_port")
        self.assertEqual(result, {
            "owner": TEST_UID, "group": TEST_GID, "up": 1,
            "address": f"{subnet}.1/24", "host": ["IFF_TUN", name],
            "received": [["into the tunnel", [f"{subnet}.1", local]]],
            "answer": ["out of the tunnel", [f"{subnet}.2", 9999]],
            "gone": True, "fds_same": True,
        })  # fmt: skip

    def test_tap_carries_ethernet_frames(self) -> None:
        """A TAP endpoint's EthernetProtocol sees the ARP requests the kernel sends into it."""
        name, subnet = unique_interface_name("ptp"), unique_subnet()
        self.prefix.write_policy(f"allow user={TEST_UID} kind=tap device={name}\n")
        result = self.run_twisted(f"""
            async def main(reactor):
                ethernet, arp = EthernetProtocol(), ARPRecorder()
                ethernet.addProto(0x806, arp)
                port = await ProcketTunnelEndpoint(
                    reactor, "tap", "{name}", "{subnet}.1/24", up=True).listen(ethernet)
                facts = interface_facts("{name}")
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.sendto(b"who is there?", ("{subnet}.2", 9))
                for _ in range(30):
                    if arp.requests:
                        break
                    await later(reactor, 0.1)
                facts["arp"] = arp.requests[0] if arp.requests else None
                facts["host"] = port.getHost().type.name
                await port.stopListening()
                facts["gone"] = not os.path.exists("/sys/class/net/{name}")
                return facts
            run(main)
        """)  # fmt: skip
        self.assertEqual(result["owner"], TEST_UID)
        self.assertEqual(result["arp"], [f"{subnet}.2", f"{subnet}.1"])
        self.assertEqual((result["host"], result["gone"]), ("IFF_TAP", True))

    def test_existing_names_are_refused_not_attached(self) -> None:
        """Another user's persistent TUN and lo are refused with EBUSY, and left as they were."""
        name = unique_interface_name("pte")
        subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tun"], check=True)
        self.addCleanup(subprocess.run, ["ip", "tuntap", "del", "dev", name, "mode", "tun"])
        owner = open(f"/sys/class/net/{name}/owner").read().strip()
        self.prefix.write_policy(f"allow user={TEST_UID} kind=tun,tap device={name},lo\n")
        result = self.run_twisted(f"""
            async def main(reactor):
                outcomes = []
                for mode, name in (("tun", "{name}"), ("tap", "{name}"), ("tun", "lo")):
                    protocol = TunnelIPProtocol() if mode == "tun" else EthernetProtocol()
                    try:
                        port = await ProcketTunnelEndpoint(reactor, mode, name).listen(protocol)
                    except CannotListenError as failure:
                        problem = failure.socketError
                        outcomes.append([type(problem).__name__, problem.errno, failure.port])
                    else:
                        outcomes.append("attached")
                        await port.stopListening()
                return outcomes
            run(main)
        """)  # fmt: skip
        self.assertEqual(result, [["SocketError", errno.EBUSY, name],
                                  ["SocketError", errno.EBUSY, name],
                                  ["SocketError", errno.EBUSY, "lo"]])  # fmt: skip
        self.assertEqual(open(f"/sys/class/net/{name}/owner").read().strip(), owner)

    def test_names_and_kinds_the_policy_does_not_grant(self) -> None:
        """A rule for one TUN name refuses other names, no name, and a TAP of that name."""
        granted, other = unique_interface_name("ptg"), unique_interface_name("pto")
        self.prefix.write_policy(f"allow user={TEST_UID} kind=tun device={granted}\n")
        result = self.run_twisted(f"""
            async def main(reactor):
                outcomes = []
                for description in ("procket:tun:{other}", "procket:tun", "procket:tap:{granted}",
                                    "procket:tun:{granted}"):
                    protocol = EthernetProtocol() if ":tap" in description else TunnelIPProtocol()
                    try:
                        port = await tunEndpointFromString(reactor, description).listen(protocol)
                    except CannotListenError as failure:
                        outcomes.append(type(failure.socketError).__name__)
                    else:
                        outcomes.append(port.getHost().name.decode())
                        await port.stopListening()
                return outcomes
            run(main)
        """)  # fmt: skip
        denied = "PolicyDeniedError"
        self.assertEqual(result, [denied, denied, denied, granted])

    def test_default_policy_refuses_tun_and_tap(self) -> None:
        """The installed default policy refuses both kinds, with a clear policy error."""
        result = self.run_twisted("""
            async def main(reactor):
                messages = []
                for mode, protocol in (("tun", TunnelIPProtocol()), ("tap", EthernetProtocol())):
                    try:
                        await ProcketTunnelEndpoint(reactor, mode).listen(protocol)
                    except CannotListenError as failure:
                        messages.append([type(failure.socketError).__name__,
                                         failure.socketError.step, str(failure.socketError)])
                return messages
            run(main)
        """)  # fmt: skip
        for (kind, step, message), mode in zip(result, ("tun", "tap")):
            self.assertEqual((kind, step), ("PolicyDeniedError", "policy"))
            self.assertIn(f"refused {mode} interface (any name): no rule allows it", message)
        self.assertEqual(len(result), 2)


class TunpingExampleTests(ExampleAsNobodyTestCase):
    """examples/tunping.py as nobody answers the real ping."""

    example = "tunping.py"

    def test_answers_ping(self) -> None:
        """ping -c 3 gets three replies from the responder; its interface goes away after."""
        subnet, name = unique_subnet(), unique_interface_name("tping")
        self.prefix.write_policy(
            f"allow user={TEST_UID} kind=tun device={name} addr={subnet}.0/24\n"
        )
        responder = self.start("--name", name, "--address", f"{subnet}.1/30", "--count", "3")
        banner = self.wait_for(responder, "answering ping").splitlines()[0]
        match = re.match(rf"tunping: (\S+) is up with {subnet}\.1/30, as uid {TEST_UID}; "
                         rf"answering ping for {subnet}\.2: try ping -c 3 {subnet}\.2$", banner)  # fmt: skip
        self.assertIsNotNone(match, banner)
        interface = match.group(1)  # type: ignore[union-attr]
        self.assertEqual(open(f"/sys/class/net/{interface}/owner").read().strip(), str(TEST_UID))
        ping = subprocess.run([self.ping, "-c", "3", "-W", "2", f"{subnet}.2"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        self.assertEqual(ping.returncode, 0, ping.stdout + ping.stderr)
        self.assertIn("3 packets transmitted, 3 received, 0% packet loss", ping.stdout)
        self.assertEqual(
            len(re.findall(rf"64 bytes from {subnet}\.2: icmp_seq=\d ttl=64", ping.stdout)), 3
        )
        self.assertEqual(responder.wait(20), 0, server_output(responder))
        replies = server_output(responder).splitlines()[1:]
        self.assertEqual([re.sub(r"id=\d+", "id=N", line) for line in replies], [
            f"echo reply to {subnet}.1: 64 bytes, id=N seq={sequence}" for sequence in (1, 2, 3)
        ])  # fmt: skip
        self.assertFalse(os.path.exists(f"/sys/class/net/{interface}"))

    def test_default_policy_says_why(self) -> None:
        """With the default policy, tunping stops at once with the policy's words."""
        responder = self.start()
        self.assertEqual(responder.wait(20), 1)
        output = server_output(responder)
        self.assertIn(
            "tunping: cannot create the interface: the helper refused tun interface", output
        )
        self.assertIn("no rule allows it", output)
        self.assertNotIn("Traceback", output)
