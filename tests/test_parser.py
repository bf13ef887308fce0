"""
The ``procket:`` endpoint strings: what ``serverFromString`` and ``datagramEndpointFromString``
build from them (checked on a ``MemoryReactor``, nothing listens), the precise ``ValueError`` for
every malformed string, the plugin's discovery and interfaces, and the pieces of Twisted the parser
leans on.
"""

from __future__ import annotations

import datetime
import inspect
import os
import socket
import subprocess
import sys
from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.endpoints import _parse, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.internet.testing import MemoryReactor
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import procket_twisted._twisted.endpoints
import procket_twisted._twisted.interfaces
import procket_twisted._twisted.packet
import procket_twisted._twisted.parser
import procket_twisted._twisted.raw
import procket_twisted._twisted.reactor_client
import procket_twisted._twisted.service
import procket_twisted._twisted.tun
import procket_twisted.endpoints
from procket_twisted import DEFAULT_TIMEOUT, PacketRequest, RawRequest, SocketRequest
from procket_twisted._client.options import options_taken_by
from procket_twisted._twisted.parser import socketRequestFromString
from procket_twisted._twisted.strings import grammar, grammarOf
from procket_twisted.endpoints import (
    AdoptedDatagramServerEndpoint,
    IDatagramServerEndpoint,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    ProcketServerParser,
    TLSServerEndpoint,
    datagramEndpointFromString,
    splitDescription,
)


def writeSelfSigned(directory: str, name: str = "localhost") -> Tuple[str, str]:
    """
    A fresh self-signed certificate for NAME and its private key, as PEM files in DIRECTORY.

    @return: the paths of the key file and of the certificate file.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as keyFile:
        keyFile.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certPath, "wb") as certFile:
        certFile.write(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


def escaped(path: str) -> str:
    """PATH as a value inside an endpoint string (colons and backslashes escaped)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class StreamStringTests(SynchronousTestCase):
    """``serverFromString(reactor, "procket:tcp...")`` builds the endpoint the string describes."""

    def parse(self, description: str) -> Any:
        """The endpoint for DESCRIPTION, on a fresh MemoryReactor (kept in self.reactor)."""
        self.reactor = MemoryReactor()
        return serverFromString(self.reactor, description)

    def assertRequest(self, endpoint: Any, request: SocketRequest) -> None:
        """ENDPOINT is a ProcketServerEndpoint on self.reactor that will ask for REQUEST."""
        self.assertIsInstance(endpoint, ProcketServerEndpoint)
        self.assertIs(endpoint._reactor, self.reactor)
        self.assertEqual(endpoint._request, request)

    def test_defaults(self) -> None:
        """
        ``procket:tcp:80`` is a TCP endpoint on port 80 of every IPv4 address with Twisted's
        default backlog of 50, the default helper lookup and the default timeout.
        """
        endpoint = self.parse("procket:tcp:80")
        self.assertRequest(endpoint, SocketRequest(80, "tcp", "0.0.0.0", 50))
        self.assertEqual(endpoint._request.ip, "0.0.0.0")
        self.assertEqual(endpoint._request.family, socket.AF_INET)
        self.assertIsNone(endpoint._progname)
        self.assertEqual(endpoint._timeout, DEFAULT_TIMEOUT)
        self.assertTrue(endpoint._direct)

    def test_positional(self) -> None:
        """Port, interface and backlog may be given by position, in the order of Twisted's tcp:."""
        endpoint = self.parse("procket:tcp:80:127.0.0.1:10")
        self.assertRequest(endpoint, SocketRequest(80, "tcp", "127.0.0.1", 10))

    def test_keywords(self) -> None:
        """Port, interface and backlog may be given as keywords, with Twisted's names."""
        endpoint = self.parse("procket:tcp:port=80:interface=127.0.0.1:backlog=10")
        self.assertRequest(endpoint, SocketRequest(80, "tcp", "127.0.0.1", 10))

    def test_mixed(self) -> None:
        """A positional port goes with keyword interface and backlog, in any order."""
        endpoint = self.parse("procket:tcp:backlog=7:80:interface=127.0.0.1")
        self.assertRequest(endpoint, SocketRequest(80, "tcp", "127.0.0.1", 7))

    def test_limits(self) -> None:
        """Port 0 and port 65535 are both accepted, as is backlog 0."""
        self.assertEqual(self.parse("procket:tcp:0")._request.port, 0)
        self.assertEqual(self.parse("procket:tcp:65535:backlog=0")._request.port, 65535)

    def test_tcp6_escaped(self) -> None:
        """``procket:tcp6`` takes an IPv6 interface with its colons escaped: an AF_INET6 request."""
        endpoint = self.parse("procket:tcp6:443:interface=\\:\\:1")
        self.assertRequest(endpoint, SocketRequest(443, "tcp", "::1", 50))
        self.assertEqual(endpoint._request.family, socket.AF_INET6)

    def test_tcp6_default(self) -> None:
        """``procket:tcp6:443`` listens on every IPv6 address (``::``), like Twisted's tcp6:."""
        endpoint = self.parse("procket:tcp6:443")
        self.assertRequest(endpoint, SocketRequest(443, "tcp", "::", 50))

    def test_tcp_with_ipv6_interface(self) -> None:
        """``procket:tcp`` with an IPv6 interface asks for an IPv6 socket (the address decides)."""
        endpoint = self.parse("procket:tcp:80:interface=\\:\\:1")
        self.assertEqual(endpoint._request.family, socket.AF_INET6)

    def test_progname_and_timeout(self) -> None:
        """The progname and timeout keywords reach the endpoint unchanged (timeout as seconds)."""
        endpoint = self.parse(
            "procket:tcp:80:progname=sudo -n /opt/procket/helper:timeout=2.5:interface=127.0.0.1"
        )
        self.assertRequest(endpoint, SocketRequest(80, "tcp", "127.0.0.1", 50))
        self.assertEqual(endpoint._progname, "sudo -n /opt/procket/helper")
        self.assertEqual(endpoint._timeout, 2.5)

    def test_progname_with_escaped_colon(self) -> None:
        """A progname containing a colon is given escaped and arrives whole."""
        endpoint = self.parse("procket:tcp:80:progname=/opt/a\\:b/helper:timeout=1")
        self.assertEqual(endpoint._progname, "/opt/a:b/helper")
        self.assertEqual(endpoint._timeout, 1.0)

    def test_empty_progname(self) -> None:
        """An empty progname means the default helper lookup, as if it were not given."""
        self.assertIsNone(self.parse("procket:tcp:80:progname=")._progname)

    def test_interfaces(self) -> None:
        """The stream endpoints provide IStreamServerEndpoint."""
        self.assertTrue(verifyObject(IStreamServerEndpoint, self.parse("procket:tcp:80")))
        self.assertTrue(verifyObject(IStreamServerEndpoint, self.parse("procket:tcp6:80")))

    def test_repr(self) -> None:
        """An endpoint's repr says what it will ask for."""
        self.assertIn("tcp 127.0.0.1 port 80", repr(self.parse("procket:tcp:80:127.0.0.1")))


