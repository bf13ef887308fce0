"""
How the helper is compiled: one place for the compiler flags and the list of its sources (every
C{.c} file of C{procket_twisted/helper/}, read in the order C{helper/AUDIT.md} gives), used by
C{setup.py} (which loads this file by path, before the package is importable), by scripts/test
for its sanitizer build and by the tests that build variants.

The helper is built with every warning an error and hardened (stack protector, full RELRO, PIE,
and fortify where the C library has it), and statically linked when the C library allows it: a
static helper starts faster and has no dynamic loader for an environment to influence.

It is linked against musl when C{musl-gcc} is installed (Debian: C{musl-tools}), and against
glibc otherwise. The reason is speed: glibc's start-up detects the CPU's cache sizes with dozens
of C{cpuid} instructions, and in a virtual machine each one traps to the hypervisor (the numbers
are in benchmarks/README.md). The price is fortify: musl has no C{_FORTIFY_SOURCE} checks (the define is harmless there). The fuzzers and
the sanitizer run of the test suite build the same source against glibc, with ASan and UBSan.
"""

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The helper's source directory in this package.
HELPER_DIRECTORY = os.path.join(_PACKAGE, "helper")
#: procket-grant's (the kernel grant tool's) source directory in this package.
GRANT_DIRECTORY = os.path.join(_PACKAGE, "grant")
#: The helper's files procket-grant links: the pure ones (no I/O, no privilege), as the fuzzers
#: link them, so that the policy's grammar and meaning exist once.
PURE_HELPER_FILES = ("kinds.c", "text.c", "request.c", "policy.c")

WARNINGS = [
    "-Wall", "-Wextra", "-Werror", "-Wformat=2", "-Wconversion", "-Wsign-conversion",
    "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wcast-qual",
    "-Wwrite-strings", "-Wnull-dereference", "-Wvla",
]  # fmt: skip
HARDENING_LINK = ["-Wl,-z,relro,-z,now,-z,noexecstack"]
HARDENING = [
    "-O2", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-fPIE",
] + HARDENING_LINK  # fmt: skip
#: The test build (scripts/test's sanitizer run): every sanitizer report aborts the helper.
SANITIZERS = [
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g",
]  # fmt: skip
STATIC = ["-static-pie"]
DYNAMIC = ["-pie"]


def compiler() -> List[str]:
    """The C compiler command: C{$CC} or C{cc}."""
    return shlex.split(os.environ.get("CC", "cc"))


def musl_directory() -> Optional[str]:
    """
    Where musl's static C library and start files are, found through the C{-specs} file the
    C{musl-gcc} wrapper names (it lives beside them), or None when musl is not installed.
    """
    wrapper = shutil.which("musl-gcc")
    if wrapper is None:
        return None
    try:
        with open(wrapper, encoding="utf-8", errors="replace") as script:
            found = re.search(r'-specs\s+"?([^"\s]+)"?', script.read())
    except OSError:
        return None
    if found is None:
        return None
    directory = os.path.dirname(found.group(1))
    needed = ("rcrt1.o", "crti.o", "crtn.o", "libc.a")
    if not all(os.path.isfile(os.path.join(directory, name)) for name in needed):
        return None
    return directory


