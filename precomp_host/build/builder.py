"""Source volume -> complete precomputed dataset: :func:`build_dataset` (the orchestration).

A build opens the source as its volume kind reads it (:mod:`precomp_host.build.kinds`), plans
the scales (:mod:`precomp_host.build.plan`), checks the output folder, then streams the volume
through the pyramid (:mod:`precomp_host.build.streaming`), each complete chunk row becoming
encode-compress-write tasks on the worker pool. Each chunk's bytes depend only on the data, so
the output is the same whatever the number of workers and the order they finish in.

The library never prints: it reports through ``progress`` and ``logging``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.layout import LAYOUTS, TMP_DIR
from .kinds import SlabContext, VolumeKind, kind_for
from .output import STATE_FILE, Output, OutputError
from .plan import plan_dataset, plan_sharding
from .segmentation import MESH_JOURNAL_DIR, LabelError, SegmentationOptions
from .sinks import sink_for
from .sources import SourceError, Volume, open_volume
from .streaming import Level, Pool, Tracker, in_bands, stream_volume
from .writer import DatasetWriter, DiskFullError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.model import ChunkKey, Dataset, Res3, Scale, Vec3, VolumeType
    from ..core.progress import Progress
    from .chunk_codecs import ChunkCodec
    from .sinks import ChunkSink

log = logging.getLogger(__name__)


class BuildError(Exception):
    """A build that cannot proceed; the message is one line naming the problem."""


@dataclass(frozen=True)
class BuildOptions:
    resolution: Res3
    volume_type: VolumeType = "image"
    chunk_size: Vec3 = (64, 64, 64)
    max_scales: int | None = None
    encoding: str = "raw"
    codec_options: dict[str, object] = field(default_factory=dict)
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
    #: Shard every scale for shard files of at most this many bytes (``--sharded``); None
    #: stores a file per chunk.
    shard_size: int | None = None

    def kind(self) -> VolumeKind:
        """What this build's volume type changes (codec check, downsampler, observers)."""
        return kind_for(self.volume_type, self.segmentation)


def _mode(output: Output, options: BuildOptions, dataset: Dataset, planned: dict[str, Any]) -> str:
    """How to write OUT: ``fresh``, ``resume``, ``replace`` or ``done`` (nothing to do)."""
    out = output.out
    if output.is_empty():
        return "fresh"
    info, state = out / "info", out / STATE_FILE
    if options.resume:
        if info.exists():
            # Finished already: a no-op if the settings agree. Its info and its files (layout,
            # stored variants of the first chunk) say which settings built it.
            writer = DatasetWriter(out, LAYOUTS[options.layout], compress=options.compress,
                                   keep_identity=options.keep_identity)  # fmt: skip
            differs = _first_difference(
                {"info": json.loads(info.read_text())}, {"info": planned["info"]}
            ) or writer.stored_differently(dataset.scales[0].chunk_key((0, 0, 0)))
            if differs:
                raise OutputError(f"{out}: holds a finished build with other settings ({differs})")
            return "done"
        if not state.exists():
            raise OutputError(f"{out}: nothing to resume (no interrupted build here)")
        differs = _first_difference(json.loads(state.read_text()), planned)
        if differs:
            raise OutputError(f"{out}: the interrupted build used other settings ({differs})")
        return "resume"
    if options.overwrite:
        if not info.exists() and not state.exists():
            raise OutputError(f"{out}: not empty and not a precomputed dataset; not overwriting")
        return "replace"
    raise OutputError(f"{out}: output folder is not empty (use --overwrite or --resume)")


def _first_difference(recorded: dict[str, Any], planned: dict[str, Any]) -> str | None:
    for key in sorted(recorded.keys() | planned.keys()):
        if recorded.get(key) != planned.get(key):
            return (
                f"{key}: {json.dumps(recorded.get(key))} here, {json.dumps(planned.get(key))} now"
            )
    return None


