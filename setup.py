"""
The build step setup.cfg cannot express: compile the C programs into the package.

``pip install .`` runs build_py, which also compiles, with the system C compiler, the C files of
``procket_twisted/helper/`` into ``procket_twisted/helper/procket-helper`` (``procket-twisted
install-helper`` later copies it into place, setuid root) and those of ``procket_twisted/grant/``
with the helper's policy files into ``procket_twisted/grant/procket-grant`` (the kernel grant
tool, which ``procket-twisted grant`` runs as root). The wheel is platform-specific.
"""

import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_build_module():
    path = os.path.join(HERE, "procket_twisted", "_admin", "helper_build.py")
    spec = importlib.util.spec_from_file_location("_procket_helper_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithHelper(build_py):
    """build_py, plus the compiled helper and procket-grant (the kernel grant tool)."""

    def run(self):
        super().run()
        build = _load_build_module()
        package = os.path.join(self.build_lib, "procket_twisted")
        for name, compile_it in (
            ("helper/procket-helper", build.compile_helper),
            ("grant/procket-grant", build.compile_grant),
        ):
            output = os.path.join(package, name)
            os.makedirs(os.path.dirname(output), exist_ok=True)
            command = compile_it(output)
            self.announce(f"built {name}: " + " ".join(command), level=2)


class BinaryDistribution(Distribution):
    """The wheel holds a compiled program, so it must not be tagged pure Python."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithHelper}, distclass=BinaryDistribution)
