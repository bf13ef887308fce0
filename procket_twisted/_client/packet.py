"""
Packet sockets (AF_PACKET): link-layer frames of one ethertype, on one interface or all, raw
(with the link-layer header) or cooked, optionally promiscuous and with a classic BPF filter that
the helper attaches and locks before any frame arrives. They need CAP_NET_RAW, and a policy rule
that names C{kind=packet}.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import warnings
from dataclasses import InitVar, dataclass
from typing import FrozenSet, Optional, Sequence, Tuple

from .failures import socket_error
from .options import CAP_NET_RAW, option_capabilities, options_mismatch, set_options
from .request import (
    _check_int,
    check_flag,
    check_interface_name,
    check_options,
    describe_options,
    option_arguments,
)

__all__ = ["PacketRequest", "ETH_P_ALL", "ETH_P_IP", "ETH_P_ARP", "ETH_P_IPV6", "MAX_FILTER"]

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
MAX_FILTER = 64  # instructions: what the helper takes
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_MR_PROMISC = 1
_SO_ATTACH_FILTER = 26
_SO_LOCK_FILTER = 44

#: A classic BPF instruction, as ``tcpdump -dd`` prints them: (code, jt, jf, k).
Instruction = Tuple[int, int, int, int]


def _check_filter(program: Sequence[Instruction]) -> Tuple[Instruction, ...]:
    instructions = tuple(tuple(instruction) for instruction in program)
    if not 1 <= len(instructions) <= MAX_FILTER:
        raise ValueError(
            f"filter must have 1 to {MAX_FILTER} instructions, not {len(instructions)}"
        )
    for instruction in instructions:
        if len(instruction) != 4:
            raise ValueError(f"a filter instruction is (code, jt, jf, k), not {instruction!r}")
        code, jt, jf, k = instruction
        _check_int("filter code", code, 0, 0xFFFF)
        _check_int("filter jt", jt, 0, 0xFF)
        _check_int("filter jf", jf, 0, 0xFF)
        _check_int("filter k", k, 0, 0xFFFFFFFF)
    return instructions  # type: ignore[return-value]


@dataclass(frozen=True)
class PacketRequest:
    """
    One packet socket.

    @ivar ethertype: the frames it receives: 0 to 65535, such as C{ETH_P_ARP} (0x0806),
        C{ETH_P_IP} (0x0800) or C{ETH_P_ALL} (every frame).
    @ivar device: the network interface to bind to (C{"eth0"}), or None for every interface.
        (C{interface=}, its name before 0.2, is still taken, with a DeprecationWarning.)
    @ivar cooked: SOCK_DGRAM: frames without their link-layer header (its fields come with
        each frame's address instead).
    @ivar promiscuous: put INTERFACE in promiscuous mode while the socket is open.
    @ivar filter: a classic BPF program as C{tcpdump -dd} prints it, a sequence of (code, jt,
        jf, k); attached and locked by the helper before any frame arrives.
    @ivar mark: socket options, as for
        L{SocketRequest}.
    @ivar priority: socket options, as for
        L{SocketRequest}.
    @ivar force_receive_buffer: socket options, as for
        L{SocketRequest}.
    @ivar force_send_buffer: socket options, as for
        L{SocketRequest}.
    @raise TypeError, ValueError: naming the bad value.
    """

    ethertype: int
    device: Optional[str] = None
    cooked: bool = False
    promiscuous: bool = False
    filter: Optional[Sequence[Instruction]] = None
    mark: Optional[int] = None
    priority: Optional[int] = None
    force_receive_buffer: Optional[int] = None
    force_send_buffer: Optional[int] = None

    interface: InitVar[Optional[str]] = None

    def __post_init__(self, interface: Optional[str]) -> None:
        if interface is not None:
            warnings.warn(
                "PacketRequest(interface=...) is now PacketRequest(device=...)",
                DeprecationWarning,
                stacklevel=3,
            )
            if self.device is not None:
                raise ValueError("give device, not both device and interface")
            object.__setattr__(self, "device", interface)
        _check_int("ethertype", self.ethertype, 0, 0xFFFF)
        if self.device is not None:
            check_interface_name(self.device, "device")
        check_flag("cooked", self.cooked)
        if check_flag("promiscuous", self.promiscuous) and self.device is None:
            raise ValueError("promiscuous needs a device")
        if self.filter is not None:
            object.__setattr__(self, "filter", _check_filter(self.filter))
        check_options(self)

    @property
    def kind(self) -> str:
        """Its kind, as the helper and the policy name it: C{packet}."""
        return "packet"

    def helper_argument(self) -> str:
        """The helper's text for this socket."""
        parts = ["kind=packet", f"ethertype=0x{self.ethertype:x}"]
        if self.device is not None:
            parts.append(f"device={self.device}")
        if self.cooked:
            parts.append("cooked=1")
        if self.promiscuous:
            parts.append("promisc=1")
        if self.filter:
            hex_program = "".join(
                f"{code:04x}{jt:02x}{jf:02x}{k:08x}" for code, jt, jf, k in self.filter
            )
            parts.append(f"filter={hex_program}")
        return ",".join(parts + option_arguments(self))

    def refusal_hint(self) -> str:
        """Nothing to add to the policy's refusal."""
        return ""

    def describe(self) -> str:
        """C{packet 0x806 on lo (promiscuous)} and its options, for messages."""
        where = f" on {self.device}" if self.device else " on every interface"
        extra = [
            word
            for word, on in (
                ("cooked", self.cooked),
                ("promiscuous", self.promiscuous),
                ("filtered", bool(self.filter)),
            )
            if on
        ]
        return (
            f"packet 0x{self.ethertype:04x}{where}"
            + (f" ({', '.join(extra)})" if extra else "")
            + describe_options(self)
        )

    def capabilities(self) -> FrozenSet[int]:
        """The capabilities opening it needs."""
        return frozenset({CAP_NET_RAW}) | option_capabilities(self)

    def open_here(self, index: int) -> socket.socket:
        """Open it in this process (which holds the capabilities), as the helper would."""
        step = "socket"
        kind = socket.SOCK_DGRAM if self.cooked else socket.SOCK_RAW
        try:
            sock = socket.socket(socket.AF_PACKET, kind, 0)
        except OSError as error:
            raise socket_error(step, error.errno or 0, self, index) from None
        try:
            step = "setsockopt"
            if self.filter:
                program = b"".join(struct.pack("HBBI", *instruction) for instruction in self.filter)
                buffer = _FilterBuffer(program)
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, buffer.fprog())
                sock.setsockopt(socket.SOL_SOCKET, _SO_LOCK_FILTER, 1)
            set_options(sock, self)
            step = "bind"
            _bind_link(sock, self.ethertype, self.device)
            if self.promiscuous:
                step = "setsockopt"
                index_of = socket.if_nametoindex(str(self.device))
                membership = struct.pack("iHH8s", index_of, _PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, membership)
        except OSError as error:
            sock.close()
            raise socket_error(step, error.errno or 0, self, index) from None
        return sock

    def check(self, sock: socket.socket) -> Optional[str]:
        """How SOCK differs from this request, or None."""
        kind = socket.SOCK_DGRAM if self.cooked else socket.SOCK_RAW
        if sock.family != socket.AF_PACKET or sock.type != kind:
            return f"a {sock.family.name} {sock.type.name} socket, not a packet one"
        name, ethertype = sock.getsockname()[:2]
        if ethertype != self.ethertype:
            return f"bound to ethertype 0x{ethertype:x}, not 0x{self.ethertype:x}"
        if self.device is not None and name != self.device:
            return f"bound to device {name!r}, not {self.device!r}"
        return options_mismatch(sock, self)

    def wrap(self, fd: int) -> socket.socket:
        """The socket object for a received fd (ours)."""
        return socket.socket(fileno=fd)


