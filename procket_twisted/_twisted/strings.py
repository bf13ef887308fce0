"""
What every C{procket:} endpoint string shares: splitting it as Twisted does, binding its values
to a kind's parser, whose signature is the kind's grammar (L{grammar}), and reading numbers,
yes/no flags, the helper's keywords and the socket option keywords. Each kind's parser
(C{parser}, C{packet}, C{tun}) is written with these, so that a word means the same in every
string.

Import-light, like the parser: nothing here may import the reactor.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

from .._client.api import DEFAULT_TIMEOUT, MAX_TIMEOUT, check_timeout
from .._client.options import OPTIONS, options_taken_by

__all__ = [
    "PREFIX",
    "splitDescription",
    "Grammar",
    "grammar",
    "grammarOf",
    "bind",
    "parseWith",
    "number",
    "flag",
    "checked",
    "helperOptions",
    "socketOptions",
]

PREFIX = "procket"
_YES, _NO = ("yes", "true", "1"), ("no", "false", "0")
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


def splitDescription(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    Split an endpoint description the way Twisted does: C{:} separates, C{=} makes a keyword,
    a backslash escapes the next character (C{interface=\\:\\:1}).

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


@dataclass(frozen=True)
class Grammar:
    """
    What a kind's parser takes, read from its signature by L{grammar}.

    @ivar names: the values that may be given by position, in order.
    @ivar keywords: the values given by name only: the keyword-only parameters, then the socket
        option keywords when the parser takes C{**options}.
    @ivar example: a value for the first of L{names}, which is then required (C{80}, C{0x806}).
    @ivar address: the name holding an IP address, whose IPv6 colons must be escaped.
    """

    names: Tuple[str, ...]
    keywords: Tuple[str, ...]
    example: Optional[str]
    address: Optional[str]


_GRAMMARS: Dict[Callable[..., Any], Grammar] = {}


def grammar(
    *, options: Optional[type] = None, example: Optional[str] = None, address: Optional[str] = None
) -> Callable[[_F], _F]:
    """
    Make a function the parser of a kind's strings, whose signature is the grammar, as in
    Twisted's C{_parseTCP(factory, port, interface="", backlog=50)}: the positional-only
    parameters are the context the caller gives (the reactor, where...), the
    positional-or-keyword ones the values that may be given by position, the keyword-only ones
    those given by name only, and C{**options} the socket option keywords of OPTIONS.

    @param options: the kind of request (L{SocketRequest}, L{RawRequest}...) whose option
        keywords C{**options} takes.
    @param example: a value for the first positional parameter, which has no default exactly
        when it is required.
    @param address: the parameter holding an IP address (see L{bind}).
    @raise TypeError: when the signature and these arguments disagree.
    """

    def record(parser: _F) -> _F:
        parameters = inspect.signature(parser).parameters.values()
        names = tuple(p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD)
        keywords = tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)
        required = tuple(
            p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
        )
        takesOptions = any(p.kind is p.VAR_KEYWORD for p in parameters)
        if (
            required not in ((), names[:1])
            or bool(required) != (example is not None)
            or takesOptions != (options is not None)
            or (address is not None and address not in names)
        ):
            raise TypeError(f"{parser.__qualname__}: its signature does not fit its grammar")
        if options is not None:
            keywords += tuple(option.keyword for option in options_taken_by(options))
        _GRAMMARS[parser] = Grammar(names, keywords, example, address)
        return parser

    return record


def grammarOf(parser: Callable[..., Any]) -> Grammar:
    """The L{Grammar} of a parser made by L{grammar}."""
    return _GRAMMARS[parser]


def bind(
    parser: Callable[..., Any],
    where: str,
    args: Sequence[str],
    kwargs: Mapping[str, str],
    extraKeywords: Sequence[str] = (),
) -> Dict[str, str]:
    """
    Positional ARGS and keyword KWARGS as one mapping from the names of PARSER's grammar (see
    L{grammar}), ARGS in the order of its positional names; EXTRAKEYWORDS may be given by name
    too.

    An empty value where a grammar with an address takes one (what C{interface=::1} becomes) is
    explained as IPv6 colons that need escaping.

    @raise ValueError: naming the extra value, the unknown keyword, the one given twice, or the
        missing first value.
    """
    rules = grammarOf(parser)
    names, keywords, example, address = rules.names, rules.keywords, rules.example, rules.address
    keywords += tuple(extraKeywords)
    if address is not None and ("" in args[1:] or kwargs.get(address) == ""):
        # What Twisted makes of interface=::1: the colons split it into empty values.
        raise ValueError(
            f"{where}: an IPv6 {address} needs its colons escaped with backslashes, as "
            f"in {where}:{example or 443}:{address}=\\:\\:1 (in a shell, quote it)"
        )
    if len(args) > len(names):
        extra = ":".join(args[len(names) :])
        raise ValueError(f"{where}: unexpected value {extra!r}; name it, as in {names[-1]}=...")
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names and key not in keywords:
            raise ValueError(
                f"{where}: unknown keyword {key!r} (known: {', '.join([*names, *keywords])})"
            )
        if key in values:
            raise ValueError(f"{where}: {key} is given twice")
        values[key] = value
    if example is not None and names[0] not in values:
        raise ValueError(f"{where}: no {names[0]} given, as in {where}:{example}")
    return values


def parseWith(
    parser: Callable[..., _T],
    where: str,
    context: Sequence[Any],
    args: Sequence[str],
    kwargs: Mapping[str, str],
) -> _T:
    """
    PARSER (made by L{grammar}) called with CONTEXT and the values of a split description.

    @param where: the kind's prefix (C{procket:tcp}), which every message starts with.
    @raise ValueError: from L{bind}, or from PARSER.
    """
    return parser(*context, **bind(parser, where, args, kwargs))


def number(where: str, name: str, text: str, low: int, high: int) -> int:
    """TEXT as a decimal number from LOW to HIGH (no sign, no leading zero)."""
    digits = text.isascii() and text.isdigit()
    if not digits or not low <= int(text) <= high or (len(text) > 1 and text[0] == "0"):
        raise ValueError(f"{where}: {name} {text!r} is not a number from {low} to {high}")
    return int(text)


def flag(where: str, keyword: str, text: Optional[str], default: bool = False) -> bool:
    """TEXT as yes or no (C{yes}, C{true}, C{1} / C{no}, C{false}, C{0}); None: DEFAULT."""
    if text is None:
        return default
    if text.lower() not in _YES + _NO:
        raise ValueError(f"{where}: {keyword} {text!r} is not yes or no")
    return text.lower() in _YES


def checked(where: str, build: Callable[[], _T]) -> _T:
    """BUILD(), with its ValueError or TypeError prefixed by WHERE."""
    try:
        return build()
    except (ValueError, TypeError) as problem:
        raise ValueError(f"{where}: {problem}") from None


def helperOptions(where: str, progname: Optional[str], timeout: Optional[str]) -> Dict[str, Any]:
    """The keywords every string takes, C{progname} and C{timeout}, as keyword arguments."""
    options: Dict[str, Any] = {"progname": progname or None, "timeout": DEFAULT_TIMEOUT}
    if timeout is not None:
        try:
            options["timeout"] = check_timeout(float(timeout))
        except ValueError:
            raise ValueError(
                f"{where}: timeout {timeout!r} is not a number of seconds more than 0 and at "
                f"most {MAX_TIMEOUT:g}"
            ) from None
    return options


def socketOptions(where: str, values: Mapping[str, str]) -> Dict[str, Any]:
    """The socket option keywords of VALUES (a parser's C{**options}), as request keywords."""
    options: Dict[str, Any] = {}
    for option in OPTIONS:
        text = values.get(option.keyword)
        if text is None:
            continue
        if option.limits is not None:
            low, high = option.limits
            options[option.attribute] = number(where, option.keyword, text, low, high)
        elif option.kind == "name":
            options[option.attribute] = text
        else:
            options[option.attribute] = flag(where, option.keyword, text)
    return options
