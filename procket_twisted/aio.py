"""
procket for asyncio: privileged sockets awaited without ever blocking the event loop::

    import asyncio, procket_twisted.aio

    async def main():
        sock = await procket_twisted.aio.listen(80)
        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            await server.serve_forever()

The same functions as the plain API (L{procket_twisted.listen}, L{procket_twisted.listen_many},
L{procket_twisted.open_raw}, L{procket_twisted.open_packet}, L{procket_twisted.open_tun}), with the
same arguments and errors, as coroutines: the helper is a child process the loop watches through
its pidfd, a timeout kills it (L{procket_twisted.HelperTimeoutError}), and cancelling the awaiting
task kills it too; either way it is reaped and nothing stays open. The sockets come back
non-blocking, ready for C{loop.create_server(sock=...)}, C{loop.create_datagram_endpoint(sock=...)}
and the C{loop.sock_*} methods. Any asyncio loop that can watch a descriptor works (uvloop too).
Importing this module imports no Twisted.
"""

from ._client.aio import listen, listen_many, open_packet, open_raw, open_tun

__all__ = ["listen", "listen_many", "open_raw", "open_packet", "open_tun"]
