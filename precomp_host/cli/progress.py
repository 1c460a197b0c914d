"""Progress as the user sees it: :class:`ProgressView`, a bar on a terminal, else log lines."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..core.progress import Progress

log = logging.getLogger("precomp_host")

#: A bar is redrawn at most this often, in seconds (~10 Hz: smooth, and cheap on a slow tty).
REDRAW_INTERVAL = 0.1
#: Without a terminal: a line per tenth done, or at least this often, in seconds.
LOG_INTERVAL = 30.0


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def fmt_time(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class ProgressView:
    """Draws progress (a build's chunks, an upload's objects): a bar with rate and ETA on a
    terminal, else periodic log lines.

    :param stream: where the bar goes (stderr); its ``isatty`` decides bar or log lines.
    :param label: what is in progress (a dataset's name, ``upload``).
    :param tty: force the bar (True) or the log lines (False).
    :param unit: what ``done`` and ``total`` count.
    :param moved: what happened to ``bytes_written`` (``written``; ``read`` for the doctor).
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        tty: bool | None = None,
        unit: str = "chunks",
        moved: str = "written",
    ) -> None:
        self.stream, self.label, self.unit, self.moved = stream, label, unit, moved
        self.tty = stream.isatty() if tty is None else tty
        self._last_draw = 0.0
        self._last_logged_tenth = -1
        self._last_log = time.monotonic()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        finished = p.done >= p.total
        frac = p.done / p.total if p.total else 1.0
        rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
        eta = (p.total - p.done) / rate if rate > 0 else 0.0
        if self.tty:
            if not finished and now - self._last_draw < REDRAW_INTERVAL:
                return
            self._last_draw = now
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            line = (
                f"\r{self.label} [{bar}] {p.done}/{p.total} {self.unit} {frac:4.0%} "
                f"{rate:,.0f}/s {fmt_bytes(p.bytes_written)} {self.moved} "
                f"{'in ' + fmt_time(p.elapsed) if finished else 'ETA ' + fmt_time(eta)}"
            )
            self.stream.write(line + ("\n" if finished else ""))
            self.stream.flush()
            return
        tenth = int(frac * 10)
        if finished or tenth > self._last_logged_tenth or now - self._last_log > LOG_INTERVAL:
            self._last_logged_tenth, self._last_log = tenth, now
            log.info(
                "%s: %d/%d %s (%.0f%%), %.0f %s/s, %s %s, %s %s",
                self.label,
                p.done,
                p.total,
                self.unit,
                frac * 100,
                rate,
                self.unit,
                fmt_bytes(p.bytes_written),
                self.moved,
                "done in" if finished else "ETA",
                fmt_time(p.elapsed if finished else eta),
            )
