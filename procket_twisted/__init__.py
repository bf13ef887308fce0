"""
procket_twisted: privileged sockets for unprivileged Python and Twisted programs.

A tiny setuid helper opens the socket (a port below 1024...), drops its privileges for good, and
passes the descriptor back; this process never runs as root. The plain API below needs no Twisted.
"""

from ._api import DEFAULT_TIMEOUT, listen, listen_many
from ._errors import (
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    HelperTimeoutError,
    PolicyDeniedError,
    ProcketError,
    SocketError,
)
from ._locate import HelperCommand, find_helper
from ._policy_check import PolicyDecision, policy_decisions
from ._request import SocketRequest

__all__ = [
    "listen",
    "listen_many",
    "SocketRequest",
    "find_helper",
    "policy_decisions",
    "PolicyDecision",
    "HelperCommand",
    "DEFAULT_TIMEOUT",
    "ProcketError",
    "HelperNotFoundError",
    "HelperNotPrivilegedError",
    "PolicyDeniedError",
    "HelperTimeoutError",
    "SocketError",
    "HelperFailedError",
]
