"""The streaming machinery of a build: z-slabs through a chain of :class:`Level` objects.

:func:`stream_volume` reads the volume slab by slab and pushes each slab into the scale-0
:class:`Level` (and to the :class:`SlabObserver` objects of the volume kind: meshes, voxel
counts). A level keeps the slices it has received until (a) a row of chunks is complete, which
it hands to ``emit``, and (b) a whole z-block of the next scale's downsampling is available,
which it downsamples and passes on. Memory is therefore a few slabs per scale, whatever the
depth of the volume. Chunk tasks run on a :class:`Pool` that bounds the chunks in flight; a
:class:`Tracker` counts them for progress.

This module knows nothing of codecs, layouts or volume kinds: the orchestration
(:mod:`precomp_host.build.builder`) hands it callables. The same pieces are meant to become
region tasks (x/y/z regions rather than whole-plane slabs) without touching the orchestration.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..core.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.model import Scale, Vec3
    from .pyramid import Downsampler
    from .sources import Volume

    #: ``emit(scale, row, buf, buf_z0)``: chunk row ``row`` of ``scale`` is complete in ``buf``,
    #: whose first slice is absolute z ``buf_z0``.
    Emit = Callable[[Scale, int, np.ndarray, int], None]


class SlabObserver(Protocol):
    """Sees every scale-0 slab as it streams by (a volume kind's meshes, voxel counts)."""

    #: Whether it keeps every core busy for a while per slab: the next slab is then read only
    #: once this one's tasks are queued (reading ahead would gain nothing and hold one more slab).
    busy: bool

    def num_tasks(self, slab_depth: int) -> int:
        """Tasks it will add to the pool (for progress totals)."""

    def push(self, slab: np.ndarray, z0: int) -> None:
        """Scale-0 slices ``[z0, z0 + len(slab))`` (absolute), in order."""

    def write_metadata(self) -> None:
        """Its files, after every task of the pool is done."""

    def close(self) -> None:
        """Release its resources (processes); called on success and on failure."""


class Tracker:
    """Counts finished chunks from worker threads; reported from the building thread."""

    def __init__(self, total: int, progress: Callable[[Progress], None] | None) -> None:
        self.total, self.progress = total, progress
        self.done = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._reported = -1

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.done += 1
            self.bytes += nbytes

    def report(self) -> None:
        if self.progress is None or self.done == self._reported:
            return
        self._reported = self.done
        self.progress(Progress(self.done, self.total, self.bytes, time.monotonic() - self.start))


class Pool:
    """A thread pool with a bounded number of chunks in flight (bounded memory)."""

    def __init__(self, workers: int, tracker: Tracker) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="precomp-build")
        self.slots = threading.BoundedSemaphore(workers * 4)
        self.pending: set[Future[int]] = set()
        self.tracker = tracker

    def submit(self, fn: Callable[[], int]) -> None:
        while not self.slots.acquire(timeout=0.2):
            self._check()
            self.tracker.report()
        self._check()
        fut = self.executor.submit(fn)
        self.pending.add(fut)
        fut.add_done_callback(self._finished)

    def _finished(self, fut: Future[int]) -> None:
        self.slots.release()
        # close() cancels what has not started; exception() on a cancelled future raises
        # CancelledError, which concurrent.futures would log with a traceback.
        if not fut.cancelled() and fut.exception() is None:
            self.tracker.add(fut.result())

    def _check(self) -> None:
        done = {f for f in self.pending if f.done()}
        self.pending -= done
        for f in done:
            exc = f.exception()
            if exc is not None:
                raise exc

    def drain(self) -> None:
        while self.pending:
            wait(self.pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            self._check()
            self.tracker.report()
        self.tracker.report()

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.executor.shutdown(wait=True)


class Level:
    """One scale of the streaming pyramid: buffers z-slices, emits chunk rows, feeds the next."""

    def __init__(
        self,
        scale: Scale,
        factors: Vec3 | None,
        downsampler: Downsampler,
        emit: Emit,
        next_level: Level | None,
    ) -> None:
        self.scale, self.factors, self.downsampler = scale, factors, downsampler
        self.emit, self.next = emit, next_level
        self.z_start, self.z_stop = scale.voxel_offset[2], scale.stop[2]
        self.buf: np.ndarray | None = None
        self.buf_z0 = self.buf_z1 = self.z_start
        self.next_row = 0
        self.next_ds = self.z_start

    @classmethod
    def chain(
        cls,
        scales: Sequence[Scale],
        factors: Sequence[Vec3],
        downsampler: Downsampler,
        emit: Emit,
    ) -> Level:
        """The scale-0 level of a pyramid whose scale ``i + 1`` is scale ``i`` / ``factors[i]``."""
        level: Level | None = None
        for i in reversed(range(len(scales))):
            f = factors[i] if i < len(factors) else None
            level = cls(scales[i], f, downsampler, emit, level)
        assert level is not None
        return level

    def push(self, data: np.ndarray) -> None:
        """Append slices ``[buf_z1, buf_z1 + len(data))`` and do what became possible."""
        if self.buf is None or self.buf.shape[0] == 0:
            self.buf, self.buf_z0 = data, self.buf_z1
        else:
            self.buf = np.concatenate([self.buf, data])
        self.buf_z1 += data.shape[0]
        at_end = self.buf_z1 == self.z_stop
        cz = self.scale.chunk_size[2]
        while True:
            row_start = self.z_start + self.next_row * cz
            row_stop = min(row_start + cz, self.z_stop)
            if row_start >= self.z_stop or row_stop > self.buf_z1:
                break
            self.emit(self.scale, self.next_row, self.buf, self.buf_z0)
            self.next_row += 1
        if self.next is not None and self.factors is not None:
            fz = self.factors[2]
            end = self.z_stop if at_end else (self.buf_z1 // fz) * fz
            if end > self.next_ds:
                lo, hi = self.next_ds - self.buf_z0, end - self.buf_z0
                origin = (self.scale.voxel_offset[0], self.scale.voxel_offset[1], self.next_ds)
                self.next.push(self.downsampler(self.buf[lo:hi], self.factors, origin))
                self.next_ds = end
        keep_from = min(self.z_start + self.next_row * cz, self.next_ds)
        if self.next is None:
            keep_from = self.z_start + self.next_row * cz
        if keep_from > self.buf_z0:
            self.buf = self.buf[keep_from - self.buf_z0 :]
            self.buf_z0 = keep_from


def stream_volume(
    volume: Volume,
    level: Level,
    step: int,
    observers: Sequence[SlabObserver],
    reader: ThreadPoolExecutor,
) -> None:
    """Read ``volume`` in slabs of ``step`` slices into ``level`` and the ``observers``.

    The next slab is read on ``reader`` while this one is processed, unless an observer is
    ``busy`` (meshing keeps every core busy for seconds per slab; reading ahead would gain
    nothing there and hold one more slab in memory: issue #3's RSS bound).
    """
    z_offset = level.scale.voxel_offset[2]
    depth = volume.shape[2]
    slabs = [(z, min(z + step, depth)) for z in range(0, depth, step)]
    late = any(o.busy for o in observers)
    ahead = reader.submit(volume.read, *slabs[0])
    for i in range(len(slabs)):
        slab = ahead.result()
        if i + 1 < len(slabs) and not late:
            ahead = reader.submit(volume.read, *slabs[i + 1])
        for observer in observers:
            observer.push(slab, z_offset + slabs[i][0])
        level.push(slab)
        del slab
        if i + 1 < len(slabs) and late:
            ahead = reader.submit(volume.read, *slabs[i + 1])


def in_bands(
    downsampler: Downsampler, executor: ThreadPoolExecutor, bands: int, min_bytes: int = 4 << 20
) -> Downsampler:
    """``downsampler`` applied to y-bands of a block in parallel (numpy releases the GIL).

    Bands are cut on downsampling block boundaries (absolute multiples of the y factor), so
    each band's result is exactly the matching rows of the whole block's.
    """

    def run(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
        fy, oy, ny = factors[1], origin[1], arr.shape[1]
        cuts = sorted({((oy + ny * k // bands) // fy) * fy - oy for k in range(1, bands)})
        cuts = [c for c in cuts if 0 < c < ny]
        if bands < 2 or not cuts or arr.nbytes < min_bytes:
            return downsampler(arr, factors, origin)
        edges = [0, *cuts, ny]
        parts = [
            executor.submit(downsampler, arr[:, a:b], factors, (origin[0], oy + a, origin[2]))
            for a, b in zip(edges, edges[1:], strict=False)
        ]
        return np.concatenate([p.result() for p in parts], axis=1)

    return run
