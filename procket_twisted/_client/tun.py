"""
TUN and TAP interfaces: the helper creates a new interface (never attaches to an existing one),
gives it to the caller (TUNSETOWNER, TUNSETGROUP), optionally gives it an address and brings it up,
and hands over the /dev/net/tun descriptor attached to it. The interface goes away when that
descriptor is closed. They need CAP_NET_ADMIN, and a policy rule that names C{kind=tun} or
C{kind=tap}.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Union

from .failures import socket_error
from .options import CAP_NET_ADMIN
from .request import check_flag, check_interface_name

__all__ = ["TunRequest", "TunDevice", "MODES"]

MODES = ("tun", "tap")
TUN_DEVICE = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_TUNGETIFF = 0x800454D2
_IFF_TUN, _IFF_TAP, _IFF_NO_PI, _IFF_TUN_EXCL = 0x0001, 0x0002, 0x1000, 0x8000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _SIOCSIFADDR = 0x8913, 0x8914, 0x8916
_SIOCSIFNETMASK, _SIOCGIFINDEX = 0x891C, 0x8933
_IFF_UP = 0x1
_MISC_MAJOR, _TUN_MINOR = 10, 200


class TunDevice:
    """
    An open TUN or TAP interface: read packets (TUN) or frames (TAP) from it, write them to it.

    @ivar name: the interface's name (C{tun0}, or the one asked for).
    @ivar mode: C{"tun"} or C{"tap"}.
    @ivar packet_info: whether each packet carries the 4-byte packet information header.
    """

    def __init__(self, fd: int, name: str, mode: str, packet_info: bool) -> None:
        self._fd = fd
        self.name = name
        self.mode = mode
        self.packet_info = packet_info

    def fileno(self) -> int:
        """The descriptor (-1 once closed or detached)."""
        return self._fd

    def read(self, size: int = 65536) -> bytes:
        """One packet or frame (blocks unless the descriptor is non-blocking)."""
        return os.read(self._fd, size)

    def write(self, packet: bytes) -> int:
        """Send one packet or frame into the interface."""
        return os.write(self._fd, packet)

    def detach(self) -> int:
        """Give up the descriptor (for a reactor to own) and return it."""
        fd, self._fd = self._fd, -1
        return fd

    def close(self) -> None:
        """Close it: the interface goes away."""
        if self._fd >= 0:
            os.close(self.detach())

    def __enter__(self) -> "TunDevice":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TunDevice {self.mode} {self.name} fd={self._fd}>"


def interface_of(fd: int) -> "tuple[str, int]":
    """The interface name and flags of a /dev/net/tun descriptor (TUNGETIFF)."""
    reply = fcntl.ioctl(fd, _TUNGETIFF, b"\0" * 40)
    name = reply[:16].split(b"\0", 1)[0].decode("ascii", "replace")
    return name, struct.unpack("H", reply[16:18])[0]


@dataclass(frozen=True)
class TunRequest:
    """
    One new TUN (IP packets) or TAP (Ethernet frames) interface.

    @ivar mode: C{"tun"} or C{"tap"}.
    @ivar name: the interface's name, or None for the kernel's next C{tunN} / C{tapN}.
    @ivar address: an address for it with its prefix, C{"10.0.0.1/24"} or C{"fd00::1/64"}.
    @ivar up: bring it up.
    @ivar packet_info: keep the 4-byte packet information header on each packet.
    @raise TypeError, ValueError: naming the bad value.
    """

    mode: str = "tun"
    name: Optional[str] = None
    address: Optional[str] = None
    up: bool = False
    packet_info: bool = False
    interface: Optional[Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be tun or tap, not {self.mode!r}")
        if self.name is not None:
            check_interface_name(self.name, "name")
        interface = None
        if self.address is not None:
            try:
                interface = ipaddress.ip_interface(self.address)
            except ValueError:
                raise ValueError(
                    f"address must be a numeric address and prefix such as 10.0.0.1/24, "
                    f"not {self.address!r}"
                ) from None
        if isinstance(interface, ipaddress.IPv6Interface) and interface.ip.ipv4_mapped is not None:
            raise ValueError(
                f"address {self.address} is IPv4-mapped: give the IPv4 address and prefix instead"
            )
        object.__setattr__(self, "interface", interface)
        check_flag("up", self.up)
        check_flag("packet_info", self.packet_info)

    @property
    def kind(self) -> str:
        """Its kind, as the helper and the policy name it: C{tun or tap}."""
        return self.mode

    def helper_argument(self) -> str:
        """The helper's text for this interface."""
        parts = [f"kind={self.mode}"]
        if self.name is not None:
            parts.append(f"device={self.name}")
        if self.interface is not None:
            family = "inet6" if self.interface.version == 6 else "inet"
            parts += [f"family={family}", f"addr={self.interface.ip}",
                      f"prefixlen={self.interface.network.prefixlen}"]  # fmt: skip
        if self.up:
            parts.append("up=1")
        if self.packet_info:
            parts.append("pi=1")
        return ",".join(parts)

    def describe(self) -> str:
        """C{tun interface tun7 (10.0.0.1/24, up)}, for messages."""
        details = [str(self.interface)] if self.interface else []
        details += ["up"] if self.up else []
        return f"{self.mode} interface {self.name or '(any name)'}" + (
            f" ({', '.join(details)})" if details else ""
        )

    def capabilities(self) -> FrozenSet[int]:
        """The capabilities creating it needs."""
        return frozenset({CAP_NET_ADMIN})

    def refusal_hint(self) -> str:
        """Without a name: a tun or tap grant names its interfaces, so ask for one by name."""
        if self.name is not None:
            return ""
        return (
            "; a tun or tap grant names its interfaces (device= in the policy): ask for one of "
            "them by name"
        )

    def _flags(self) -> int:
        mode = _IFF_TUN if self.mode == "tun" else _IFF_TAP
        return mode | (0 if self.packet_info else _IFF_NO_PI)

    def open_here(self, index: int) -> TunDevice:
        """Create it in this process (which holds CAP_NET_ADMIN), as the helper would."""
        step = "socket"
        try:
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as error:
            raise socket_error(step, error.errno or 0, self, index) from None
        try:
            step = "bind"
            request = struct.pack(
                "16sH22x", (self.name or "").encode(), self._flags() | _IFF_TUN_EXCL
            )
            name = fcntl.ioctl(fd, _TUNSETIFF, request)[:16].split(b"\0", 1)[0]
            step = "setsockopt"
            _configure(name, self.interface, self.up)
        except OSError as error:
            os.close(fd)
            raise socket_error(step, error.errno or 0, self, index) from None
        return TunDevice(fd, name.decode("ascii"), self.mode, self.packet_info)

    def check(self, device: TunDevice) -> Optional[str]:
        """How DEVICE differs from this request, or None."""
        info = os.fstat(device.fileno())
        if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != (
            _MISC_MAJOR, _TUN_MINOR,
        ):  # fmt: skip
            return "not a /dev/net/tun descriptor"
        name, flags = interface_of(device.fileno())
        if self.name is not None and name != self.name:
            return f"interface {name!r}, not {self.name!r}"
        if flags & (_IFF_TUN | _IFF_TAP | _IFF_NO_PI) != self._flags():
            return f"interface flags 0x{flags:x}, not those of a {self.mode} asked for"
        return None

    def wrap(self, fd: int) -> TunDevice:
        """The device object for a received fd (ours)."""
        return TunDevice(fd, interface_of(fd)[0], self.mode, self.packet_info)


