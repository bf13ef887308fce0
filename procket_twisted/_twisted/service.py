"""
A Service that runs a DatagramProtocol on a datagram endpoint, for .tac files and twistd plugins
(Twisted has C{StreamServerEndpointService} for streams only).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.internet import StreamServerEndpointService

from .parser import datagramEndpointFromString

__all__ = ["DatagramServerEndpointService", "datagramService"]


class DatagramServerEndpointService(StreamServerEndpointService):
    """
    Listens with PROTOCOL on an L{IDatagramServerEndpoint} when the service starts (in
    C{privilegedStartService}, before twistd drops privileges) and stops listening when it
    stops. It reuses C{StreamServerEndpointService}, whose C{listen(factory)} has the same shape
    as a datagram endpoint's C{listen(protocol)}.

    A failure to listen while the application starts raises at once, so twistd stops with the
    error instead of running without its port.
    """

    _raiseSynchronously = True

    def __init__(self, endpoint: Any, protocol: Any) -> None:
        super().__init__(endpoint, protocol)
        self.protocol = protocol


def datagramService(
    description: str, protocol: Any, reactor: Optional[Any] = None
) -> DatagramServerEndpointService:
    """
    The service for a datagram endpoint string, like C{strports.service} for streams::

        datagramService("procket:udp:53", dns.DNSDatagramProtocol(controller))

    @param reactor: default: the global reactor (imported when called, never at import time).
    @raise ValueError: for a malformed description.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = installed
    return DatagramServerEndpointService(datagramEndpointFromString(reactor, description), protocol)
