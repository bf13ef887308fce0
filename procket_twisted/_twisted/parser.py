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

from typing import Any, Dict, Sequence, Tuple

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from .._client.raw import PROTOCOL_NUMBERS, RawRequest
from .._client.request import SocketRequest
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
    HELPER_KEYWORDS,
    PREFIX,
    bind,
    checked,
    flag,
    helperOptions,
    number,
    optionKeywords,
    socketOptions,
    splitDescription,
)

__all__ = [
    "ProcketServerParser",
    "datagramEndpointFromString",
    "socketRequestFromString",
    "splitDescription",  # from .strings: part of this module's surface, as it always was
]

_STREAM_ARGUMENTS = ("port", "interface", "backlog")
_TLS_ARGUMENTS = (
    "port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
    "extraCertChain", "dhParameters",
)  # fmt: skip
_DATAGRAM_ARGUMENTS = ("port", "interface", "maxPacketSize")
_RAW_ARGUMENTS = ("protocol", "interface", "maxPacketSize")
_KEYWORDS_EVERYWHERE = HELPER_KEYWORDS + optionKeywords(SocketRequest)
#: The keywords a raw socket takes: the helper's, the socket options it takes, and its own.
_RAW_KEYWORDS = HELPER_KEYWORDS + optionKeywords(RawRequest) + ("headerIncluded",)
_USAGE = (
    "use procket:tcp:PORT, procket:tcp6:PORT or procket:ssl:PORT:privateKey=KEY:certKey=CERT "
    "(and procket:udp:PORT with datagramEndpointFromString)"
)


def _interface(where: str, values: Dict[str, str], ipv6: bool) -> str:
    interface = values.get("interface", "::" if ipv6 else "")
    if ipv6 and ":" not in interface:
        raise ValueError(f"{where}: interface {interface!r} is not an IPv6 address")
    return interface


def _streamEndpoint(
    reactor: Any, protocol: str, args: Sequence[str], kwargs: Dict[str, str], where: str = ""
) -> Any:
    where = where or f"{PREFIX}:{protocol}"
    values = bind(where, _STREAM_ARGUMENTS, args, kwargs, _KEYWORDS_EVERYWHERE, "80", "interface")
    port = number(where, "port", values["port"], 0, 65535)
    backlog = number(where, "backlog", values.get("backlog", str(DEFAULT_STREAM_BACKLOG)), 0, 65535)
    interface = _interface(where, values, protocol == "tcp6")
    options = {**helperOptions(where, values), **socketOptions(where, values)}
    return checked(
        where, lambda: ProcketServerEndpoint(reactor, port, interface, backlog, **options)
    )


def _tlsEndpoint(reactor: Any, args: Sequence[str], kwargs: Dict[str, str]) -> Any:
    where = f"{PREFIX}:ssl"
    values = bind(where, _TLS_ARGUMENTS, args, kwargs, _KEYWORDS_EVERYWHERE, "80", "interface")
    stream = _streamEndpoint(
        reactor,
        "tcp",
        [],
        {k: v for k, v in values.items() if k in _STREAM_ARGUMENTS + _KEYWORDS_EVERYWHERE},
        where,
    )
    tls = {k: v for k, v in values.items() if k in _TLS_ARGUMENTS and k not in _STREAM_ARGUMENTS}
    try:
        # Twisted's own ssl: parser builds the context, so every TLS keyword means what it means
        # there. It is private to Twisted; a test pins its signature.
        from twisted.internet.endpoints import _parseSSL
    except ImportError:  # pragma: no cover - Twisted without the ssl: parser
        raise ValueError(f"{where}: this Twisted cannot build TLS contexts") from None
    try:
        (_, _, contextFactory), _ = _parseSSL(None, values["port"], **tls)
    except ImportError:
        raise ValueError(
            f"{where}: TLS needs pyOpenSSL: pip install 'procket-twisted[tls]'"
        ) from None
    except OSError as problem:
        raise ValueError(f"{where}: cannot read {problem.filename}: {problem.strerror}") from None
    except Exception as problem:
        raise ValueError(f"{where}: bad TLS material: {problem}") from None
    return TLSServerEndpoint(stream, contextFactory)


def _datagramEndpoint(
    reactor: Any, protocol: str, args: Sequence[str], kwargs: Dict[str, str]
) -> Any:
    where = f"{PREFIX}:{protocol}"
    values = bind(where, _DATAGRAM_ARGUMENTS, args, kwargs, _KEYWORDS_EVERYWHERE, "80", "interface")
    port = number(where, "port", values["port"], 0, 65535)
    size = values.get("maxPacketSize", str(DEFAULT_MAX_PACKET_SIZE))
    maxPacketSize = number(where, "maxPacketSize", size, 1, 65535)
    interface = _interface(where, values, protocol == "udp6")
    options = {**helperOptions(where, values), **socketOptions(where, values)}
    return checked(
        where,
        lambda: ProcketDatagramServerEndpoint(reactor, port, interface, maxPacketSize, **options),
    )


