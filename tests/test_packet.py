"""
Packet sockets in Twisted: the port (what each kind of protocol receives, sending, stopping), the
``procket:packet:`` string form, and, as nobody against the setuid helper, frames of real traffic
on ``lo`` through the port and through ``twisted.pair``'s protocols, a locked filter the caller
cannot remove, promiscuous mode only when granted, interfaces the policy does not name, and the
ARP watcher example on a veth pair.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import subprocess
import textwrap
from typing import Any, List, Tuple

from twisted.internet import error
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.pair.ethernet import EthernetProtocol
from twisted.pair.ip import IPProtocol
from twisted.pair.rawudp import RawUDPProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from procket_twisted import PacketRequest
from procket_twisted.endpoints import (
    AdoptedPacketEndpoint,
    IDatagramServerEndpoint,
    LinkLayerAddress,
    PacketPort,
    ProcketPacketEndpoint,
    packetEndpointFromString,
    parseFilter,
)

from .privileged_kinds import (
    EndpointUnitTestCase,
    ExampleAsNobodyTestCase,
    Recorder,
    TwistedAsNobodyTestCase,
    unique_interface_name,
)
from .support import TEST_UID, server_output

LOOPBACK = ("lo", 0x800, 0, 772, b"\0" * 6)


def udp_frame(payload: bytes, destination_port: int, source_port: int = 4321) -> bytes:
    """An Ethernet frame as lo carries it: zero addresses, IPv4 127.0.0.1 to itself, UDP."""
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"),
    )  # fmt: skip
    words = struct.unpack("!10H", header)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return b"\0" * 12 + b"\x08\x00" + header + udp


class FakePacketSocket:
    """Enough of an AF_PACKET socket for PacketPort: queued frames in, sent frames recorded."""

    family = socket.AF_PACKET

    def __init__(self, kind: int = socket.SOCK_RAW, name: Tuple[Any, ...] = LOOPBACK) -> None:
        self.type = kind
        self.name = name
        self.incoming: List[Any] = []
        self.sent: List[Tuple[bytes, Any]] = []
        self.closed = False

    def getsockname(self) -> Tuple[Any, ...]:
        return self.name

    def fileno(self) -> int:
        return -1 if self.closed else 99

    def setblocking(self, flag: bool) -> None:
        pass

    def recvmsg(self, size: int) -> Tuple[bytes, list, int, Tuple[Any, ...]]:
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "nothing")
        item = self.incoming.pop(0)
        if isinstance(item, OSError):
            raise item
        frame, address = item
        return frame[:size], [], socket.MSG_TRUNC if len(frame) > size else 0, address

    def send(self, frame: bytes) -> int:
        self.sent.append((frame, None))
        return len(frame)

    def sendto(self, frame: bytes, address: Any) -> int:
        self.sent.append((frame, address))
        return len(frame)

    def close(self) -> None:
        self.closed = True


class EthernetRecorder(EthernetProtocol):
    """Keeps the whole frames and their partial flags."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: List[Tuple[bytes, int]] = []

    def datagramReceived(self, data: bytes, partial: int = 0) -> None:
        self.frames.append((data, partial))
        super().datagramReceived(data, partial)


def pair_stack(port: int) -> Tuple[EthernetProtocol, Recorder]:
    """EthernetProtocol, IPProtocol, RawUDPProtocol, and a recorder for UDP PORT on top."""
    ethernet, ip, udp, top = EthernetProtocol(), IPProtocol(), RawUDPProtocol(), Recorder()
    ethernet.addProto(0x800, ip)
    ip.addProto(17, udp)
    udp.addProto(port, top)
    return ethernet, top