class TLSStringTests(SynchronousTestCase):
    """``procket:ssl:...`` builds TLS over a procket TCP endpoint, with Twisted's ssl: keywords."""

    def setUp(self) -> None:
        self.keyPath, self.certPath = writeSelfSigned(self.mktemp())
        self.reactor = MemoryReactor()

    def parse(self, description: str) -> Any:
        return serverFromString(self.reactor, description)

    def test_ssl(self) -> None:
        """
        ``procket:ssl:443:privateKey=K:certKey=C`` is a TLSServerEndpoint over a procket TCP
        endpoint for port 443, whose context factory serves the certificate of C.
        """
        from OpenSSL import crypto
        from twisted.internet.ssl import CertificateOptions

        endpoint = self.parse(
            f"procket:ssl:443:privateKey={escaped(self.keyPath)}:certKey={escaped(self.certPath)}"
        )
        self.assertIsInstance(endpoint, TLSServerEndpoint)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))
        wrapped = endpoint._wrapped
        self.assertIsInstance(wrapped, ProcketServerEndpoint)
        self.assertIs(wrapped._reactor, self.reactor)
        self.assertEqual(wrapped._request, SocketRequest(443, "tcp", "0.0.0.0", 50))
        self.assertIsInstance(endpoint._contextFactory, CertificateOptions)
        with open(self.certPath, "rb") as certFile:
            expected = crypto.load_certificate(crypto.FILETYPE_PEM, certFile.read())
        self.assertEqual(
            endpoint._contextFactory.certificate.digest("sha256"), expected.digest("sha256")
        )

    def test_ssl_stream_keywords(self) -> None:
        """ssl's interface, backlog, progname and timeout reach the wrapped TCP endpoint."""
        endpoint = self.parse(
            f"procket:ssl:443:privateKey={escaped(self.keyPath)}:certKey={escaped(self.certPath)}"
            ":interface=\\:\\:1:backlog=9:progname=/opt/helper:timeout=3"
        )
        wrapped = endpoint._wrapped
        self.assertEqual(wrapped._request, SocketRequest(443, "tcp", "::1", 9))
        self.assertEqual(wrapped._progname, "/opt/helper")
        self.assertEqual(wrapped._timeout, 3.0)

    def test_ssl_one_file(self) -> None:
        """Without certKey, the privateKey file holds both, as with Twisted's ssl:."""
        combined = os.path.join(os.path.dirname(self.keyPath), "both.pem")
        with open(combined, "wb") as both:
            for path in (self.certPath, self.keyPath):
                with open(path, "rb") as part:
                    both.write(part.read())
        endpoint = self.parse(f"procket:ssl:443:privateKey={escaped(combined)}")
        self.assertIsInstance(endpoint, TLSServerEndpoint)

    def test_ssl_missing_key_file(self) -> None:
        """A key file that does not exist is a ValueError naming the file, at parse time."""
        missing = os.path.join(os.path.dirname(self.keyPath), "absent-key.pem")
        error = self.assertRaises(
            ValueError,
            self.parse,
            f"procket:ssl:443:privateKey={escaped(missing)}:certKey={escaped(self.certPath)}",
        )
        self.assertIn(missing, str(error))
        self.assertIn("procket:ssl", str(error))

    def test_ssl_missing_cert_file(self) -> None:
        """A certificate file that does not exist is a ValueError naming that file."""
        missing = os.path.join(os.path.dirname(self.keyPath), "absent-cert.pem")
        error = self.assertRaises(
            ValueError,
            self.parse,
            f"procket:ssl:443:privateKey={escaped(self.keyPath)}:certKey={escaped(missing)}",
        )
        self.assertIn(missing, str(error))

    def test_ssl_bad_material(self) -> None:
        """A key file that is not PEM is a ValueError that says the TLS material is bad."""
        error = self.assertRaises(
            ValueError,
            self.parse,
            f"procket:ssl:443:privateKey={escaped(self.certPath)}:certKey={escaped(self.certPath)}",
        )
        self.assertIn("procket:ssl", str(error))
        self.assertIn("TLS", str(error))

    def test_ssl_bad_method(self) -> None:
        """An sslmethod OpenSSL does not have is a ValueError naming it."""
        error = self.assertRaises(
            ValueError,
            self.parse,
            f"procket:ssl:443:privateKey={escaped(self.keyPath)}:certKey={escaped(self.certPath)}"
            ":sslmethod=NO_SUCH_METHOD",
        )
        self.assertIn("NO_SUCH_METHOD", str(error))

    def test_ssl_unknown_keyword(self) -> None:
        """A keyword neither ssl: nor procket knows is a ValueError naming it."""
        error = self.assertRaises(
            ValueError,
            self.parse,
            f"procket:ssl:443:privateKey={escaped(self.keyPath)}:cipher=RC4",
        )
        self.assertIn("'cipher'", str(error))

    def test_ssl_bad_port_names_ssl(self) -> None:
        """
        A bad port in an ssl string is a ValueError naming the port and the ``procket:ssl`` form
        that was written (not ``procket:tcp``, which the user never wrote).
        """
        error = self.assertRaises(
            ValueError,
            self.parse,
            f"procket:ssl:8o:privateKey={escaped(self.keyPath)}:certKey={escaped(self.certPath)}",
        )
        self.assertIn("'8o'", str(error))
        self.assertIn("procket:ssl", str(error))

    def test_twisted_parse_sslsignature(self) -> None:
        """
        Twisted's private ``_parseSSL``, which builds the TLS context, still takes a factory and
        then the values procket:ssl takes by position, in the same order (so that
        ``procket:ssl:443:KEY:CERT`` means what ``ssl:443:KEY:CERT`` means), with the TLS
        defaults procket:ssl's parser gives it.
        """
        from twisted.internet.endpoints import _parseSSL

        theirs = inspect.signature(_parseSSL).parameters
        ours = inspect.signature(procket_twisted._twisted.parser._parseTLS).parameters
        self.assertEqual(list(theirs)[0], "factory")
        self.assertEqual(
            list(theirs)[1:], list(grammarOf(procket_twisted._twisted.parser._parseTLS).names)
        )
        for name in ("privateKey", "certKey", "sslmethod", "extraCertChain", "dhParameters"):
            self.assertEqual(ours[name].default, theirs[name].default, name)


