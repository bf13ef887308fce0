"""
Unit tests for `procket_twisted.SocketRequest`: what a valid request is, checked where it is made,
and the exact helper argument each one renders to. No privilege, no helper, no socket.
"""

from __future__ import annotations

import ipaddress
import socket

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted import SocketRequest
from procket_twisted._client.request import DEFAULT_BACKLOG, PROTOCOLS


class PortTests(SynchronousTestCase):
    """The port: an integer from 0 to 65535, nothing else."""

    def test_bounds_accepted(self) -> None:
        """0 (kernel chooses), 1, 1023, 1024 and 65535 are all valid ports."""
        for port in (0, 1, 1023, 1024, 65535):
            self.assertEqual(SocketRequest(port).port, port)

    def test_out_of_range(self) -> None:
        """-1 and 65536 raise ValueError naming the port, its range and the bad value."""
        for port in (-1, 65536, 10**6):
            error = self.assertRaises(ValueError, SocketRequest, port)
            self.assertIn("port", str(error))
            self.assertIn("0 to 65535", str(error))
            self.assertIn(str(port), str(error))

    def test_wrong_types(self) -> None:
        """A bool, a str, a float or None is a TypeError naming the port and the type."""
        for port, name in (
            (True, "bool"),
            (False, "bool"),
            ("80", "str"),
            (80.0, "float"),
            (None, "NoneType"),
        ):
            error = self.assertRaises(TypeError, SocketRequest, port)
            self.assertIn("port", str(error))
            self.assertIn(name, str(error))


class ProtocolTests(SynchronousTestCase):
    """The protocol: tcp or udp, exactly."""

    def test_known(self) -> None:
        """tcp (the default) and udp are accepted and give the matching socket type."""
        self.assertEqual(PROTOCOLS, ("tcp", "udp"))
        self.assertEqual(SocketRequest(80).protocol, "tcp")
        self.assertEqual(SocketRequest(80).type, socket.SOCK_STREAM)
        self.assertEqual(SocketRequest(53, "udp").type, socket.SOCK_DGRAM)

    def test_unknown(self) -> None:
        """Anything else (other case, sctp, raw, empty, None) is a ValueError listing the choices."""
        for protocol in ("TCP", "Udp", "sctp", "raw", "", None, "tcp6"):
            error = self.assertRaises(ValueError, SocketRequest, 80, protocol)
            self.assertIn("protocol", str(error))
            self.assertIn("tcp, udp", str(error))


