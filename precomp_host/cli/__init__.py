"""The ``precomp-host`` command: the only place that prints or draws progress.

``commands`` holds the table of subcommands and ``main``; ``build`` (build, sample), ``serve`` and
``deploy`` each add their arguments and run their wing, imported lazily so that ``--help``
imports neither numpy nor watchdog; ``options`` and ``progress`` are what they share.
"""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