class MalformedStringTests(SynchronousTestCase):
    """Every malformed ``procket:`` stream string is a ValueError whose message names the fault."""

    def assertBad(self, description: str, *fragments: str) -> str:
        """DESCRIPTION raises ValueError from serverFromString, mentioning every FRAGMENT."""
        error = self.assertRaises(ValueError, serverFromString, MemoryReactor(), description)
        message = str(error)
        for fragment in fragments:
            self.assertIn(fragment, message, f"{description!r} gave {message!r}")
        return message

    def test_unknown_protocol(self) -> None:
        """An unknown protocol is named, and the message says which forms exist."""
        message = self.assertBad("procket:sctp:80", "'sctp'")
        self.assertIn("procket:tcp:PORT", message)

    def test_bad_ports(self) -> None:
        """A port that is not a plain decimal number from 0 to 65535 is named."""
        for port in ("8o", "-1", "65536", "080", "", " 80", "8.0", "0x50", "1e3"):
            self.assertBad(f"procket:tcp:{port}", f"port {port!r}")
            self.assertBad(f"procket:tcp:port={port}", f"port {port!r}")

    def test_option_limits_agree(self) -> None:
        """
        An option's range is one fact: a word and a number out of range give the same bounds,
        those of the Python request (forced buffer sizes from 1, not 0).
        """
        for value in ("x", "0", "1073741824"):
            self.assertBad(f"procket:tcp:80:forceReceiveBuffer={value}", "from 1 to 1073741823")
        self.assertBad("procket:tcp:80:mark=4294967296", "from 0 to 4294967295")

    def test_non_asciidigits(self) -> None:
        """
        Digits other than ASCII 0-9 (a superscript two, fullwidth digits) are not a port: the
        usual message names them, instead of int()'s bare error or a silently chosen port 12.
        """
        for port in ("\N{SUPERSCRIPT TWO}", "\N{FULLWIDTH DIGIT ONE}\N{FULLWIDTH DIGIT TWO}"):
            self.assertBad(f"procket:tcp:{port}", "procket:tcp", f"port {port!r}")

    def test_bad_backlog(self) -> None:
        """A backlog that is not a number from 0 to 65535 is named."""
        self.assertBad("procket:tcp:80:backlog=x", "backlog 'x'")
        self.assertBad("procket:tcp:80:127.0.0.1:65536", "backlog '65536'")

    def test_bad_interface(self) -> None:
        """A host name, or anything else that is not a numeric address, is named."""
        self.assertBad("procket:tcp:80:interface=localhost", "'localhost'", "procket:tcp")
        self.assertBad("procket:tcp:80:300.1.1.1", "'300.1.1.1'")

    def test_unknown_keyword(self) -> None:
        """An unknown keyword is named, and the message lists the known ones."""
        message = self.assertBad("procket:tcp:80:colour=blue", "'colour'")
        for known in ("interface", "backlog", "progname", "timeout"):
            self.assertIn(known, message)

    def test_given_twice(self) -> None:
        """A value given both by position and by keyword is named."""
        self.assertBad("procket:tcp:80:port=81", "port", "twice")
        self.assertBad("procket:tcp:80:127.0.0.1:interface=127.0.0.2", "interface", "twice")

    def test_too_many_positional(self) -> None:
        """A positional value beyond port, interface and backlog is named."""
        self.assertBad("procket:tcp:80:127.0.0.1:10:extra", "'extra'")

    def test_udp_is_not_a_stream(self) -> None:
        """``procket:udp`` given to serverFromString points at datagramEndpointFromString."""
        self.assertBad("procket:udp:53", "datagramEndpointFromString", "procket:udp")
        self.assertBad("procket:udp6:53", "datagramEndpointFromString", "procket:udp6")

    def test_tcp6_with_ipv4_interface(self) -> None:
        """tcp6 with an IPv4 interface names the interface."""
        self.assertBad("procket:tcp6:443:interface=127.0.0.1", "'127.0.0.1'", "IPv6")

    def test_unescaped_ipv6_interface(self) -> None:
        """
        An IPv6 interface written without escaping its colons (``interface=::1``, which Twisted's
        splitter cuts into pieces) is a ValueError that says the colons need escaping, as in
        ``interface=\\:\\:1``, rather than blaming some other part.
        """
        self.assertBad("procket:tcp6:443:interface=::1", "interface", "\\:")

    def test_bad_timeout(self) -> None:
        """A timeout that is not a positive number of seconds is named."""
        self.assertBad("procket:tcp:80:timeout=0", "timeout", "'0'")
        self.assertBad("procket:tcp:80:timeout=-1", "timeout", "'-1'")
        self.assertBad("procket:tcp:80:timeout=abc", "timeout", "'abc'")
        self.assertBad("procket:tcp:80:timeout=nan", "timeout", "'nan'")

    def test_infinite_timeout(self) -> None:
        """
        A timeout no clock can wait for (``inf``, or one beyond the 24.8 days ``poll`` takes) is
        named at parse time, instead of failing a listen before the reactor runs (twistd's
        privilegedStartService) with an OverflowError.
        """
        self.assertBad("procket:tcp:80:timeout=inf", "timeout", "'inf'")
        self.assertBad("procket:tcp:80:timeout=1e300", "timeout", "'1e300'")
        self.assertBad("procket:tcp:80:timeout=3000000", "timeout", "'3000000'")

    def test_missing_port(self) -> None:
        """A string without a port says so."""
        self.assertBad("procket:tcp", "no port")
        self.assertBad("procket:tcp:interface=127.0.0.1", "no port")
        self.assertBad("procket:tcp6", "no port")
        self.assertBad("procket:ssl", "no port")

    def test_prefix_alone(self) -> None:
        """``procket`` alone says a protocol is missing and which ones exist."""
        message = self.assertBad("procket", "no protocol")
        self.assertIn("procket:tcp:PORT", message)

    def test_bad_keyword_on_helper_options_only(self) -> None:
        """Keywords that belong to ssl: only are unknown for tcp: and named."""
        self.assertBad("procket:tcp:80:privateKey=key.pem", "'privateKey'")


