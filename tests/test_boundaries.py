"""The package's architecture, read from the source with :mod:`ast`.

Wings are subpackages: ``core`` (the vocabulary) -> ``build`` / ``host`` / ``deploy`` -> ``cli``,
and ``check`` (the hosting doctor) between ``build`` and ``cli``.
The core imports no wing and only the third-party packages listed in :data:`CORE_THIRD_PARTY`;
the three middle wings never import each other; ``cli`` reaches into all of them, lazily, inside
its functions, so that ``--help`` imports neither numpy nor watchdog. No two modules import each
other, directly or round a loop, at import time or lazily (a lazy cycle is still a cycle in the
design). Every top-level name must be classified in :data:`LAYERS`: a new module or wing without
a place fails here until someone decides where it goes.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "precomp_host"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: Where each wing (subpackage) or top-level module of precomp_host belongs.
LAYERS: dict[str, str] = {
    "core": "core",
    "build": "build",
    "host": "host",
    "deploy": "deploy",
    # the hosting doctor: reads the core's rules and the build's chunk codecs (to decode what
    # it fetched); nothing imports it but the CLI
    "check": "check",
    "cli": "cli",
    # the documented import path of the middleware (README): a facade over host
    "middleware": "facade",
    "__init__": "package",  # `import precomp_host` stays light: the core's public names only
    "__main__": "entry",
}

#: Layers each layer may import (at any depth, TYPE_CHECKING included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "build": frozenset({"core", "build"}),
    "host": frozenset({"core", "host"}),
    "deploy": frozenset({"core", "deploy"}),
    "check": frozenset({"core", "build", "check"}),
    "cli": frozenset({"core", "build", "host", "deploy", "check", "cli"}),
    "facade": frozenset({"host"}),
    "package": frozenset({"core"}),
    "entry": frozenset({"cli"}),
}

#: Layers that import only the core at import time (cli imports the rest inside its functions)
#: and no third-party package at all until a function needs it.
LIGHT_AT_IMPORT = frozenset({"cli", "package", "entry"})

#: The only third-party imports of the core, per file.
CORE_THIRD_PARTY: dict[str, frozenset[str]] = {
    "encodings": frozenset({"brotli", "deflate"}),
    "templates": frozenset({"jinja2"}),
    # murmurhash3_x86_128 shard hashing (sharded.md), imported lazily: optional extra "sharded"
    "sharding": frozenset({"mmh3"}),
    # the one S3 client (never aws-chunked) of deploy s3 and of a build into s3://, imported
    # lazily: optional extra "s3"
    "objects": frozenset({"boto3", "botocore"}),
}


@dataclass(frozen=True)
class Import:
    target: str  # dotted name inside precomp_host ("core.model"), or another top-level package
    internal: bool
    at_import_time: bool  # module level and not under `if TYPE_CHECKING:`
    line: int

    @property
    def wing(self) -> str:
        return self.target.split(".")[0]


class _Collector(ast.NodeVisitor):
    def __init__(self, package: list[str], modules: set[str]) -> None:
        self.package = package  # dotted parts of the package that holds the module
        self.modules = modules  # dotted names (below precomp_host) of every module
        self.imports: list[Import] = []
        self._lazy = 0

    def _add(self, dotted: str, line: int, names: list[str] | None = None) -> None:
        parts = dotted.split(".") if dotted else []
        now = self._lazy == 0
        if parts[:1] != [PACKAGE]:
            self.imports.append(Import(parts[0], False, now, line))
            return
        base = ".".join(parts[1:])
        # `from precomp_host.core import model` imports the module core.model
        targets = [f"{base}.{n}" if base else n for n in names or []]
        targets = [t for t in targets if t in self.modules] or [base or "__init__"]
        for target in targets:
            self.imports.append(Import(target, True, now, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            dotted = ".".join(base + ([node.module] if node.module else []))
        else:
            dotted = node.module or ""
        self._add(dotted, node.lineno, [a.name for a in node.names])

    def _deferred(self, node: ast.AST) -> None:
        self._lazy += 1
        self.generic_visit(node)
        self._lazy -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _deferred

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        is_tc = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not is_tc:
            self.generic_visit(node)
            return
        self._lazy += 1
        for stmt in node.body:
            self.visit(stmt)
        self._lazy -= 1
        for stmt in node.orelse:
            self.visit(stmt)


def collect_imports(source: str, package: list[str], modules: set[str]) -> list[Import]:
    collector = _Collector(package, modules)
    collector.visit(ast.parse(source))
    return collector.imports


def discover() -> dict[str, Path]:
    """Every module of precomp_host by dotted name below it (``core.model``, ``build``)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def violations(module: str, source: str, modules: set[str]) -> list[str]:
    """Every import of ``module`` (dotted name below precomp_host) that breaks the rules."""
    wing = module.split(".")[0]
    layer = LAYERS.get(wing)
    if layer is None:
        return [f"{wing} is not classified in LAYERS"]
    is_package = module in modules and PACKAGE_DIR.joinpath(*module.split(".")).is_dir()
    package = [PACKAGE, *module.split(".")[: None if is_package else -1]]
    out = []
    for imp in collect_imports(source, package, modules):
        where = f"{module}:{imp.line}"
        if imp.internal:
            other = LAYERS.get(imp.wing)
            if imp.wing == wing:
                continue
            if other is None:
                out.append(f"{where} imports unclassified {imp.target}")
            elif other not in MAY_IMPORT[layer]:
                out.append(f"{where}: {layer} module imports {other} module {imp.target}")
            elif imp.at_import_time and layer in LIGHT_AT_IMPORT and other not in ("core", "cli"):
                out.append(f"{where} imports {imp.target} at import time; import it lazily")
        elif imp.target not in sys.stdlib_module_names:
            if layer == "core":
                allowed = CORE_THIRD_PARTY.get(module.split(".")[-1], frozenset())
                if imp.target not in allowed:
                    out.append(f"{where}: core module imports third-party {imp.target}")
            elif layer in LIGHT_AT_IMPORT and imp.at_import_time:
                out.append(f"{where} imports third-party {imp.target} at import time")
    return out


