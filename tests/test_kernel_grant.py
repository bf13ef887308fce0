"""
Kernel-enforced grants: ``procket-grant`` compiles the policy's tcp and
udp rules into cgroup BPF bind hooks, and these tests prove that the kernel then decides as the
helper does.

The differential proof (`DifferentialTests`): for a corpus of policies (written here to cover every
key and every case the kernel cannot see, and every policy of the fuzzers' corpora that parses) and
requests (tcp and udp; IPv4, IPv6, wildcards, ``::`` dual-stack, IPv4-mapped; privileged ports), as
several users, the kernel's decision through the programs, observed by a real ``bind()`` by that
user inside a test cgroup the programs are attached to (EACCES: not granted; success: granted),
equals the helper's decision (its ``check`` request, run as the same user) wherever the kernel
sees what the helper reads, and differs only as ``procket_twisted/grant/compile.c`` documents:
the program never grants what the helper denies, and where it refuses what the helper allows, the
helper's own decision on the documented fail-closed reading of the policy (`documented_policy`,
written here independently of the C code) refuses it too.

Every privileged test runs in its own world: procket-grant is the one built with the package
(from the helper's own policy files); a private cgroup v2 directory is made under the hierarchy's mount (never the root cgroup:
nothing outside a test is ever granted anything); the links are pinned in a private bpffs that the
tool mounts on a temporary directory; the binding processes run in private network namespaces
(every port is free there, and ``net.ipv4.ip_unprivileged_port_start`` has its default, 1024),
moved into the test cgroup before they create any socket (a socket belongs to the cgroup it was
created in).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.trial.unittest import SynchronousTestCase

from procket_twisted._admin.helper_build import compile_grant
from procket_twisted._admin.install import InstallError
from procket_twisted._admin.kernel_grant import grant_tool

from .support import (
    TEST_GID,
    TEST_UID,
    Prefix,
    install_prefix,
    run_command_unprivileged,
    skip_unless_privileged,
)

TESTS = os.path.dirname(os.path.abspath(__file__))
#: A directory of procket-grant's sources (``procket_twisted/grant``) to build instead of the
#: installed package's or the checkout's.
SOURCE_VARIABLE = "PROCKET_GRANT_SOURCE"
#: procket-grant's exit statuses (the top of grant/main.c).
EXIT_POLICY, EXIT_ABSENT = 2, 4


# ---- building and running procket-grant ------------------------------------------------------


def grant_binary(testcase: unittest.TestCase) -> str:
    """
    The procket-grant to test: the one built with the installed package, or, with
    C{$PROCKET_GRANT_SOURCE} (a directory of procket-grant's sources, the helper's beside it),
    one built from there with the package's own build (L{compile_grant}).
    """
    source = os.environ.get(SOURCE_VARIABLE)
    if not source:
        try:
            return grant_tool()
        except InstallError as error:
            testcase.fail(str(error))
    key = os.path.abspath(source)
    if key not in _BUILT:
        work = tempfile.mkdtemp(prefix="procket-grant-build-")
        atexit.register(shutil.rmtree, work, True)
        os.chmod(work, 0o755)
        output = os.path.join(work, "procket-grant")
        helper = os.path.join(os.path.dirname(key), "helper")
        try:
            compile_grant(output, key, helper)
        except subprocess.CalledProcessError as error:
            testcase.fail(f"procket-grant does not build: {error}")
        _BUILT[key] = output
    return _BUILT[key]


_BUILT: Dict[str, str] = {}


def run_tool(binary: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *arguments], capture_output=True, text=True, errors="replace",
                          timeout=120)  # fmt: skip


def cgroup2_mount() -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (the first cgroup2 line of mountinfo)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            before, _, after = line.partition(" - ")
            if after.split(" ", 1)[0] == "cgroup2":
                point = before.split(" ")[4]
                return re.sub(r"\\([0-3][0-7][0-7])", lambda m: chr(int(m.group(1), 8)), point)
    return None


# ---- the policy, as the kernel can see it: the documented reading, written independently -------

#: Options any process may set itself (a rule without options= grants them).
UNPRIVILEGED_OPTIONS = frozenset({"v6only", "reuseport", "freebind"})
#: Options that need CAP_NET_ADMIN and that a bind hook cannot see.
UNSEEN_PRIVILEGED = frozenset({"transparent", "rcvbuf", "sndbuf"})


def unseen_free(family: str) -> frozenset:
    """The options a bind hook cannot see that any process may set (v6only: inet6 only)."""
    return UNPRIVILEGED_OPTIONS if family == "inet6" else UNPRIVILEGED_OPTIONS - {"v6only"}


@dataclass
class Rule:
    line: int
    allow: bool
    conditions: Dict[str, str]


def policy_rules(text: str) -> List[Rule]:
    """The rules of a policy that parses, split as policy.c splits them."""
    rules = []
    for number, line in enumerate(text.split("\n"), 1):
        words = []
        for word in re.split(r"[ \t\r]", line):
            if word.startswith("#"):
                break
            if word:
                words.append(word)
        if words:
            conditions = dict(word.split("=", 1) for word in words[1:])
            rules.append(Rule(number, words[0] == "allow", conditions))
    return rules


def documented_rule(rule: Rule, family: str) -> Tuple[str, Optional[Dict[str, str]]]:
    """
    What RULE is in the program for sockets of FAMILY ("inet" or "inet6", the request's), as
    compile.c documents it: (its fate, as ``procket-grant compile`` names it; the conditions that
    hold it, in the helper's words, to be decided for a caller whose only group is its primary
    one; None when it matches no socket the program grants).
    """
    conditions = dict(rule.conditions)
    kinds = set(conditions.get("kind", "tcp,udp").split(",")) & {"tcp", "udp"}
    if not kinds or "proto" in conditions or "ethertype" in conditions:
        return "ignored", conditions  # the helper matches no tcp or udp socket with it either
    if rule.allow:
        granted = set(conditions["options"].split(",")) if "options" in conditions else set()
        granted = granted or set(UNPRIVILEGED_OPTIONS)
        if "device" in conditions or unseen_free(family) - granted:
            return "fallback", None  # the program cannot evaluate it: it matches nothing
        return ("narrowed" if "group" in conditions else "exact"), conditions
    never = "device" in conditions or "mark" in conditions or "priority" in conditions
    widened = False
    if "options" in conditions:
        if set(conditions["options"].split(",")) & (unseen_free(family) | UNSEEN_PRIVILEGED):
            del conditions["options"]  # matched as if the socket asked for it
            widened = True
        else:
            never = True  # only options no granted socket has
    for key in ("rcvbuf", "sndbuf", "group"):
        if key in conditions:
            del conditions[key]  # not visible: matched as if it held
            widened = True
    if never:
        return "exact", None
    return ("fail-closed" if widened else "exact"), conditions


def documented_policy(text: str, family: str) -> str:
    """TEXT as the program reads it for sockets of FAMILY, in the helper's grammar, line for line."""
    lines = [""] * len(text.split("\n"))
    for rule in policy_rules(text):
        _, conditions = documented_rule(rule, family)
        if conditions is not None:
            words = ["allow" if rule.allow else "deny"]
            words += [f"{key}={value}" for key, value in conditions.items()]
            lines[rule.line - 1] = " ".join(words)
    return "\n".join(lines)


def instructions(output: str) -> List[Tuple[int, int]]:
    """(code, offset) of every instruction ``procket-grant compile`` printed."""
    found = re.findall(r"^ +\d+  ([0-9a-f]{2}) [0-9a-f] [0-9a-f] +(-?\d+) ", output, re.MULTILINE)
    return [(int(code, 16), int(offset)) for code, offset in found]


def reported_fates(output: str) -> Dict[Tuple[int, str], str]:
    """``procket-grant compile``'s fate of each rule, by (line, "inet" or "inet6")."""
    fates = {}
    line = 0
    for text in output.splitlines():
        rule = re.match(r"rule (\d+): ", text)
        if rule:
            line = int(rule.group(1))
        fate = re.match(r"  (inet4|inet6) ([a-z-]+)", text)
        if fate and line:
            fates[(line, "inet" if fate.group(1) == "inet4" else "inet6")] = fate.group(2)
    return fates


# ---- the corpus --------------------------------------------------------------------------------

#: (name, policy, whether some decision must differ from the helper's, as documented)
HAND_WRITTEN: List[Tuple[str, str, bool]] = [
    ("user", "allow user=65534 port=81\n", False),
    ("allow group: primary only", "allow group=33 port=82\n", True),
    ("deny group: every group", "deny group=100 port=83\nallow kind=tcp,udp\n", True),
    ("kind", "allow kind=tcp port=84\nallow kind=udp user=65534\n", False),
    ("family inet6: dual-stack needs inet", "allow family=inet6\n", False),
    ("dual-stack, both families", "allow family=inet6\nallow family=inet port=85\n", False),
    ("deny a host denies its wildcards", "deny addr=127.0.0.1 port=86\nallow\n", False),
    ("allow prefixes", "allow addr=127.0.0.0/8,::1\n", False),
    ("allow wildcards", "allow addr=0.0.0.0/0 port=1-500\nallow addr=::/0 port=300-1023\n", False),
    ("mapped prefix", "allow addr=::ffff:127.0.0.0/104,fd00::/8\n", False),
    ("prefix edges", "allow addr=127.0.0.0/31,10.1.2.0/31,fd00::2/127,2001:db9::/32,::/1 port=103\n"
     "deny addr=192.168.1.77/31,2001:db8::/127 port=104\nallow port=104\n", False),
    ("deny prefixes", "deny addr=10.0.0.0/8,2001:db8::/33 port=87,88\nallow\n", False),
    ("allow device: falls back", "allow device=lo\nallow port=89\n", False),
    ("deny device: no granted socket", "deny device=lo port=90\nallow\n", False),
    ("allow options without the unseen ones", "allow options=mark port=91\n", True),
    ("allow options with the unseen ones",
     "allow options=v6only,reuseport,freebind,mark port=92\n", False),
    ("allow options without v6only", "allow options=reuseport,freebind port=93\n", True),
    ("deny an unseen option", "deny options=transparent port=94\nallow\n", True),
    ("deny a free unseen option", "deny options=reuseport,mark port=95\nallow\n", True),
    ("deny a seen option", "deny options=mark,priority port=96\nallow\n", False),
    ("deny v6only on inet", "deny options=v6only port=97\nallow\n", True),
    ("deny an unseen bound", "deny rcvbuf=1-100 port=98\nallow\n", True),
    ("deny a seen bound", "deny mark=1-5 port=99\ndeny priority=0-6 port=99\nallow\n", False),
    ("allow bounds", "allow options=priority,v6only,reuseport,freebind priority=0-3 port=100\n",
     False),
    ("other kinds only", "allow kind=raw proto=1\nallow kind=packet ethertype=0x806\n"
     "allow kind=tun device=tun0\nallow kind=tcp proto=6\n", False),
    ("order", "allow user=65534,65533 port=1-200 addr=127.0.0.1,::1\ndeny user=65533\n"
     "allow group=65534\nallow user=1000 group=1000 kind=udp family=inet,inet6 port=53,67-68\n",
     False),
    ("deny everything", "deny\nallow\n", False),
    ("dual-stack, inet denied", "deny port=101 family=inet\nallow port=101\n", False),
    ("comments", "# a comment\n   \n\tallow   port=102   # the rest\n", False),
    ("nothing", "", False),
]  # fmt: skip


def corpus_texts() -> List[Tuple[str, bytes]]:
    """
    The fuzzers' policies (fuzz/corpus/policy, and the policy before the NUL of each
    fuzz/corpus/decision input), without repeats; each that lacks a final newline also with one.
    """
    root = os.path.join(os.path.dirname(TESTS), "fuzz", "corpus")
    found: Dict[bytes, str] = {}
    for directory in ("policy", "decision"):
        path = os.path.join(root, directory)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as stream:
                data = stream.read()
            if directory == "decision":
                if b"\0" not in data:
                    continue
                data = data.split(b"\0", 1)[0]
            for variant, label in ((data, ""), (data + b"\n", "+newline")):
                if label and data.endswith(b"\n"):
                    continue
                found.setdefault(variant, f"{directory}/{name}{label}")
    return [(name, data) for data, name in found.items()]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    groups: Tuple[int, ...] = ()
    setpriv_options: Tuple[str, ...] = ()

    def setpriv(self) -> List[str]:
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", groups,
                *self.setpriv_options, "--"]  # fmt: skip


