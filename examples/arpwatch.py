"""
Watch the ARP traffic on an interface, as an ordinary user: who asks for which address, who answers.

    python examples/arpwatch.py eth0                    # what reaches this host
    python examples/arpwatch.py eth0 --promiscuous      # and what is meant for others too
    python examples/arpwatch.py eth0 --count 5          # stop after five

The helper opens a packet socket for ARP frames (ethertype 0x806) bound to the interface and
hands it over; ``twisted.pair``'s ``EthernetProtocol`` takes each frame apart and passes ARP to
the parser below. The helper's policy must allow it, for example:

    allow user=UID kind=packet ethertype=0x806 device=eth0                  # arpwatch.py eth0
    allow user=UID kind=packet ethertype=0x806 device=eth0 options=promisc  # and --promiscuous
"""

import argparse
import os
import socket
import struct

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.pair.ethernet import EthernetProtocol
from twisted.pair.raw import IRawPacketProtocol
from zope.interface import implementer

from procket_twisted.endpoints import packetEndpointFromString

ETH_P_ARP = 0x0806
REQUEST, REPLY = 1, 2


def mac(address: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in address)


@implementer(IRawPacketProtocol)
class ARPPrinter(AbstractDatagramProtocol):
    """Prints each ARP packet (Ethernet and IPv4 addresses) in the words tcpdump uses."""

    def __init__(self, count: int, done: defer.Deferred) -> None:
        self.left = count
        self.done = done

    def addProto(self, num, proto):  # IRawPacketProtocol; nothing sits above ARP
        raise NotImplementedError("nothing sits on top of ARP")

    def datagramReceived(self, data, partial, dest, source, protocol):
        if len(data) < 28:
            return
        hardware, proto, hlen, plen, operation = struct.unpack("!HHBBH", data[:8])
        if (hardware, proto, hlen, plen) != (1, 0x0800, 6, 4):
            print(f"ARP from {mac(source)}: hardware {hardware}, protocol 0x{proto:04x}")
        else:
            sender_mac, sender_ip, target_mac, target_ip = struct.unpack("!6s4s6s4s", data[8:28])
            sender, target = socket.inet_ntoa(sender_ip), socket.inet_ntoa(target_ip)
            if operation == REQUEST and sender == target:
                text = f"Announcement {sender} is-at {mac(sender_mac)}"
            elif operation == REQUEST:
                text = f"Request who-has {target} tell {sender} ({mac(sender_mac)})"
            elif operation == REPLY:
                text = f"Reply {sender} is-at {mac(sender_mac)} (to {target})"
            else:
                text = f"operation {operation} from {sender} ({mac(sender_mac)})"
            print(f"ARP, {text}, frame {mac(source)} > {mac(dest)}", flush=True)
        self.left -= 1
        if self.left == 0:
            self.done.callback(None)


async def watch(reactor, options) -> None:
    promiscuous = ":promiscuous=yes" if options.promiscuous else ""
    endpoint = packetEndpointFromString(
        reactor, f"procket:packet:0x806:device={options.device}{promiscuous}"
    )
    done: defer.Deferred = defer.Deferred()
    ethernet = EthernetProtocol()
    ethernet.addProto(ETH_P_ARP, ARPPrinter(options.count, done))
    try:
        port = await endpoint.listen(ethernet)
    except CannotListenError as failure:
        raise SystemExit(
            f"arpwatch: cannot watch {options.device}: {failure.socketError}"
        ) from None
    mode = " (promiscuous)" if options.promiscuous else ""
    print(f"arpwatch: watching ARP on {options.device}{mode}, as uid {os.getuid()}", flush=True)
    await done  # forever, unless --count
    await port.stopListening()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("device")
    parser.add_argument("--promiscuous", action="store_true", help="see frames meant for others")
    parser.add_argument("--count", type=int, default=0, help="stop after this many ARP packets")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(watch(reactor, options)))


if __name__ == "__main__":
    main()