def _refuse_source_inside(source: str | os.PathLike[str] | Volume, out: Path) -> None:
    """A build may delete OUT's content: a source inside it is refused before anything."""
    if not isinstance(source, str | os.PathLike):
        return
    text = os.fspath(source)
    # A glob names files that may not exist yet as one path: its folder decides.
    path = Path(os.path.dirname(text) if any(ch in text for ch in "*?[") else text)
    src, dst = path.resolve(), out.resolve()
    if src == dst or dst in src.parents:
        raise BuildError(f"{source}: the source is inside OUT ({out}); build elsewhere")


def plan_for(
    volume: Volume, options: BuildOptions, kind: VolumeKind | None = None
) -> tuple[Dataset, tuple[Vec3, ...], ChunkCodec]:
    """The dataset a build of ``volume`` will write, its downsampling factors and codec."""
    kind = kind or options.kind()
    dtype = np.dtype(volume.dtype)
    try:
        codec = kind.codec(options.encoding, options.codec_options, dtype, volume.num_channels)
        dataset, factors = plan_dataset(
            volume_type=kind.name,
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
        dataset = kind.plan(dataset)
        if options.shard_size is not None:
            dataset = plan_sharding(
                dataset,
                options.shard_size,
                voxel_bytes=dtype.itemsize * volume.num_channels,
                gzip_data=codec.gzips,
            )
    except ValueError as e:
        raise BuildError(str(e)) from None
    return dataset, factors, codec


def plan_build(source: str | os.PathLike[str] | Volume, options: BuildOptions) -> Dataset:
    """The dataset :func:`build_dataset` would write (its ``info``), without writing anything:
    the CLI prints the shard plan from it. :raises BuildError: as the build would."""
    kind = options.kind()
    return plan_for(_open(source, options, kind), options, kind)[0]


def _open(
    source: str | os.PathLike[str] | Volume, options: BuildOptions, kind: VolumeKind
) -> Volume:
    try:
        volume = (
            open_volume(source, npy_axes=options.npy_axes)
            if isinstance(source, str | os.PathLike)
            else source
        )
        return kind.open(volume)
    except (SourceError, LabelError) as e:
        raise BuildError(str(e)) from None


def build_dataset(
    source: str | os.PathLike[str] | Volume,
    out: str | os.PathLike[str],
    options: BuildOptions,
    progress: Callable[[Progress], None] | None = None,
) -> Dataset:
    """Build the precomputed dataset of ``source`` into the folder ``out``.

    :param source: a path (see :func:`precomp_host.build.sources.open_volume`) or a ``Volume``.
    :param out: the dataset folder; must be empty or absent unless resuming or overwriting
        (an overwritten dataset is replaced in one step once the new one is complete).
    :param progress: called with a :class:`Progress` as chunks complete.
    :raises BuildError: with a one-line message, leaving nothing at a final name.
    """
    output = Output(out)
    _refuse_source_inside(source, output.out)
    kind = options.kind()
    volume = _open(source, options, kind)
    dataset, factors, codec = plan_for(volume, options, kind)
    planned = {
        "info": dataset.to_json(),
        "layout": options.layout,
        "compress": sorted(options.compress),
        "keep_identity": options.keep_identity,
        **kind.state(),
    }
    try:
        with output:
            mode = _mode(output, options, dataset, planned)
            if mode != "done":
                _write(output, mode, planned, _Build(volume, dataset, codec, options, kind),
                       factors, progress)  # fmt: skip
    except OutputError as e:
        raise BuildError(str(e)) from None
    log.info("built %s: %d scales", output.out, len(dataset.scales))
    return dataset


def _write(
    output: Output,
    mode: str,
    planned: dict[str, Any],
    build: _Build,
    factors: tuple[Vec3, ...],
    progress: Callable[[Progress], None] | None,
) -> None:
    """Write the dataset into ``output`` in ``mode``; on failure leave OUT as it was."""
    options = build.options
    root = output.out
    try:
        root = output.prepare(mode)
        writer = DatasetWriter(
            root, LAYOUTS[options.layout], compress=options.compress,
            keep_identity=options.keep_identity,
        )  # fmt: skip
        build.writer = writer
        writer.begin()
        writer.put_json(STATE_FILE, planned)
        build.run(factors, progress)
        writer.commit(build.dataset)
        shutil.rmtree(root / MESH_JOURNAL_DIR, ignore_errors=True)
        (root / STATE_FILE).unlink()
        output.publish()
    except (DiskFullError, SourceError) as e:
        # Bad data found mid-way or a full disk: leave no chunk of a dataset that cannot be
        # finished, unless the user asked to keep a folder's earlier content (resume).
        shutil.rmtree(root / TMP_DIR, ignore_errors=True)
        output.discard()
        raise BuildError(e.strerror if isinstance(e, DiskFullError) else str(e)) from None
    except OSError as e:
        # OUT cannot be created or written (a file in its path, no permission, I/O error):
        # also the user's to fix, so one line rather than a traceback, and no partial output.
        shutil.rmtree(root / TMP_DIR, ignore_errors=True)
        output.discard()
        where = e.filename if e.filename is not None else output.out
        raise BuildError(f"{where}: cannot write the dataset ({e.strerror or e})") from None
    except BaseException:
        # Interrupted (Ctrl+C) or a bug: OUT keeps what was written, for --resume; a
        # replacement's folder cannot be resumed and goes.
        shutil.rmtree(root / TMP_DIR, ignore_errors=True)
        if mode == "replace":
            output.discard()
        raise


@dataclass
class _Build:
    """One run of the pyramid: the chunk pool, the slab observers and the chunk tasks."""

    volume: Volume
    dataset: Dataset
    codec: ChunkCodec
    options: BuildOptions
    kind: VolumeKind
    writer: DatasetWriter = field(init=False)
    #: Where every encoded chunk goes: the build's one choke point for chunk data.
    sink: ChunkSink = field(init=False)

    def run(self, factors: tuple[Vec3, ...], progress: Callable[[Progress], None] | None) -> None:
        scales = self.dataset.scales
        step = scales[0].chunk_size[2]
        self.tracker = Tracker(sum(s.num_chunks() for s in scales), progress)
        workers = self.options.workers or os.cpu_count() or 1
        pool = Pool(workers, self.tracker)
        self.pool = pool
        self.sink = sink_for(self.writer, self.dataset)
        # Reading and downsampling run beside the chunk workers, not in turn with them: the
        # next slab is read ahead, and each slab is downsampled in y-bands in parallel.
        helpers = ThreadPoolExecutor(max(2, workers), thread_name_prefix="precomp-slab")
        downsampler = in_bands(self.kind.downsampler(self.options.downsample), helpers, workers)
        context = SlabContext(
            scales[0],
            self.writer,
            pool.submit,
            workers,
            read_slice=lambda z: self.volume.read(z, z + 1),
            resume=self.options.resume,
        )
        observers = []
        try:
            observers = self.kind.observers(context)
            self.tracker.total += sum(o.num_tasks(step) for o in observers)
            level = Level.chain(scales, factors, downsampler, self.emit)
            stream_volume(self.volume, level, step, observers, helpers)
            pool.drain()
            self.sink.close()
            for observer in observers:
                observer.write_metadata()
        finally:
            pool.close()
            helpers.shutdown(wait=True, cancel_futures=True)
            for observer in observers:
                observer.close()

    def emit(self, scale: Scale, row: int, buf: np.ndarray, buf_z0: int) -> None:
        """Queue the chunks of ``scale``'s complete chunk row ``row``."""
        ox, oy, _ = scale.voxel_offset
        for key in scale.iter_chunk_keys(range(row, row + 1)):
            if self.options.resume and self.sink.is_complete(key):
                self.tracker.add(0)
                continue
            (x0, y0, z0), (x1, y1, z1) = key.start, key.stop
            block = buf[z0 - buf_z0 : z1 - buf_z0, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            self.pool.submit(functools.partial(self._write_chunk, block, key))
        self.tracker.report()

    def _write_chunk(self, block: np.ndarray, key: ChunkKey) -> int:
        return self.sink.put(key, self.codec.encode(block))
