"""
The build step setup.cfg cannot express: compile the C helper into the package.

``pip install .`` runs build_py, which also compiles the C files of ``procket_twisted/helper/``
with the system C compiler into ``procket_twisted/helper/procket-helper``; ``procket-twisted
install-helper`` later copies that binary into place, setuid root. The wheel is platform-specific.
"""

import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "procket_twisted", "helper")


def _load_build_module():
    path = os.path.join(HERE, "procket_twisted", "_admin", "helper_build.py")
    spec = importlib.util.spec_from_file_location("_procket_helper_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithHelper(build_py):
    """build_py, plus the compiled helper."""

    def run(self):
        super().run()
        output = os.path.join(self.build_lib, "procket_twisted", "helper", "procket-helper")
        os.makedirs(os.path.dirname(output), exist_ok=True)
        command = _load_build_module().compile_helper(output, SOURCE)
        self.announce("built the helper: " + " ".join(command), level=2)


class BinaryDistribution(Distribution):
    """The wheel holds a compiled program, so it must not be tagged pure Python."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithHelper}, distclass=BinaryDistribution)
