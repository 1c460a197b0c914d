"""The ``precomp-host`` command: the only place that prints or draws progress.

``main`` parses the arguments and calls the wings lazily, so ``--help`` imports neither numpy
nor watchdog.
"""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