class DatagramStringTests(SynchronousTestCase):
    """``datagramEndpointFromString(reactor, "procket:udp:53")`` and its errors."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()

    def parse(self, description: str) -> Any:
        return datagramEndpointFromString(self.reactor, description)

    def assertBad(self, description: str, *fragments: str) -> None:
        """DESCRIPTION raises ValueError mentioning every FRAGMENT."""
        error = self.assertRaises(ValueError, self.parse, description)
        for fragment in fragments:
            self.assertIn(fragment, str(error), f"{description!r} gave {str(error)!r}")

    def test_defaults(self) -> None:
        """
        ``procket:udp:53`` is a datagram endpoint on port 53 of every IPv4 address with Twisted's
        default maximum packet size of 8192.
        """
        endpoint = self.parse("procket:udp:53")
        self.assertIsInstance(endpoint, ProcketDatagramServerEndpoint)
        self.assertIs(endpoint._reactor, self.reactor)
        self.assertEqual(endpoint._request, SocketRequest(53, "udp", "0.0.0.0"))
        self.assertEqual(endpoint._maxPacketSize, 8192)
        self.assertIsNone(endpoint._progname)
        self.assertEqual(endpoint._timeout, DEFAULT_TIMEOUT)
        self.assertTrue(verifyObject(IDatagramServerEndpoint, endpoint))

    def test_positional_and_keywords(self) -> None:
        """Port, interface and maxPacketSize work by position and by keyword."""
        for description in (
            "procket:udp:53:127.0.0.1:512",
            "procket:udp:port=53:interface=127.0.0.1:maxPacketSize=512",
        ):
            endpoint = self.parse(description)
            self.assertEqual(endpoint._request, SocketRequest(53, "udp", "127.0.0.1"))
            self.assertEqual(endpoint._maxPacketSize, 512)

    def test_udp6(self) -> None:
        """``procket:udp6`` defaults to ``::`` and takes an escaped IPv6 interface."""
        self.assertEqual(self.parse("procket:udp6:53")._request.ip, "::")
        endpoint = self.parse("procket:udp6:53:interface=\\:\\:1")
        self.assertEqual(endpoint._request, SocketRequest(53, "udp", "::1"))
        self.assertEqual(endpoint._request.family, socket.AF_INET6)

    def test_progname_and_timeout(self) -> None:
        """progname and timeout reach the datagram endpoint."""
        endpoint = self.parse("procket:udp:53:progname=/opt/helper:timeout=0.25")
        self.assertEqual(endpoint._progname, "/opt/helper")
        self.assertEqual(endpoint._timeout, 0.25)

    def test_not_datagram(self) -> None:
        """A stream or foreign string is refused with the forms that are accepted."""
        self.assertBad("procket:tcp:80", "'procket:tcp:80'", "procket:udp:PORT")
        self.assertBad("udp:53", "procket:udp:PORT")
        self.assertBad("procket", "procket:udp:PORT")
        self.assertBad("", "procket:udp:PORT")

    def test_malformed(self) -> None:
        """Bad values, unknown and repeated keywords, and a lone backslash are each named."""
        self.assertBad("procket:udp", "no port")
        self.assertBad("procket:udp:53o", "'53o'")
        self.assertBad("procket:udp:65536", "'65536'")
        self.assertBad("procket:udp:53:maxPacketSize=0", "maxPacketSize", "'0'")
        self.assertBad("procket:udp:53:backlog=5", "'backlog'")
        self.assertBad("procket:udp:53:port=54", "port", "twice")
        self.assertBad("procket:udp:53:timeout=1:timeout=2", "timeout", "twice")
        self.assertBad("procket:udp:53:timeout=0", "timeout")
        self.assertBad("procket:udp:53:127.0.0.1:512:extra", "'extra'")
        self.assertBad("procket:udp:53:interface=localhost", "'localhost'")
        self.assertBad("procket:udp6:53:interface=127.0.0.1", "'127.0.0.1'")
        self.assertBad("procket:udp:53\\", "backslash")


class SplitDescriptionTests(SynchronousTestCase):
    """`splitDescription` splits like Twisted's own endpoint string parser."""

    def test_split(self) -> None:
        """``:`` separates, ``=`` makes a keyword, in any order."""
        self.assertEqual(
            splitDescription("procket:udp:53:interface=127.0.0.1:512"),
            (["procket", "udp", "53", "512"], {"interface": "127.0.0.1"}),
        )

    def test_escapes(self) -> None:
        """A backslash escapes ``:``, ``=`` and itself."""
        self.assertEqual(splitDescription("interface=\\:\\:1"), ([], {"interface": "::1"}))
        self.assertEqual(splitDescription("a\\=b:c"), (["a=b", "c"], {}))
        self.assertEqual(splitDescription("path=C\\\\x"), ([], {"path": "C\\x"}))

    def test_equals_in_value(self) -> None:
        """Only the first ``=`` makes a keyword; later ones belong to the value."""
        self.assertEqual(splitDescription("key=a=b"), ([], {"key": "a=b"}))

    def test_empty(self) -> None:
        """Empty parts are kept as empty strings."""
        self.assertEqual(splitDescription("a::b:"), (["a", "", "b", ""], {}))
        self.assertEqual(splitDescription(""), ([""], {}))

    def test_lone_backslash(self) -> None:
        """A trailing lone backslash is a ValueError naming the description."""
        error = self.assertRaises(ValueError, splitDescription, "procket:udp:53\\")
        self.assertIn("procket:udp:53", str(error))
        self.assertIn("backslash", str(error))

    def test_duplicate_keyword(self) -> None:
        """A keyword given twice is a ValueError naming it."""
        error = self.assertRaises(ValueError, splitDescription, "a:key=1:key=2")
        self.assertIn("key is given twice", str(error))

    def test_agrees_with_twisted(self) -> None:
        """For strings Twisted's own ``_parse`` handles, both split the same way."""
        for description in (
            "procket:tcp:80",
            "procket:tcp6:443:interface=\\:\\:1:backlog=5",
            "procket:ssl:443:privateKey=a\\:b.pem:certKey=c.pem",
            "a\\\\b:c\\=d:e=f",
            "key=a=b",
            "x::y",
        ):
            self.assertEqual(splitDescription(description), _parse(description), description)


