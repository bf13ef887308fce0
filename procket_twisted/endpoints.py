"""
procket for Twisted: endpoints whose sockets come from the privileged helper::

    serverFromString(reactor, "procket:tcp:80")          # through the plugin, anywhere
    twistd -n web --listen procket:tcp:80 --path DIR      # as an ordinary user
    datagramService("procket:udp:53", protocol)           # in a .tac file
    datagramEndpointFromString(reactor, "procket:raw:icmp")   # a raw ICMP socket (RawEndpoint)
    datagramEndpointFromString(reactor, "procket:packet:0x806:device=eth0")  # PacketPort
    datagramEndpointFromString(reactor, "procket:tun:address=10.9.0.1/24:up=yes")  # TuntapPort

Importing this module never imports the reactor.
"""

from ._twisted.batch import acquireEndpoints
from ._twisted.endpoints import (
    AdoptedDatagramServerEndpoint,
    AdoptedStreamEndpoint,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    TLSServerEndpoint,
    adoptSocket,
    release,
)
from ._twisted.interfaces import IDatagramServerEndpoint
from ._twisted.packet import (
    AdoptedPacketEndpoint,
    LinkLayerAddress,
    PacketPort,
    ProcketPacketEndpoint,
    adoptPacketSocket,
    packetEndpointFromString,
    parseFilter,
)
from ._twisted.parser import ProcketServerParser, datagramEndpointFromString, splitDescription
from ._twisted.raw import AdoptedRawEndpoint, RawAddress, RawEndpoint, RawPort, adoptRawSocket
from ._twisted.reactor_client import acquireSockets
from ._twisted.service import DatagramServerEndpointService, datagramService
from ._twisted.tun import (
    AdoptedTunnelEndpoint,
    ProcketTunnelEndpoint,
    TunnelIPProtocol,
    adoptTunnel,
    tunEndpointFromString,
)

__all__ = [
    "ProcketServerEndpoint",
    "ProcketDatagramServerEndpoint",
    "TLSServerEndpoint",
    "AdoptedDatagramServerEndpoint",
    "AdoptedStreamEndpoint",
    "release",
    "IDatagramServerEndpoint",
    "ProcketServerParser",
    "datagramEndpointFromString",
    "splitDescription",
    "DatagramServerEndpointService",
    "datagramService",
    "acquireSockets",
    "acquireEndpoints",
    "adoptSocket",
    "RawEndpoint",
    "AdoptedRawEndpoint",
    "RawPort",
    "RawAddress",
    "adoptRawSocket",
    "ProcketPacketEndpoint",
    "AdoptedPacketEndpoint",
    "PacketPort",
    "LinkLayerAddress",
    "adoptPacketSocket",
    "packetEndpointFromString",
    "parseFilter",
    "ProcketTunnelEndpoint",
    "AdoptedTunnelEndpoint",
    "TunnelIPProtocol",
    "adoptTunnel",
    "tunEndpointFromString",
]
