"""The package's dependency direction, read from the source with :mod:`ast`.

core (model, layout, encodings, media_types, headers, plan) -> generator / host / deploy -> cli.
The core is stdlib-only (brotli and deflate in ``encodings``); the three branches never import
each other; only ``cli`` reaches into all of them, and lazily, inside its functions, so that
``--help`` imports neither numpy nor watchdog. Every module must be classified in
:data:`LAYERS`: a new module without a place fails here until someone decides where it goes.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "precomp_host"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: Where each module (or subpackage) of precomp_host belongs. Absent modules are fine.
LAYERS: dict[str, str] = {
    **dict.fromkeys(
        ["model", "layout", "encodings", "media_types", "headers", "plan", "progress"], "core"
    ),
    **dict.fromkeys(
        [
            "sources",
            "chunk_codecs",
            "pyramid",
            "writer",
            "build",
            "meshes",
            "segment_properties",
            "segmentation",
            "sample",
        ],
        "generator",
    ),
    **dict.fromkeys(["middleware", "devserver", "watch", "index"], "host"),
    "deploy": "deploy",
    "upload": "deploy",
    # jinja2 environment over templates/, shared by the dev server's pages and deploy's configs
    "templates_loader": "templates",
    "cli": "cli",
    "__init__": "package",  # `import precomp_host` stays light: the core's public names only
    "__main__": "entry",
}

#: Layers each layer may import (at any depth, TYPE_CHECKING included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "generator": frozenset({"core", "generator"}),
    "host": frozenset({"core", "host", "templates"}),
    "deploy": frozenset({"core", "deploy", "templates"}),
    "templates": frozenset(),
    "cli": frozenset({"core", "generator", "host", "deploy"}),
    "package": frozenset({"core"}),
    "entry": frozenset({"cli"}),
}

#: Layers that import only the core at import time (cli imports the rest inside its functions)
#: and no third-party package at all until a function needs it.
LIGHT_AT_IMPORT = frozenset({"cli", "package", "entry"})

#: The only third-party imports of the core.
CORE_THIRD_PARTY: dict[str, frozenset[str]] = {"encodings": frozenset({"brotli", "deflate"})}


@dataclass(frozen=True)
class Import:
    target: str  # precomp_host module name ("model"), or the top-level name of another package
    internal: bool
    at_import_time: bool  # module level and not under `if TYPE_CHECKING:`
    line: int


class _Collector(ast.NodeVisitor):
    def __init__(self, package: list[str], modules: set[str]) -> None:
        self.package = package  # dotted parts of the package that holds the module
        self.modules = modules
        self.imports: list[Import] = []
        self._lazy = 0

    def _add(self, dotted: str, line: int, names: list[str] | None = None) -> None:
        parts = dotted.split(".") if dotted else []
        now = self._lazy == 0
        if parts[:1] != [PACKAGE]:
            self.imports.append(Import(parts[0], False, now, line))
        elif len(parts) > 1:
            self.imports.append(Import(parts[1], True, now, line))
        else:  # from precomp_host import x, y
            for n in names or ["__init__"]:
                target = n if n in self.modules else "__init__"
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


def discover() -> dict[str, list[Path]]:
    """precomp_host's modules by top-level name (a subpackage is one module, all its files)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        name = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        found.setdefault(name, []).append(path)
    return found


