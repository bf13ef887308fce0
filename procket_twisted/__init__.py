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
from ._client.version import VERSION

#: The installed version (the distribution's, which setup.cfg reads from the same constant).
__version__ = VERSION

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
