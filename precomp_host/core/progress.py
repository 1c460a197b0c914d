"""What long work reports as it goes: :class:`Progress`.

The library never draws progress (the brief: only the CLI prints); a build and an upload call
back with one of these, and ``cli.ProgressView`` turns them into a bar or periodic log lines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Work done so far; ``done == total`` at the end."""

    done: int  # items finished (chunks written, objects uploaded or found already there)
    total: int
    bytes_written: int
    elapsed: float  # seconds since the work started
