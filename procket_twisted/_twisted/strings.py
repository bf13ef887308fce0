"""
What every C{procket:} endpoint string shares: splitting it as Twisted does, binding its values
to the names a kind takes, and reading numbers, yes/no flags, the helper's keywords and the
socket option keywords. Each kind's own grammar (C{parser}, C{packet}, C{tun}) is written with
these, so that a word means the same in every string.

Import-light, like the parser: nothing here may import the reactor.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from .._client.api import DEFAULT_TIMEOUT, MAX_TIMEOUT, check_timeout
from .._client.options import OPTIONS, options_taken_by

__all__ = [
    "PREFIX",
    "HELPER_KEYWORDS",
    "OPTION_KEYWORDS",
    "splitDescription",
    "bind",
    "number",
    "flag",
    "checked",
    "helperOptions",
    "optionKeywords",
    "socketOptions",
]

PREFIX = "procket"
#: The keywords every string takes: the helper command and how long to wait for it.
HELPER_KEYWORDS = ("progname", "timeout")
#: Socket option keywords (camelCase, as Twisted's keywords are) and their request names.
OPTION_KEYWORDS = {option.keyword: option.attribute for option in OPTIONS}
_YES, _NO = ("yes", "true", "1"), ("no", "false", "0")
_T = TypeVar("_T")


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


def bind(
    where: str,
    names: Sequence[str],
    args: Sequence[str],
    kwargs: Dict[str, str],
    keywords: Sequence[str],
    example: Optional[str] = None,
    addressKeyword: Optional[str] = None,
) -> Dict[str, str]:
    """
    Positional ARGS and keyword KWARGS as one mapping, ARGS in the order of NAMES; KEYWORDS may
    be given by name only.

    @param example: a value for the first of NAMES, which is then required (C{80}, C{0x806}).
    @param addressKeyword: the keyword holding an IP address, whose IPv6 colons must be escaped:
        an empty value there (what C{interface=::1} becomes) is explained as such.
    @raise ValueError: naming the extra value, the unknown keyword, the one given twice, or the
        missing first value.
    """
    if addressKeyword is not None and ("" in args[1:] or kwargs.get(addressKeyword) == ""):
        # What Twisted makes of interface=::1: the colons split it into empty values.
        raise ValueError(
            f"{where}: an IPv6 {addressKeyword} needs its colons escaped with backslashes, as "
            f"in {where}:{example or 443}:{addressKeyword}=\\:\\:1 (in a shell, quote it)"
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


def helperOptions(where: str, values: Dict[str, str]) -> Dict[str, Any]:
    """C{progname} and C{timeout} of VALUES, as keyword arguments."""
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


def optionKeywords(kind: type) -> Tuple[str, ...]:
    """The socket option keywords a kind of request (L{SocketRequest}, L{RawRequest}...) takes."""
    return tuple(option.keyword for option in options_taken_by(kind))


def socketOptions(where: str, values: Dict[str, str]) -> Dict[str, Any]:
    """The socket option keywords of VALUES, as request keyword arguments."""
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
