"""
Routing between the kinds: acquireEndpoints gives each kind's single-use endpoint, the datagram
string function reaches the packet and TUN/TAP parsers, the fake helper says what it cannot
stand in for, and a packet socket on every interface opens in-process where the capability is.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from procket_twisted import HelperFailedError, RawRequest, SocketRequest, TunDevice
from procket_twisted._twisted.endpoints import _HelperEndpoint
from procket_twisted.endpoints import (
    AdoptedDatagramServerEndpoint,
    AdoptedPacketEndpoint,
    AdoptedRawEndpoint,
    AdoptedStreamEndpoint,
    AdoptedTunnelEndpoint,
    ProcketPacketEndpoint,
    ProcketTunnelEndpoint,
    RawEndpoint,
    acquireEndpoints,
    datagramEndpointFromString,
)
from procket_twisted.testing import useFakeHelper

from .support import skip_unless_privileged


class _Handle:
    """Stands in for an acquired socket: what the routing looks at."""

    def __init__(self, family: int, kind: int) -> None:
        self.family = family
        self.type = kind

    def detach(self) -> int:
        return 99


class RoutingTests(SynchronousTestCase):
    """Each kind to its own endpoint."""

    def test_acquire_endpoints_by_kind(self) -> None:
        """TCP, UDP, raw, packet and TUN handles become their kinds' single-use endpoints."""
        read, write = os.pipe()
        self.addCleanup(os.close, write)
        handles = [
            _Handle(socket.AF_INET, socket.SOCK_STREAM),
            _Handle(socket.AF_INET6, socket.SOCK_DGRAM),
            _Handle(socket.AF_INET, socket.SOCK_RAW),
            _Handle(socket.AF_PACKET, socket.SOCK_RAW),
            TunDevice(read, "tun9", "tun", False),
        ]
        original = _HelperEndpoint.__dict__["_acquire"]  # the staticmethod itself, not unwrapped
        _HelperEndpoint._acquire = staticmethod(lambda *a, **k: defer.succeed(handles))
        self.addCleanup(setattr, _HelperEndpoint, "_acquire", original)
        endpoints = self.successResultOf(acquireEndpoints(MemoryReactor(), [SocketRequest(0)] * 5))
        self.assertEqual(
            [type(endpoint) for endpoint in endpoints],
            [AdoptedStreamEndpoint, AdoptedDatagramServerEndpoint, AdoptedRawEndpoint,
             AdoptedPacketEndpoint, AdoptedTunnelEndpoint],
        )  # fmt: skip
        handles[4].close()

    def test_datagram_strings_reach_every_kind(self) -> None:
        """procket:packet and procket:tun strings give those kinds' endpoints."""
        reactor = MemoryReactor()
        packet = datagramEndpointFromString(reactor, "procket:packet:0x806:device=lo")
        tun = datagramEndpointFromString(reactor, "procket:tun:address=10.9.0.1/24:up=yes")
        self.assertIsInstance(packet, ProcketPacketEndpoint)
        self.assertIsInstance(tun, ProcketTunnelEndpoint)
        with self.assertRaises(ValueError) as caught:
            datagramEndpointFromString(reactor, "procket:sctp:9")
        self.assertIn("procket:packet:ETHERTYPE", str(caught.exception))

    def test_fake_helper_names_what_it_cannot_open(self) -> None:
        """useFakeHelper fails a raw endpoint clearly: it stands in for TCP and UDP only."""
        useFakeHelper(self)
        failure = self.failureResultOf(
            RawEndpoint(MemoryReactor(), "icmp").listen(object()), CannotListenError
        )
        self.assertIsInstance(failure.value.socketError, HelperFailedError)
        self.assertIn("TCP and UDP sockets only", str(failure.value.socketError))
        self.assertIn(RawRequest("icmp").describe(), str(failure.value.socketError))


class PacketOnEveryInterfaceTests(SynchronousTestCase):
    """A packet socket on every interface, in-process (as root, which holds CAP_NET_RAW)."""

    def test_every_interface(self) -> None:
        """open_packet(0x800) binds to every interface (ifindex 0), as the helper does."""
        skip_unless_privileged(self)
        import procket_twisted

        with procket_twisted.open_packet(0x800) as sock:
            name, ethertype = sock.getsockname()[:2]
        self.assertEqual((name, ethertype), ("", 0x800))
