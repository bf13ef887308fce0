"""
A FAKE procket helper, for the unprivileged unit tests only: it is never installed and never
privileged. It speaks the real helper's protocol (see ``procket-helper.c``): it is run as
``PROGRAM [EXTRA...] v1 SPEC...`` with an AF_UNIX SOCK_SEQPACKET socket as fds 0, 1 and 2, opens
the requested sockets itself (so tests use port 0 or ports from 1024 up) and answers ``ok N`` with
the N fds (SCM_RIGHTS) on fd 0, or ``error INDEX STEP ERRNO TEXT`` with the step's exit status.

``FAKE_HELPER_MODE`` chooses a misbehaviour (default ``ok``):

    ok               do the job (a failing socket call is reported like the real helper does)
    hang             answer nothing, sleep
    ok-then-hang     answer properly, then sleep instead of exiting
    close-and-hang   close fds 0, 1 and 2 without answering, then sleep
    crash            kill itself with SIGSEGV before answering
    crash-realtime   kill itself with the real-time signal SIGRTMIN+6 before answering
    error-STEP       reply ``error 1 STEP ERRNO ...`` and exit with STEP's number, e.g. error-bind
                     (errno 98, exit 7), error-policy, error-privilege, error-parse, error-drop...
    wrong-count      open the sockets, send one socket more than asked for (and say so)
    missing-fds      say ``ok N`` but send no fds
    wrong-socket     send a UDP socket for a TCP request (and a TCP one for a UDP request)
    not-a-socket     send the read end of a pipe instead of each socket
    garbage          write non-protocol text, exit 0
    sudo-password    write ``sudo: a password is required`` (as sudo does), exit 1
    sudo-not-found   write ``sudo: PATH: command not found`` (as sudo does), exit 1
    silent-exit-3    exit with status 3, saying nothing

``FAKE_HELPER_LOG``, when set, names a file to which each run appends one line: its arguments as
JSON, without the program (to count runs and see exactly what it was asked).
"""

from __future__ import annotations

import array
import json
import os
import resource
import signal
import socket
import sys
import time
from typing import Dict, List, NoReturn, Sequence, Tuple

STEPS = (
    "setup", "parse", "privilege", "policy", "socket",
    "setsockopt", "bind", "listen", "drop", "send",
)  # fmt: skip
#: The errno each canned ``error-STEP`` reply carries.
ERRNOS = {
    "setup": 9, "parse": 22, "privilege": 1, "policy": 13, "socket": 97,
    "setsockopt": 22, "bind": 98, "listen": 98, "drop": 1, "send": 32,
}  # fmt: skip
HANG_SECONDS = 30
REQUIRED_KEYS = {"kind", "family", "addr", "port"}
KNOWN_KEYS = REQUIRED_KEYS | {"backlog", "v6only"}
MODES = (
    "ok", "hang", "ok-then-hang", "close-and-hang", "crash", "crash-realtime", "wrong-count",
    "missing-fds",
    "wrong-socket", "not-a-socket", "garbage", "sudo-password", "sudo-not-found", "silent-exit-3",
) + tuple(f"error-{step}" for step in STEPS)  # fmt: skip


def channel() -> socket.socket:
    """The reply channel, fd 0 (a duplicate, so that closing it leaves fd 0 alone)."""
    return socket.socket(fileno=os.dup(0))


def send(text: str, fds: Sequence[int] = ()) -> None:
    """Send one packet of TEXT carrying FDS on the channel."""
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    with channel() as sock:
        sock.sendmsg([text.encode()], ancillary)


def fail(index: int, step: str, code: int, text: str) -> NoReturn:
    """Answer like the real helper's fail(): one error line, exit with the step's number."""
    send(f"error {index} {step} {code} {text}\n")
    os._exit(STEPS.index(step) + 1)


def parse(specs: List[str]) -> List[Dict[str, str]]:
    """The specs as dicts (strict enough for tests: required keys present, nothing unknown)."""
    if not specs:
        fail(0, "parse", 22, "usage: fake_helper v1 SPEC...")
    parsed = []
    for index, spec in enumerate(specs, 1):
        fields = dict(item.split("=", 1) for item in spec.split(","))
        if not REQUIRED_KEYS <= set(fields) <= KNOWN_KEYS:
            fail(index, "parse", 22, f"bad spec {spec!r}")
        parsed.append(fields)
    return parsed


def open_socket(index: int, spec: Dict[str, str], kind: str) -> socket.socket:
    """Open SPEC as KIND (tcp or udp) the way the real helper does; fail like it on errors."""
    family = socket.AF_INET6 if spec["family"] == "inet6" else socket.AF_INET
    stream = kind == "tcp"
    step = "socket"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
        step = "setsockopt"
        if stream:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if "v6only" in spec:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(spec["v6only"]))
        step = "bind"
        sock.bind((spec["addr"], int(spec["port"])))
        if stream:
            step = "listen"
            sock.listen(int(spec.get("backlog", "128")))
    except OSError as error:
        fail(index, step, error.errno or 0, f"{step}() failed")
    return sock


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    """The extra arguments before ``v1``, and the specs after it."""
    if "v1" not in argv:
        fail(0, "parse", 22, "no protocol version: this helper speaks v1")
    at = argv.index("v1")
    return argv[:at], argv[at + 1 :]


def main() -> None:
    mode = os.environ.get("FAKE_HELPER_MODE", "ok")
    log = os.environ.get("FAKE_HELPER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(sys.argv[1:]) + "\n")
    if mode not in MODES:
        fail(0, "setup", 22, f"unknown FAKE_HELPER_MODE {mode!r}")
    _, specs = split_argv(sys.argv[1:])
    requests = parse(specs)

    if mode == "hang":
        time.sleep(HANG_SECONDS)
        os._exit(0)
    if mode == "close-and-hang":
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(HANG_SECONDS)
        os._exit(0)
    if mode == "crash":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test directory
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(HANG_SECONDS)
    if mode == "crash-realtime":
        os.kill(os.getpid(), signal.SIGRTMIN + 6)  # its default action ends the process
        time.sleep(HANG_SECONDS)
    if mode.startswith("error-"):
        step = mode[len("error-") :]
        fail(1, step, ERRNOS[step], f"fake {step} failure")
    if mode == "garbage":
        send("Segmentation fault? no: just some text that is not the protocol\n")
        os._exit(0)
    if mode == "sudo-password":
        os.write(2, b"sudo: a password is required\n")
        os._exit(1)
    if mode == "sudo-not-found":
        os.write(2, b"sudo: /usr/local/libexec/procket-twisted/procket-helper: command not found\n")
        os._exit(1)
    if mode == "silent-exit-3":
        os._exit(3)
    if mode == "not-a-socket":
        pipes = [os.pipe() for _ in requests]
        send(f"ok {len(pipes)}\n", [read for read, _ in pipes])
        os._exit(0)
    if mode == "missing-fds":
        send(f"ok {len(requests)}\n")
        os._exit(0)

    sockets = []
    for index, spec in enumerate(requests, 1):
        kind = spec["kind"]
        if mode == "wrong-socket":
            kind = "udp" if kind == "tcp" else "tcp"
        sockets.append(open_socket(index, spec, kind))
    if mode == "wrong-count":
        sockets.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    send(f"ok {len(sockets)}\n", [sock.fileno() for sock in sockets])
    if mode == "ok-then-hang":
        time.sleep(HANG_SECONDS)
    os._exit(0)


if __name__ == "__main__":
    main()
