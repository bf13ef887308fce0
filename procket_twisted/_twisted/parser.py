"""
Endpoint strings: C{procket:tcp:80}, C{procket:tcp6:443:interface=\\:\\:1},
C{procket:ssl:443:privateKey=key.pem:certKey=cert.pem}, and for datagrams C{procket:udp:53} and
raw IP sockets C{procket:raw:icmp}, C{procket:raw6:icmpv6}.

The stream forms work wherever Twisted takes a server endpoint string (C{serverFromString},
C{twistd web --listen}), through the plugin in C{twisted/plugins/}. The keywords and their order
are those of Twisted's C{tcp:}, C{tcp6:} and C{ssl:}, plus C{progname} (the helper
command), C{timeout} (seconds) and the socket options (C{bindToDevice}, C{mark},
C{transparent}, C{priority}, C{forceReceiveBuffer}, C{forceSendBuffer}, C{freeBind},
C{reusePort}, C{v6only}). Every malformed string raises C{ValueError} naming the bad part.

This module must stay import-light: the plugin imports it whenever Twisted looks for endpoint
parsers, before C{twistd} has chosen its reactor, so nothing here may import the reactor.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from .._client.raw import PROTOCOL_NUMBERS, RawRequest
from .._client.request import MAX_BACKLOG, MAX_PORT, SocketRequest
from .endpoints import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_STREAM_BACKLOG,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    TLSServerEndpoint,
)
from .interfaces import IDatagramServerEndpoint
from .raw import RAW_MAX_PACKET_SIZE, RawEndpoint
from .strings import (
    PREFIX,
    bind,
    checked,
    flag,
    grammar,
    helperOptions,
    number,
    parseWith,
    socketOptions,
    splitDescription,
)

__all__ = [
    "ProcketServerParser",
    "datagramEndpointFromString",
    "socketRequestFromString",
    "splitDescription",  # from .strings: part of this module's surface, as it always was
]

_USAGE = (
    "use procket:tcp:PORT, procket:tcp6:PORT or procket:ssl:PORT:privateKey=KEY:certKey=CERT "
    "(and procket:udp:PORT with datagramEndpointFromString)"
)


def _interface(where: str, interface: Optional[str], ipv6: bool) -> str:
    interface = ("::" if ipv6 else "") if interface is None else interface
    if ipv6 and ":" not in interface:
        raise ValueError(f"{where}: interface {interface!r} is not an IPv6 address")
    return interface


@grammar(options=SocketRequest, example="80", address="interface")
def _parseStream(
    reactor: Any,
    where: str,
    ipv6: bool,
    /,
    port: str,
    interface: Optional[str] = None,
    backlog: str = str(DEFAULT_STREAM_BACKLOG),
    *,
    progname: Optional[str] = None,
    timeout: Optional[str] = None,
    **options: str,
) -> ProcketServerEndpoint:
    """C{procket:tcp:...} and C{procket:tcp6:...} (IPV6), and the stream under C{procket:ssl}."""
    portNumber = number(where, "port", port, 0, MAX_PORT)
    backlogNumber = number(where, "backlog", backlog, 0, MAX_BACKLOG)
    address = _interface(where, interface, ipv6)
    keywords = {**helperOptions(where, progname, timeout), **socketOptions(where, options)}
    return checked(
        where,
        lambda: ProcketServerEndpoint(reactor, portNumber, address, backlogNumber, **keywords),
    )


@grammar(options=SocketRequest, example="80", address="interface")
def _parseTLS(
    reactor: Any,
    where: str,
    /,
    port: str,
    privateKey: str = "server.pem",
    certKey: Optional[str] = None,
    sslmethod: Optional[str] = None,
    interface: Optional[str] = None,
    backlog: str = str(DEFAULT_STREAM_BACKLOG),
    extraCertChain: Optional[str] = None,
    dhParameters: Optional[str] = None,
    *,
    progname: Optional[str] = None,
    timeout: Optional[str] = None,
    **options: str,
) -> TLSServerEndpoint:
    """
    C{procket:ssl:...}: the positional values and TLS defaults of Twisted's C{ssl:}, the stream
    of L{_parseStream} under the TLS.
    """
    stream = _parseStream(
        reactor,
        where,
        False,
        port,
        interface,
        backlog,
        progname=progname,
        timeout=timeout,
        **options,
    )
    try:
        # Twisted's own ssl: parser builds the context, so every TLS keyword means what it means
        # there. It is private to Twisted; a test pins its signature.
        from twisted.internet.endpoints import _parseSSL
    except ImportError:  # pragma: no cover - Twisted without the ssl: parser
        raise ValueError(f"{where}: this Twisted cannot build TLS contexts") from None
    try:
        (_, _, contextFactory), _ = _parseSSL(
            None,
            port,
            privateKey,
            certKey,
            sslmethod,
            extraCertChain=extraCertChain,
            dhParameters=dhParameters,
        )
    except ImportError:
        raise ValueError(
            f"{where}: TLS needs pyOpenSSL: pip install 'procket-twisted[tls]'"
        ) from None
    except OSError as problem:
        raise ValueError(f"{where}: cannot read {problem.filename}: {problem.strerror}") from None
    except Exception as problem:
        raise ValueError(f"{where}: bad TLS material: {problem}") from None
    return TLSServerEndpoint(stream, contextFactory)


@grammar(options=SocketRequest, example="80", address="interface")
def _parseDatagram(
    reactor: Any,
    where: str,
    ipv6: bool,
    /,
    port: str,
    interface: Optional[str] = None,
    maxPacketSize: str = str(DEFAULT_MAX_PACKET_SIZE),
    *,
    progname: Optional[str] = None,
    timeout: Optional[str] = None,
    **options: str,
) -> ProcketDatagramServerEndpoint:
    """C{procket:udp:...} and C{procket:udp6:...} (IPV6)."""
    portNumber = number(where, "port", port, 0, MAX_PORT)
    size = number(where, "maxPacketSize", maxPacketSize, 1, 65535)
    address = _interface(where, interface, ipv6)
    keywords = {**helperOptions(where, progname, timeout), **socketOptions(where, options)}
    return checked(
        where,
        lambda: ProcketDatagramServerEndpoint(reactor, portNumber, address, size, **keywords),
    )


@grammar(options=RawRequest, example="icmp", address="interface")
def _parseRaw(
    reactor: Any,
    where: str,
    raw6: bool,
    /,
    protocol: str,
    interface: Optional[str] = None,
    maxPacketSize: str = str(RAW_MAX_PACKET_SIZE),
    *,
    progname: Optional[str] = None,
    timeout: Optional[str] = None,
    headerIncluded: Optional[str] = None,
    **options: str,
) -> RawEndpoint:
    """C{procket:raw:...} and C{procket:raw6:...} (RAW6)."""
    ipProtocol = PROTOCOL_NUMBERS.get(protocol)
    if ipProtocol is None:
        if not (protocol.isascii() and protocol.isdigit()):
            raise ValueError(
                f"{where}: protocol {protocol!r} is not a number from 1 to 255 or one of "
                f"{', '.join(PROTOCOL_NUMBERS)}"
            )
        ipProtocol = number(where, "protocol", protocol, 1, 255)
    address = None if interface is None else _interface(where, interface, raw6)
    # raw6 is IPv6; for raw, as for tcp, an IPv6 interface (or ICMPv6) makes it IPv6.
    ipv6 = raw6 or ":" in (address or "") or (address is None and ipProtocol == 58)
    if ipProtocol == (1 if ipv6 else 58):
        raise ValueError(
            f"{where}: protocol {protocol} over {'IPv6' if ipv6 else 'IPv4'}: ICMP is IPv4's "
            "(procket:raw:icmp), ICMPv6 is IPv6's (procket:raw6:icmpv6)"
        )
    size = number(where, "maxPacketSize", maxPacketSize, 1, RAW_MAX_PACKET_SIZE)
    keywords = {**helperOptions(where, progname, timeout), **socketOptions(where, options)}
    keywords["family"] = "inet6" if ipv6 else "inet"
    keywords["headerIncluded"] = flag(where, "headerIncluded", headerIncluded)
    endpoint: RawEndpoint = checked(
        where, lambda: RawEndpoint(reactor, ipProtocol, address, size, **keywords)
    )
    return endpoint


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ProcketServerParser:
    """The C{procket:} prefix for Twisted's server endpoint strings."""

    prefix = PREFIX

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        """
        The endpoint for C{procket:tcp:...}, C{procket:tcp6:...} or C{procket:ssl:...}.

        @raise ValueError: naming the bad part of a malformed description.
        """
        if not args:
            raise ValueError(f"{PREFIX}: no protocol given; {_USAGE}")
        protocol, rest = str(args[0]), [str(arg) for arg in args[1:]]
        options = {key: str(value) for key, value in kwargs.items()}
        where = f"{PREFIX}:{protocol}"
        if protocol in ("tcp", "tcp6"):
            return parseWith(
                _parseStream, where, (reactor, where, protocol == "tcp6"), rest, options
            )
        if protocol == "ssl":
            return parseWith(_parseTLS, where, (reactor, where), rest, options)
        if protocol in ("udp", "udp6", "raw", "raw6"):
            raise ValueError(
                f"{PREFIX}:{protocol} is a datagram endpoint, and Twisted's stream endpoint "
                "strings (serverFromString, twistd --listen) cannot carry one: use "
                "procket_twisted.endpoints.datagramEndpointFromString or datagramService"
            )
        raise ValueError(f"{PREFIX}: unknown protocol {protocol!r}; {_USAGE}")


