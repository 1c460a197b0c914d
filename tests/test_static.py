"""The code stays as the brief asks: ruff-clean, ruff-formatted, mypy strict, no dead code
(vulture), and each word of the vocabulary typed in one place only.

Run in CI with the rest, so a change that breaks them fails there rather than in review.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from precomp_host.core import headers, viewer
from precomp_host.core.encodings import ENCODINGS
from precomp_host.host import devserver

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "check", "."], id="ruff-check"),
        pytest.param(["ruff", "format", "--check", "."], id="ruff-format"),
        # The files and strictness come from [tool.mypy] in pyproject.toml.
        pytest.param(["mypy"], id="mypy-strict"),
        # The paths and the names used only dynamically come from [tool.vulture].
        pytest.param(["vulture"], id="vulture"),
    ],
)
def test_tool_passes(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


#: Words a template or a second module could type again, and the one module that defines each.
VOCABULARY = {
    "the public viewer URL": (viewer.PUBLIC_VIEWER, "core/viewer.py"),
    "the events route": (devserver.EVENTS_ROUTE, "host/devserver.py"),
    "the revalidate policy": (headers.REVALIDATE, "core/headers.py"),
    "the immutable policy": (headers.IMMUTABLE, "core/headers.py"),
    **{
        f"the {alias} alias": (alias, "core/encodings.py")
        for e in ENCODINGS.values()
        for alias in e.aliases
    },
}


@pytest.mark.parametrize(("word", "home"), VOCABULARY.values(), ids=list(VOCABULARY))
def test_each_word_is_typed_once(word: str, home: str) -> None:
    typed = sorted(
        [
            *(w for p in (REPO / "precomp_host").rglob("*.py") for w in _typed_in_python(p, word)),
            *(w for p in (REPO / "templates").glob("*.j2") for w in _typed_in_template(p, word)),
        ]
    )
    assert [where.split(":")[0] for where in typed] == [f"precomp_host/{home}"], typed


def _typed_in_python(path: Path, word: str) -> list[str]:
    """Where a string literal of ``path`` is exactly ``word`` (prose mentioning it is not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == word
    ]


def _typed_in_template(path: Path, word: str) -> list[str]:
    """Where ``word`` appears in ``path`` outside comments: a template gets each word as a
    variable (comments of the configs may name it, as prose)."""
    text = re.sub(
        r"\{#.*?#\}", lambda m: "\n" * m[0].count("\n"), path.read_text("utf-8"), flags=re.S
    )
    lines = text.splitlines()
    if ".html" not in path.name:  # nginx and Apache comments run from # to the end of the line
        lines = [re.sub(r"(^|\s)#.*", "", line) for line in lines]
    return [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(lines, 1) if word in line]
