"""
Measurement (a): the cost of one privileged socket, every way of getting it, interleaved.

Run as the unprivileged user (``--as-user``, the default) it times, round-robin in one process with
a running Twisted reactor, each of:

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
  possible: ``posix_spawn``, ``waitpid``, one ``recvmsg``);
- ``kernel_grant`` (with ``--grant-ports``): ``procket_twisted.listen(port, ip="127.0.0.1")``,
  the default ``direct=True``, in a cgroup whose kernel grant lets this user bind that port
  (``run.py`` applies it and starts this process inside the cgroup): one plain ``bind()``, no
  helper. The helper it is given does not exist, so a bind the kernel refused would fail the
  run instead of quietly timing the helper;
- ``grant_in_process`` (with ``--grant-ports``): the bare ``socket()``, ``bind()``, ``listen()``
  in Python on the second granted port, as this user through the grant: what the kernel and its
  bind hook cost, so that ``kernel_grant`` minus it is the Python of ``procket_twisted.listen``.

Two more rows are timed by a root process, the **root peer**: this script run as root with
``--as-root``, started by ``run.py``, which passes each of the two processes one end of a stream
socket pair (``--root-peer FD``). At its place in this process's rotation, such a variant sends
the peer one byte and receives the nanoseconds the peer timed itself, which are recorded instead
of the round trip, so that root's rows share the rounds, the order and the moment of every other
row:

- ``in_process``: ``socket()``, ``bind()``, ``listen()`` in Python as root (the yardstick of
  ``kernel_grant``);
- ``root_listen``: ``procket_twisted.listen(port, ip="127.0.0.1")`` as root, which binds in the
  peer too (no helper, no grant needed).

Every socket is closed after each call, outside the timed part. The order of the variants rotates
and reverses every round, so that drift hits them alike. Prints one JSON line, with the cgroup
(v2) the process ran in; the peer prints nothing and exits when the socket closes.
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
from typing import Any, Callable, Dict, List

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
        "--root-peer",
        type=int,
        help="a stream socket's descriptor: as the user, the root peer to ask for its rows; as "
        "root (with --as-root), the user's process to time them for",
    )
    parser.add_argument("--as-root", action="store_true", help="be the root peer")
    parser.add_argument("--helper", help="the setuid helper")
    parser.add_argument("--sudo-helper", help="the helper installed for sudo -n")
    parser.add_argument("--noop", help="the static do-nothing program")
    parser.add_argument(
        "--setuid-noop", help="a do-nothing program built with the helper's C library, setuid root"
    )
    parser.add_argument("--musl-noop", help="the do-nothing program built with musl")
    parser.add_argument(
        "--ports",
        required=True,
        help="comma-separated ports: listen,reactor,sudo,authbind,raw "
        "(as the user) or in_process,root_listen (as the root peer)",
    )
    parser.add_argument(
        "--grant-ports",
        help="time kernel_grant,grant_in_process: two ports a kernel grant lets us bind",
    )
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="rounds run first and discarded")
    parser.add_argument(
        "--sudo-every", type=int, default=5, help="run the sudo variant every Nth round only"
    )
    arguments = parser.parse_args()
    if arguments.as_root and arguments.root_peer is None:
        parser.error("--as-root is the root peer: it needs --root-peer")
    needed = (arguments.helper, arguments.sudo_helper, arguments.noop, arguments.setuid_noop)
    if not arguments.as_root and not all(needed):
        parser.error("as the user: --helper, --sudo-helper, --noop and --setuid-noop are needed")
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
    """A time another process measured (the root peer's), to record instead of our own."""

    nanoseconds: int


#: The root peer's variants, by the byte that asks for one.
PEER_COMMANDS = {"in_process": b"b", "root_listen": b"l"}


def peer_variant(channel: socket.socket, name: str) -> Callable[[], Reported]:
    """Ask the root peer on CHANNEL to time its variant NAME; what it measured."""
    command = PEER_COMMANDS[name]

    def run() -> Reported:
        channel.sendall(command)
        answer = channel.recv(8, socket.MSG_WAITALL)
        if len(answer) != 8:
            raise RuntimeError(f"the root peer did not time {name}")
        return Reported(int.from_bytes(answer, "little"))

    return run


def serve_root_peer(channel: socket.socket, in_process_port: int, listen_port: int) -> None:
    """As root: time each variant the user's process asks for, until it closes CHANNEL."""
    variants = {
        PEER_COMMANDS["in_process"]: ("in_process", in_process_variant(in_process_port)),
        PEER_COMMANDS["root_listen"]: ("root_listen", direct_listen_variant(listen_port)),
    }
    ports = {"in_process": in_process_port, "root_listen": listen_port}
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
    if arguments.grant_ports:
        grant_port, bare_port = (int(port) for port in arguments.grant_ports.split(","))
        variants["kernel_grant"] = direct_listen_variant(grant_port)
        variants["grant_in_process"] = in_process_variant(bare_port)
        ports.update(kernel_grant=grant_port, grant_in_process=bare_port)
    if arguments.root_peer is not None:
        channel = socket.socket(fileno=arguments.root_peer)
        for name in PEER_COMMANDS:
            variants[name] = peer_variant(channel, name)
    return {"variants": variants, "ports": ports}


def main() -> None:
    """Measure, print the JSON result."""
    arguments = _arguments()
    if arguments.as_root:
        in_process_port, listen_port = (int(port) for port in arguments.ports.split(","))
        channel = socket.socket(fileno=arguments.root_peer)
        serve_root_peer(channel, in_process_port, listen_port)
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