def _configure(
    name: bytes,
    interface: Optional[Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]],
    up: bool,
) -> None:
    """Bring interface NAME up and give it INTERFACE's address, with ioctls (as the helper does)."""
    family = socket.AF_INET6 if interface is not None and interface.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as control:
        if up:
            flags = struct.unpack(
                "16sH", fcntl.ioctl(control, _SIOCGIFFLAGS, struct.pack("16sH22x", name, 0))[:18]
            )[1]
            fcntl.ioctl(control, _SIOCSIFFLAGS, struct.pack("16sH22x", name, flags | _IFF_UP))
        if isinstance(interface, ipaddress.IPv4Interface):
            for command, value in (
                (_SIOCSIFADDR, interface.ip),
                (_SIOCSIFNETMASK, interface.netmask),
            ):
                address = struct.pack("HH4s8x", socket.AF_INET, 0, value.packed)
                fcntl.ioctl(control, command, struct.pack("16s16s8x", name, address))
        elif interface is not None:
            index = struct.unpack(
                "16si", fcntl.ioctl(control, _SIOCGIFINDEX, struct.pack("16s24x", name))[:20]
            )[1]
            fcntl.ioctl(
                control,
                _SIOCSIFADDR,
                struct.pack("16sIi", interface.ip.packed, interface.network.prefixlen, index),
            )
