"""Source volume -> complete precomputed dataset: :func:`build_dataset` (the orchestration).

A build opens the source as its volume kind reads it (:mod:`precomp_host.build.kinds`), plans
the scales (:mod:`precomp_host.build.plan`), checks the output folder, then runs the region
tasks of the pyramid stage by stage (:mod:`precomp_host.build.regions`) and the kind's extra
tasks (mesh regions) on the executor (:mod:`precomp_host.build.executor`). Each task reads only
its box of the source, so memory depends on the region and chunk sizes, not on the plane or the
depth; each chunk's bytes depend only on the data, so the output is the same whatever the
number of workers and the order they finish in.

The library never prints: it reports through ``progress`` and ``logging``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.layout import LAYOUTS, TMP_DIR
from .executor import ThreadExecutor, Tracker
from .kinds import VolumeKind, kind_for
from .output import STATE_FILE, Output, OutputError
from .plan import plan_dataset, plan_sharding
from .regions import (
    REGION_BYTES,
    PyramidSettings,
    PyramidTask,
    Scratch,
    describe,
    is_finished,
    plan_pyramid,
    run_pyramid_task,
)
from .segmentation import MESH_JOURNAL_DIR, LabelError, SegmentationOptions
from .sinks import sink_for
from .sources import SourceError, Volume, open_volume
from .writer import DatasetWriter, DiskFullError, drop_partials

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ..core.model import Dataset, Res3, Vec3, VolumeType
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
    #: Bytes of source (or scratch) a region task reads at most, where one chunk allows.
    region_bytes: int = REGION_BYTES
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
    plan: Callable[[str], None] | None = None,
) -> Dataset:
    """Build the precomputed dataset of ``source`` into the folder ``out``.

    :param source: a path (see :func:`precomp_host.build.sources.open_volume`) or a ``Volume``.
    :param out: the dataset folder; must be empty or absent unless resuming or overwriting
        (an overwritten dataset is replaced in one step once the new one is complete).
    :param progress: called with a :class:`Progress` as chunks (and mesh regions) complete.
    :param plan: called once, when the output is ready, with a line describing the tasks.
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
                build = _Build(volume, dataset, factors, codec, options, kind)
                _write(output, mode, planned, build, progress, plan)
    except OutputError as e:
        raise BuildError(str(e)) from None
    log.info("built %s: %d scales", output.out, len(dataset.scales))
    return dataset


def _write(
    output: Output,
    mode: str,
    planned: dict[str, Any],
    build: _Build,
    progress: Callable[[Progress], None] | None,
    plan: Callable[[str], None] | None,
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
        build.run(progress, plan)
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
        # Interrupted (Ctrl+C) or a bug: OUT keeps what was written (the scratch store of
        # finished tasks included), for --resume; a replacement's folder cannot be resumed
        # and goes.
        drop_partials(root)
        if mode == "replace":
            output.discard()
        raise


@dataclass
class _Build:
    """One run of the build's tasks: the pyramid stage by stage, then the kind's extras."""

    volume: Volume
    dataset: Dataset
    factors: tuple[Vec3, ...]
    codec: ChunkCodec
    options: BuildOptions
    kind: VolumeKind
    writer: DatasetWriter = field(init=False)

    def run(
        self, progress: Callable[[Progress], None] | None, plan: Callable[[str], None] | None
    ) -> None:
        options, writer = self.options, self.writer
        workers = options.workers or os.cpu_count() or 1
        voxel_bytes = np.dtype(self.volume.dtype).itemsize * self.volume.num_channels
        sink, align = self.chunk_output()
        stages = plan_pyramid(self.dataset, self.factors, voxel_bytes=voxel_bytes,
                              budget=options.region_bytes, align=align)  # fmt: skip
        scratch = Scratch(writer.root)
        settings = PyramidSettings(
            volume=self.volume,
            dataset=self.dataset,
            factors=self.factors,
            codec=self.codec,
            downsampler=self.kind.downsampler(options.downsample),
            sink=sink,
            scratch=scratch,
            count_voxels=self.kind.count_voxels,
            resume=options.resume,
        )
        scale = self.dataset.scales[0]
        with self.kind.extra_tasks(
            self.volume, scale, writer, resume=options.resume, workers=workers
        ) as extras:
            chunks = sum(s.num_chunks() for s in self.dataset.scales)
            tracker = Tracker(chunks + len(extras), progress)
            if plan is not None:
                plan(describe(stages, len(extras)))
            tracker.report()  # 0 of the total: a first line before the first task ends
            executor = ThreadExecutor(workers, tracker)
            try:
                for stage in stages:
                    executor.run(self._pyramid_calls(stage, settings, tracker))
                sink.close()
                executor.run(functools.partial(_counted, fn, tracker) for fn in extras)
                self.kind.write_metadata(writer, scratch)
            finally:
                executor.close()

    def chunk_output(self) -> tuple[ChunkSink, Sequence[Vec3 | None] | None]:
        """Where chunks go (the build's one choke point for chunk data: files, or shards) and,
        per scale, a box of chunks no two tasks may share (None: any).

        The shard sink gathers a shard's chunks from every task that owns some (it spools
        them), so tasks run in this process need no alignment and keep their bounded size;
        tasks run in other processes (a cluster) would pass each scale's shard shape
        (``ShardPlan.shard_shape``) here, so that one task writes each shard."""
        return sink_for(self.writer, self.dataset), None

    def _pyramid_calls(
        self, tasks: list[PyramidTask], settings: PyramidSettings, tracker: Tracker
    ) -> Iterator[Callable[[], int]]:
        for task in tasks:
            if settings.resume and is_finished(task, settings):
                tracker.add(0, task.chunks)
                continue
            yield functools.partial(run_pyramid_task, task, settings, tracker.add)


def _counted(fn: Callable[[], int], tracker: Tracker) -> int:
    n = fn()
    tracker.add(n)
    return n
