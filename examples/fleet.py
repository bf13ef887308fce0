"""
Serve one privileged port from several worker processes, as an ordinary user, both ways:

    python examples/fleet.py --workers 4 --port 80 --path DIR            # SO_REUSEPORT
    python examples/fleet.py --workers 4 --port 80 --path DIR --shared   # one socket, shared

By default each worker is ``twistd -n web --listen procket:tcp:PORT:reusePort=yes``: every worker
asks the helper for its own socket in the same SO_REUSEPORT group (the helper creates them as
this user, so no other user can join), and the kernel spreads the connections over them.

With ``--shared`` the socket is acquired once, here, and handed to each worker as its fd 3
(``spawnProcess``'s childFDs); each worker adopts it with ``reactor.adoptStreamPort``.

The parent supervises: Ctrl-C (or SIGTERM) stops every worker. Put examples/whoami.rpy in DIR to
see which worker answers: ``curl http://127.0.0.1/whoami.rpy``.
"""

import argparse
import os
import shutil
import socket
import sys
from typing import List

from twisted.internet import defer, task
from twisted.internet.protocol import ProcessProtocol
from twisted.web.script import ResourceScript
from twisted.web.server import Site
from twisted.web.static import File

from procket_twisted import SocketRequest
from procket_twisted.endpoints import acquireSockets, adoptSocket

SHARED_FD = 3


class Worker(ProcessProtocol):
    """One worker process; ``ended`` fires when it exits."""

    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


def worker_command(options: argparse.Namespace) -> List[str]:
    if options.shared:
        return [sys.executable, os.path.abspath(__file__), "--worker", "--path", options.path]
    twistd = shutil.which("twistd") or os.path.join(os.path.dirname(sys.executable), "twistd")
    interface = options.interface.replace(":", "\\:")
    listen = f"procket:tcp:{options.port}:interface={interface}:reusePort=yes"
    return [twistd, "-n", "--pidfile=", "web", "--listen", listen, "--path", options.path]


async def supervise(reactor, options: argparse.Namespace) -> None:
    fds = {0: 0, 1: 1, 2: 2}
    shared = None
    if options.shared:
        request = SocketRequest(options.port, ip=options.interface)
        (shared,) = await acquireSockets(reactor, [request])
        fds[SHARED_FD] = shared.fileno()
    command = worker_command(options)
    workers = []
    for _ in range(options.workers):
        worker = Worker()
        reactor.spawnProcess(worker, command[0], command, env=os.environ, childFDs=fds)
        workers.append(worker)
    if shared is not None:
        shared.close()  # the workers hold it now
    mode = "one shared socket" if options.shared else "SO_REUSEPORT"
    pids = " ".join(str(worker.transport.pid) for worker in workers)
    print(f"fleet: {options.workers} workers on port {options.port} ({mode}): {pids}", flush=True)

    def stop_workers() -> defer.Deferred:
        for worker in workers:
            if worker.transport.pid is not None:
                worker.transport.signalProcess("TERM")
        return defer.DeferredList([worker.ended for worker in workers])

    reactor.addSystemEventTrigger("before", "shutdown", stop_workers)
    await defer.DeferredList([worker.ended for worker in workers])


async def serve_shared(reactor, options: argparse.Namespace) -> None:
    """
    A worker of --shared: adopt the listening socket at fd 3 and serve files. adoptSocket makes
    it non-blocking first (a blocking accept would stall the reactor), adopts it with
    reactor.adoptStreamPort, and closes fd 3 (the reactor keeps its own copy).
    """
    files = File(options.path)
    files.processors = {".rpy": ResourceScript}  # as twistd web --path does
    adoptSocket(reactor, socket.socket(fileno=SHARED_FD), Site(files))
    await defer.Deferred()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--interface", default="0.0.0.0")
    parser.add_argument("--path", required=True, help="the directory to serve")
    parser.add_argument("--shared", action="store_true", help="one socket handed to every worker")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    run = serve_shared if options.worker else supervise
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()