def datagramEndpointFromString(reactor: Any, description: str) -> IDatagramServerEndpoint:
    """
    The datagram endpoint for C{procket:udp:PORT[:interface=ADDR][:maxPacketSize=N]} or
    C{procket:udp6:...} (plus C{progname}, C{timeout} and the socket options), or the
    L{RawEndpoint} for C{procket:raw:PROTOCOL[:interface=ADDR][:maxPacketSize=N]
    [:headerIncluded=yes]} or C{procket:raw6:PROTOCOL...} (PROTOCOL: C{icmp}, C{icmpv6}...
    or a number; the options C{bindToDevice}, C{mark}, C{priority}, C{forceReceiveBuffer},
    C{forceSendBuffer}), or the packet endpoint for C{procket:packet:ETHERTYPE...} and the
    TUN/TAP endpoint for C{procket:tun...} and C{procket:tap...} (see their modules).

    @raise ValueError: naming the bad part of a malformed description.
    """
    args, kwargs = splitDescription(description)
    kind = args[1] if len(args) >= 2 and args[0] == PREFIX else None
    where = f"{PREFIX}:{kind}"
    if kind in ("raw", "raw6"):
        return parseWith(_parseRaw, where, (reactor, where, kind == "raw6"), args[2:], kwargs)
    if kind in ("packet", "tun", "tap"):
        # Imported here: they bring twisted.pair, which the plugin's import need not load.
        from .packet import packetEndpointFromString
        from .tun import tunEndpointFromString

        build = packetEndpointFromString if kind == "packet" else tunEndpointFromString
        return build(reactor, description)
    if kind not in ("udp", "udp6"):
        raise ValueError(
            f"{description!r} is not a procket datagram endpoint: use procket:udp:PORT, "
            "procket:udp6:PORT, procket:raw:PROTOCOL, procket:raw6:PROTOCOL, "
            "procket:packet:ETHERTYPE, procket:tun or procket:tap"
        )
    return parseWith(_parseDatagram, where, (reactor, where, kind == "udp6"), args[2:], kwargs)