class AddressTests(SynchronousTestCase):
    """The ip: every accepted form, normalised; every wrong one refused with a clear message."""

    def test_none_is_every_ipv4_address(self) -> None:
        """No ip means 0.0.0.0, an IPv4 socket."""
        request = SocketRequest(80)
        self.assertEqual(request.ip, "0.0.0.0")
        self.assertEqual(request.address, ipaddress.IPv4Address("0.0.0.0"))
        self.assertEqual(request.family, socket.AF_INET)

    def test_strings(self) -> None:
        """Numeric IPv4 and IPv6 strings are accepted and normalised; IPv6 makes AF_INET6."""
        self.assertEqual(SocketRequest(80, ip="127.0.0.1").ip, "127.0.0.1")
        v6 = SocketRequest(80, ip="0:0:0:0:0:0:0:1")
        self.assertEqual(v6.ip, "::1")
        self.assertEqual(v6.family, socket.AF_INET6)
        self.assertEqual(SocketRequest(80, ip="::").ip, "::")
        self.assertEqual(SocketRequest(80, ip="FE80::ABCD").ip, "fe80::abcd")

    def test_ipaddress_objects(self) -> None:
        """ipaddress.IPv4Address and IPv6Address objects are accepted as they are."""
        self.assertEqual(SocketRequest(80, ip=ipaddress.IPv4Address("10.1.2.3")).ip, "10.1.2.3")
        request = SocketRequest(80, ip=ipaddress.IPv6Address("2001:db8::7"))
        self.assertEqual(request.ip, "2001:db8::7")
        self.assertEqual(request.family, socket.AF_INET6)

    def test_four_tuple(self) -> None:
        """A tuple of 4 numbers 0-255 is an IPv4 address."""
        self.assertEqual(SocketRequest(80, ip=(127, 0, 0, 1)).ip, "127.0.0.1")
        self.assertEqual(SocketRequest(80, ip=(255, 255, 255, 255)).ip, "255.255.255.255")
        self.assertEqual(SocketRequest(80, ip=(0, 0, 0, 0)).family, socket.AF_INET)

    def test_eight_tuple(self) -> None:
        """A tuple of 8 numbers 0-65535 is an IPv6 address."""
        self.assertEqual(SocketRequest(80, ip=(0, 0, 0, 0, 0, 0, 0, 1)).ip, "::1")
        request = SocketRequest(80, ip=(0x2001, 0xDB8, 0, 0, 0, 0, 0, 0xFFFF))
        self.assertEqual(request.ip, "2001:db8::ffff")
        self.assertEqual(request.family, socket.AF_INET6)

    def test_bad_tuples(self) -> None:
        """Wrong lengths or out-of-range parts are ValueErrors; non-integers are TypeErrors."""
        for ip in (
            (),
            (127, 0, 0),
            (127, 0, 0, 1, 0),
            (256, 0, 0, 1),
            (-1, 0, 0, 1),
            (0, 0, 0, 0, 0, 0, 0, 0x10000),
            (1,) * 7,
            (1,) * 16,
        ):
            error = self.assertRaises(ValueError, SocketRequest, 80, "tcp", ip)
            self.assertIn("4 numbers", str(error))
            self.assertIn("8 numbers", str(error))
        for ip in (("127", 0, 0, 1), (127.0, 0, 0, 1), (True, 0, 0, 1), (None, 0, 0, 1)):
            error = self.assertRaises(TypeError, SocketRequest, 80, "tcp", ip)
            self.assertIn("integers", str(error))

    def test_hostnames_rejected(self) -> None:
        """Names are not resolved: 'localhost' and others are ValueErrors that say 'numeric'."""
        for ip in ("localhost", "example.com", "127.0.0.1.", "1.2.3", "::g", "", " 127.0.0.1"):
            error = self.assertRaises(ValueError, SocketRequest, 80, "tcp", ip)
            self.assertIn("numeric", str(error))
            self.assertIn(repr(ip), str(error))

    def test_scoped_ipv6_rejected(self) -> None:
        """
        An IPv6 address with a zone (fe80::1%lo) is refused when the request is made: the
        helper's grammar takes only what inet_pton parses, so it would reject the request at its
        parse step (with advice to reinstall it), long after the caller's line.
        """
        for ip in ("fe80::1%lo", "fe80::1%1"):
            error = self.assertRaises(ValueError, SocketRequest, 80, "tcp", ip)
            self.assertIn(repr(ip), str(error))

    def test_other_types_rejected(self) -> None:
        """bytes, lists and integers are not addresses: TypeError naming the type."""
        for ip, name in ((b"127.0.0.1", "bytes"), ([127, 0, 0, 1], "list"), (2130706433, "int")):
            error = self.assertRaises(TypeError, SocketRequest, 80, "tcp", ip)
            self.assertIn(name, str(error))