NOBODY = User("nobody", 65534, 65534)
#: uid 1000 and groups 33, 100, 4000 (supplementary) are named by the fuzzers' policies.
ALICE = User("alice", 1000, 1000, (33, 100, 4000))
#: group 33 as the primary group.
BOB = User("bob", 65533, 33)
ROOT = User("root", 0, 0)
#: Root without CAP_NET_BIND_SERVICE (not in its bounding set, so never in its permitted set).
CAPLESS_ROOT = User("root without the capability", 0, 0, (), ("--bounding-set=-net_bind_service",))
USERS = (NOBODY, ALICE, BOB)


@dataclass(frozen=True)
class Bind:
    kind: str
    family: str
    address: str
    port: int
    options: Tuple[Tuple[str, Any], ...] = ()

    def spec(self) -> str:
        """The helper's argument for the same socket."""
        extra = "".join(f",{name}={value}" for name, value in self.options)
        return f"kind={self.kind},family={self.family},addr={self.address},port={self.port}{extra}"

    def message(self) -> List[Any]:
        return [self.kind, self.family, self.address, self.port, list(self.options)]


#: Addresses every binder's namespace has (`NAMESPACE_SETUP`), by family.
ADDRESSES = {
    "inet": ("127.0.0.1", "127.0.0.2", "0.0.0.0", "10.1.2.3", "192.168.1.76"),
    "inet6": ("::1", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "fd00::1", "2001:db8::1"),
}
NAMESPACE_SETUP = (
    "ip link set lo up && ip addr add 10.1.2.3/32 dev lo && ip addr add 192.168.1.76/32 dev lo"
    " && ip -6 addr add fd00::1/128 dev lo nodad && ip -6 addr add 2001:db8::1/128 dev lo nodad"
    " && ip -6 addr add fe80::1/64 dev lo nodad"
)


