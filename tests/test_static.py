"""The code stays as the brief asks: ruff-clean, ruff-formatted, mypy strict (pyproject.toml).

Run in CI with the rest, so a change that breaks them fails there rather than in review.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "check", "."], id="ruff-check"),
        pytest.param(["ruff", "format", "--check", "."], id="ruff-format"),
        # The files and strictness come from [tool.mypy] in pyproject.toml.
        pytest.param(["mypy"], id="mypy-strict"),
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
