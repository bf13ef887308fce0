"""
procket for Twisted: endpoints whose sockets come from the privileged helper.

    serverFromString(reactor, "procket:tcp:80")          # through the plugin, anywhere
    twistd -n web --listen procket:tcp:80 --path DIR      # as an ordinary user
    datagramService("procket:udp:53", protocol)           # in a .tac file
    datagramEndpointFromString(reactor, "procket:raw:icmp")   # a raw ICMP socket (RawEndpoint)
    datagramEndpointFromString(reactor, "procket:packet:0x806:interface=eth0")  # PacketPort
    datagramEndpointFromString(reactor, "procket:tun:address=10.9.0.1/24:up=yes")  # TuntapPort

Importing this module never imports the reactor.
"""

from ._batch import acquireEndpoints
from ._endpoints import (
    AdoptedDatagramServerEndpoint,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    TLSServerEndpoint,
    adoptSocket,
)
from ._interfaces import IDatagramServerEndpoint
from ._packet_twisted import (
    AdoptedPacketEndpoint,
    LinkLayerAddress,
    PacketPort,
    ProcketPacketEndpoint,
    adoptPacketSocket,
    packetEndpointFromString,
    parseFilter,
)
from ._parser import ProcketServerParser, datagramEndpointFromString, splitDescription
from ._raw_twisted import AdoptedRawEndpoint, RawAddress, RawEndpoint, RawPort, adoptRawSocket
from ._reactor_client import acquireSockets
from ._service import DatagramServerEndpointService, datagramService
from ._tun_twisted import (
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
