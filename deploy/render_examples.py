"""Re-render the example configs in deploy/ from templates/ (``--check``: fail if stale).

Run from the repository root: ``PYTHONPATH=. python deploy/render_examples.py [--check]``.
tests/test_deploy.py runs the check, so a template change without a re-render fails CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from precomp_host.deploy.site import example_files

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for rel, text in example_files().items():
        path = HERE / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for rel in stale:
        sys.stderr.write(f"{'stale' if check else 'rendered'}: deploy/{rel}\n")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
