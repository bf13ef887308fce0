"""
The plain, blocking API: privileged sockets for any Python program, no Twisted needed.
"""

from __future__ import annotations

import socket
from typing import Any, Iterable, List, Optional, Sequence, Union

from .errors import ProcketError
from .exchange import MAX_TIMEOUT, Exchange, check_batch, check_timeout
from .kinds import AnyRequest
from .locate import Progname
from .packet import Instruction, PacketRequest
from .raw import RawRequest
from .request import (
    DEFAULT_BACKLOG,
    KERNEL_IDENTITY,
    MAX_BACKLOG,
    MAX_PORT,
    IPAddressLike,
    OpenInetError,
    SocketRequest,
    open_inet,
)
from .spawn import exchange
from .standin import STAND_INS, installed
from .tun import TunDevice, TunRequest

__all__ = [
    "listen",
    "listen_many",
    "open_raw",
    "open_packet",
    "open_tun",
    "DEFAULT_TIMEOUT",
    "check_batch",
    "check_timeout",
    "MAX_TIMEOUT",
]

#: The sockets of listen's short way: IPv4 only.
_TCP4, _UDP4 = KERNEL_IDENTITY["tcp", 4], KERNEL_IDENTITY["udp", 4]
_inet_pton, _AF_INET = socket.inet_pton, socket.AF_INET

#: Seconds to wait for the helper. It answers in well under a millisecond; sudo may take longer.
DEFAULT_TIMEOUT = 5.0


