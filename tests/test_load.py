"""
A load test of the real setuid helper (issue 4): 20 unprivileged processes asking at once for 500
privileged sockets in all, some of them on purpose for the same port, through the plain client.
Under that load every call must end in a socket or a typed error, and nothing may be left behind:
no helper process, no zombie, no fd.
"""

from __future__ import annotations

import time
from typing import Any, Counter, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    LEAK_PROBES_SOURCE,
    free_port,
    install_prefix,
    process_users,
    run_unprivileged,
    skip_unless_privileged,
)
from .test_security_rules import helper_processes

WORKERS = 20
SOCKETS_PER_WORKER = 25
#: How many distinct privileged ports the workers share: fewer (TCP and UDP) slots than requests,
#: so that workers collide with each other.
PORTS = 60

#: One worker, run as the test user: waits for the driver's "go" on its stdin, then asks for its
#: 25 sockets in 10 listen() calls and 3 listen_many() calls of 5, keeping every socket it gets
#: until the end (so that others collide with it), and reports each call's outcome. The first
#: batch asks twice for one TCP port, a collision within one helper run. It runs without
#: support.PRELUDE, so it brings support's leak probes (``open_fds``, ``children``) itself.
WORKER = (
    """
import json, os, socket, stat, sys
from procket_twisted import ProcketError, SocketRequest, listen, listen_many

"""
    + LEAK_PROBES_SOURCE
    + """
worker, helper, ports = json.loads(sys.argv[1])
baseline = open_fds()
sys.stdin.readline()  # the driver's go

def port(number):
    return ports[(worker * 7 + number * 11) % len(ports)]

def kind(number):
    return "udp" if (worker + number) % 3 == 0 else "tcp"

calls = [[(port(number), kind(number))] for number in range(10)]
for batch in range(3):
    calls.append([(port(10 + batch * 5 + item), kind(10 + batch * 5 + item)) for item in range(5)])
calls[10][1] = (calls[10][0][0], "tcp")
calls[10][0] = (calls[10][0][0], "tcp")

held, outcomes, bad = [], [], []
for number, wanted in enumerate(calls):
    try:
        if number < 10:
            (port_number, protocol), = wanted
            sockets = [listen(port_number, protocol, "127.0.0.1", progname=helper,
                              direct=False, timeout=20)]
        else:
            requests = [SocketRequest(p, k, ip="127.0.0.1") for p, k in wanted]
            sockets = listen_many(requests, progname=helper, direct=False, timeout=20)
        for sock, (port_number, protocol) in zip(sockets, wanted):
            info = os.fstat(sock.fileno())
            expected_type = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
            if (not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid()
                    or sock.getsockname() != ("127.0.0.1", port_number)
                    or sock.type != expected_type):
                bad.append([number, info.st_uid, sock.getsockname(), int(sock.type)])
        held.extend(sockets)
        outcomes.append({"call": number, "sockets": len(wanted), "kind": "ok"})
    except ProcketError as error:
        outcomes.append({"call": number, "sockets": len(wanted),
                         "kind": f"{type(error).__name__} {error.errno} {error.step}"})
    except Exception as error:
        outcomes.append({"call": number, "sockets": len(wanted),
                         "kind": f"untyped {type(error).__name__}: {error}"})
for sock in held:
    sock.close()
print(json.dumps({"outcomes": outcomes, "bad sockets": bad, "held": len(held),
                  "fds back": open_fds() == baseline, "children": children()}))
"""
)

#: The driver, run as the test user after support.PRELUDE: starts the workers, lets them all go at
#: once, and reports what each said, and its own children once all have been reaped.
DRIVER = """
import subprocess, time
workers = []
for worker in range(WORKERS):
    arguments = json.dumps([worker, HELPER, PORT_LIST])
    workers.append(subprocess.Popen([sys.executable, "-c", WORKER, arguments],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
time.sleep(0.5)  # let every interpreter start before any asks
started = time.monotonic()
for process in workers:
    process.stdin.write("go\\n")
    process.stdin.close()
    process.stdin = None  # communicate() would flush it
reports = []
for process in workers:
    output, errors = process.communicate(timeout=120)
    lines = output.strip().splitlines()
    if process.returncode != 0 or not lines:
        reports.append({"failed": process.returncode, "stderr": errors[-2000:]})
    else:
        reports.append(json.loads(lines[-1]))
report({"reports": reports, "seconds": time.monotonic() - started, "children": children()})
"""


class LoadTests(SynchronousTestCase):
    """Many unprivileged callers at once against one setuid helper."""

    maxDiff = None

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.ports: List[int] = []
        while len(self.ports) < PORTS:
            port = free_port()
            if port not in self.ports:
                self.ports.append(port)

    def test_twenty_callers_five_hundred_sockets(self) -> None:
        """
        20 processes of the test user ask at once for 25 privileged sockets each (500 in all),
        in 260 helper runs (listen for some, listen_many for others, direct=False), on 60 ports
        shared so that they collide with each other and, once, within one request. Every call
        ends in its sockets (each a socket of the right type, bound to the right port, owned by
        the test user) or in a typed ProcketError; the only error is SocketError EADDRINUSE, from
        the bind step or, when two helpers bound the same port at the same moment (both sockets
        have SO_REUSEADDR, so both binds succeed), from the listen step of the one that listens
        second; there are both successes and such errors. Afterwards each worker has
        no child and exactly the fds it started with, the driver has no child (no zombie), and no
        process anywhere runs the helper.
        """
        code = (
            f"WORKERS = {WORKERS}\nHELPER = {self.prefix.helper!r}\n"
            f"PORT_LIST = {self.ports!r}\nWORKER = {WORKER!r}\n" + DRIVER
        )
        started = time.monotonic()
        result: Dict[str, Any] = run_unprivileged(self, code, timeout=180)
        elapsed = time.monotonic() - started
        reports: List[Dict[str, Any]] = result["reports"]
        failed = [report for report in reports if "failed" in report]
        self.assertEqual(failed, [])
        kinds: Counter[str] = Counter()
        sockets_asked = 0
        for report in reports:
            for outcome in report["outcomes"]:
                kinds[outcome["kind"]] += 1
                sockets_asked += outcome["sockets"]
        summary = f"{dict(kinds)} in {result['seconds']:.1f} s ({elapsed:.1f} s in all)"
        self.assertEqual(sockets_asked, WORKERS * SOCKETS_PER_WORKER, summary)
        self.assertEqual(sum(kinds.values()), WORKERS * 13, summary)
        self.assertIn("ok", kinds, summary)
        self.assertIn("SocketError 98 bind", kinds, summary)
        self.assertLessEqual(
            set(kinds), {"ok", "SocketError 98 bind", "SocketError 98 listen"}, summary
        )
        leftovers = [
            (report["bad sockets"], report["fds back"], report["children"]) for report in reports
        ]
        self.assertEqual(leftovers, [([], True, [])] * WORKERS, summary)
        self.assertEqual(result["children"], [], summary)
        self.assertEqual(helper_processes(self.prefix.helper), [])
        self.assertEqual(process_users(self.prefix.helper), {})
        self.assertLess(result["seconds"], 60, summary)