def violations(module: str, source: str, package: list[str], modules: set[str]) -> list[str]:
    """Every import of ``module`` (one of its files' ``source``) that breaks the rules."""
    layer = LAYERS.get(module)
    if layer is None:
        return [f"{module} is not classified in LAYERS"]
    out = []
    for imp in collect_imports(source, package, modules):
        where = f"{module}:{imp.line}"
        if imp.internal:
            other = LAYERS.get(imp.target)
            if imp.target == module:
                continue
            if other is None:
                out.append(f"{where} imports unclassified {imp.target}")
            elif other not in MAY_IMPORT[layer]:
                out.append(f"{where}: {layer} module imports {other} module {imp.target}")
            elif imp.at_import_time and layer in LIGHT_AT_IMPORT and other not in ("core", "cli"):
                out.append(f"{where} imports {imp.target} at import time; import it lazily")
        elif imp.target not in sys.stdlib_module_names:
            allowed = CORE_THIRD_PARTY.get(module, frozenset()) if layer == "core" else None
            if allowed is not None and imp.target not in allowed:
                out.append(f"{where}: core module imports third-party {imp.target}")
            elif layer in LIGHT_AT_IMPORT and imp.at_import_time:
                out.append(f"{where} imports third-party {imp.target} at import time")
    return out


MODULES = discover()


def _package_parts(path: Path) -> list[str]:
    return [PACKAGE, *path.relative_to(PACKAGE_DIR).parent.parts]


def test_every_module_is_classified() -> None:
    unclassified = sorted(set(MODULES) - set(LAYERS))
    assert not unclassified, f"add {unclassified} to LAYERS in {__file__}"


def test_the_core_is_present() -> None:
    assert {m for m, layer in LAYERS.items() if layer == "core"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependency_direction(module: str) -> None:
    problems = []
    for path in MODULES[module]:
        source = path.read_text(encoding="utf-8")
        problems += violations(module, source, _package_parts(path), set(MODULES))
    assert not problems, "\n".join(problems)


# The checker itself: each rule catches a breach (a test that cannot fail is no test).


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("model", "import numpy"),
        ("layout", "from .middleware import PrecompHost"),
        ("layout", "from precomp_host import build"),
        ("plan", "import precomp_host.pyramid"),
        ("headers", "import werkzeug"),
        ("encodings", "import numpy as np"),
        ("pyramid", "from .middleware import x"),
        ("build", "def f():\n    from .deploy import render"),
        ("build", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli import main"),
        ("middleware", "from .build import build_dataset"),
        ("watch", "from .sources import open_volume"),
        ("middleware", "from .deploy import render"),
        ("deploy", "from .middleware import PrecompHost"),
        ("deploy", "from .writer import DatasetWriter"),
        ("cli", "from .build import build_dataset"),
        ("cli", "import numpy"),
        ("cli", "from . import middleware"),
        ("__init__", "from .build import BuildError"),
        ("__init__", "import numpy"),
        ("__main__", "from .build import build_dataset"),
        ("pyramid", "from .brand_new import x"),
        ("brand_new", "import os"),
    ],
)
def test_checker_catches(module: str, source: str) -> None:
    modules = set(LAYERS) | {"brand_new"}
    assert violations(module, source, [PACKAGE], modules)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("encodings", "import brotli\ntry:\n    import deflate\nexcept ImportError:\n    pass"),
        ("layout", "from .model import ChunkKey\nimport re"),
        ("build", "import numpy as np\nfrom .writer import DatasetWriter\nfrom .plan import x"),
        ("middleware", "import werkzeug\nfrom .headers import cors_headers\nfrom .index import I"),
        ("cli", "import argparse\nfrom .encodings import ENCODINGS"),
        ("cli", "def build():\n    from .build import build_dataset\n    import numpy"),
        ("cli", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .build import B"),
        ("__main__", "from .cli import main"),
        ("__init__", "from .model import Dataset"),
    ],
)
def test_checker_allows(module: str, source: str) -> None:
    assert violations(module, source, [PACKAGE], set(LAYERS)) == []


def test_relative_imports_in_a_subpackage() -> None:
    # precomp_host/deploy/render.py: ".x" is deploy itself, "..model" the core.
    ok = "from .nginx import conf\nfrom ..model import Dataset\nfrom .. import headers"
    assert violations("deploy", ok, [PACKAGE, "deploy"], set(LAYERS)) == []
    bad = "from ..middleware import PrecompHost"
    assert violations("deploy", bad, [PACKAGE, "deploy"], set(LAYERS))