class PacketPortTests(SynchronousTestCase):
    """PacketPort on a fake socket and a memory reactor: delivery, sending, stopping."""

    def port(self, protocol: Any, sock: Any = None, size: int = 65600) -> Tuple[PacketPort, Any]:
        sock = sock or FakePacketSocket()
        reactor = MemoryReactorClock()
        listening = PacketPort(sock, protocol, size, reactor)
        listening.startListening()
        return listening, sock

    def test_interfaces_and_host(self) -> None:
        """It is an IListeningPort; getHost is the bound interface and ethertype."""
        port, _ = self.port(Recorder())
        verifyObject(IListeningPort, port)
        self.assertEqual(port.getHost(), LinkLayerAddress("lo", 0x800, 0, 772, b"\0" * 6))
        self.assertTrue(verifyObject(IAddress, port.getHost()))
        self.assertIn(port, port.reactor.readers)

    def test_datagram_protocol_gets_frame_and_link_address(self) -> None:
        """A DatagramProtocol gets each frame with a LinkLayerAddress of its sockaddr_ll."""
        recorder = Recorder()
        port, sock = self.port(recorder)
        sock.incoming.append((b"frame", ("lo", 0x806, 1, 1, b"\x02\0\0\0\0\x01")))
        port.doRead()
        [(frame, address)] = recorder.received
        self.assertEqual(frame, b"frame")
        self.assertEqual(address, LinkLayerAddress("lo", 0x806, 1, 1, b"\x02\0\0\0\0\x01"))
        self.assertEqual(address.packetTypeName, "broadcast")
        self.assertEqual(address.hardwareAddress, "02:00:00:00:00:01")

    def test_pair_stack_gets_udp(self) -> None:
        """EthernetProtocol, IPProtocol and RawUDPProtocol deliver the UDP payload of a frame."""
        ethernet, top = pair_stack(5353)
        port, sock = self.port(ethernet)
        sock.incoming.append((udp_frame(b"payload", 5353), LOOPBACK))
        sock.incoming.append((udp_frame(b"other port", 5354), LOOPBACK))
        port.doRead()
        self.assertEqual(top.received, [(b"payload", ("127.0.0.1", 4321))])

    def test_partial_frames_are_flagged(self) -> None:
        """A frame longer than maxPacketSize arrives cut, with partial set."""
        recorder = EthernetRecorder()
        port, sock = self.port(recorder, size=20)
        sock.incoming.append((udp_frame(b"x" * 100, 9), LOOPBACK))
        sock.incoming.append((b"\0" * 14, LOOPBACK))
        port.doRead()
        self.assertEqual([(len(frame), partial) for frame, partial in recorder.frames],
                         [(20, 1), (14, 0)])  # fmt: skip

    def test_raw_packet_protocol_on_cooked_socket(self) -> None:
        """An IPProtocol on a cooked socket gets the packet, the sender's address, the type."""
        ip, udp, top = IPProtocol(), RawUDPProtocol(), Recorder()
        ip.addProto(17, udp)
        udp.addProto(5353, top)
        seen = []
        original = ip.datagramReceived
        ip.datagramReceived = lambda data, partial, dest, source, protocol: (  # type: ignore
            seen.append((dest, source, protocol)),
            original(data, partial, dest, source, protocol),
        )
        port, sock = self.port(ip, FakePacketSocket(socket.SOCK_DGRAM))
        sock.incoming.append((udp_frame(b"cooked", 5353)[14:], ("eth0", 0x800, 0, 1, b"\x02" * 6)))
        port.doRead()
        self.assertEqual(top.received, [(b"cooked", ("127.0.0.1", 4321))])
        self.assertEqual(seen, [(None, b"\x02" * 6, 0x800)])

    def test_protocol_errors_are_logged_and_reading_goes_on(self) -> None:
        """An exception from datagramReceived is logged; the next frame is still delivered."""
        recorder = Recorder()
        calls = []

        def explode(data: bytes, address: Any) -> None:
            calls.append(data)
            if len(calls) == 1:
                raise RuntimeError("boom")

        recorder.datagramReceived = explode  # type: ignore[method-assign]
        port, sock = self.port(recorder)
        sock.incoming += [(b"one", LOOPBACK), (b"two", LOOPBACK)]
        port.doRead()
        self.assertEqual(calls, [b"one", b"two"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_read_errors_do_not_stop_the_port(self) -> None:
        """ENETDOWN while reading is logged, and the port keeps reading afterwards."""
        recorder = Recorder()
        port, sock = self.port(recorder)
        sock.incoming += [OSError(errno.ENETDOWN, "down")]
        port.doRead()
        sock.incoming += [(b"after", LOOPBACK)]
        port.doRead()
        self.assertEqual([frame for frame, _ in recorder.received], [b"after"])

    def test_write(self) -> None:
        """write sends out of the bound interface, or to a LinkLayerAddress or tuple."""
        port, sock = self.port(Recorder())
        port.write(b"as is")
        port.write(b"there", LinkLayerAddress("eth1", 0x806))
        port.writeSequence([b"a", b"b"], ("eth2", 0x800))
        self.assertEqual(sock.sent, [
            (b"as is", None),
            (b"there", ("eth1", 0x806, 0, 0, b"")),
            (b"ab", ("eth2", 0x800)),
        ])  # fmt: skip

    def test_cooked_write_needs_an_address(self) -> None:
        """A cooked socket cannot send without a link-layer address."""
        port, _ = self.port(Recorder(), FakePacketSocket(socket.SOCK_DGRAM))
        self.assertRaises(ValueError, port.write, b"where?")

    def test_write_too_long(self) -> None:
        """EMSGSIZE becomes MessageLengthError."""
        port, sock = self.port(Recorder())

        def refuse(frame: bytes) -> int:
            raise OSError(errno.EMSGSIZE, "too long")

        sock.send = refuse
        self.assertRaises(error.MessageLengthError, port.write, b"x" * 70000)

    def test_stop_listening(self) -> None:
        """stopListening closes the socket, stops the protocol, and fires every waiter once."""
        recorder = Recorder()
        port, sock = self.port(recorder)
        first, second = port.stopListening(), port.stopListening()
        self.assertNotIn(port, port.reactor.readers)
        self.assertFalse(sock.closed)
        port.reactor.advance(0)
        self.assertTrue(sock.closed)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(recorder.transport)
        self.assertIsNone(self.successResultOf(port.stopListening()))

    def test_needs_a_packet_socket(self) -> None:
        """Any other socket is refused."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            self.assertRaises(ValueError, PacketPort, other, Recorder(), 100, MemoryReactorClock())


class EndpointTests(EndpointUnitTestCase):
    """The endpoint and its string form, with the helper replaced."""

    def test_string_form(self) -> None:
        """Every keyword of procket:packet becomes the request's."""
        endpoint = packetEndpointFromString(
            MemoryReactorClock(),
            "procket:packet:0x806:device=eth0:promiscuous=yes:cooked=yes:maxPacketSize=1600"
            ":mark=7:progname=/bin/helper:timeout=2.5:filter=1,6 0 0 65535",
        )
        verifyObject(IDatagramServerEndpoint, endpoint)
        self.assertEqual(
            endpoint._request,
            PacketRequest(0x806, "eth0", True, True, [(6, 0, 0, 65535)], mark=7),
        )
        self.assertEqual((endpoint._maxPacketSize, endpoint._progname, endpoint._timeout),
                         (1600, "/bin/helper", 2.5))  # fmt: skip

    def test_string_ethertypes(self) -> None:
        """Ethertypes in hex, decimal, or by name; the interface may be positional."""
        for text, number in (("0x800", 0x800), ("2054", 0x806), ("all", 3), ("IPv6", 0x86DD),
                             ("arp", 0x806), ("0xFFFF", 0xFFFF)):  # fmt: skip
            endpoint = packetEndpointFromString(None, f"procket:packet:{text}:lo")
            self.assertEqual((endpoint._request.ethertype, endpoint._request.device),
                             (number, "lo"))  # fmt: skip
        self.assertIsNone(packetEndpointFromString(None, "procket:packet:ip")._request.device)

    def test_string_errors(self) -> None:
        """Each malformed string raises ValueError naming its bad part."""
        self.assertStringErrors(
            packetEndpointFromString,
            (
                ("procket:packet", "no ethertype"),
                ("procket:udp:53", "not a packet endpoint"),
                ("procket:packet:0x10000", "0x10000"),
                ("procket:packet:ipx", "ipx"),
                ("procket:packet:0x806:lo:9000:extra", "unexpected value 'extra'"),
                ("procket:packet:0x806:colour=red", "unknown keyword 'colour'"),
                ("procket:packet:0x806:lo:device=eth0", "device is given twice"),
                ("procket:packet:0x806:cooked=maybe", "cooked 'maybe' is not yes or no"),
                ("procket:packet:0x806:promiscuous=yes", "promiscuous needs a device"),
                ("procket:packet:0x806:device=", "device is empty"),
                ("procket:packet:0x806:maxPacketSize=0", "maxPacketSize"),
                ("procket:packet:0x806:timeout=-1", "timeout"),
                ("procket:packet:0x806:filter=2,6 0 0 1", "says 2 instructions but has 1"),
                ("procket:packet:0x806:device=a/b", "device"),
            ),
        )

    def test_parse_filter(self) -> None:
        """tcpdump -ddd's output, commas for newlines, is a filter; malformed ones are not."""
        self.assertEqual(parseFilter("4,40 0 0 12,21 0 1 2054,6 0 0 65535,6 0 0 0,"),
                         ((40, 0, 0, 12), (21, 0, 1, 2054), (6, 0, 0, 65535), (6, 0, 0, 0)))  # fmt: skip
        for bad in ("", "x", "1,6 0 0", "1,6 0 0 -1", "0", "65," + ",".join(["6 0 0 0"] * 65)):
            self.assertRaises(ValueError, parseFilter, bad)

    def test_protocol_must_fit_the_socket(self) -> None:
        """An EthernetProtocol needs a raw socket, an IPProtocol a cooked one: checked first."""
        calls = self.recordHelperCalls([])
        cooked = ProcketPacketEndpoint(MemoryReactorClock(), 0x800, "lo", cooked=True)
        self.failureResultOf(cooked.listen(EthernetProtocol()), TypeError)
        raw = ProcketPacketEndpoint(MemoryReactorClock(), 0x800, "lo")
        self.failureResultOf(raw.listen(IPProtocol()), TypeError)
        self.assertEqual(calls, [])

    def test_listen_adopts_what_the_helper_gives(self) -> None:
        """listen adopts the helper's socket as a PacketPort delivering to the protocol."""
        sock = FakePacketSocket()
        calls = self.recordHelperCalls([sock])
        reactor = MemoryReactorClock()
        recorder = Recorder()
        endpoint = ProcketPacketEndpoint(reactor, 0x800, "lo", 2000, progname="x", timeout=3)
        port = self.successResultOf(endpoint.listen(recorder))
        self.assertIsInstance(port, PacketPort)
        self.assertIs(recorder.transport, port)
        self.assertEqual(port.maxPacketSize, 2000)
        [(requests, options)] = calls
        self.assertEqual(requests, [PacketRequest(0x800, "lo")])
        self.assertEqual(options, {"progname": "x", "timeout": 3, "direct": True})

    def test_refusal_is_cannot_listen(self) -> None:
        """A helper error fails listen with CannotListenError carrying it."""
        denied = self.refuseByPolicy()
        failure = self.failureResultOf(
            ProcketPacketEndpoint(None, 0x806, "eth0").listen(Recorder()), error.CannotListenError
        )
        self.assertEqual((failure.value.interface, failure.value.port), ("eth0", "0x0806"))
        self.assertIs(failure.value.socketError, denied)

    def test_adopted_endpoint_is_single_use(self) -> None:
        """AdoptedPacketEndpoint listens once; a protocol that does not fit closes the socket."""
        endpoint = AdoptedPacketEndpoint(MemoryReactorClock(), FakePacketSocket())
        self.successResultOf(endpoint.listen(Recorder()))
        self.failureResultOf(endpoint.listen(Recorder()), error.AlreadyListened)
        sock = FakePacketSocket(socket.SOCK_DGRAM)
        self.failureResultOf(
            AdoptedPacketEndpoint(MemoryReactorClock(), sock).listen(EthernetProtocol()), TypeError
        )
        self.assertTrue(sock.closed)


#: What the packet snippets run as nobody add to the reactor prelude: a frame's UDP port, a receiver.
PACKET_PRELUDE = """
import struct
from twisted.pair.ip import IPProtocol

def udp_port(frame, offset=14):
    # the destination port of an IPv4 UDP frame, or None
    if len(frame) < offset + 28 or frame[offset + 9] != 17:
        return None
    start = offset + (frame[offset] & 0x0F) * 4
    return struct.unpack("!H", frame[start + 2:start + 4])[0]

def receiver():
    # an ordinary UDP socket on an unprivileged port of 127.0.0.1
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock, sock.getsockname()[1]
"""

UDP_FRAME_SOURCE = textwrap.dedent(
    """
    def udp_frame(payload, destination_port, source_port=4321, source="127.0.0.1",
                  destination="127.0.0.1", macs=bytes(12)):
        udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                             socket.inet_aton(source), socket.inet_aton(destination))
        total = sum(struct.unpack("!10H", header))
        total = (total & 0xFFFF) + (total >> 16)
        header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
        return macs + b"\\x08\\x00" + header + udp

    def mac_of(interface):
        with open(f"/sys/class/net/{interface}/address") as stream:
            return bytes.fromhex(stream.read().strip().replace(":", ""))
    """
)


def udp_filter(port: int) -> List[Tuple[int, int, int, int]]:
    """tcpdump -dd 'ip and udp dst port PORT' for an Ethernet-like interface such as lo."""
    return [(0x28, 0, 0, 12), (0x15, 0, 8, 0x800), (0x30, 0, 0, 23), (0x15, 0, 6, 17),
            (0x28, 0, 0, 20), (0x45, 4, 0, 0x1FFF), (0xB1, 0, 0, 14), (0x48, 0, 0, 16),
            (0x15, 0, 1, port), (0x6, 0, 0, 262144), (0x6, 0, 0, 0)]  # fmt: skip


def veth_pair(testcase: SynchronousTestCase, prefix: str) -> Tuple[str, str]:
    """
    A veth pair STEM0-STEM1 (both up), removed when TESTCASE ends: STEM starts with PREFIX, and no
    other test run uses it now.
    """
    stem = unique_interface_name(prefix, room=1)
    first, second = f"{stem}0", f"{stem}1"
    subprocess.run(["ip", "link", "add", first, "type", "veth", "peer", "name", second],
                   check=True)  # fmt: skip
    testcase.addCleanup(subprocess.run, ["ip", "link", "del", first], capture_output=True)
    for name in (first, second):
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return first, second


class PacketAsNobodyTests(TwistedAsNobodyTestCase):
    """Packet endpoints driven by the real reactor, as nobody, against the setuid helper."""

    prelude_additions = PACKET_PRELUDE + UDP_FRAME_SOURCE

    def test_frames_on_lo_reach_every_kind_of_protocol(self) -> None:
        """
        UDP sent to 127.0.0.1 reaches a DatagramProtocol as a frame with its link-layer address,
        the twisted.pair stack on a raw socket, and an IPProtocol on a cooked one.
        """
        self.prefix.write_policy(f"allow user={TEST_UID} kind=packet ethertype=0x800 device=lo\n")
        result = self.run_twisted("""
            async def main(reactor):
                sink, port = receiver()
                recorder = Recorder()
                plain = await packetEndpointFromString(reactor, "procket:packet:ip:lo").listen(
                    recorder)
                ethernet, ip, udp, top = EthernetProtocol(), IPProtocol(), RawUDPProtocol(), Recorder()
                ethernet.addProto(0x800, ip); ip.addProto(17, udp); udp.addProto(port, top)
                stacked = await ProcketPacketEndpoint(reactor, 0x800, "lo").listen(ethernet)
                cooked_ip, cooked_udp, cooked_top = IPProtocol(), RawUDPProtocol(), Recorder()
                cooked_ip.addProto(17, cooked_udp); cooked_udp.addProto(port, cooked_top)
                cooked = await packetEndpointFromString(
                    reactor, "procket:packet:0x800:device=lo:cooked=yes").listen(cooked_ip)
                sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sender.bind(("127.0.0.1", 0))
                sender.sendto(b"seen on lo", ("127.0.0.1", port))
                await later(reactor)
                mine = [(frame, address) for frame, address in recorder.received
                        if udp_port(frame) == port]
                facts = {
                    "uid": os.getuid(),
                    "host": list(plain.getHost().toSockaddr()[:4]),
                    "frames": [[frame.endswith(b"seen on lo"), address.device, address.protocol,
                                address.packetTypeName, address.hardwareType,
                                address.hardwareAddress] for frame, address in mine],
                    "stacked": [[data.decode(), list(source)] for data, source in top.received],
                    "cooked": [[data.decode(), list(source)] for data, source in cooked_top.received],
                    "sender": sender.getsockname()[1],
                }
                for listening in (plain, stacked, cooked):
                    await listening.stopListening()
                return facts
            run(main)
        """)  # fmt: skip
        sender = result["sender"]
        self.assertEqual(result["uid"], TEST_UID)
        self.assertEqual(result["host"], ["lo", 0x800, 0, 772])
        self.assertEqual(result["frames"], [[True, "lo", 0x800, "host", 772, "00:00:00:00:00:00"]])
        self.assertEqual(result["stacked"], [["seen on lo", ["127.0.0.1", sender]]])
        self.assertEqual(result["cooked"], [["seen on lo", ["127.0.0.1", sender]]])

    def test_sends_frames(self) -> None:
        """
        A frame written to a raw port on one end of a veth pair, and a packet written to a cooked
        one with the peer's hardware address, reach a UDP socket on the peer's address.
        (Not on lo: the kernel drops 127.0.0.1 packets that come from outside its own stack.)
        """
        sender, peer = veth_pair(self, "pks")
        subnet = f"10.214.{random.randrange(1, 255)}"
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", peer], check=True)
        self.prefix.write_policy(
            f"allow user={TEST_UID} kind=packet ethertype=0x800 device={sender}\n"
        )
        result = self.run_twisted(f"""
            async def main(reactor):
                sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sink.bind(("{subnet}.1", 0))
                sink.setblocking(False)
                port = sink.getsockname()[1]
                peer_mac, own_mac = mac_of("{peer}"), mac_of("{sender}")
                raw = await ProcketPacketEndpoint(reactor, 0x800, "{sender}").listen(Recorder())
                cooked = await ProcketPacketEndpoint(reactor, 0x800, "{sender}",
                                                     cooked=True).listen(Recorder())
                addresses = dict(source="{subnet}.2", destination="{subnet}.1")
                raw.write(udp_frame(b"written raw", port, macs=peer_mac + own_mac, **addresses))
                cooked.write(udp_frame(b"written cooked", port, 4322, **addresses)[14:],
                             LinkLayerAddress("{sender}", 0x800, address=peer_mac))
                await later(reactor)
                got = []
                while True:
                    try:
                        data, source = sink.recvfrom(100)
                    except BlockingIOError:
                        break
                    got.append([data.decode(), list(source)])
                await raw.stopListening(); await cooked.stopListening()
                return got
            run(main)
        """)  # fmt: skip
        self.assertEqual(result, [["written raw", [f"{subnet}.2", 4321]],
                                  ["written cooked", [f"{subnet}.2", 4322]]])  # fmt: skip

    def test_locked_filter_cannot_be_removed(self) -> None:
        """
        With ETH_P_ALL and a filter for one UDP port, only that port's frames arrive; the
        caller can neither detach the filter nor replace it (EPERM), and it still holds after.
        """
        self.prefix.write_policy(f"allow user={TEST_UID} kind=packet ethertype=0x3 device=lo\n")
        result = self.run_twisted(f"""
            from procket_twisted._client.packet import _FilterBuffer
            SO_DETACH_FILTER, SO_ATTACH_FILTER = 27, 26

            async def main(reactor):
                wanted, wanted_port = receiver()
                other, other_port = receiver()
                program = {udp_filter(0)!r}
                program[8] = (0x15, 0, 1, wanted_port)
                recorder = Recorder()
                port = await ProcketPacketEndpoint(reactor, 0x3, "lo", filter=program).listen(
                    recorder)
                sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sender.sendto(b"wanted", ("127.0.0.1", wanted_port))
                sender.sendto(b"filtered out", ("127.0.0.1", other_port))
                handle = port.getHandle()
                attempts = {{}}
                try:
                    handle.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
                    attempts["detach"] = "allowed"
                except OSError as problem:
                    attempts["detach"] = problem.errno
                accept_all = _FilterBuffer(struct.pack("HBBI", 0x6, 0, 0, 262144))
                try:
                    handle.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, accept_all.fprog())
                    attempts["attach"] = "allowed"
                except OSError as problem:
                    attempts["attach"] = problem.errno
                sender.sendto(b"filtered out", ("127.0.0.1", other_port))
                sender.sendto(b"wanted", ("127.0.0.1", wanted_port))
                await later(reactor)
                await port.stopListening()
                return {{"attempts": attempts,
                        "ports": sorted({{udp_port(frame) for frame, _ in recorder.received}}),
                        "wanted": wanted_port,
                        "payloads": sorted({{frame[42:].decode() for frame, _ in recorder.received}}),
                        "types": sorted({{address.packetTypeName for _, address in recorder.received}})}}
            run(main)
        """)  # fmt: skip
        self.assertEqual(result["attempts"], {"detach": errno.EPERM, "attach": errno.EPERM})
        self.assertEqual(result["ports"], [result["wanted"]])
        self.assertEqual(result["payloads"], ["wanted"])
        self.assertEqual(result["types"], ["host", "outgoing"])  # ETH_P_ALL sees both ways

    def test_promiscuous_comes_with_the_grant(self) -> None:
        """
        Promiscuous mode needs no options=promisc (the holder of any packet socket could turn it
        on itself): it is set while the port is open and cleared after. A policy that still says
        options=promisc is refused, naming why, so that no one believes it restricts anything.
        """
        interface, _ = veth_pair(self, "pkp")
        policy = f"allow user={TEST_UID} kind=packet ethertype=0x800 device={interface}"
        self.prefix.write_policy(policy + "\n")
        code = f"""
            async def main(reactor):
                flags = "/sys/class/net/{interface}/flags"
                facts = {{}}
                try:
                    port = await packetEndpointFromString(
                        reactor, "procket:packet:ip:{interface}:promiscuous=yes").listen(Recorder())
                except CannotListenError as failure:
                    facts["refused"] = [type(failure.socketError).__name__, str(failure.socketError)]
                    return facts
                facts["while"] = int(open(flags).read(), 16) & 0x100
                await port.stopListening()
                facts["after"] = int(open(flags).read(), 16) & 0x100
                return facts
            run(main)
        """
        self.assertEqual(self.run_twisted(code), {"while": 0x100, "after": 0})
        self.prefix.write_policy(policy + " options=promisc\n")
        refused = self.run_twisted(code)["refused"]
        self.assertEqual(refused[0], "PolicyDeniedError")
        self.assertIn("options=promisc grants nothing", refused[1])

    def test_interfaces_and_ethertypes_the_policy_does_not_name(self) -> None:
        """
        A rule for lo and IPv4 refuses another interface, every interface, another ethertype,
        and ETH_P_ALL (which would see IPv4 and more).
        """
        interface, _ = veth_pair(self, "pka")
        self.prefix.write_policy(f"allow user={TEST_UID} kind=packet ethertype=0x800 device=lo\n")
        result = self.run_twisted(f"""
            async def main(reactor):
                outcomes = []
                for description in ("procket:packet:ip:{interface}", "procket:packet:ip",
                                    "procket:packet:arp:lo", "procket:packet:all:lo",
                                    "procket:packet:ip:lo"):
                    try:
                        port = await packetEndpointFromString(reactor, description).listen(
                            Recorder())
                    except CannotListenError as failure:
                        outcomes.append([type(failure.socketError).__name__,
                                         failure.socketError.errno])
                    else:
                        outcomes.append("opened")
                        await port.stopListening()
                return outcomes
            run(main)
        """)  # fmt: skip
        denied = ["PolicyDeniedError", errno.EACCES]
        self.assertEqual(result, [denied, denied, denied, denied, "opened"])

    def test_default_policy_refuses_packet_sockets(self) -> None:
        """The installed default policy refuses a packet endpoint, with a clear policy error."""
        result = self.run_twisted("""
            async def main(reactor):
                try:
                    await packetEndpointFromString(reactor, "procket:packet:arp:lo").listen(
                        EthernetProtocol())
                except CannotListenError as failure:
                    return [str(failure), type(failure.socketError).__name__,
                            failure.socketError.step]
            run(main)
        """)  # fmt: skip
        self.assertEqual(result[1:], ["PolicyDeniedError", "policy"])
        self.assertIn("packet 0x0806 on lo: no rule allows it", result[0])
        self.assertIn("Couldn't listen on lo:0x0806", result[0])


class ARPWatchExampleTests(ExampleAsNobodyTestCase):
    """examples/arpwatch.py as nobody prints the ARP requests crossing a veth pair."""

    example = "arpwatch.py"

    def test_prints_arp_requests(self) -> None:
        """A ping to an unknown neighbour makes ARP requests; the watcher on the peer prints them."""
        local, peer = veth_pair(self, "pkw")
        subnet = f"10.214.{random.randrange(1, 255)}"
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", local], check=True)
        self.prefix.write_policy(
            f"allow user={TEST_UID} kind=packet ethertype=0x806 device={peer}\n"
        )
        watcher = self.start(peer, "--count", "2")
        self.wait_for(watcher, f"watching ARP on {peer}, as uid {TEST_UID}")
        subprocess.run([self.ping, "-c", "3", "-i", "0.3", "-W", "1", f"{subnet}.2"],
                       capture_output=True)  # fmt: skip
        self.assertEqual(watcher.wait(20), 0, server_output(watcher))
        lines = server_output(watcher).splitlines()[1:]
        self.assertEqual(len(lines), 2, lines)
        for line in lines:
            self.assertRegex(
                line,
                rf"^ARP, Request who-has {subnet}\.2 tell {subnet}\.1 \(([0-9a-f]{{2}}:){{5}}"
                rf"[0-9a-f]{{2}}\), frame .* > ff:ff:ff:ff:ff:ff$",
            )

    def test_refused_says_why(self) -> None:
        """Without a packet rule for the interface, arpwatch stops at once with the policy's words."""
        _, peer = veth_pair(self, "pkr")
        self.prefix.write_policy(f"allow user={TEST_UID} kind=packet ethertype=0x806 device=lo\n")
        watcher = self.start(peer, "--promiscuous")
        self.assertEqual(watcher.wait(20), 1)
        output = server_output(watcher)
        self.assertIn(f"arpwatch: cannot watch {peer}: the helper refused packet 0x0806", output)
        self.assertIn("no rule allows it", output)
        self.assertNotIn("Traceback", output)