def _rawEndpoint(
    reactor: Any, kind: str, args: Sequence[str], kwargs: Dict[str, str]
) -> RawEndpoint:
    where = f"{PREFIX}:{kind}"
    values = bind(where, _RAW_ARGUMENTS, args, kwargs, _RAW_KEYWORDS, "icmp", "interface")
    name = values["protocol"]
    protocol = PROTOCOL_NUMBERS.get(name)
    if protocol is None:
        if not (name.isascii() and name.isdigit()):
            raise ValueError(
                f"{where}: protocol {name!r} is not a number from 1 to 255 or one of "
                f"{', '.join(PROTOCOL_NUMBERS)}"
            )
        protocol = number(where, "protocol", name, 1, 255)
    interface = _interface(where, values, kind == "raw6") if "interface" in values else None
    # raw6 is IPv6; for raw, as for tcp, an IPv6 interface (or ICMPv6) makes it IPv6.
    ipv6 = kind == "raw6" or ":" in (interface or "") or (interface is None and protocol == 58)
    if protocol == (1 if ipv6 else 58):
        raise ValueError(
            f"{where}: protocol {name} over {'IPv6' if ipv6 else 'IPv4'}: ICMP is IPv4's "
            "(procket:raw:icmp), ICMPv6 is IPv6's (procket:raw6:icmpv6)"
        )
    size = values.get("maxPacketSize", str(RAW_MAX_PACKET_SIZE))
    maxPacketSize = number(where, "maxPacketSize", size, 1, RAW_MAX_PACKET_SIZE)
    headerIncluded = flag(where, "headerIncluded", values.get("headerIncluded"))
    options = {**helperOptions(where, values), **socketOptions(where, values)}
    options["family"] = "inet6" if ipv6 else "inet"
    options["headerIncluded"] = headerIncluded
    endpoint: RawEndpoint = checked(
        where, lambda: RawEndpoint(reactor, protocol, interface, maxPacketSize, **options)
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
        if protocol in ("tcp", "tcp6"):
            return _streamEndpoint(reactor, protocol, rest, options)  # type: ignore[no-any-return]
        if protocol == "ssl":
            return _tlsEndpoint(reactor, rest, options)  # type: ignore[no-any-return]
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
    if len(args) >= 2 and args[0] == PREFIX and args[1] in ("raw", "raw6"):
        return _rawEndpoint(reactor, args[1], args[2:], kwargs)
    if len(args) >= 2 and args[0] == PREFIX and args[1] in ("packet", "tun", "tap"):
        # Imported here: they bring twisted.pair, which the plugin's import need not load.
        from .packet import packetEndpointFromString
        from .tun import tunEndpointFromString

        build = packetEndpointFromString if args[1] == "packet" else tunEndpointFromString
        return build(reactor, description)
    if len(args) < 2 or args[0] != PREFIX or args[1] not in ("udp", "udp6"):
        raise ValueError(
            f"{description!r} is not a procket datagram endpoint: use procket:udp:PORT, "
            "procket:udp6:PORT, procket:raw:PROTOCOL, procket:raw6:PROTOCOL, "
            "procket:packet:ETHERTYPE, procket:tun or procket:tap"
        )
    return _datagramEndpoint(reactor, args[1], args[2:], kwargs)  # type: ignore[no-any-return]


#: What each protocol takes in a socket description, in order.
_SOCKET_ARGUMENTS = {
    "tcp": _STREAM_ARGUMENTS,
    "tcp6": _STREAM_ARGUMENTS,
    "udp": ("port", "interface"),
    "udp6": ("port", "interface"),
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
    if not args or args[0] not in _SOCKET_ARGUMENTS:
        raise ValueError(
            f"{description!r}: say tcp:PORT, tcp6:PORT, udp:PORT or udp6:PORT, then keywords"
        )
    protocol = args[0]
    where = f"{PREFIX}:{protocol}"
    keywords = optionKeywords(SocketRequest) + tuple(extraKeywords)
    values = bind(where, _SOCKET_ARGUMENTS[protocol], args[1:], kwargs, keywords, "80", "interface")
    port = number(where, "port", values["port"], 0, 65535)
    interface = _interface(where, values, protocol.endswith("6"))
    backlog = None
    if "backlog" in values:
        backlog = number(where, "backlog", values["backlog"], 0, 65535)
    options = socketOptions(where, values)
    request = checked(
        where,
        lambda: SocketRequest(port, protocol.rstrip("6"), interface or None, backlog, **options),
    )
    return request, {key: values[key] for key in extraKeywords if key in values}
