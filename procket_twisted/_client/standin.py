"""
The one place a test's stand-in for the helper plugs in (L{procket_twisted.testing}).

While a stand-in is installed, every acquisition (C{listen}, C{listen_many}, C{acquireSockets},
C{acquireEndpoints} and every endpoint's C{listen}) is given to it, checked as always, instead of
to the helper or to a direct bind. Nothing installs one outside tests.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from .kinds import AnyRequest

__all__ = ["StandIn", "STAND_INS", "install", "installed"]

#: Opens the checked requests of one acquisition: the sockets in order, or raises ProcketError.
StandIn = Callable[[List[AnyRequest]], List[Any]]

#: The stand-ins installed, the last one applying (empty outside tests). Read directly only where
#: a call to L{installed} would cost too much (the short way of L{procket_twisted.listen}).
STAND_INS: List[StandIn] = []


def install(stand_in: StandIn) -> Callable[[], None]:
    """
    Give every acquisition to STAND_IN from now on.

    @return: a function that uninstalls it (the one installed before it, if any, applies again).
    """
    STAND_INS.append(stand_in)
    return lambda: STAND_INS.remove(stand_in)


def installed() -> Optional[StandIn]:
    """The stand-in installed last, or C{None} (the helper and direct binds are used)."""
    return STAND_INS[-1] if STAND_INS else None
