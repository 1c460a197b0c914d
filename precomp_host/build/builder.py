"""Source volume -> complete precomputed dataset: :func:`build_dataset`.

The volume is streamed in z-slabs through one :class:`_Level` per scale. A level keeps the
slices it has received until (a) a row of chunks is complete, which it hands to the worker pool
to encode, compress and write, and (b) a whole z-block of the next scale's downsampling is
available, which it downsamples and passes on. Memory is therefore a few slabs per scale,
whatever the depth of the volume. Each chunk's bytes depend only on the data, so the output is
the same whatever the number of workers and the order they finish in.

The library never prints: it reports through ``progress`` and ``logging``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.layout import LAYOUTS
from ..core.progress import Progress
from .chunk_codecs import ChunkCodec, make_codec
from .plan import plan_dataset
from .pyramid import DOWNSAMPLERS, Downsampler
from .segmentation import (
    MESH_JOURNAL_DIR,
    LabelError,
    LabelVolume,
    SegmentationExtras,
    SegmentationOptions,
    plan_segmentation,
)
from .sources import SourceError, Volume, open_volume
from .writer import DatasetWriter, DiskFullError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.model import Dataset, Res3, Scale, Vec3, VolumeType

log = logging.getLogger(__name__)

#: Data types an image volume may have (issue #2); the spec's other integer types are stored
#: as given too.
IMAGE_DTYPES = ("uint8", "uint16", "uint32", "float32", "int8", "int16", "int32")
_STATE_FILE = ".precomp-build.json"


class BuildError(Exception):
    """A build that cannot proceed; the message is one line naming the problem."""


@dataclass(frozen=True)
class BuildOptions:
    resolution: Res3
    volume_type: VolumeType = "image"
    chunk_size: Vec3 = (64, 64, 64)
    max_scales: int | None = None
    encoding: str = "raw"
    codec_options: dict[str, Any] = field(default_factory=dict)
    layout: str = "nested"
    compress: tuple[str, ...] = ("gzip", "br")
    keep_identity: bool = False
    voxel_offset: Vec3 = (0, 0, 0)
    downsample: str | None = None  # default: mean for images, mode for segmentations
    segmentation: SegmentationOptions = field(default_factory=SegmentationOptions)
    workers: int | None = None
    resume: bool = False
    overwrite: bool = False
    npy_axes: str | None = None


class _Tracker:
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


class _Pool:
    """A thread pool with a bounded number of chunks in flight (bounded memory)."""

    def __init__(self, workers: int, tracker: _Tracker) -> None:
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
            _, not_done = wait(self.pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            self._check()
            self.tracker.report()
        self.tracker.report()

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.executor.shutdown(wait=True)


class _Level:
    """One scale of the streaming pyramid: buffers z-slices, emits chunk rows, feeds the next."""

    def __init__(
        self,
        scale: Scale,
        factors: Vec3 | None,
        downsampler: Downsampler,
        emit: Callable[[Scale, int, np.ndarray, int], None],
        next_level: _Level | None,
    ) -> None:
        self.scale, self.factors, self.downsampler = scale, factors, downsampler
        self.emit, self.next = emit, next_level
        self.z_start, self.z_stop = scale.voxel_offset[2], scale.stop[2]
        self.buf: np.ndarray | None = None
        self.buf_z0 = self.buf_z1 = self.z_start
        self.next_row = 0
        self.next_ds = self.z_start

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


def _check_output(out: Path, options: BuildOptions, planned: dict[str, Any]) -> bool:
    """Validate the output folder; returns whether it is absent or empty (ours to clean up)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out}: output exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return True
    state = out / _STATE_FILE
    if options.resume:
        if (out / "info").exists() and not state.exists():
            # Complete already: resuming is a no-op if the settings agree.
            previous = json.loads((out / "info").read_text())
            if previous != planned["info"]:
                raise BuildError(f"{out}: holds a finished build with other settings")
            return False
        if not state.exists():
            raise BuildError(f"{out}: nothing to resume (no interrupted build here)")
        if json.loads(state.read_text()) != planned:
            raise BuildError(f"{out}: the interrupted build used other settings; cannot resume")
        return False
    if options.overwrite:
        if not (out / "info").exists() and not state.exists():
            raise BuildError(f"{out}: not empty and not a precomputed dataset; not overwriting")
        (out / "info").unlink(missing_ok=True)  # unpublish first
        _empty_folder(out)
        return True
    raise BuildError(f"{out}: output folder is not empty (use --overwrite or --resume)")


