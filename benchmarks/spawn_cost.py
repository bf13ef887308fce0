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
  possible: ``posix_spawn``, ``waitpid``, one ``recvmsg``).

Run as root (``--as-root``) it times ``in_process``: the same ``socket()``, ``bind()``,
``listen()`` in Python, which root may do, interleaved with ``true`` and ``floor`` again.

Every socket is closed after each call, outside the timed part. The order of the variants rotates
and reverses every round, so that drift hits them alike. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

from common import emit, interleaved_order, raw_helper, summarize

HOST = "127.0.0.1"
AUTHBIND_HELPER = "/usr/lib/authbind/helper"
#: The environment for the programs this script spawns itself, converted once: passing
#: ``os.environ`` would convert the mapping on every call, which the floor must not pay.
ENVIRONMENT = dict(os.environ)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--as-root", action="store_true", help="time the in-process bind")
    parser.add_argument("--helper", help="the setuid helper")
    parser.add_argument("--sudo-helper", help="the helper installed for sudo -n")
    parser.add_argument("--noop", required=True, help="the static do-nothing program")
    parser.add_argument(
        "--setuid-noop", help="a do-nothing program built with the helper's C library, setuid root"
    )
    parser.add_argument("--musl-noop", help="the do-nothing program built with musl")
    parser.add_argument(
        "--ports",
        required=True,
        help="comma-separated ports: listen,reactor,sudo,authbind,raw "
        "(as the user) or one port (as root)",
    )
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="rounds run first and discarded")
    parser.add_argument(
        "--sudo-every", type=int, default=5, help="run the sudo variant every Nth round only"
    )
    return parser.parse_args()


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


def in_process_variant(port: int) -> Callable[[], socket.socket]:
    """socket(), bind(), listen() in this process (root only, for a port below 1024)."""

    def run() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
        return sock

    return run


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
    a variant may return a Deferred, which is awaited inside the timed part.
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
    return {"variants": variants, "ports": ports}


def main() -> None:
    """Measure, print the JSON result."""
    arguments = _arguments()
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    result: Dict[str, Any] = {"uid": os.getuid(), "rounds": arguments.rounds}

    async def run(reactor: Any) -> None:
        if arguments.as_root:
            port = int(arguments.ports)
            variants: Dict[str, Any] = {
                "in_process": in_process_variant(port),
                "true": run_true,
                "floor": floor_variant(arguments.noop),
            }
            ports = {"in_process": port}
            sparse: Dict[str, int] = {}
        else:
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
