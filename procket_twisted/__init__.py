"""
procket_twisted: privileged sockets for unprivileged Python and Twisted programs.

A tiny setuid helper opens the socket (a port below 1024...), drops its privileges for good, and
passes the descriptor back; this process never runs as root. The plain API below needs no Twisted.
"""

from ._client.api import DEFAULT_TIMEOUT, listen, listen_many, open_packet, open_raw, open_tun
from ._client.errors import (
    HelperFailedError,
    HelperNotFoundError,
    HelperNotPrivilegedError,
    HelperTimeoutError,
    PolicyDeniedError,
    ProcketError,
    SocketError,
)
from ._client.locate import HelperCommand, find_helper
from ._client.packet import ETH_P_ALL, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, PacketRequest
from ._client.policy_check import PolicyDecision, policy_decisions
from ._client.raw import RawRequest
from ._client.request import SocketRequest
from ._client.tun import TunDevice, TunRequest

__all__ = [
    "listen",
    "listen_many",
    "open_raw",
    "open_packet",
    "open_tun",
    "SocketRequest",
    "RawRequest",
    "PacketRequest",
    "TunRequest",
    "TunDevice",
    "ETH_P_ALL",
    "ETH_P_ARP",
    "ETH_P_IP",
    "ETH_P_IPV6",
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


def __getattr__(name: str) -> str:
    """C{__version__}, the installed version, read from the distribution's metadata when asked."""
    if name == "__version__":
        from ._client.version import package_version

        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