class _SockaddrLinkLayer(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_ushort), ("protocol", ctypes.c_ushort), ("ifindex", ctypes.c_int),
        ("hatype", ctypes.c_ushort), ("pkttype", ctypes.c_ubyte), ("halen", ctypes.c_ubyte),
        ("addr", ctypes.c_ubyte * 8),
    ]  # fmt: skip


def _bind_link(sock: socket.socket, ethertype: int, device: Optional[str]) -> None:
    """
    Bind SOCK to ETHERTYPE on DEVICE, or on every interface (ifindex 0), which Python's own
    bind cannot express (it looks every name up, and there is no name for "all").
    """
    address = _SockaddrLinkLayer(
        family=socket.AF_PACKET,
        protocol=socket.htons(ethertype),
        ifindex=socket.if_nametoindex(device) if device else 0,
    )
    if _LIBC.bind(sock.fileno(), ctypes.byref(address), ctypes.sizeof(address)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


_LIBC = ctypes.CDLL(None, use_errno=True)


class _FilterBuffer:
    """A sock_fprog for setsockopt: the program must stay alive while the kernel copies it."""

    def __init__(self, program: bytes) -> None:
        self._program = ctypes.create_string_buffer(program, len(program))
        self._length = len(program) // 8
        self._address = ctypes.addressof(self._program)

    def fprog(self) -> bytes:
        return struct.pack("HL", self._length, self._address)