def _kernel_headers(directory: str) -> str:
    """
    A directory of links to the kernel's headers (C{linux/}, C{asm/}, C{asm-generic/}) made in
    DIRECTORY: musl-gcc searches only musl's own headers, and the helper needs the kernel's.
    """
    include = os.path.join(directory, "include")
    os.mkdir(include)
    multiarch = subprocess.run(
        compiler() + ["-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    asm = os.path.join("/usr/include", multiarch, "asm")
    links = {
        "linux": "/usr/include/linux",
        "asm-generic": "/usr/include/asm-generic",
        "asm": asm if multiarch and os.path.isdir(asm) else "/usr/include/asm",
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(include, name))
    return include


def helper_sources(directory: str = HELPER_DIRECTORY) -> List[str]:
    """Every C file in DIRECTORY, sorted (they are linked into one program)."""
    return sorted(
        os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".c")
    )


def _compile_musl(
    sources: Sequence[str], output: str, extra: Sequence[str], musl: str
) -> List[str]:
    """
    Compile with musl-gcc and link a static PIE by hand (Debian's musl-gcc cannot link one: its
    specs always name a dynamic loader); return the link command.

    @raise subprocess.CalledProcessError: when either step fails.
    """
    cc = compiler()

    def gcc_file(name: str) -> str:
        return subprocess.run(
            cc + [f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="procket-helper-build-") as work:
        include = _kernel_headers(work)
        objects: List[str] = []
        compile_command: List[str] = []
        for source in sources:
            name = os.path.splitext(os.path.basename(source))[0]
            objects.append(os.path.join(work, f"{len(objects)}-{name}.o"))
            compile_command = (
                ["musl-gcc", "-std=c11"] + WARNINGS + HARDENING + list(extra)
                + ["-isystem", include, "-c", "-o", objects[-1], source]
            )  # fmt: skip
            subprocess.run(compile_command, check=True)
        link_command = (
            cc + ["-nostdlib", "-nostartfiles", "-static-pie"] + HARDENING_LINK
            + ["-o", output, os.path.join(musl, "rcrt1.o"), os.path.join(musl, "crti.o"),
               gcc_file("crtbeginS.o"), *objects, "-L" + musl, "-Wl,--start-group", "-lc",
               gcc_file("libgcc.a"), "-Wl,--end-group", gcc_file("crtendS.o"),
               os.path.join(musl, "crtn.o")]
        )  # fmt: skip
        subprocess.run(link_command, check=True)
    return compile_command + ["&&"] + link_command


def compile_helper(
    output: str,
    directory: str = HELPER_DIRECTORY,
    extra: Sequence[str] = (),
    static: Optional[bool] = None,
    musl: bool = True,
) -> List[str]:
    """
    Compile the helper's sources in DIRECTORY into the executable OUTPUT and return the command
    used (for musl, the last compile and the link).

    @param directory: the helper's source directory (another copy: a mutant, a packager's).
    @param extra: more flags (sanitizers, defines).
    @param static: True or False to force; None tries static first, then dynamic.
    @param musl: link against musl when it is installed (only for a static build without
        sanitizers, which need glibc).
    @raise subprocess.CalledProcessError: when the compiler fails (its output shows why).
    """
    return _compile(output, helper_sources(directory), extra, static, musl)


def compile_grant(
    output: str,
    grant_directory: str = GRANT_DIRECTORY,
    helper_directory: str = HELPER_DIRECTORY,
    extra: Sequence[str] = (),
    static: Optional[bool] = None,
    musl: bool = True,
) -> List[str]:
    """
    Compile procket-grant (the kernel grant tool, run by root, never setuid) into OUTPUT: every C
    file of GRANT_DIRECTORY and the helper's pure files, with the helper's flags.

    @raise subprocess.CalledProcessError: when the compiler fails.
    """
    sources = helper_sources(grant_directory)
    sources += [os.path.join(helper_directory, name) for name in PURE_HELPER_FILES]
    return _compile(output, sources, ["-I" + helper_directory, *extra], static, musl)


def _compile(
    output: str, sources: Sequence[str], extra: Sequence[str], static: Optional[bool], musl: bool
) -> List[str]:
    library = musl_directory() if musl and static is not False else None
    if library is not None:
        return _compile_musl(sources, output, extra, library)
    base = compiler() + ["-std=c11"] + WARNINGS + HARDENING + list(extra)
    attempts = [STATIC, DYNAMIC] if static is None else [STATIC if static else DYNAMIC]
    for number, link in enumerate(attempts, 1):
        command = base + link + ["-o", output] + list(sources)
        last = number == len(attempts)
        result = subprocess.run(command, capture_output=not last)
        if result.returncode == 0:
            return command
        if last:
            raise subprocess.CalledProcessError(result.returncode, command)
    raise AssertionError("unreachable")