def ports_for(text: str, most: int = 6) -> List[int]:
    """Privileged ports that test TEXT's port= rules: their ends and the ports beside them."""
    found = {80, 1023}
    for match in re.finditer(r"(?:^|[ \t])port=([0-9,-]+)", text, re.MULTILINE):
        for part in match.group(1).split(","):
            for end in (int(value) for value in part.split("-") if value.isdigit()):
                found.update(port for port in (end - 1, end, end + 1) if 1 <= port <= 1023)
    ordered = sorted(found)
    if len(ordered) > most:
        ordered = sorted({ordered[round(i * (len(ordered) - 1) / (most - 1))] for i in range(most)})
    return ordered


def binds_for(text: str) -> List[Bind]:
    return [Bind(kind, family, address, port)
            for port in ports_for(text) for kind in ("tcp", "udp")
            for family, addresses in ADDRESSES.items() for address in addresses]  # fmt: skip


# ---- the processes that bind, and the helper's decisions ---------------------------------------

#: Run as the binding user, in the test cgroup and a private network namespace: it reports its
#: facts, then answers each line of JSON: {"bind": [BIND...]} with each bind's result ("ok" or an
#: errno name), or {"loop": BIND} by binding it again and again until the next line arrives.
BINDER = r"""
import errno, json, os, select, socket, sys
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
KINDS = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0), "udplite": (socket.SOCK_DGRAM, 136)}
def attempt(kind, family, address, port, options):
    kind_type, protocol = KINDS[kind]
    scope = 0
    with socket.socket(FAMILIES[family], kind_type, protocol) as sock:
        for name, value in options:
            if name == "priority":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, value)
            elif name == "bind_to_device":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, value.encode())
            elif name == "v6only":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, value)
            elif name == "reuseport":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, value)
            elif name == "scope":
                scope = socket.if_nametoindex(value)
        target = (address, port) if family == "inet" else (address, port, 0, scope)
        try:
            sock.bind(target)
        except OSError as error:
            return errno.errorcode.get(error.errno, str(error.errno))
    return "ok"
with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as start, open("/proc/self/cgroup") as cgroup:
    facts = {"ids": [os.getuid(), os.getgid(), sorted(os.getgroups())], "start": int(start.read()),
             "cgroup": [line.split(":", 2)[2].strip() for line in cgroup if line.startswith("0::")]}
print(json.dumps(facts), flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    command = json.loads(line)
    if "bind" in command:
        print(json.dumps([attempt(*bind) for bind in command["bind"]]), flush=True)
    else:
        print(json.dumps("looping"), flush=True)
        count, results = 0, {}
        while not select.select([sys.stdin], [], [], 0)[0]:
            result = attempt(*command["loop"])
            results[result] = results.get(result, 0) + 1
            count += 1
        sys.stdin.readline()
        print(json.dumps(results), flush=True)
"""


class Binder:
    """A process of USER in CGROUP (and its own network namespace) that binds what it is told."""

    def __init__(self, testcase: SynchronousTestCase, cgroup: str, user: User) -> None:
        self.testcase = testcase
        self.user = user
        shell = f'{NAMESPACE_SETUP} && echo $$ > "$0/cgroup.procs" && exec "$@"'
        command = ["unshare", "-n", "sh", "-c", shell, cgroup, *user.setpriv(), sys.executable,
                   "-I", "-c", BINDER]  # fmt: skip
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd="/", env=environment,
        )  # fmt: skip
        testcase.addCleanup(self.close)
        self.facts = self.read()
        relative = "/" + os.path.relpath(cgroup, cgroup2_mount() or "/")
        expected = {"ids": [user.uid, user.gid, sorted(user.groups)], "start": 1024,
                    "cgroup": [relative]}  # fmt: skip
        testcase.assertEqual(self.facts, expected, "the binder is not who and where it should be")

    def read(self, timeout: float = 120) -> Any:
        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            self.testcase.fail(f"binder {self.user.name} does not answer")
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            self.testcase.fail(f"binder {self.user.name} died: {self.process.stderr.read()}")
        return json.loads(line)

    def send(self, value: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(value) + "\n")
        self.process.stdin.flush()

    def bind(self, binds: Sequence[Bind]) -> List[str]:
        """Each bind's result: "ok" or the errno's name."""
        self.send({"bind": [bind.message() for bind in binds]})
        return list(self.read())

    def granted(self, binds: Sequence[Bind]) -> List[bool]:
        """Whether the kernel let each bind pass its privilege check (EACCES: it did not)."""
        results = self.bind(binds)
        for bind, result in zip(binds, results):
            if result not in ("ok", "EADDRINUSE", "EACCES"):  # EPERM: a program returned 0
                self.testcase.fail(f"{self.user.name}: {bind.spec()}: {result}")
        return [result != "EACCES" for result in results]

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


#: The bpf(2) system call's number, where these tests know it.
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}


