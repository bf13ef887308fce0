"""
The interface Twisted lacks: a datagram server endpoint (Twisted issue 4471).
"""

from zope.interface import Interface

__all__ = ["IDatagramServerEndpoint"]


class IDatagramServerEndpoint(Interface):
    """A place to receive datagrams, like C{IStreamServerEndpoint} is a place to accept streams."""

    def listen(protocol):  # type: ignore[no-untyped-def]  # noqa: N805 (zope interface style)
        """
        Bind PROTOCOL (a C{DatagramProtocol}) to this endpoint.

        @return: a Deferred firing with an C{IListeningPort}, or failing with
            C{CannotListenError}.
        """