@grammar(options=SocketRequest, example="80", address="interface")
def _parseSocketRequest(
    where: str,
    protocol: str,
    /,
    port: str,
    interface: Optional[str] = None,
    backlog: Optional[str] = None,
    **options: str,
) -> SocketRequest:
    """C{tcp:...} and C{tcp6:...} in a socket description (without a backlog, the request's)."""
    portNumber = number(where, "port", port, 0, MAX_PORT)
    address = _interface(where, interface, protocol.endswith("6"))
    backlogNumber = None if backlog is None else number(where, "backlog", backlog, 0, MAX_BACKLOG)
    keywords = socketOptions(where, options)
    return checked(
        where,
        lambda: SocketRequest(
            portNumber, protocol.rstrip("6"), address or None, backlogNumber, **keywords
        ),
    )


@grammar(options=SocketRequest, example="80", address="interface")
def _parseDatagramRequest(
    where: str, protocol: str, /, port: str, interface: Optional[str] = None, **options: str
) -> SocketRequest:
    """C{udp:...} and C{udp6:...} in a socket description, which take no backlog."""
    return _parseSocketRequest(where, protocol, port, interface, **options)


#: The parser of each protocol of a socket description.
_SOCKET_PARSERS: Dict[str, Callable[..., SocketRequest]] = {
    "tcp": _parseSocketRequest,
    "tcp6": _parseSocketRequest,
    "udp": _parseDatagramRequest,
    "udp6": _parseDatagramRequest,
}


def socketRequestFromString(
    description: str, extraKeywords: Sequence[str] = ()
) -> Tuple[SocketRequest, Dict[str, str]]:
    """
    The L{SocketRequest} for a socket description: C{tcp:80}, C{tcp6:443:interface=\\:\\:1},
    C{udp:53:interface=127.0.0.1}, with the socket option keywords of endpoint strings
    (C{tcp:80:reusePort=yes:mark=42}); a C{procket:} prefix is allowed.

    @param extraKeywords: more keywords the caller accepts; their values are returned as given.
    @return: the request, and the values of EXTRAKEYWORDS that were present.
    @raise ValueError: naming the bad part of a malformed description.
    """
    args, kwargs = splitDescription(description)
    if args[:1] == [PREFIX]:
        args = args[1:]
    if not args or args[0] not in _SOCKET_PARSERS:
        raise ValueError(
            f"{description!r}: say tcp:PORT, tcp6:PORT, udp:PORT or udp6:PORT, then keywords"
        )
    protocol = args[0]
    where = f"{PREFIX}:{protocol}"
    parser = _SOCKET_PARSERS[protocol]
    values = bind(parser, where, args[1:], kwargs, extraKeywords)
    extra = {key: values.pop(key) for key in extraKeywords if key in values}
    return parser(where, protocol, **values), extra