def bpf_obj_get(number: int, path: str) -> int:
    """A descriptor of the object pinned at PATH (BPF_OBJ_GET)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(128)  # union bpf_attr: pathname, then bpf_fd, file_flags
    ctypes.c_uint64.from_buffer(attr, 0).value = ctypes.addressof(name)
    fd = libc.syscall(ctypes.c_long(number), ctypes.c_int(7), attr, ctypes.c_uint(len(attr)))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"BPF_OBJ_GET {path}")
    return int(fd)


def write_policy(prefix: Prefix, text: bytes) -> None:
    """The installed helper's policy: exactly TEXT, root's, mode 644."""
    with open(prefix.policy, "wb") as stream:
        stream.write(text)
    os.chown(prefix.policy, 0, 0)
    os.chmod(prefix.policy, 0o644)


def helper_check(prefix: Prefix, user: User, specs: Sequence[str]) -> bytes:
    """The installed helper's reply to ``v1 check SPECS...``, run as USER."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        with theirs:
            subprocess.run(
                [*user.setpriv(), prefix.helper, "v1", "check", *specs], stdin=theirs.fileno(),
                capture_output=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"},
            )  # fmt: skip
        ours.settimeout(10)
        return ours.recv(1 << 20)


def helper_allows(testcase: SynchronousTestCase, prefix: Prefix, user: User,
                  binds: Sequence[Bind]) -> List[bool]:  # fmt: skip
    """The helper's decision for each of BINDS, asked by USER."""
    decisions: List[bool] = []
    for start in range(0, len(binds), 250):
        chunk = binds[start : start + 250]
        reply = helper_check(prefix, user, [bind.spec() for bind in chunk]).decode()
        words = reply.split()
        if words[:2] != ["check", str(len(chunk))]:
            testcase.fail(f"the helper's check as {user.name} failed: {reply!r}")
        decisions += [word.startswith("allow:") for word in words[2 : 2 + len(chunk)]]
    return decisions


# ---- the test cases -----------------------------------------------------------------------------


