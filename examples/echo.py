"""
procket's echo example in Twisted: TCP and UDP echo on one privileged port, as an ordinary user.

    python examples/echo.py 7                     # every IPv4 address, port 7 (the echo port)
    python examples/echo.py 7 --interface ::1     # IPv6 loopback

The TCP side comes from an endpoint string (``procket:tcp:7``), the UDP side from
``datagramEndpointFromString`` (Twisted's endpoint strings are for streams only).
"""

import argparse
import os
import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from procket_twisted.endpoints import datagramEndpointFromString


class Echo(Protocol):
    """Sends back whatever arrives on a TCP connection."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class EchoDatagram(DatagramProtocol):
    """Sends each datagram back to where it came from."""

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.transport.write(data, address)


async def serve(reactor, port: int, interface: str) -> None:
    escaped = interface.replace(":", "\\:")  # endpoint strings escape the colons of IPv6
    await serverFromString(reactor, f"procket:tcp:{port}:interface={escaped}").listen(
        Factory.forProtocol(Echo)
    )
    await datagramEndpointFromString(reactor, f"procket:udp:{port}:interface={escaped}").listen(
        EchoDatagram()
    )
    print(f"echo: TCP and UDP on {interface} port {port}, as uid {os.getuid()}", flush=True)
    await defer.Deferred()  # serve until stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--interface", default="0.0.0.0")
    options = parser.parse_args()
    task.react(
        lambda reactor: defer.ensureDeferred(serve(reactor, options.port, options.interface))
    )


if __name__ == "__main__":
    sys.exit(main())