StringForm = Tuple[Callable[[str], object], str, Callable[..., object], Optional[type], List[str]]


def _grammars() -> List[StringForm]:
    """
    Each kind's string form: how to parse it, a valid description, its parser (whose signature
    is its grammar), the kind of request whose socket options it takes, if any, and the extra
    keywords its caller accepts.
    """
    parser, packet, tun = (
        procket_twisted._twisted.parser,
        procket_twisted._twisted.packet,
        procket_twisted._twisted.tun,
    )

    def stream(description: str) -> object:
        return serverFromString(MemoryReactor(), description)

    def datagram(description: str) -> object:
        return datagramEndpointFromString(MemoryReactor(), description)

    def request(description: str) -> object:
        return socketRequestFromString(description, ("name",))

    return [
        (stream, "procket:tcp:80", parser._parseStream, SocketRequest, []),
        (stream, "procket:tcp6:80", parser._parseStream, SocketRequest, []),
        (stream, "procket:ssl:443", parser._parseTLS, SocketRequest, []),
        (datagram, "procket:udp:53", parser._parseDatagram, SocketRequest, []),
        (datagram, "procket:raw:icmp", parser._parseRaw, RawRequest, []),
        (datagram, "procket:packet:arp", packet._parsePacket, PacketRequest, []),
        (datagram, "procket:tap", tun._parseTunnel, None, []),
        (request, "tcp:80", parser._parseSocketRequest, SocketRequest, ["name"]),
        (request, "udp:53", parser._parseDatagramRequest, SocketRequest, ["name"]),
    ]


