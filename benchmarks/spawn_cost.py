"""
Measurement (a): the cost of one privileged socket, every way of getting it, interleaved.

The **worker**, run as the unprivileged user, times, interleaved in one process with a running
Twisted reactor, each of:

- ``listen``: ``procket_twisted.listen(port, ip="127.0.0.1", direct=False)`` through the setuid
  helper (the blocking API);
- ``reactor``: ``acquireSockets`` with the reactor running (the helper is a child the reactor
  watches), from the call until the Deferred fires;
- ``sudo``: ``listen`` with ``progname="sudo -n HELPER"`` (a helper installed with ``--mode sudo``);
- ``authbind``: Debian's ``/usr/lib/authbind/helper`` called as libauthbind calls it: our socket on
  its stdin, the address and port as hex arguments, then ``listen()`` here;
- ``true``: ``subprocess.run(["/bin/true"])``, the yardstick;
- ``floor``: ``os.posix_spawn`` of a static do-nothing program and ``waitpid``, the floor;
- ``floor_musl``: the same with the do-nothing program built with musl (when given), the floor of
  a helper built with musl, which skips glibc's start-up CPU detection;
- two rows that split the helper's cost: ``setuid_floor`` (the do-nothing program built with the
  helper's C library, setuid root) and ``raw_helper`` (the helper run with the least Python
  possible: ``posix_spawn``, ``waitpid``, one ``recvmsg``).

Four more rows are timed by two **peers**, this script run with ``--peer FD --serve
NAME=PORT,...``, which ``run.py`` starts in the same cgroup and connects to the worker by stream
socket pairs (``--root-peer FD``, ``--user-peer FD``). At its place in the worker's order, such a
row sends its peer one byte and receives the nanoseconds the peer timed itself (the call only),
which are recorded instead of the round trip. So these rows share the rounds, the order and the
moment of every other row, and the rows the kernel-grant target compares are timed alike: each
in a process that runs nothing but its calls, woken by the worker.

- the **user peer**, as the user, in the cgroup whose kernel grant lets this user bind its two
  ports (``run.py`` applies it and starts every process of (a) inside that cgroup):

  - ``kernel_grant``: ``procket_twisted.listen(port, ip="127.0.0.1")``, the default
    ``direct=True``: one plain ``bind()``, no helper. The helper it is given does not exist, so
    a bind the kernel refused would fail the run instead of quietly timing the helper;
  - ``grant_in_process``: the bare ``socket()``, ``setsockopt(SO_REUSEADDR)``, ``bind()``,
    ``listen()`` in Python on the second granted port, through the grant: what the kernel and
    its bind hook cost, so that ``kernel_grant`` minus it is the Python of
    ``procket_twisted.listen``;

- the **root peer**, as root:

  - ``in_process``: the same bare calls as root (the yardstick of ``kernel_grant``);
  - ``root_listen``: ``procket_twisted.listen(port, ip="127.0.0.1")`` as root, which binds
    there too (no helper, no grant needed).

Every socket is closed after each call, outside the timed part. The variants run in a fresh
random order every round (``common.interleaved_order``), so that drift and the neighbours hit
them alike. Prints one JSON line, with the cgroup (v2) the process ran in; a peer prints nothing
and exits when its socket closes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from common import cgroup_v2, emit, interleaved_order, raw_helper, summarize

HOST = "127.0.0.1"
AUTHBIND_HELPER = "/usr/lib/authbind/helper"
#: The helper given to the variants that must bind here: none, so that falling back fails.
NO_HELPER = "/nonexistent/procket-helper"
#: The environment for the programs this script spawns itself, converted once: passing
#: ``os.environ`` would convert the mapping on every call, which the floor must not pay.
ENVIRONMENT = dict(os.environ)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peer",
        type=int,
        help="be a peer: time the rows of --serve when the worker asks on this stream socket",
    )
    parser.add_argument(
        "--serve", help="as a peer: the rows it times and their ports, NAME=PORT,..."
    )
    parser.add_argument(
        "--root-peer", type=int, help="the root peer's socket (it times in_process, root_listen)"
    )
    parser.add_argument(
        "--user-peer",
        type=int,
        help="the user peer's socket (it times kernel_grant, grant_in_process)",
    )
    parser.add_argument("--helper", help="the setuid helper")
    parser.add_argument("--sudo-helper", help="the helper installed for sudo -n")
    parser.add_argument("--noop", help="the static do-nothing program")
    parser.add_argument(
        "--setuid-noop", help="a do-nothing program built with the helper's C library, setuid root"
    )
    parser.add_argument("--musl-noop", help="the do-nothing program built with musl")
    parser.add_argument(
        "--ports", help="the worker's comma-separated ports: listen,reactor,sudo,authbind,raw"
    )
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="rounds run first and discarded")
    parser.add_argument(
        "--sudo-every", type=int, default=5, help="run the sudo variant every Nth round only"
    )
    arguments = parser.parse_args()
    if arguments.peer is not None:
        if not arguments.serve:
            parser.error("a peer (--peer) needs --serve")
        return arguments
    needed = (arguments.helper, arguments.sudo_helper, arguments.noop, arguments.setuid_noop)
    if not all(needed) or not arguments.ports:
        parser.error("the worker needs --helper, --sudo-helper, --noop, --setuid-noop and --ports")
    return arguments


def spawn_and_wait(path: str, argv: List[str], file_actions: Any = ()) -> int:
    """posix_spawn PATH and wait for it; return its exit code."""
    pid = os.posix_spawn(path, argv, ENVIRONMENT, file_actions=list(file_actions))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_true() -> None:
    """The yardstick: what any Python program pays to run a tiny program."""
    subprocess.run(["/bin/true"], check=True)


def floor_variant(program: str) -> Callable[[], None]:
    """posix_spawn and waitpid of PROGRAM, which must exit 0."""

    def run() -> None:
        if spawn_and_wait(program, [program]) != 0:
            raise RuntimeError(f"{program} failed")

    return run


def authbind_variant(port: int) -> Callable[[], socket.socket]:
    """
    A listening socket on PORT through authbind's helper, called the way libauthbind calls it:
    the socket as its stdin, then ``helper ADDR PORT`` with the sockaddr_in fields in hex as they
    lie in memory (network byte order read as a host integer: ``%08lx`` and ``%04x``).
    """
    address = int.from_bytes(socket.inet_aton(HOST), sys.byteorder)
    arguments = [AUTHBIND_HELPER, f"{address:08x}", f"{socket.htons(port):04x}"]

    def run() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            code = spawn_and_wait(
                AUTHBIND_HELPER, arguments, [(os.POSIX_SPAWN_DUP2, sock.fileno(), 0)]
            )
            if code != 0:
                raise OSError(code, f"authbind's helper failed: {os.strerror(code)}")
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    return run


def raw_helper_variant(helper: str, port: int) -> Callable[[], List[socket.socket]]:
    """The helper for one socket with the least Python around it."""
    return raw_helper(helper, [f"kind=tcp,family=inet,addr={HOST},port={port}"], ENVIRONMENT)


def direct_listen_variant(port: int) -> Callable[[], socket.socket]:
    """procket_twisted.listen of PORT that must bind in this process (no helper to fall back on)."""
    import procket_twisted

    def run() -> socket.socket:
        return procket_twisted.listen(port, ip=HOST, progname=[NO_HELPER])

    return run


def in_process_variant(port: int) -> Callable[[], socket.socket]:
    """socket(), bind(), listen() in this process (root, or a kernel grant, below 1024)."""

    def run() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
        return sock

    return run


@dataclass
class Reported:
    """A time another process measured (a peer's), to record instead of our own."""

    nanoseconds: int


#: The rows a peer times, by name: the byte that asks for one, and what makes its variant.
PEER_ROWS: Dict[str, Tuple[bytes, Callable[[int], Callable[[], socket.socket]]]] = {
    "in_process": (b"b", in_process_variant),
    "root_listen": (b"l", direct_listen_variant),
    "kernel_grant": (b"k", direct_listen_variant),
    "grant_in_process": (b"g", in_process_variant),
}
#: The rows each peer times: the root peer as root, the user peer as the user, through the grant.
ROOT_PEER_ROWS = ("in_process", "root_listen")
USER_PEER_ROWS = ("kernel_grant", "grant_in_process")


def peer_variant(channel: socket.socket, name: str) -> Callable[[], Reported]:
    """Ask the peer on CHANNEL to time its row NAME; what it measured."""
    command = PEER_ROWS[name][0]

    def run() -> Reported:
        channel.sendall(command)
        answer = channel.recv(8, socket.MSG_WAITALL)
        if len(answer) != 8:
            raise RuntimeError(f"the peer did not time {name}")
        return Reported(int.from_bytes(answer, "little"))

    return run


def serve_peer(channel: socket.socket, ports: Dict[str, int]) -> None:
    """
    Time each row the worker asks for on CHANNEL (PORTS: the rows served and the port each
    binds), until the worker closes it. Only the call is timed; the socket is checked and closed
    after it.
    """
    variants = {
        PEER_ROWS[name][0]: (name, PEER_ROWS[name][1](port)) for name, port in ports.items()
    }
    while True:
        command = channel.recv(1)
        if not command:
            return
        name, variant = variants[command]
        start = time.perf_counter_ns()
        sock = variant()
        elapsed = time.perf_counter_ns() - start
        check_socket(name, sock, ports[name])
        sock.close()
        channel.sendall(elapsed.to_bytes(8, "little"))


def peer_ports(serve: str) -> Dict[str, int]:
    """--serve's NAME=PORT,...: the rows a peer times and their ports."""
    ports = {}
    for item in serve.split(","):
        name, _, port = item.partition("=")
        if name not in PEER_ROWS:
            raise SystemExit(f"--serve: no peer row {name!r} (known: {', '.join(PEER_ROWS)})")
        ports[name] = int(port)
    return ports


def close_result(result: Any) -> None:
    """Close whatever sockets a variant returned."""
    if isinstance(result, socket.socket):
        result.close()
    elif isinstance(result, list):
        for sock in result:
            sock.close()


def check_socket(name: str, result: Any, port: int) -> None:
    """Fail unless RESULT is a listening TCP socket on HOST:PORT."""
    sock = result[0] if isinstance(result, list) else result
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.getsockname() != (HOST, port) or not listening:
        raise RuntimeError(f"{name}: got {sock.getsockname()} listening={listening}")


async def measure(
    variants: Dict[str, Callable[[], Any]],
    ports: Dict[str, int],
    rounds: int,
    warmup: int,
    sparse: Dict[str, int],
) -> Dict[str, List[int]]:
    """
    Time every variant once per round (a variant in SPARSE only every Nth round), interleaved;
    a variant may return a Deferred, which is awaited inside the timed part, or the time
    another process measured (`Reported`), which is recorded instead.
    """
    from twisted.internet.defer import Deferred

    samples: Dict[str, List[int]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(-warmup, rounds):
        for name in interleaved_order(names, round_number):
            if name in sparse and round_number % sparse[name]:
                continue
            start = time.perf_counter_ns()
            result = variants[name]()
            if isinstance(result, Deferred):
                result = await result
            elapsed = time.perf_counter_ns() - start
            if isinstance(result, Reported):
                elapsed, result = result.nanoseconds, None
            if round_number == -warmup and name in ports:
                check_socket(name, result, ports[name])
            close_result(result)
            if round_number >= 0:
                samples[name].append(elapsed)
    return samples


def unprivileged_variants(arguments: argparse.Namespace, reactor: Any) -> Dict[str, Any]:
    """The variants timed as the unprivileged user, and the port each one binds."""
    import procket_twisted
    from procket_twisted import SocketRequest
    from procket_twisted.endpoints import acquireSockets

    listen_port, reactor_port, sudo_port, authbind_port, raw_port = (
        int(port) for port in arguments.ports.split(",")
    )
    helper = arguments.helper
    sudo = shutil.which("sudo") or "/usr/bin/sudo"

    def listen() -> socket.socket:
        return procket_twisted.listen(listen_port, ip=HOST, direct=False, progname=[helper])

    def through_reactor() -> Any:
        request = SocketRequest(reactor_port, ip=HOST)
        return acquireSockets(reactor, [request], progname=[helper], direct=False)

    def through_sudo() -> socket.socket:
        return procket_twisted.listen(
            sudo_port, ip=HOST, direct=False, progname=[sudo, "-n", arguments.sudo_helper]
        )

    variants = {
        "listen": listen,
        "reactor": through_reactor,
        "sudo": through_sudo,
        "authbind": authbind_variant(authbind_port),
        "true": run_true,
        "floor": floor_variant(arguments.noop),
        "setuid_floor": floor_variant(arguments.setuid_noop),
        "raw_helper": raw_helper_variant(helper, raw_port),
    }
    if arguments.musl_noop:
        variants["floor_musl"] = floor_variant(arguments.musl_noop)
    ports = {
        "listen": listen_port,
        "reactor": reactor_port,
        "sudo": sudo_port,
        "authbind": authbind_port,
        "raw_helper": raw_port,
    }
    for descriptor, names in ((arguments.root_peer, ROOT_PEER_ROWS),
                              (arguments.user_peer, USER_PEER_ROWS)):  # fmt: skip
        if descriptor is not None:
            channel = socket.socket(fileno=descriptor)
            for name in names:
                variants[name] = peer_variant(channel, name)
    return {"variants": variants, "ports": ports}


def main() -> None:
    """Measure, print the JSON result."""
    arguments = _arguments()
    if arguments.peer is not None:
        serve_peer(socket.socket(fileno=arguments.peer), peer_ports(arguments.serve))
        return
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    result: Dict[str, Any] = {"uid": os.getuid(), "rounds": arguments.rounds,
                              "cgroup": cgroup_v2()}  # fmt: skip

    async def run(reactor: Any) -> None:
        chosen = unprivileged_variants(arguments, reactor)
        variants, ports = chosen["variants"], chosen["ports"]
        sparse = {"sudo": max(1, arguments.sudo_every)}
        samples = await measure(variants, ports, arguments.rounds, arguments.warmup, sparse)
        result["variants"] = {name: summarize(values) for name, values in samples.items()}
        result["samples_ms"] = {
            name: [value / 1e6 for value in values] for name, values in samples.items()
        }
        emit(result)

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
