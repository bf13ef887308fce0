"""
What this process may do by itself, read from the system: the lowest unprivileged port, and the
capabilities it holds. Least privilege (C{direct}) and the requests' own C{capabilities()} ask
it.
"""

from __future__ import annotations

import functools
import os

from .diagnose import process_status_field
from .options import CAP_NET_BIND_SERVICE

__all__ = ["unprivileged_port_start", "has_capability", "has_bind_capability"]

_PORT_START_FILE = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


@functools.lru_cache(maxsize=1)
def unprivileged_port_start() -> int:
    """
    The lowest port an unprivileged process may bind here (1024 when it cannot be read), read
    once: if an administrator changes it later, a port now free of privilege still goes through
    the helper, and one no longer free is refused in-process and then asked of the helper.
    """
    try:
        # Binary: a text file's first open imports an encoding, milliseconds the asyncio driver's
        # first call would spend inside the event loop.
        with open(_PORT_START_FILE, "rb") as setting:
            return int(setting.read())
    except (OSError, ValueError):
        return 1024


def has_capability(capability: int) -> bool:
    """Whether this process holds CAPABILITY in its effective set."""
    return bool(_effective_capabilities(os.geteuid()) >> capability & 1)


@functools.lru_cache(maxsize=4)
def _effective_capabilities(euid: int) -> int:
    """
    The effective capability set, read once per effective uid: capabilities change with the uid
    (as when twistd drops root), and a stale "may bind" costs no more than a refused bind, after
    which the helper is asked (see L{procket_twisted._client.exchange.Exchange}).
    """
    try:
        return int(process_status_field("CapEff") or "0", 16)
    except ValueError:
        return 0


def has_bind_capability() -> bool:
    """Whether this process holds CAP_NET_BIND_SERVICE (root does)."""
    return has_capability(CAP_NET_BIND_SERVICE)
