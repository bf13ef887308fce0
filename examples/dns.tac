"""
A DNS server (twisted.names) on TCP and UDP port 53, as an ordinary user:

    twistd -ny examples/dns.tac
    dig @127.0.0.1 example.test A            # 127.0.0.1, over UDP
    dig @127.0.0.1 example.test AAAA +tcp    # ::1, over TCP

It answers for one zone kept in this file. PROCKET_DNS_INTERFACE (default 127.0.0.1) and
PROCKET_DNS_PORT (default 53) choose where it listens. ``twistd dns`` takes no endpoint strings,
hence a .tac file: the TCP side is an endpoint string service, the UDP side a procket datagram
service. Both listen in privilegedStartService, so a failure (port taken, policy) stops twistd.
"""

import os

from twisted.application import service, strports
from twisted.internet import defer
from twisted.names import common, dns, error, server

from procket_twisted.endpoints import datagramService

ZONE = {
    b"example.test": [dns.Record_A("127.0.0.1", ttl=60), dns.Record_AAAA("::1", ttl=60)],
    b"www.example.test": [dns.Record_CNAME(b"example.test", ttl=60)],
}


class ZoneAuthority(common.ResolverBase):
    """Answers from ZONE, authoritatively; anything else does not exist."""

    def _lookup(self, name, cls, type, timeout):
        records = [r for r in ZONE.get(name.lower(), []) if r.TYPE == type and cls == dns.IN]
        if not records:
            return defer.fail(error.DomainError(name))
        answers = [dns.RRHeader(name, r.TYPE, dns.IN, r.ttl, r, auth=True) for r in records]
        return defer.succeed((answers, [], []))


interface = os.environ.get("PROCKET_DNS_INTERFACE", "127.0.0.1").replace(":", "\\:")
port = int(os.environ.get("PROCKET_DNS_PORT", "53"))
factory = server.DNSServerFactory(authorities=[ZoneAuthority()])

application = service.Application("procket-dns")
strports.service(f"procket:tcp:{port}:interface={interface}", factory).setServiceParent(application)
datagramService(
    f"procket:udp:{port}:interface={interface}", dns.DNSDatagramProtocol(controller=factory)
).setServiceParent(application)
