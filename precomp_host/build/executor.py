"""Running a build's tasks in this process: :class:`ThreadExecutor` and the :class:`Tracker`.

The tasks (:mod:`~.regions`, mesh regions) are independent calls returning the bytes they
stored; the executor runs them on a thread pool (numpy, the codecs and the compressors
release the GIL) with a bounded number in flight, re-raises the first failure, and reports
progress from the calling thread, where the ``progress`` callback may raise to stop the build.
A cluster executor (issue #14) runs the same task functions elsewhere.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from ..core.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


class Tracker:
    """Counts finished work (chunks, mesh regions) from worker threads; reported from the
    building thread."""

    def __init__(self, total: int, progress: Callable[[Progress], None] | None) -> None:
        self.total, self.progress = total, progress
        self.done = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._reported = -1

    def add(self, nbytes: int, count: int = 1) -> None:
        with self._lock:
            self.done += count
            self.bytes += nbytes

    def report(self) -> None:
        if self.progress is None or self.done == self._reported:
            return
        self._reported = self.done
        self.progress(Progress(self.done, self.total, self.bytes, time.monotonic() - self.start))


class ThreadExecutor:
    """Runs tasks on ``workers`` threads, at most ``2 * workers`` submitted at a time.

    A task holds its region's voxels only while it runs; the bound keeps the queue (and the
    callables' arguments) small for builds of millions of tasks.
    """

    def __init__(self, workers: int, tracker: Tracker) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="precomp-build")
        self.limit = 2 * workers
        self.tracker = tracker

    def run(self, tasks: Iterable[Callable[[], object]]) -> None:
        """Run every task; returns when all are done, raising the first failure."""
        pending: set[Future[object]] = set()
        try:
            for task in tasks:
                while len(pending) >= self.limit:
                    pending = self._wait(pending)
                pending.add(self.executor.submit(task))
            while pending:
                pending = self._wait(pending)
        finally:
            for f in pending:
                f.cancel()
        self.tracker.report()

    def _wait(self, pending: set[Future[object]]) -> set[Future[object]]:
        done, rest = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for f in done:
            exc = f.exception()
            if exc is not None:
                raise exc
        self.tracker.report()
        return rest

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
