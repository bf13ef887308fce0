"""
Endpoint strings: ``procket:tcp:80``, ``procket:tcp6:443:interface=\\:\\:1``,
``procket:ssl:443:privateKey=key.pem:certKey=cert.pem``, and for datagrams ``procket:udp:53`` and
raw IP sockets ``procket:raw:icmp``, ``procket:raw6:icmpv6``.

The stream forms work wherever Twisted takes a server endpoint string (``serverFromString``,
``twistd web --listen``), through the plugin in ``twisted/plugins/``. The keywords and their order
are those of Twisted's ``tcp:``, ``tcp6:`` and ``ssl:``, plus ``progname`` (the helper
command), ``timeout`` (seconds) and the socket options (``bindToDevice``, ``mark``,
``transparent``, ``priority``, ``forceReceiveBuffer``, ``forceSendBuffer``, ``freeBind``,
``reusePort``, ``v6only``). Every malformed string raises ``ValueError`` naming the bad part.

This module must stay import-light: the plugin imports it whenever Twisted looks for endpoint
parsers, before ``twistd`` has chosen its reactor, so nothing here may import the reactor.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from ._api import DEFAULT_TIMEOUT, MAX_TIMEOUT, check_timeout
from ._endpoints import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_STREAM_BACKLOG,
    ProcketDatagramServerEndpoint,
    ProcketServerEndpoint,
    TLSServerEndpoint,
)
from ._interfaces import IDatagramServerEndpoint
from ._raw import PROTOCOL_NUMBERS
from ._raw_twisted import RAW_MAX_PACKET_SIZE, RawEndpoint
from ._request import SocketRequest

__all__ = [
    "ProcketServerParser",
    "datagramEndpointFromString",
    "socketRequestFromString",
    "splitDescription",
]

PREFIX = "procket"
_STREAM_ARGUMENTS = ("port", "interface", "backlog")
_TLS_ARGUMENTS = (
    "port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
    "extraCertChain", "dhParameters",
)  # fmt: skip
_DATAGRAM_ARGUMENTS = ("port", "interface", "maxPacketSize")
_RAW_ARGUMENTS = ("protocol", "interface", "maxPacketSize")
_HELPER_KEYWORDS = ("progname", "timeout")
#: Socket option keywords (camelCase, as Twisted's keywords are) and their SocketRequest names.
_OPTION_KEYWORDS = {
    "v6only": "v6only",
    "reusePort": "reuseport",
    "freeBind": "freebind",
    "transparent": "transparent",
    "bindToDevice": "bind_to_device",
    "mark": "mark",
    "priority": "priority",
    "forceReceiveBuffer": "force_receive_buffer",
    "forceSendBuffer": "force_send_buffer",
}
_OPTION_NUMBERS = {
    "mark": 0xFFFFFFFF,
    "priority": 0x7FFFFFFF,
    "forceReceiveBuffer": 0x3FFFFFFF,
    "forceSendBuffer": 0x3FFFFFFF,
}
_YES, _NO = ("yes", "true", "1"), ("no", "false", "0")
_KEYWORDS_EVERYWHERE = _HELPER_KEYWORDS + tuple(_OPTION_KEYWORDS)
#: The socket option keywords a raw socket takes, and its own.
_RAW_KEYWORDS = _HELPER_KEYWORDS + (
    "bindToDevice", "mark", "priority", "forceReceiveBuffer", "forceSendBuffer", "headerIncluded",
)  # fmt: skip
_USAGE = (
    "use procket:tcp:PORT, procket:tcp6:PORT or procket:ssl:PORT:privateKey=KEY:certKey=CERT "
    "(and procket:udp:PORT with datagramEndpointFromString)"
)


def _bind(
    where: str,
    names: Sequence[str],
    args: Sequence[str],
    kwargs: Dict[str, str],
    keywords: Sequence[str] = _KEYWORDS_EVERYWHERE,
    example: str = "",
) -> Dict[str, str]:
    """
    Positional ARGS and keyword KWARGS as one mapping, in Twisted's order for NAMES (the first is
    required: EXAMPLE is a value for it); KEYWORDS may be given by name only.
    """
    if "" in args[1:] or kwargs.get("interface") == "":
        # What Twisted makes of interface=::1: the colons split it into empty values.
        raise ValueError(
            f"{where}: an IPv6 interface needs its colons escaped with backslashes, as in "
            f"{where}:{example or 443}:interface=\\:\\:1 (in a shell, quote it)"
        )
    if len(args) > len(names):
        extra = ":".join(args[len(names) :])
        raise ValueError(f"{where}: unexpected value {extra!r}; name it, for example interface=...")
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names and key not in keywords:
            known = ", ".join(list(names) + list(keywords))
            raise ValueError(f"{where}: unknown keyword {key!r} (known: {known})")
        if key in values:
            raise ValueError(f"{where}: {key} is given twice")
        values[key] = value
    if names[0] not in values:
        raise ValueError(f"{where}: no {names[0]} given, as in {where}:{example or 80}")
    return values


def _number(where: str, name: str, text: str, low: int, high: int) -> int:
    digits = text.isascii() and text.isdigit()
    if not digits or not low <= int(text) <= high or (len(text) > 1 and text[0] == "0"):
        raise ValueError(f"{where}: {name} {text!r} is not a number from {low} to {high}")
    return int(text)


def _helper_options(where: str, values: Dict[str, str]) -> Dict[str, Any]:
    options: Dict[str, Any] = {"progname": values.get("progname") or None}
    timeout = values.get("timeout")
    options["timeout"] = DEFAULT_TIMEOUT
    if timeout is not None:
        try:
            options["timeout"] = check_timeout(float(timeout))
        except ValueError:
            raise ValueError(
                f"{where}: timeout {timeout!r} is not a number of seconds more than 0 and at "
                f"most {MAX_TIMEOUT:g}"
            ) from None
    return options


def _socket_options(where: str, values: Dict[str, str]) -> Dict[str, Any]:
    """The socket option keywords of VALUES, as SocketRequest keyword arguments."""
    options: Dict[str, Any] = {}
    for keyword, attribute in _OPTION_KEYWORDS.items():
        text = values.get(keyword)
        if text is None:
            continue
        if keyword in _OPTION_NUMBERS:
            options[attribute] = _number(where, keyword, text, 0, _OPTION_NUMBERS[keyword])
        elif keyword == "bindToDevice":
            options[attribute] = text
        else:
            options[attribute] = _flag(where, keyword, text)
    return options


def _flag(where: str, keyword: str, text: str) -> bool:
    if text.lower() not in _YES + _NO:
        raise ValueError(f"{where}: {keyword} {text!r} is not yes or no")
    return text.lower() in _YES


def _interface(where: str, values: Dict[str, str], ipv6: bool) -> str:
    interface = values.get("interface", "::" if ipv6 else "")
    if ipv6 and ":" not in interface:
        raise ValueError(f"{where}: interface {interface!r} is not an IPv6 address")
    return interface


def _checked(where: str, build: Any) -> Any:
    """BUILD(), with its ValueError or TypeError prefixed by WHERE."""
    try:
        return build()
    except (ValueError, TypeError) as problem:
        raise ValueError(f"{where}: {problem}") from None


def _stream_endpoint(
    reactor: Any, protocol: str, args: Sequence[str], kwargs: Dict[str, str], where: str = ""
) -> Any:
    where = where or f"{PREFIX}:{protocol}"
    values = _bind(where, _STREAM_ARGUMENTS, args, kwargs)
    port = _number(where, "port", values["port"], 0, 65535)
    backlog = _number(
        where, "backlog", values.get("backlog", str(DEFAULT_STREAM_BACKLOG)), 0, 65535
    )
    interface = _interface(where, values, protocol == "tcp6")
    options = {**_helper_options(where, values), **_socket_options(where, values)}
    return _checked(
        where, lambda: ProcketServerEndpoint(reactor, port, interface, backlog, **options)
    )


def _tls_endpoint(reactor: Any, args: Sequence[str], kwargs: Dict[str, str]) -> Any:
    where = f"{PREFIX}:ssl"
    values = _bind(where, _TLS_ARGUMENTS, args, kwargs)
    stream = _stream_endpoint(
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


def _datagram_endpoint(
    reactor: Any, protocol: str, args: Sequence[str], kwargs: Dict[str, str]
) -> Any:
    where = f"{PREFIX}:{protocol}"
    values = _bind(where, _DATAGRAM_ARGUMENTS, args, kwargs)
    port = _number(where, "port", values["port"], 0, 65535)
    size = values.get("maxPacketSize", str(DEFAULT_MAX_PACKET_SIZE))
    maxPacketSize = _number(where, "maxPacketSize", size, 1, 65535)
    interface = _interface(where, values, protocol == "udp6")
    options = {**_helper_options(where, values), **_socket_options(where, values)}
    return _checked(
        where,
        lambda: ProcketDatagramServerEndpoint(reactor, port, interface, maxPacketSize, **options),
    )


def _raw_endpoint(
    reactor: Any, kind: str, args: Sequence[str], kwargs: Dict[str, str]
) -> RawEndpoint:
    where = f"{PREFIX}:{kind}"
    values = _bind(where, _RAW_ARGUMENTS, args, kwargs, _RAW_KEYWORDS, "icmp")
    name = values["protocol"]
    number = PROTOCOL_NUMBERS.get(name)
    if number is None:
        if not (name.isascii() and name.isdigit()):
            raise ValueError(
                f"{where}: protocol {name!r} is not a number from 1 to 255 or one of "
                f"{', '.join(PROTOCOL_NUMBERS)}"
            )
        number = _number(where, "protocol", name, 1, 255)
    interface = _interface(where, values, kind == "raw6") if "interface" in values else None
    # raw6 is IPv6; for raw, as for tcp, an IPv6 interface (or ICMPv6) makes it IPv6.
    ipv6 = kind == "raw6" or ":" in (interface or "") or (interface is None and number == 58)
    if number == (1 if ipv6 else 58):
        raise ValueError(
            f"{where}: protocol {name} over {'IPv6' if ipv6 else 'IPv4'}: ICMP is IPv4's "
            "(procket:raw:icmp), ICMPv6 is IPv6's (procket:raw6:icmpv6)"
        )
    size = values.get("maxPacketSize", str(RAW_MAX_PACKET_SIZE))
    maxPacketSize = _number(where, "maxPacketSize", size, 1, RAW_MAX_PACKET_SIZE)
    headerIncluded = _flag(where, "headerIncluded", values.get("headerIncluded", "no"))
    options = {**_helper_options(where, values), **_socket_options(where, values)}
    options["family"] = "inet6" if ipv6 else "inet"
    options["headerIncluded"] = headerIncluded
    endpoint: RawEndpoint = _checked(
        where, lambda: RawEndpoint(reactor, number, interface, maxPacketSize, **options)
    )
    return endpoint


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ProcketServerParser:
    """The ``procket:`` prefix for Twisted's server endpoint strings."""

    prefix = PREFIX

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        """
        The endpoint for ``procket:tcp:...``, ``procket:tcp6:...`` or ``procket:ssl:...``.

        @raise ValueError: naming the bad part of a malformed description.
        """
        if not args:
            raise ValueError(f"{PREFIX}: no protocol given; {_USAGE}")
        protocol, rest = str(args[0]), [str(arg) for arg in args[1:]]
        options = {key: str(value) for key, value in kwargs.items()}
        if protocol in ("tcp", "tcp6"):
            return _stream_endpoint(reactor, protocol, rest, options)  # type: ignore[no-any-return]
        if protocol == "ssl":
            return _tls_endpoint(reactor, rest, options)  # type: ignore[no-any-return]
        if protocol in ("udp", "udp6", "raw", "raw6"):
            raise ValueError(
                f"{PREFIX}:{protocol} is a datagram endpoint, and Twisted's stream endpoint "
                "strings (serverFromString, twistd --listen) cannot carry one: use "
                "procket_twisted.endpoints.datagramEndpointFromString or datagramService"
            )
        raise ValueError(f"{PREFIX}: unknown protocol {protocol!r}; {_USAGE}")