class GrammarTests(SynchronousTestCase):
    """Each kind's parser's signature is its grammar: what a string may say, and in what order."""

    def test_keywords_are_the_signature(self) -> None:
        """
        The keywords a string takes, as its unknown-keyword message lists them, are its parser's
        positional-or-keyword parameters, then its keyword-only ones, then (exactly when it takes
        ``**options``) the option keywords the option table gives its kind of request; for
        socket descriptions, then the caller's extra keywords.
        """
        for parse, description, parser, kind, extra in _grammars():
            parameters = inspect.signature(parser).parameters.values()
            expected = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
            expected += [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
            takesOptions = any(p.kind is p.VAR_KEYWORD for p in parameters)
            self.assertEqual(takesOptions, kind is not None, description)
            if kind is not None:
                expected += [option.keyword for option in options_taken_by(kind)]
            expected += extra
            error = self.assertRaises(ValueError, parse, f"{description}:colour=red")
            message = str(error)
            self.assertIn("unknown keyword 'colour' (known: ", message, description)
            known = message.split("(known: ", 1)[1].rstrip(")").split(", ")
            self.assertEqual(known, expected, description)

    def test_positional_past_the_signature(self) -> None:
        """
        One value by position more than the parser's positional-or-keyword parameters is an
        unexpected value, which the message asks to name, as in the last of them; as many is not.
        """
        for parse, description, parser, _, _ in _grammars():
            parameters = inspect.signature(parser).parameters.values()
            names = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
            head = description.rsplit(":", 1)[0] if names[0] != "name" else description
            values = ["9"] * len(names)
            full = ":".join([head, *values])
            message = str(self.assertRaises(ValueError, parse, f"{full}:extra"))
            self.assertIn(
                f": unexpected value 'extra'; name it, as in {names[-1]}=...", message, full
            )
            try:
                parse(full)
            except ValueError as problem:
                self.assertNotIn("unexpected value", str(problem), full)

    def test_socket_descriptions(self) -> None:
        """
        In socket descriptions (``procket-twisted run --listen``) tcp takes a port, an interface
        and a backlog by position, udp only the first two; the caller's extra keywords come back
        as given, and are not the request's.
        """
        request, extra = socketRequestFromString("tcp:80:127.0.0.1:5:name=web", ("name",))
        self.assertEqual(
            (request, extra), (SocketRequest(80, "tcp", "127.0.0.1", 5), {"name": "web"})
        )
        request, extra = socketRequestFromString("udp6:53:\\:\\:1:mark=7", ("name",))
        self.assertEqual((request, extra), (SocketRequest(53, "udp", "::1", mark=7), {}))
        error = self.assertRaises(ValueError, socketRequestFromString, "udp:53:127.0.0.1:5")
        self.assertEqual(
            str(error), "procket:udp: unexpected value '5'; name it, as in interface=..."
        )

    def test_grammar_checks_the_signature(self) -> None:
        """
        A parser whose signature contradicts its grammar is refused when it is made: a required
        value without an example, options without ``**options`` or the other way round, an
        address that is not a positional parameter, a required value after the first.
        """

        def required(where: str, /, port: str) -> None:
            """A required port."""

        def options(where: str, /, port: str, **options: str) -> None:
            """A required port and the options."""

        def two(where: str, /, port: str, other: str) -> None:
            """Two required values."""

        self.assertRaises(TypeError, grammar(), required)
        self.assertRaises(TypeError, grammar(example="80", options=SocketRequest), required)
        self.assertRaises(TypeError, grammar(example="80", address="interface"), required)
        self.assertRaises(TypeError, grammar(example="80"), options)
        self.assertRaises(TypeError, grammar(example="80"), two)
        self.assertIs(grammar(example="80")(required), required)
        self.assertEqual(grammarOf(required).names, ("port",))


class PluginTests(SynchronousTestCase):
    """The plugin that makes ``procket:`` known to Twisted, and the public names."""

    def test_discovered(self) -> None:
        """``getPlugins`` finds exactly one parser with prefix procket: a ProcketServerParser."""
        parsers = [
            parser
            for parser in getPlugins(IStreamServerEndpointStringParser)
            if parser.prefix == "procket"
        ]
        self.assertEqual(len(parsers), 1, parsers)
        self.assertIsInstance(parsers[0], ProcketServerParser)

    def test_verify_parser(self) -> None:
        """The parser provides IPlugin and IStreamServerEndpointStringParser."""
        from twisted.plugins.procket_twisted_endpoints import procketServerParser

        self.assertTrue(verifyObject(IStreamServerEndpointStringParser, procketServerParser))
        self.assertTrue(verifyObject(IPlugin, procketServerParser))
        self.assertEqual(procketServerParser.prefix, "procket")

    def test_parser_directly(self) -> None:
        """The parser can be called as Twisted calls it, with the split string."""
        reactor = MemoryReactor()
        endpoint = ProcketServerParser().parseStreamServer(
            reactor, "tcp", "80", interface="127.0.0.1"
        )
        self.assertEqual(endpoint._request, SocketRequest(80, "tcp", "127.0.0.1", 50))

    def test_datagram_interfaces(self) -> None:
        """Both datagram endpoints provide IDatagramServerEndpoint."""
        reactor = MemoryReactor()
        self.assertTrue(
            verifyObject(IDatagramServerEndpoint, ProcketDatagramServerEndpoint(reactor, 53))
        )
        self.assertTrue(
            verifyObject(
                IDatagramServerEndpoint,
                AdoptedDatagramServerEndpoint(reactor, 99, socket.AF_INET),
            )
        )

    def test_import_light(self) -> None:
        """
        Importing the plugin module, or the public endpoints module, does not import the reactor
        (which would break ``twistd --reactor=...``).
        """
        for module in ("twisted.plugins.procket_twisted_endpoints", "procket_twisted.endpoints"):
            code = (
                f"import sys; import {module}; "
                "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'"
            )
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
            )
            self.assertEqual(result.returncode, 0, f"{module}: {result.stderr}")

    def test_public_names(self) -> None:
        """Every public name of procket_twisted.endpoints is the private module's own object."""
        sources = (
            procket_twisted._twisted.batch,
            procket_twisted._twisted.packet,
            procket_twisted._twisted.tun,
            procket_twisted._twisted.endpoints,
            procket_twisted._twisted.parser,
            procket_twisted._twisted.raw,
            procket_twisted._twisted.interfaces,
            procket_twisted._twisted.reactor_client,
            procket_twisted._twisted.service,
        )
        for name in procket_twisted.endpoints.__all__:
            public = getattr(procket_twisted.endpoints, name)
            owners = [module for module in sources if getattr(module, name, None) is public]
            self.assertTrue(owners, f"{name} is not the object of a private module")