def listen_many(
    requests: Iterable[AnyRequest],
    *,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> List[Any]:
    """
    Open several sockets (or TUN/TAP devices), with at most one helper run for all that need
    privilege.

    @param requests: what to open, 1 to 253 of them: L{SocketRequest} (TCP, UDP), L{RawRequest},
        L{PacketRequest}, L{TunRequest}, in any mix.
    @param progname: the helper command (see L{listen}).
    @param timeout: seconds to wait for the helper before killing it.
    @param direct: open in this process what needs no privilege here (see L{listen}).
    @return: the sockets (and L{TunDevice} objects, for TUN/TAP requests), in the order of
        REQUESTS.
    @raise ProcketError: on any failure; then no socket stays open and no helper is left running.
        C{error.index} is the 1-based position in REQUESTS of the socket that failed (or 0).
    """
    stand_in = installed()
    if stand_in is not None:
        return stand_in(check_batch(requests, timeout))
    batch = Exchange(requests, timeout, direct)
    if not batch.needs_helper:
        return batch.sockets()
    command, argv = batch.helper_command(progname)
    try:
        packets, exit_code = exchange(command, argv, timeout)
    except ProcketError as error:
        raise batch.fail(error) from None
    except BaseException:
        batch.abandon()
        raise
    return batch.finish(command, packets, exit_code)


def listen(
    port: int,
    protocol: str = "tcp",
    ip: IPAddressLike = None,
    *,
    backlog: Optional[int] = None,
    v6only: Optional[bool] = None,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
    **options: Any,
) -> socket.socket:
    """
    A listening TCP socket, or a bound UDP socket, on any port, for an unprivileged process.

    procket's C{listen(Port, Options)}, made Pythonic::

        sock = procket_twisted.listen(80)                      # TCP, every IPv4 address
        sock = procket_twisted.listen(53, "udp", "::1")        # UDP on IPv6 loopback
        sock = procket_twisted.listen(443, ip=(127, 0, 0, 1), backlog=1024)

    @param port: 0-65535.
    @param protocol: C{"tcp"} or C{"udp"}.
    @param ip: the local address: a numeric string, an C{ipaddress} object, or a tuple of 4 (IPv4)
        or 8 (IPv6) numbers; C{None} is every IPv4 address. An IPv6 address gives an IPv6 socket.
    @param backlog: the listen queue for TCP (default 128).
    @param v6only: for IPv6: C{True} IPv6 only, C{False} dual-stack, C{None} system default.
    @param options: socket options set before bind, as L{SocketRequest} takes them:
        C{reuseport}, C{freebind}, C{transparent}, C{bind_to_device}, C{mark}, C{priority},
        C{force_receive_buffer}, C{force_send_buffer}. The privileged ones need a policy rule
        that grants them (C{options=} in the policy).
    @param progname: the command that runs the helper, split into an argv and never given to a
        shell, for example C{"sudo -n /usr/local/libexec/procket-twisted/procket-helper"}.
        Default: C{$PROCKET_HELPER}, then the installed helper.
    @param timeout: seconds to wait for the helper before it is killed.
    @param direct: when this process may bind the address itself (a port at or above
        C{net.ipv4.ip_unprivileged_port_start}, or it holds C{CAP_NET_BIND_SERVICE}), bind it
        here and run no helper. C{False} always asks the helper.
    @return: a blocking C{socket.socket}, owned by this process's user.
    @raise ValueError: for a bad port, protocol, address or option (before anything runs).
    @raise TypeError: for an argument of the wrong type.
    @raise HelperNotFoundError: no helper is installed or the command does not exist.
    @raise HelperNotPrivilegedError: the helper is not setuid root and has no capability, its
        filesystem is nosuid, this process has no_new_privs, or sudo refused.
    @raise PolicyDeniedError: the installed policy does not allow it for this user.
    @raise HelperTimeoutError: the helper did not answer in time (it was killed).
    @raise SocketError: the kernel refused, for example C{errno.EADDRINUSE}.
    @raise HelperFailedError: the helper failed in another way (bad reply, crash).
    """
    if (
        type(port) is int
        and type(protocol) is str
        and (ip is None or type(ip) is str)
        and (
            backlog is None
            or (type(backlog) is int and 0 <= backlog <= MAX_BACKLOG and protocol == "tcp")
        )
        and (
            timeout is DEFAULT_TIMEOUT or (type(timeout) is float and 0.0 < timeout <= MAX_TIMEOUT)
        )
        and direct
        and v6only is None
        and not options
        and not STAND_INS
        and 0 <= port <= MAX_PORT
    ):
        # The short way, for the most common call: a TCP or UDP socket on an IPv4 address with
        # no socket option, opened here at once (a port anyone may bind, root, or a kernel
        # grant). It is what the whole way below would do first (a request with no option needs
        # at most CAP_NET_BIND_SERVICE, so the batch tries it here), with no request made and
        # nothing checked twice; inline, and with the cheapest test of each argument, as every
        # call and every kind of step costs when a listen runs cold (benchmarks/README.md, (a)).
        # Whatever is unusual or fails takes the whole way, which explains it, or asks the
        # helper after one more refused bind.
        identity = _TCP4 if protocol == "tcp" else _UDP4 if protocol == "udp" else None
        if identity is not None:
            address = "0.0.0.0" if ip is None else ip
            try:
                _inet_pton(_AF_INET, address)  # strictly a dotted quad: no name is resolved
                return open_inet(
                    identity, (address, port), DEFAULT_BACKLOG if backlog is None else backlog
                )
            except (OSError, OpenInetError):  # OSError: not a dotted quad
                pass
    request = SocketRequest(port, protocol, ip, backlog, v6only, **options)
    sock: socket.socket = listen_many([request], progname=progname, timeout=timeout, direct=direct)[
        0
    ]
    return sock


def open_raw(
    protocol: Union[int, str],
    ip: IPAddressLike = None,
    *,
    family: Optional[str] = None,
    header_included: bool = False,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
    **options: Any,
) -> socket.socket:
    """
    A raw IP socket: C{open_raw("icmp")}, C{open_raw("icmpv6")}, C{open_raw(17, "127.0.0.1")}.

    See L{RawRequest} for the arguments and L{listen} for progname, timeout, direct and the errors.
    The policy must name C{kind=raw}.
    """
    request = RawRequest(protocol, ip, family, header_included, **options)
    sock: socket.socket = listen_many([request], progname=progname, timeout=timeout, direct=direct)[
        0
    ]
    return sock


def open_packet(
    ethertype: int,
    device: Optional[str] = None,
    *,
    cooked: bool = False,
    promiscuous: bool = False,
    filter: Optional[Sequence[Instruction]] = None,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
    **options: Any,
) -> socket.socket:
    """
    A packet socket: C{open_packet(ETH_P_ARP, "eth0")}; frames come with their link-layer
    address from C{recvfrom}.

    See L{PacketRequest} for the arguments and L{listen} for the rest. The policy must name
    C{kind=packet}.
    """
    request = PacketRequest(ethertype, device, cooked, promiscuous, filter, **options)
    sock: socket.socket = listen_many([request], progname=progname, timeout=timeout, direct=direct)[
        0
    ]
    return sock


def open_tun(
    name: Optional[str] = None,
    *,
    mode: str = "tun",
    address: Optional[str] = None,
    up: bool = False,
    packet_info: bool = False,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
    direct: bool = True,
) -> TunDevice:
    """
    A new TUN (or, with C{mode="tap"}, TAP) interface owned by this user:
    C{open_tun(address="10.9.0.1/24", up=True)}. It goes away when the device is closed.

    See L{TunRequest} for the arguments and L{listen} for the rest. The policy must name
    C{kind=tun} (or C{kind=tap}).
    """
    request = TunRequest(mode, name, address, up, packet_info)
    device: TunDevice = listen_many([request], progname=progname, timeout=timeout, direct=direct)[0]
    return device
