"""
The version of procket-twisted: the one place it is written.

setup.cfg reads it from here (C{attr:}, which setuptools evaluates without importing the
package), so the distribution's metadata and C{procket_twisted.__version__} cannot disagree. It
is a plain constant rather than a module C{__getattr__} reading the metadata when asked: a module
that defines C{__getattr__} keeps Python (3.11 to 3.13) from specializing any attribute lookup
on it, which made every C{procket_twisted.listen(...)} look C{listen} up the slow way
(benchmarks/README.md, (a)).
"""

__all__ = ["VERSION"]

VERSION = "0.1.0"