def _empty_folder(out: Path) -> None:
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def plan_for(volume: Volume, options: BuildOptions) -> tuple[Dataset, tuple[Vec3, ...], ChunkCodec]:
    """The dataset a build of ``volume`` will write, its downsampling factors and codec."""
    dtype = np.dtype(volume.dtype)
    if options.volume_type == "image" and dtype.name not in IMAGE_DTYPES:
        raise BuildError(f"unsupported data type {dtype} for an image volume")
    try:
        codec = make_codec(options.encoding, **options.codec_options)
    except ValueError as e:
        raise BuildError(str(e)) from None
    reason = codec.unsupported(dtype, volume.num_channels, options.volume_type)
    if reason:
        raise BuildError(reason)
    try:
        dataset, factors = plan_dataset(
            volume_type=options.volume_type,
            data_type=dtype.name,
            num_channels=volume.num_channels,
            size=volume.shape,
            resolution=options.resolution,
            chunk_size=options.chunk_size,
            voxel_offset=options.voxel_offset,
            encoding=options.encoding,
            max_scales=options.max_scales,
            scale_extra=dict(codec.scale_info),
        )
    except ValueError as e:
        raise BuildError(str(e)) from None
    if options.volume_type == "segmentation":
        dataset = plan_segmentation(dataset, options.segmentation)
    return dataset, factors, codec