class CompileTests(SynchronousTestCase):
    """``procket-grant compile``: no privilege, nothing loaded."""

    def setUp(self) -> None:
        self.binary = grant_binary(self)

    def compile(self, text: bytes) -> subprocess.CompletedProcess:
        policy = tempfile.NamedTemporaryFile(prefix="procket-grant-policy-", delete=False)
        self.addCleanup(os.unlink, policy.name)
        with policy:
            policy.write(text)
        return run_tool(self.binary, "compile", policy.name)

    def test_reported_fates_are_the_documented_ones(self) -> None:
        """
        For every rule of every policy of the corpus that parses, what ``compile`` says it became
        in each program (exact, narrowed, fail-closed, fallback, ignored) is what the documented
        reading (`documented_rule`, written independently of compile.c) says: the report an
        administrator reads is the meaning the differential test proves.
        """
        checked = 0
        for name, data in [(n, t.encode()) for n, t, _ in HAND_WRITTEN] + corpus_texts():
            result = self.compile(data)
            if result.returncode == EXIT_POLICY:
                continue
            self.assertEqual(result.returncode, 0, (name, result.stderr))
            text = data.decode("latin-1")
            expected = {(rule.line, family): documented_rule(rule, family)[0]
                        for rule in policy_rules(text) for family in ("inet", "inet6")}  # fmt: skip
            self.assertEqual(reported_fates(result.stdout), expected, name)
            checked += len(expected)
        self.assertGreater(checked, 400)

    def test_programs_return_only_one_or_three(self) -> None:
        """
        Every immediate the programs put in r0 is 1 (the kernel's own checks decide) or 3
        (granted): the return value 0, which would refuse a bind, is never written (the kernel
        tests prove no bind ever fails with EPERM, what 0 would give).
        """
        for name, data in [(n, t.encode()) for n, t, _ in HAND_WRITTEN]:
            result = self.compile(data)
            self.assertEqual(result.returncode, 0, (name, result.stderr))
            programs = re.findall(r"^program (inet4|inet6) \S+ (grant[46]_[0-9a-f]{8}) (\d+) "
                                  r"instructions$", result.stdout, re.MULTILINE)  # fmt: skip
            self.assertEqual([family for family, _, _ in programs], ["inet4", "inet6"], name)
            immediates = re.findall(r"^ +\d+  b7 0 0 +0 +(-?\d+)  r0 = ", result.stdout,
                                    re.MULTILINE)  # fmt: skip
            self.assertEqual(set(immediates), {"1", "3"}, name)
            exits = re.findall(r"  exit$", result.stdout, re.MULTILINE)
            self.assertEqual(len(exits), 4, name)  # per program: the prologue's and the end's

    def test_policy_error_names_its_line(self) -> None:
        """A policy the helper refuses is refused, with the line and the helper's reason."""
        result = self.compile(b"allow kind=tcp\nallow port=80x\n")
        self.assertEqual(result.returncode, EXIT_POLICY)
        self.assertIn("line 2: bad value '80x' for 'port'", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_largest_policy_fits(self) -> None:
        """
        A policy file as large as the helper reads (64 KiB: 256 rules, each with as many users,
        groups, ports and IPv4 and IPv6 networks as its 512 bytes hold) compiles, with every jump
        within its rule (a 16-bit offset), into programs far below the kernel's limit.
        """
        rule = (
            "{} user="
            + ",".join(str(1000 + i) for i in range(8))
            + " group="
            + ",".join(str(2000 + i) for i in range(8))
            + " port="
            + ",".join(f"{i}-{i + 1}" for i in range(1, 16, 2))
            + " addr="
            + ",".join(f"{i:x}::1/127" if i % 2 else f"10.{i}.0.0/9" for i in range(1, 11))
        )
        text = "".join(rule.format("allow" if i % 2 else "deny") + "\n" for i in range(256))
        self.assertLess(len(text), 65536)
        result = self.compile(text.encode())  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        sizes = [int(size) for size in re.findall(r"^program \S+ \S+ \S+ (\d+) instructions$",
                                                  result.stdout, re.MULTILINE)]  # fmt: skip
        self.assertEqual(len(sizes), 2)
        self.assertLess(max(sizes), 200_000)
        offsets = [offset for code, offset in instructions(result.stdout)
                   if code & 0x07 in (0x05, 0x06) and code not in (0x85, 0x95)]  # fmt: skip
        self.assertGreater(len(offsets), 5000)
        self.assertLess(max(offsets), 600)  # a rule's code is at most 576 instructions


class KernelTestCase(SynchronousTestCase):
    """A private cgroup, a private bpffs, procket-grant; nothing outside them is touched."""

    maxDiff = None

    def setUp(self) -> None:
        skip_unless_privileged(self)
        for tool in ("unshare", "ip", "umount"):
            if shutil.which(tool) is None:
                self.fail(f"{tool} is needed")
        mount = cgroup2_mount()
        if mount is None:
            self.fail("no cgroup v2 hierarchy is mounted")
        self.binary = grant_binary(self)
        self.cgroup = tempfile.mkdtemp(prefix="procket-grant-test-", dir=mount)
        self.addCleanup(self.remove_cgroup)
        self.bpffs = tempfile.mkdtemp(prefix="procket-grant-bpffs-")
        self.addCleanup(self.remove_bpffs)
        self.policies = tempfile.mkdtemp(prefix="procket-grant-policies-")
        self.addCleanup(shutil.rmtree, self.policies, True)

    def remove_cgroup(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                os.rmdir(self.cgroup)
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def remove_bpffs(self) -> None:
        run_tool(self.binary, "remove", "--cgroup", self.cgroup, "--bpffs", self.bpffs)
        if os.path.ismount(self.bpffs):
            subprocess.run(["umount", self.bpffs], check=True)
        os.rmdir(self.bpffs)

    def tool(self, *arguments: str) -> subprocess.CompletedProcess:
        return run_tool(self.binary, *arguments, "--cgroup", self.cgroup, "--bpffs", self.bpffs)

    def policy_file(self, text: str, mode: int = 0o644) -> str:
        """A policy file of TEXT (each character one byte: latin-1), root's, MODE."""
        handle, path = tempfile.mkstemp(dir=self.policies)
        with os.fdopen(handle, "wb") as stream:
            stream.write(text.encode("latin-1"))
        os.chmod(path, mode)
        return path

    def apply(self, text: str) -> subprocess.CompletedProcess:
        """Apply TEXT to the test cgroup; the programs must be the only ones its sockets run."""
        result = self.tool("apply", self.policy_file(text))
        self.assertEqual(result.returncode, 0, result.stderr)
        status = self.status()
        for family in ("inet4", "inet6"):
            link = status[f"{family} link"].split()
            self.assertEqual(status[f"{family} attached"], f"1 {link[2]}", status)
            self.assertEqual(status[f"{family} effective"], f"1 {link[2]}",
                             "another program runs for the test cgroup's binds")  # fmt: skip
        return result

    def status(self, expected_exit: int = 0) -> Dict[str, str]:
        """``status``, as {"inet4 link": "12 program 34 ...", ...}."""
        result = self.tool("status")
        self.assertEqual(result.returncode, expected_exit, result.stdout + result.stderr)
        lines: Dict[str, str] = {}
        for line in result.stdout.splitlines():
            words = line.split(" ", 2)
            if words[0] in ("inet4", "inet6"):
                lines[f"{words[0]} {words[1]}"] = words[2] if len(words) > 2 else ""
            else:
                lines[words[0]] = " ".join(words[1:])
        return lines


class DifferentialTests(KernelTestCase):
    """Item 3: the kernel's decision through the programs is the helper's, by real binds."""

    def test_kernel_decides_as_the_helper(self) -> None:
        """
        For every policy of the corpus that parses (each written here, and the fuzzers'), and
        every bind of `binds_for` (tcp and udp, every address of `ADDRESSES`, privileged ports the
        policy names and others), by nobody, alice (with supplementary groups) and bob (whose
        primary group the corpus names): a real bind by that user in the test cgroup is granted
        exactly when the helper, asked by the same user for the documented reading of the policy
        (`documented_policy`: what the kernel cannot see read as failing closed, the caller's
        groups only its primary one), allows it; never when the helper itself denies it; and
        where the two differ, the policy is one whose difference is documented (and each policy
        written to show a difference shows one). Every bind that fails fails with EACCES, the
        kernel's own refusal: the program never returned 0.
        """
        prefix = install_prefix(self)
        binders = {user: Binder(self, self.cgroup, user) for user in USERS}
        root = Binder(self, self.cgroup, ROOT)
        self.assertEqual(set(root.bind(binds_for(""))), {"ok"}, "the namespace lacks an address")
        corpus = [(name, text, difference) for name, text, difference in HAND_WRITTEN]
        for name, data in corpus_texts():
            if run_tool(self.binary, "compile", self.policy_file(data.decode("latin-1"))
                        ).returncode == 0:  # fmt: skip
                corpus.append((name, data.decode("latin-1"), False))
        problems: List[str] = []
        binds_made = 0
        for name, text, must_differ in corpus:
            self.apply(text)
            binds = binds_for(text)
            differed = False
            readings = {family: documented_policy(text, family) for family in ADDRESSES}
            for user in USERS:
                kernel = binders[user].granted(binds)
                binds_made += len(binds)
                write_policy(prefix, text.encode("latin-1"))
                helper = helper_allows(self, prefix, user, binds)
                documented: Dict[Bind, bool] = {}
                for family, reading in readings.items():
                    subset = [bind for bind in binds if bind.family == family]
                    write_policy(prefix, reading.encode("latin-1"))
                    plain = User(user.name, user.uid, user.gid)  # its primary group only
                    documented.update(zip(subset, helper_allows(self, prefix, plain, subset)))
                for bind, granted, allowed in zip(binds, kernel, helper):
                    where = f"{name}: {user.name} {bind.spec()}"
                    if granted and not allowed:
                        problems.append(f"{where}: granted by the kernel, denied by the helper")
                    if granted != documented[bind]:
                        problems.append(f"{where}: kernel {granted}, documented {documented[bind]}")
                    differed = differed or granted != allowed
            if must_differ and not differed:
                problems.append(f"{name}: no decision shows the documented difference")
            if not must_differ and differed and any(name == n for n, _, _ in HAND_WRITTEN):
                problems.append(f"{name}: a decision differs from the helper's")
        self.assertEqual(problems[:30], [], f"{len(problems)} problems")
        self.assertGreater(len(corpus), len(HAND_WRITTEN) + 20)
        self.assertGreater(binds_made, 5000)

    def test_policy_errors_are_the_helpers(self) -> None:
        """
        procket-grant reads the policy with the helper's own parser: every text of the corpus
        (the fuzzers' broken ones included) is refused by ``compile`` exactly when the helper
        refuses it, with the helper's own reason (its line number included).
        """
        prefix = install_prefix(self)
        hand = [(name, text.encode()) for name, text, _ in HAND_WRITTEN]
        refused = 0
        for name, data in hand + corpus_texts():
            path = os.path.join(self.policies, "policy")
            with open(path, "wb") as stream:
                stream.write(data)
            result = subprocess.run([self.binary, "compile", path], capture_output=True,
                                    timeout=60)  # fmt: skip
            write_policy(prefix, data)
            reply = helper_check(prefix, NOBODY, ["kind=tcp,family=inet,addr=127.0.0.1,port=80"])
            if reply.startswith(b"check "):
                self.assertEqual(result.returncode, 0, (name, result.stderr))
                continue
            refused += 1
            self.assertEqual(result.returncode, EXIT_POLICY, (name, result.stderr, reply))
            helper_reason = reply.split(b"so nothing is allowed: ", 1)[1].rstrip(b"\n")
            ours = result.stderr.split(b"so nothing was changed: ", 1)[1].rstrip(b"\n")
            printable = bytes(byte if 0x20 <= byte <= 0x7E else ord("?") for byte in ours)
            self.assertEqual(printable, helper_reason, name)
        self.assertGreater(refused, 50)


class BoundaryTests(KernelTestCase):
    """The program only ever grants: it never stands in the way of a bind the kernel allows."""

    def test_unprivileged_and_root_binds_are_never_refused(self) -> None:
        """
        Whatever the policy says (deny everything; grant one user one port), every bind of an
        unprivileged port (1024 and up, and 0, the kernel's choice) succeeds for nobody, and
        every bind of a privileged one succeeds for root, tcp, udp and udplite alike: the program
        never returns 0 and only ever lets a privileged check pass.
        """
        nobody = Binder(self, self.cgroup, NOBODY)
        root = Binder(self, self.cgroup, ROOT)
        for policy in ("deny\n", "deny user=65534\nallow user=1 port=80\n"):
            self.apply(policy)
            free = [
                Bind(kind, family, address, port)
                for port in (0, 1024, 5000, 65535)
                for kind in ("tcp", "udp", "udplite")
                for family, addresses in ADDRESSES.items()
                for address in addresses
            ]
            self.assertEqual(set(nobody.bind(free)), {"ok"}, policy)
            privileged = [Bind(bind.kind, bind.family, bind.address, port)
                          for bind in free for port in (1, 80, 1023)]  # fmt: skip
            self.assertEqual(set(root.bind(privileged)), {"ok"}, policy)

    def test_what_the_program_never_grants(self) -> None:
        """
        Under ``allow`` (every tcp and udp bind, for everyone), nobody's plain tcp and udp binds
        of a privileged port are granted, and what the program does not grant is refused by the
        kernel as before (EACCES): a udplite socket (neither tcp nor udp); a socket with a
        priority, or bound to a device (the helper grants those only with options=); a link-local
        address (its scope id binds the socket to a device the program cannot see).
        """
        nobody = Binder(self, self.cgroup, NOBODY)
        self.apply("allow\n")
        plain = [Bind("tcp", "inet", "127.0.0.1", 99), Bind("udp", "inet6", "::", 99),
                 Bind("tcp", "inet6", "fd00::1", 99)]  # fmt: skip
        self.assertEqual(nobody.bind(plain), ["ok"] * len(plain))
        never = [
            Bind("udplite", "inet", "127.0.0.1", 99),
            Bind("udplite", "inet6", "::1", 99),
            Bind("tcp", "inet", "127.0.0.1", 99, (("priority", 3),)),
            Bind("udp", "inet6", "::1", 99, (("priority", 1),)),
            Bind("tcp", "inet", "127.0.0.1", 99, (("bind_to_device", "lo"),)),
            Bind("tcp", "inet6", "fe80::1", 99, (("scope", "lo"),)),
        ]
        self.assertEqual(nobody.bind(never), ["EACCES"] * len(never))

    def test_root_is_never_granted(self) -> None:
        """
        The helper refuses root as a caller (root binds privileged ports itself), and so does the
        program: under ``allow``, a process of uid 0 that lacks CAP_NET_BIND_SERVICE is refused
        a privileged port, while nobody is granted it.
        """
        self.apply("allow\n")
        bind = [Bind("tcp", "inet", "127.0.0.1", 80), Bind("udp", "inet6", "::", 80)]
        self.assertEqual(Binder(self, self.cgroup, CAPLESS_ROOT).bind(bind), ["EACCES"] * 2)
        self.assertEqual(Binder(self, self.cgroup, NOBODY).bind(bind), ["ok"] * 2)

    def test_options_it_cannot_see(self) -> None:
        """
        The program cannot see IPV6_V6ONLY: ``::`` is matched as dual-stack even on a v6only
        socket, so ``allow family=inet6`` grants it to the helper (asked for v6only=1) and not
        to the kernel (documented: fail closed). A rule whose options= grant every option the
        program cannot see (v6only, reuseport, freebind) holds a socket that sets one of them.
        """
        prefix = install_prefix(self)
        nobody = Binder(self, self.cgroup, NOBODY)
        v6only = Bind("tcp", "inet6", "::", 120, (("v6only", 1),))
        write_policy(prefix, b"allow family=inet6\n")
        self.assertEqual(helper_allows(self, prefix, NOBODY, [v6only]), [True])
        self.apply("allow family=inet6\n")
        self.assertEqual(nobody.granted([v6only]), [False])
        reuse = Bind("udp", "inet", "127.0.0.1", 121, (("reuseport", 1),))
        policy = "allow options=v6only,reuseport,freebind,mark port=121\n"
        write_policy(prefix, policy.encode())
        self.assertEqual(helper_allows(self, prefix, NOBODY, [reuse]), [True])
        self.apply(policy)
        self.assertEqual(nobody.granted([reuse]), [True])


class LifecycleTests(KernelTestCase):
    """Item 1: apply, replace in one step, remove, status."""

    def links(self) -> Dict[str, Tuple[str, str]]:
        status = self.status()
        return {family: (status[f"{family} link"].split()[0], status[f"{family} link"].split()[2])
                for family in ("inet4", "inet6")}  # fmt: skip

    def test_apply_replaces_in_one_step(self) -> None:
        """
        A second apply replaces each program through the pinned link (BPF_LINK_UPDATE): the
        links are the same, their programs new, one program per hook stays attached, and the
        second policy's decisions hold. The first apply mounted the bpffs it was given; the
        second found it mounted.
        """
        nobody = Binder(self, self.cgroup, NOBODY)
        first = self.apply("allow user=65534 port=100\n")
        self.assertIn(f"mounted a bpffs on {self.bpffs}", first.stdout)
        before = self.links()
        binds = [Bind("tcp", "inet", "127.0.0.1", 100), Bind("tcp", "inet6", "::", 101)]
        self.assertEqual(nobody.granted(binds), [True, False])
        second = self.apply("allow user=65534 port=101\n")
        self.assertNotIn("mounted", second.stdout)
        self.assertIn("inet4 replaced", second.stdout)
        self.assertIn("inet6 replaced", second.stdout)
        after = self.links()
        for family in ("inet4", "inet6"):
            self.assertEqual(after[family][0], before[family][0], "the link was not kept")
            self.assertNotEqual(after[family][1], before[family][1], "the program was not new")
        self.assertEqual(nobody.granted(binds), [False, True])

    def test_no_bind_ever_finds_no_program(self) -> None:
        """
        While nobody binds a port both policies grant, again and again (IPv4 and IPv6), the
        policy is replaced back and forth 20 times: no bind is ever refused, so there was never
        a moment without a program (a detach and attach would leave one).
        """
        first, second = "allow user=65534 port=102,103\n", "allow user=65534 port=102,104\n"
        self.apply(first)
        loops = [Binder(self, self.cgroup, NOBODY) for _ in range(2)]
        for binder, bind in zip(loops, (Bind("tcp", "inet", "127.0.0.1", 102),
                                        Bind("udp", "inet6", "::", 102))):  # fmt: skip
            binder.send({"loop": bind.message()})
            self.assertEqual(binder.read(), "looping")
        for number in range(20):
            self.apply(second if number % 2 == 0 else first)
        for binder in loops:
            binder.send({"stop": True})
            results = binder.read()
            self.assertEqual(set(results), {"ok"}, results)
            self.assertGreater(results["ok"], 20)

    def test_remove_leaves_nothing(self) -> None:
        """
        remove detaches both links and unpins them: no program is attached to the cgroup's bind
        hooks (BPF_PROG_QUERY), none runs for its sockets, the pins are gone, nobody's bind is
        refused again, and a second remove finds nothing (exit 4).
        """
        nobody = Binder(self, self.cgroup, NOBODY)
        self.apply("allow\n")
        bind = [Bind("tcp", "inet", "127.0.0.1", 105)]
        self.assertEqual(nobody.granted(bind), [True])
        pins = self.status()["pins"]
        result = self.tool("remove")
        self.assertEqual(result.returncode, 0, result.stderr)
        status = self.status(EXIT_ABSENT)
        for family in ("inet4", "inet6"):
            self.assertEqual(status[f"{family} link"], "none")
            self.assertEqual(status[f"{family} attached"], "0")
            self.assertEqual(status[f"{family} effective"], "0")
        self.assertEqual(status["state"], "absent")
        self.assertFalse(os.path.exists(pins))
        self.assertEqual(nobody.granted(bind), [False])
        self.assertEqual(self.tool("remove").returncode, EXIT_ABSENT)

    def test_remove_detaches_a_held_link(self) -> None:
        """
        remove detaches the links (BPF_LINK_DETACH), not only unpins them: while this process
        holds a descriptor of a pinned link (as a concurrent status does, for a moment), removing
        it still leaves no program attached and nobody's bind refused.
        """
        number = BPF_SYSCALL.get(os.uname().machine)
        if number is None:
            raise unittest.SkipTest(f"the bpf system call's number on {os.uname().machine}")
        nobody = Binder(self, self.cgroup, NOBODY)
        self.apply("allow\n")
        pin = os.path.join(self.status()["pins"], "inet4")
        held = bpf_obj_get(number, pin)
        self.addCleanup(os.close, held)
        self.assertEqual(self.tool("remove").returncode, 0)
        self.assertEqual(self.status(EXIT_ABSENT)["inet4 attached"], "0")
        self.assertEqual(nobody.granted([Bind("tcp", "inet", "127.0.0.1", 107)]), [False])

    def test_refused_policies_change_nothing(self) -> None:
        """
        A policy file that is not root's alone (mode 666), or that has an error, is refused
        (exit 2, with the line) and leaves the installed programs as they were.
        """
        self.apply("allow user=65534 port=106\n")
        before = self.links()
        writable = self.tool("apply", self.policy_file("allow\n", 0o666))
        self.assertEqual(writable.returncode, EXIT_POLICY)
        self.assertIn("not root's alone", writable.stderr)
        broken = self.tool("apply", self.policy_file("allow\nallow port=1-2-3\n"))
        self.assertEqual(broken.returncode, EXIT_POLICY)
        self.assertIn("line 2:", broken.stderr)
        self.assertEqual(self.links(), before)

    def test_default_cgroup_is_the_hierarchys_root(self) -> None:
        """
        Without --cgroup the tool works on the root of the cgroup v2 hierarchy, found in
        /proc/self/mountinfo (status only: tests never attach anything there).
        """
        result = run_tool(self.binary, "status", "--bpffs", self.bpffs)
        self.assertIn(result.returncode, (0, EXIT_ABSENT, 5), result.stderr)
        self.assertIn(f"cgroup {cgroup2_mount()}\n", result.stdout)


#: Run as root in a new network namespace: lo up, this shell in the test cgroup (so the programs
#: decide its binds), then, as the user, twistd web on $PORT with no helper anywhere and
#: no_new_privs (setuid could not work), curl it, stop it. Prints curl's output and twistd's.
TWISTD_SCRIPT = """
ip link set lo up && echo $$ > "$CGROUP/cgroup.procs" || exit 99
setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups --no-new-privs -- \\
    "$TWISTD" -n --pidfile= web --listen "procket:tcp:$PORT:interface=127.0.0.1" --path "$SITE" \\
    > "$LOG" 2>&1 &
server=$!
served=no
for _ in $(seq 100); do
    if curl -s -m 1 "http://127.0.0.1:$PORT/page.txt" > "$OUT"; then served=yes; break; fi
    kill -0 $server 2>/dev/null || break
    sleep 0.1
done
kill $server 2>/dev/null; wait $server 2>/dev/null
echo "served=$served"
"""


class ClientTests(KernelTestCase):
    """
    Item 4 and how issue 15 is judged: with the grant installed by C{procket-twisted grant}, the
    client binds directly. As nobody, under no_new_privs, with no helper at all, C{twistd web
    --listen procket:tcp:PORT} serves curl, and is refused, saying why, for a port or a user the
    policy does not name.
    """

    def setUp(self) -> None:
        super().setUp()
        for tool in ("curl", "setpriv"):
            if shutil.which(tool) is None:
                self.fail(f"{tool} is needed")
        self.site = tempfile.mkdtemp(prefix="procket-grant-site-")
        self.addCleanup(shutil.rmtree, self.site, True)
        os.chmod(self.site, 0o755)
        with open(os.path.join(self.site, "page.txt"), "w") as page:
            page.write("served through a kernel grant\n")
        os.chmod(os.path.join(self.site, "page.txt"), 0o644)

    def cli(self, *arguments: str) -> subprocess.CompletedProcess:
        """C{procket-twisted ARGUMENTS}, as root."""
        script = os.path.join(os.path.dirname(sys.executable), "procket-twisted")
        return subprocess.run([script, *arguments], capture_output=True, text=True, timeout=120)

    def serve(self, port: int, uid: int, gid: int) -> Tuple[str, str, str]:
        """What twistd on PORT as UID:GID did: (served=yes|no, curl's output, twistd's log)."""
        out = tempfile.NamedTemporaryFile(prefix="procket-grant-curl-", delete=False)
        log = tempfile.NamedTemporaryFile(prefix="procket-grant-twistd-", delete=False)
        for name in (out.name, log.name):
            self.addCleanup(os.unlink, name)
            os.chmod(name, 0o666)
        out.close()
        log.close()
        environment = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/",
            "CGROUP": self.cgroup, "PORT": str(port), "RUN_UID": str(uid), "RUN_GID": str(gid),
            "TWISTD": os.path.join(os.path.dirname(sys.executable), "twistd"),
            "SITE": self.site, "OUT": out.name, "LOG": log.name,
            "PROCKET_HELPER": "/nonexistent/procket-helper",  # no helper at all
        }  # fmt: skip
        finished = subprocess.run(
            ["unshare", "-n", "sh", "-c", TWISTD_SCRIPT], capture_output=True, text=True,
            cwd="/tmp", env=environment, timeout=120,
        )  # fmt: skip
        self.assertNotEqual(finished.returncode, 99, finished.stderr)
        with open(out.name) as page, open(log.name) as output:
            return finished.stdout.strip(), page.read(), output.read()

    def test_twistd_serves_with_no_helper_under_no_new_privs(self) -> None:
        """The grant's user and port are served; another port and another user are refused."""
        port, other = 80, 81
        policy = self.policy_file(f"allow user={TEST_UID} kind=tcp port={port}\n")
        applied = self.cli("grant", "apply", "--policy", policy, "--cgroup", self.cgroup,
                           "--bpffs", self.bpffs)  # fmt: skip
        self.assertEqual(applied.returncode, 0, applied.stdout + applied.stderr)
        served, page, log = self.serve(port, TEST_UID, TEST_GID)
        self.assertEqual((served, page), ("served=yes", "served through a kernel grant\n"), log)
        for refused_port, uid, gid in ((other, TEST_UID, TEST_GID), (port, 65533, 65533)):
            served, page, log = self.serve(refused_port, uid, gid)
            self.assertEqual((served, page), ("served=no", ""), log)
            self.assertIn("the kernel refused to let this process bind it itself", log)

    def test_grant_command(self) -> None:
        """
        C{procket-twisted grant}: compile runs for anyone and shows what each rule becomes;
        apply, status and remove as root; apply refused, with the command to run, when not root.
        """
        policy = self.policy_file(f"allow user={TEST_UID} kind=tcp port=80\n")
        os.chmod(self.policies, 0o755)  # the user reads it to compile it
        compiled = run_command_unprivileged(
            [os.path.join(os.path.dirname(sys.executable), "procket-twisted"), "grant",
             "compile", "--policy", policy], {},
        )  # fmt: skip
        self.assertEqual(compiled.returncode, 0, compiled.stderr)
        self.assertIn("rule 1:", compiled.stdout)
        refused = run_command_unprivileged(
            [os.path.join(os.path.dirname(sys.executable), "procket-twisted"), "grant",
             "apply", "--policy", policy], {},
        )  # fmt: skip
        self.assertEqual(refused.returncode, 1)
        self.assertIn("must run as root", refused.stderr)
        self.assertIn(f"procket-twisted grant apply --policy {policy}", refused.stderr)
        arguments = ["--cgroup", self.cgroup, "--bpffs", self.bpffs]
        self.assertEqual(self.cli("grant", "apply", "--policy", policy, *arguments).returncode, 0)
        status = self.cli("grant", "status", *arguments)
        self.assertIn("state installed", status.stdout)
        self.assertEqual(self.cli("grant", "remove", *arguments).returncode, 0)
        self.assertIn("state absent", self.cli("grant", "status", *arguments).stdout)

    def test_doctor_reports_the_grant(self) -> None:
        """
        doctor, as the granted user in the cgroup with no helper, says the kernel grant lets it
        bind the port itself and exits 0; for a port the grant does not hold, it says none does.
        """
        policy = self.policy_file(f"allow user={TEST_UID} kind=tcp port=80\n")
        arguments = ["--cgroup", self.cgroup, "--bpffs", self.bpffs]
        self.assertEqual(self.cli("grant", "apply", "--policy", policy, *arguments).returncode, 0)
        script = os.path.join(os.path.dirname(sys.executable), "procket-twisted")
        results = {}
        for port in (80, 81):
            shell = (
                'ip link set lo up && echo $$ > "$0/cgroup.procs" && exec setpriv '
                f"--reuid={TEST_UID} --regid={TEST_GID} --clear-groups --no-new-privs -- "
                f'"$1" doctor --port {port}'
            )
            finished = subprocess.run(
                ["unshare", "-n", "sh", "-c", shell, self.cgroup, script], capture_output=True,
                text=True, cwd="/", timeout=120,
                env={"PATH": "/usr/bin:/bin", "PROCKET_HELPER": "/nonexistent/procket-helper"},
            )  # fmt: skip
            results[port] = (finished.returncode, finished.stdout)
        self.assertEqual(results[80][0], 0, results[80][1])
        self.assertIn("kernel grant: this user binds tcp 127.0.0.1 port 80 itself", results[80][1])
        self.assertEqual(results[81][0], 1, results[81][1])
        self.assertIn("kernel grant: none lets this user bind", results[81][1])