class OptionTests(SynchronousTestCase):
    """backlog (TCP only) and v6only (IPv6 only)."""

    def test_backlog_default(self) -> None:
        """A TCP request without backlog uses 128."""
        self.assertEqual(DEFAULT_BACKLOG, 128)
        self.assertIsNone(SocketRequest(80).backlog)
        self.assertEqual(SocketRequest(80).effective_backlog, 128)
        self.assertEqual(SocketRequest(80, backlog=0).effective_backlog, 0)
        self.assertEqual(SocketRequest(80, backlog=4096).effective_backlog, 4096)

    def test_backlog_tcp_only(self) -> None:
        """A backlog on a UDP request is a ValueError that says it applies to tcp only."""
        error = self.assertRaises(ValueError, SocketRequest, 53, "udp", None, 10)
        self.assertIn("tcp only", str(error))

    def test_backlog_checked(self) -> None:
        """backlog must be an integer from 0 to 65535."""
        for backlog in (-1, 65536):
            error = self.assertRaises(ValueError, SocketRequest, 80, backlog=backlog)
            self.assertIn("backlog", str(error))
        for backlog in ("10", 1.5, True):
            error = self.assertRaises(TypeError, SocketRequest, 80, backlog=backlog)
            self.assertIn("backlog", str(error))

    def test_v6only_ipv6_only(self) -> None:
        """v6only on an IPv4 address is a ValueError; on IPv6 True and False are both kept."""
        for ip in (None, "127.0.0.1", (127, 0, 0, 1)):
            for v6only in (True, False):
                error = self.assertRaises(ValueError, SocketRequest, 80, ip=ip, v6only=v6only)
                self.assertIn("IPv6", str(error))
        self.assertIs(SocketRequest(80, ip="::", v6only=True).v6only, True)
        self.assertIs(SocketRequest(80, ip="::", v6only=False).v6only, False)

    def test_v6only_must_be_bool(self) -> None:
        """v6only=1 or "yes" is a TypeError: only True, False or None."""
        for v6only in (1, 0, "yes"):
            self.assertRaises(TypeError, SocketRequest, 80, ip="::", v6only=v6only)

    def test_frozen_and_comparable(self) -> None:
        """Requests are immutable values: equal when made from equivalent arguments."""
        self.assertEqual(SocketRequest(80, ip=(127, 0, 0, 1)), SocketRequest(80, ip="127.0.0.1"))
        self.assertNotEqual(SocketRequest(80), SocketRequest(81))
        request = SocketRequest(80)
        self.assertRaises(AttributeError, setattr, request, "port", 81)


class HelperArgumentTests(SynchronousTestCase):
    """The exact text sent to the helper, which parses it strictly (see procket-helper.c)."""

    def test_tcp_default(self) -> None:
        """TCP on every IPv4 address: kind, family, addr, port and the default backlog."""
        self.assertEqual(
            SocketRequest(80).helper_argument(),
            "kind=tcp,family=inet,addr=0.0.0.0,port=80,backlog=128",
        )

    def test_udp(self) -> None:
        """UDP carries no backlog."""
        self.assertEqual(
            SocketRequest(53, "udp", "127.0.0.1").helper_argument(),
            "kind=udp,family=inet,addr=127.0.0.1,port=53",
        )

    def test_ipv6_with_options(self) -> None:
        """IPv6 uses family=inet6, the compressed address, and v6only as 0 or 1."""
        self.assertEqual(
            SocketRequest(
                443, ip=(0, 0, 0, 0, 0, 0, 0, 1), backlog=5, v6only=True
            ).helper_argument(),
            "kind=tcp,family=inet6,addr=::1,port=443,backlog=5,v6only=1",
        )
        self.assertEqual(
            SocketRequest(0, "udp", "::", v6only=False).helper_argument(),
            "kind=udp,family=inet6,addr=::,port=0,v6only=0",
        )

    def test_describe(self) -> None:
        """describe() is the short form used in messages."""
        self.assertEqual(SocketRequest(80, ip="::1").describe(), "tcp ::1 port 80")
        self.assertEqual(SocketRequest(53, "udp").describe(), "udp 0.0.0.0 port 53")


class MappedAddressTests(SynchronousTestCase):
    """IPv4-mapped addresses: a TCP or UDP socket's choice; refused for raw sockets and TUN/TAP."""

    def test_tcp_keeps_a_mapped_address(self) -> None:
        """An IPv6 socket on ::ffff:a.b.c.d is how IPv6 sockets serve IPv4 (the policy sees IPv4)."""
        from procket_twisted import SocketRequest

        argument = SocketRequest(80, ip="::ffff:127.0.0.1").helper_argument()
        # Python writes it ::ffff:7f00:1 before 3.13 and ::ffff:127.0.0.1 after; the helper reads both
        self.assertRegex(argument, r"family=inet6,addr=::ffff:(7f00:1|127\.0\.0\.1),")

    def test_raw_and_tun_refuse_mapped_addresses(self) -> None:
        """The kernel refuses them for a raw IPv6 socket, and they would route nothing IPv4."""
        from procket_twisted import RawRequest, TunRequest

        with self.assertRaises(ValueError) as raw:
            RawRequest("icmpv6", "::ffff:1.2.3.4")
        self.assertIn("give 1.2.3.4 (family inet)", str(raw.exception))
        with self.assertRaises(ValueError) as tun:
            TunRequest(address="::ffff:10.0.0.1/120")
        self.assertIn("IPv4-mapped", str(tun.exception))