def build_dataset(
    source: str | os.PathLike[str] | Volume,
    out: str | os.PathLike[str],
    options: BuildOptions,
    progress: Callable[[Progress], None] | None = None,
) -> Dataset:
    """Build the precomputed dataset of ``source`` into the folder ``out``.

    :param source: a path (see :func:`precomp_host.sources.open_volume`) or a ``Volume``.
    :param out: the dataset folder; must be empty or absent unless resuming or overwriting.
    :param progress: called with a :class:`Progress` as chunks complete.
    :raises BuildError: with a one-line message, leaving nothing at a final name.
    """
    try:
        volume = (
            open_volume(source, npy_axes=options.npy_axes)
            if isinstance(source, str | os.PathLike)
            else source
        )
        if options.volume_type == "segmentation":
            volume = LabelVolume(volume)
    except (SourceError, LabelError) as e:
        raise BuildError(str(e)) from None
    dataset, factors, codec = plan_for(volume, options)
    out = Path(out)
    planned = {
        "info": dataset.to_json(),
        "layout": options.layout,
        "compress": sorted(options.compress),
        "keep_identity": options.keep_identity,
    }
    if options.volume_type == "segmentation" and options.segmentation.mesh:
        # What a meshed region depends on besides its labels: a resumed build reuses regions.
        seg = options.segmentation
        meshing = {"segments": seg.segments, "region_size": seg.region_size,
                   "simplification": dataclasses.asdict(seg.simplification)}  # fmt: skip
        planned["meshing"] = json.loads(json.dumps(meshing))  # as read back from the state file
    fresh = _check_output(out, options, planned)
    writer = DatasetWriter(
        out, LAYOUTS[options.layout], compress=options.compress, keep_identity=options.keep_identity
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        writer.begin()
        writer.put_json(_STATE_FILE, planned)
        _write_scales(volume, dataset, factors, codec, writer, options, progress)
        writer.commit(dataset)
        shutil.rmtree(out / MESH_JOURNAL_DIR, ignore_errors=True)
        (out / _STATE_FILE).unlink()
    except (DiskFullError, SourceError) as e:
        # Bad data found mid-way or a full disk: leave no chunk of a dataset that cannot be
        # finished, unless the user asked to keep a folder's earlier content (resume).
        writer.abort()
        if fresh:
            _empty_folder(out)
        raise BuildError(e.strerror if isinstance(e, DiskFullError) else str(e)) from None
    except OSError as e:
        # OUT cannot be created or written (a file in its path, no permission, I/O error):
        # also the user's to fix, so one line rather than a traceback, and no partial output.
        writer.abort()
        if fresh and out.is_dir():
            _empty_folder(out)
        where = e.filename if e.filename is not None else out
        raise BuildError(f"{where}: cannot write the dataset ({e.strerror or e})") from None
    except BaseException:
        writer.abort()
        raise
    log.info("built %s: %d scales", out, len(dataset.scales))
    return dataset


def _write_scales(
    volume: Volume,
    dataset: Dataset,
    factors: tuple[Vec3, ...],
    codec: ChunkCodec,
    writer: DatasetWriter,
    options: BuildOptions,
    progress: Callable[[Progress], None] | None,
) -> None:
    step = dataset.scales[0].chunk_size[2]
    tracker = _Tracker(sum(s.num_chunks() for s in dataset.scales), progress)
    workers = options.workers or os.cpu_count() or 1
    pool = _Pool(workers, tracker)
    extras = None
    if options.volume_type == "segmentation":
        extras = SegmentationExtras(
            dataset.scales[0],
            options.segmentation,
            writer,
            pool.submit,
            workers,
            read_slice=lambda z: volume.read(z, z + 1),
            resume=options.resume,
        )
        tracker.total += extras.num_tasks(step)
    default = "mode" if options.volume_type == "segmentation" else "mean"
    # Reading and downsampling run beside the chunk workers, not in turn with them: the next
    # slab is read ahead, and each slab is downsampled in y-bands in parallel.
    helpers = ThreadPoolExecutor(max(2, workers), thread_name_prefix="precomp-slab")
    downsampler = _in_bands(DOWNSAMPLERS[options.downsample or default], helpers, workers)

    def emit(scale: Scale, row: int, buf: np.ndarray, buf_z0: int) -> None:
        ox, oy, _ = scale.voxel_offset
        for key in scale.iter_chunk_keys(range(row, row + 1)):
            path = writer.layout.path_for(key)
            if options.resume and writer.is_complete(path):
                tracker.add(0)
                continue
            (x0, y0, z0), (x1, y1, z1) = key.start, key.stop
            block = buf[z0 - buf_z0 : z1 - buf_z0, y0 - oy : y1 - oy, x0 - ox : x1 - ox]

            def task(block: np.ndarray = block, path: str = path) -> int:
                return writer.put(path, codec.encode(block))

            pool.submit(task)
        tracker.report()

    level: _Level | None = None
    for i in reversed(range(len(dataset.scales))):
        f = factors[i] if i < len(factors) else None
        level = _Level(dataset.scales[i], f, downsampler, emit, level)
    assert level is not None
    try:
        depth = volume.shape[2]
        slabs = [(z, min(z + step, depth)) for z in range(0, depth, step)]
        # Meshing keeps every core busy for seconds per slab: reading the next slab meanwhile
        # gains nothing there and would hold one more slab in memory (issue #3's RSS bound),
        # so a meshing build reads it once this slab's tasks are queued.
        late = extras is not None and options.segmentation.mesh
        ahead = helpers.submit(volume.read, *slabs[0])
        for i in range(len(slabs)):
            slab = ahead.result()
            if i + 1 < len(slabs) and not late:
                ahead = helpers.submit(volume.read, *slabs[i + 1])
            if extras is not None:
                extras.push(slab, dataset.scales[0].voxel_offset[2] + slabs[i][0])
            level.push(slab)
            del slab
            if i + 1 < len(slabs) and late:
                ahead = helpers.submit(volume.read, *slabs[i + 1])
        if extras is not None:
            extras.finish()
        pool.drain()
        if extras is not None:
            extras.write_metadata()
    finally:
        pool.close()
        helpers.shutdown(wait=True, cancel_futures=True)
        if extras is not None:
            extras.close()


def _in_bands(
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