def import_graph(sources: dict[str, str], modules: set[str]) -> dict[str, set[str]]:
    """module -> the modules it imports, lazily or not (a package's ``__init__`` excluded as a
    target when the import names a submodule)."""
    graph: dict[str, set[str]] = {}
    for module, source in sources.items():
        is_package = PACKAGE_DIR.joinpath(*module.split(".")).is_dir()
        package = [PACKAGE, *module.split(".")[: None if is_package else -1]]
        graph[module] = {
            i.target
            for i in collect_imports(source, package, modules)
            if i.internal and i.target != module
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


MODULES = discover()


def test_every_wing_is_classified() -> None:
    unclassified = sorted({m.split(".")[0] for m in MODULES} - set(LAYERS))
    assert not unclassified, f"add {unclassified} to LAYERS in {__file__}"


def test_the_wings_are_present() -> None:
    assert {"core", "build", "host", "deploy", "check", "cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependency_direction(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    problems = violations(module, source, set(MODULES))
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    sources = {m: p.read_text(encoding="utf-8") for m, p in MODULES.items()}
    graph = import_graph(sources, set(MODULES))
    assert cycles(graph) == []


# The checker itself: each rule catches a breach (a test that cannot fail is no test).


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("core.model", "import numpy"),
        ("core.layout", "from ..host.middleware import PrecomputedMiddleware"),
        ("core.layout", "from precomp_host import build"),
        ("core.headers", "import werkzeug"),
        ("core.encodings", "import numpy as np"),
        ("core.templates", "import numpy"),
        ("build.pyramid", "from ..host.middleware import x"),
        ("build.builder", "def f():\n    from ..deploy.site import render"),
        (
            "build.builder",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import main",
        ),
        ("host.middleware", "from ..build.builder import build_dataset"),
        ("host.watch", "from precomp_host.build.sources import open_volume"),
        ("host.middleware", "from ..deploy import site"),
        ("deploy.site", "from ..host.middleware import PrecomputedMiddleware"),
        ("deploy.site", "from ..build.writer import DatasetWriter"),
        ("check.doctor", "from ..host.middleware import PrecomputedMiddleware"),
        ("check.doctor", "from ..deploy import site"),
        ("build.builder", "from ..check.doctor import check"),
        ("cli.commands", "from ..build.builder import build_dataset"),
        ("cli.commands", "import numpy"),
        ("cli.commands", "from .. import host"),
        ("__init__", "from .build.builder import BuildError"),
        ("__init__", "import numpy"),
        ("__main__", "from .build.builder import build_dataset"),
        ("middleware", "from .build import builder"),
        ("build.pyramid", "from ..brand_new import x"),
        ("brand_new", "import os"),
    ],
)
def test_checker_catches(module: str, source: str) -> None:
    modules = set(MODULES) | {"brand_new"}
    assert violations(module, source, modules)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "core.encodings",
            "import brotli\ntry:\n    import deflate\nexcept ImportError:\n    pass",
        ),
        ("core.layout", "from .model import ChunkKey\nimport re"),
        ("build.builder", "import numpy as np\nfrom .writer import W\nfrom ..core.model import x"),
        ("host.middleware", "import werkzeug\nfrom ..core.headers import cors_headers"),
        ("cli.commands", "import argparse\nfrom ..core.encodings import ENCODINGS"),
        (
            "cli.commands",
            "def build():\n    from ..build.builder import build_dataset\n    import numpy",
        ),
        (
            "cli.commands",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..build import B",
        ),
        ("__main__", "from .cli import main"),
        ("__init__", "from .core.model import Dataset"),
        ("middleware", "from .host.middleware import make_app"),
    ],
)
def test_checker_allows(module: str, source: str) -> None:
    assert violations(module, source, set(MODULES)) == []


def test_cycle_finder() -> None:
    modules = {"deploy.site", "deploy.upload", "core.model"}
    sources = {
        "deploy.site": "def f():\n    from .upload import upload_s3",  # lazy: still a cycle
        "deploy.upload": "from .site import Site",
        "core.model": "",
    }
    assert cycles(import_graph(sources, modules)) == [["deploy.site", "deploy.upload"]]
    sources["deploy.site"] = ""
    assert cycles(import_graph(sources, modules)) == []
