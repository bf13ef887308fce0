"""
The package's shape: three layers as subpackages, imported only downwards, with no import cycle.

- ``procket_twisted._client``: requests, the helper's wire format, running it, checking what
  comes back; it never imports Twisted;
- ``procket_twisted._twisted``: endpoints, the string parser, the reactor's client, the ports;
- ``procket_twisted._admin``: the command line and what only it uses (install, doctor, run...).

The public modules sit on top: ``procket_twisted`` (the plain API, client layer only),
``procket_twisted.endpoints`` and ``procket_twisted.testing``. Every import counts, at module
level, inside functions and under ``TYPE_CHECKING`` alike: a cycle hidden in a function is still
a cycle for a reader. The graph is read from the installed package's source.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from typing import Dict, List, Set

from twisted.trial.unittest import SynchronousTestCase

import procket_twisted

PACKAGE = os.path.dirname(procket_twisted.__file__)
#: Each layer may import the layers before it in this order, never one after it.
LAYERS = ("_client", "_twisted", "_admin")
#: The public modules and the layers each may import.
PUBLIC = {
    "procket_twisted": ("_client",),
    "procket_twisted.aio": ("_client",),
    "procket_twisted.endpoints": ("_client", "_twisted"),
    "procket_twisted.testing": ("_client", "_twisted"),
    "procket_twisted.pytest_plugin": ("_client", "procket_twisted.testing"),
}


def modules() -> Dict[str, str]:
    """Every module of the installed package: dotted name -> path."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            relative = os.path.relpath(os.path.join(root, name), os.path.dirname(PACKAGE))
            dotted = relative[: -len(".py")].replace(os.sep, ".")
            if dotted.endswith(".__init__"):
                dotted = dotted[: -len(".__init__")]
            found[dotted] = os.path.join(root, name)
    return found


def imports_of(name: str, path: str, known: Set[str]) -> Set[str]:
    """The package's modules that module NAME (at PATH) imports, anywhere in it."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str) -> str:
    """The layer of MODULE (``_client``...), or the public module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else module


class LayerTests(SynchronousTestCase):
    """The import graph of the package."""

    def setUp(self) -> None:
        self.modules = modules()
        known = set(self.modules)
        self.graph = {
            name: imports_of(name, path, known) - {"procket_twisted." + layer for layer in LAYERS}
            for name, path in self.modules.items()
        }

    def test_layers_are_packages(self) -> None:
        """Every private module lives in one of the three layers; the top holds only the API."""
        top = {
            name
            for name in self.modules
            if name.count(".") == 1 and name.split(".")[1] not in LAYERS
        }
        self.assertEqual(top, set(PUBLIC) - {"procket_twisted"})

    def test_no_upward_imports(self) -> None:
        """A layer imports only itself and the layers below it; public modules only theirs."""
        upward = []
        for name, targets in self.graph.items():
            layer = layer_of(name)
            allowed = PUBLIC[name] if name in PUBLIC else LAYERS[: LAYERS.index(layer) + 1]
            for target in targets:
                target_layer = layer_of(target)
                if target_layer not in allowed and target_layer != layer:
                    upward.append(f"{name} imports {target}")
        self.assertEqual(upward, [])

    def test_no_cycles(self) -> None:
        """No module reaches itself through its imports (Tarjan's strongly connected components)."""
        index: Dict[str, int] = {}
        low: Dict[str, int] = {}
        stack: List[str] = []
        cycles: List[List[str]] = []

        def visit(node: str) -> None:
            index[node] = low[node] = len(index)
            stack.append(node)
            for target in self.graph[node]:
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

        for node in sorted(self.graph):
            if node not in index:
                visit(node)
        self.assertEqual(cycles, [])

    def test_client_layer_never_imports_twisted(self) -> None:
        """No module of the client layer (nor the plain API) names Twisted in an import."""
        offenders = []
        for name, path in self.modules.items():
            if layer_of(name) != "_client" and name != "procket_twisted":
                continue
            with open(path, encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for node in ast.walk(tree):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                offenders += [
                    f"{name}: {n}" for n in names if n.split(".")[0] in ("twisted", "zope")
                ]
        self.assertEqual(offenders, [])

    def test_plain_import_loads_no_twisted(self) -> None:
        """``import procket_twisted`` in a fresh interpreter loads no ``twisted`` module at all."""
        code = (
            "import sys, procket_twisted\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'zope')))"
        )
        finished = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
        )
        self.assertEqual(finished.stdout.strip(), "[]")


#: Twisted-layer names that keep another convention because they override one: the ioctl
#: argument of twisted.pair's _RealSystem.ioctl, as fcntl.ioctl names it.
TWISTED_LAYER_EXCEPTIONS = {"mutate_flag"}


class NamingTests(SynchronousTestCase):
    """
    The naming rule (docs/design.md, "Names"): ruff's pep8-naming checks keep everything but the
    Twisted layer PEP 8; these keep the Twisted layer camelCase and the tests' names uniform,
    which ruff cannot check.
    """

    def test_twisted_layer_is_camel_case(self) -> None:
        """Functions, methods and their arguments in the Twisted layer have no underscore inside."""
        found = []
        for name, path in modules().items():
            if layer_of(name) != "_twisted" and name not in (
                "procket_twisted.endpoints",
                "procket_twisted.testing",
            ):
                continue
            with open(path, encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for node in ast.walk(tree):
                names: List[str] = []
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names = [node.name] + [a.arg for a in node.args.args + node.args.kwonlyargs]
                for each in names:
                    bare = each.strip("_")
                    if "_" in bare and each not in TWISTED_LAYER_EXCEPTIONS:
                        if not (each.startswith("__") and each.endswith("__")):
                            found.append(f"{name}: {each}")
        self.assertEqual(found, [])

    def test_test_methods_are_snake_case(self) -> None:
        """Every test method is C{test_} and a snake_case description of what it proves."""
        directory = os.path.dirname(os.path.abspath(__file__))
        found = []
        for filename in sorted(os.listdir(directory)):
            if not (filename.startswith("test_") and filename.endswith(".py")):
                continue
            with open(os.path.join(directory, filename), encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if node.name.startswith("test") and not re.fullmatch(
                        r"test_[a-z0-9_]+", node.name
                    ):
                        found.append(f"{filename}: {node.name}")
        self.assertEqual(found, [])