def splitDescription(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    Split an endpoint description the way Twisted does: ``:`` separates, ``=`` makes a keyword,
    a backslash escapes the next character (``interface=\\:\\:1``).

    @raise ValueError: for a trailing lone backslash or a keyword given twice.
    """
    args: List[str] = []
    kwargs: Dict[str, str] = {}
    key = None
    current: List[str] = []
    escaping = False

    def finish() -> None:
        value = "".join(current)
        if key is None:
            args.append(value)
        elif key in kwargs:
            raise ValueError(f"{description!r}: {key} is given twice")
        else:
            kwargs[key] = value

    for character in description:
        if escaping:
            current.append(character)
            escaping = False
        elif character == "\\":
            escaping = True
        elif character == ":":
            finish()
            key, current = None, []
        elif character == "=" and key is None:
            key, current = "".join(current), []
        else:
            current.append(character)
    if escaping:
        raise ValueError(f"{description!r} ends with a lone backslash")
    finish()
    return args, kwargs


def datagramEndpointFromString(reactor: Any, description: str) -> IDatagramServerEndpoint:
    """
    The datagram endpoint for ``procket:udp:PORT[:interface=ADDR][:maxPacketSize=N]`` or
    ``procket:udp6:...`` (plus ``progname``, ``timeout`` and the socket options), or the
    `RawEndpoint` for ``procket:raw:PROTOCOL[:interface=ADDR][:maxPacketSize=N]
    [:headerIncluded=yes]`` or ``procket:raw6:PROTOCOL...`` (PROTOCOL: ``icmp``, ``icmpv6``...
    or a number; the options ``bindToDevice``, ``mark``, ``priority``, ``forceReceiveBuffer``,
    ``forceSendBuffer``), or the packet endpoint for ``procket:packet:ETHERTYPE...`` and the
    TUN/TAP endpoint for ``procket:tun...`` and ``procket:tap...`` (see their modules).

    @raise ValueError: naming the bad part of a malformed description.
    """
    args, kwargs = splitDescription(description)
    if len(args) >= 2 and args[0] == PREFIX and args[1] in ("raw", "raw6"):
        return _raw_endpoint(reactor, args[1], args[2:], kwargs)
    if len(args) >= 2 and args[0] == PREFIX and args[1] in ("packet", "tun", "tap"):
        # Imported here: they bring twisted.pair, which the plugin's import need not load.
        from ._packet_twisted import packetEndpointFromString
        from ._tun_twisted import tunEndpointFromString

        build = packetEndpointFromString if args[1] == "packet" else tunEndpointFromString
        return build(reactor, description)
    if len(args) < 2 or args[0] != PREFIX or args[1] not in ("udp", "udp6"):
        raise ValueError(
            f"{description!r} is not a procket datagram endpoint: use procket:udp:PORT, "
            "procket:udp6:PORT, procket:raw:PROTOCOL, procket:raw6:PROTOCOL, "
            "procket:packet:ETHERTYPE, procket:tun or procket:tap"
        )
    return _datagram_endpoint(reactor, args[1], args[2:], kwargs)  # type: ignore[no-any-return]


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
    The `SocketRequest` for a socket description: ``tcp:80``, ``tcp6:443:interface=\\:\\:1``,
    ``udp:53:interface=127.0.0.1``, with the socket option keywords of endpoint strings
    (``tcp:80:reusePort=yes:mark=42``); a ``procket:`` prefix is allowed.

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
    keywords = tuple(_OPTION_KEYWORDS) + tuple(extraKeywords)
    values = _bind(where, _SOCKET_ARGUMENTS[protocol], args[1:], kwargs, keywords)
    port = _number(where, "port", values["port"], 0, 65535)
    interface = _interface(where, values, protocol.endswith("6"))
    backlog = None
    if "backlog" in values:
        backlog = _number(where, "backlog", values["backlog"], 0, 65535)
    options = _socket_options(where, values)
    request = _checked(
        where,
        lambda: SocketRequest(port, protocol.rstrip("6"), interface or None, backlog, **options),
    )
    return request, {key: values[key] for key in extraKeywords if key in values}
