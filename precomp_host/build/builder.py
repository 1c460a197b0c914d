"""Source volume -> complete precomputed dataset: :func:`build_dataset` (the orchestration).

A build opens the source as its volume kind reads it (:mod:`precomp_host.build.kinds`), plans
the scales (:mod:`precomp_host.build.plan`), checks the output folder, then runs the region
tasks of the pyramid stage by stage (:mod:`precomp_host.build.regions`) and the kind's extra
tasks (mesh regions) on the executor (:mod:`precomp_host.build.executor`, or a Dask cluster:
:mod:`precomp_host.build.cluster`). Each task reads only
its box of the source, so memory depends on the region and chunk sizes, not on the plane or the
depth; each chunk's bytes depend only on the data, so the output is the same whatever the
number of workers and the order they finish in.

The library never prints: it reports through ``progress`` and ``logging``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.layout import LAYOUTS, TMP_DIR
from .cluster import DaskExecutor, ExecutorError
from .executor import ThreadExecutor, Tracker
from .kinds import VolumeKind, kind_for
from .objectwriter import ObjectStoreWriter, StoreError, check_store, is_store_url, storage_options
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
from .writer import DatasetWriter, DiskFullError, Writer, drop_partials

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
    #: OUT in an S3-compatible store other than AWS (MinIO, Ceph, moto): its endpoint URL.
    endpoint_url: str | None = None
    #: Run the build's tasks on a Dask cluster: a scheduler address or ``local:N``.
    cluster: str | None = None
    #: Folder for the scratch store of a build into a bucket (exact arrays where pyramid
    #: stages meet, task records); every worker of a remote cluster must reach it. None: a
    #: temporary folder here (fine in process and for ``local:N``).
    scratch: str | None = None

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
    if options.cluster is not None and options.shard_size is not None:
        # The shard sink gathers a shard's chunks in this process (it does not pickle); region
        # tasks aligned to shards (chunk_output) will let one worker write each shard.
        raise BuildError("--cluster with --sharded is not supported yet (build without --cluster)")
    if options.scratch is not None and not is_store_url(os.fspath(out)):
        raise BuildError("--scratch applies to OUT in a bucket (a folder build keeps it in OUT)")
    remote = options.cluster is not None and not options.cluster.startswith("local:")
    if remote and is_store_url(os.fspath(out)) and options.scratch is None:
        # Stages meet in the scratch store (regions.Scratch), a folder every worker reads.
        raise BuildError(
            f"{out}: a remote --cluster into a bucket needs --scratch DIR on a filesystem "
            "every worker mounts"
        )
    with _cluster_for(options) as cluster:
        if is_store_url(os.fspath(out)):
            return _build_into_store(source, os.fspath(out), options, progress, plan, cluster)
        return _build_into_folder(source, out, options, progress, plan, cluster)


@contextlib.contextmanager
def _cluster_for(options: BuildOptions) -> Iterator[DaskExecutor | None]:
    """The cluster of ``--cluster`` (reached before anything is read or written), or None."""
    if options.cluster is None:
        yield None
        return
    try:
        executor = DaskExecutor(options.cluster)
    except ExecutorError as e:
        raise BuildError(str(e)) from None
    with executor:
        yield executor


def _build_into_folder(
    source: str | os.PathLike[str] | Volume,
    out: str | os.PathLike[str],
    options: BuildOptions,
    progress: Callable[[Progress], None] | None,
    plan: Callable[[str], None] | None,
    cluster: DaskExecutor | None,
) -> Dataset:
    output = Output(out)
    _refuse_source_inside(source, output.out)
    kind = options.kind()
    volume = _open(source, options, kind)
    dataset, factors, codec = plan_for(volume, options, kind)
    planned = _planned(dataset, options, kind)
    try:
        with output:
            mode = _mode(output, options, dataset, planned)
            if mode != "done":
                build = _Build(volume, dataset, factors, codec, options, kind, cluster)
                _write(output, mode, planned, build, progress, plan)
    except OutputError as e:
        raise BuildError(str(e)) from None
    log.info("built %s: %d scales", output.out, len(dataset.scales))
    return dataset


def _planned(dataset: Dataset, options: BuildOptions, kind: VolumeKind) -> dict[str, Any]:
    """What ``--resume`` compares: the settings that decide the bytes of every file."""
    return {
        "info": dataset.to_json(),
        "layout": options.layout,
        "compress": sorted(options.compress),
        "keep_identity": options.keep_identity,
        **kind.state(),
    }


def _build_into_store(
    source: str | os.PathLike[str] | Volume,
    url: str,
    options: BuildOptions,
    progress: Callable[[Progress], None] | None,
    plan: Callable[[str], None] | None,
    cluster: DaskExecutor | None,
) -> Dataset:
    """:func:`build_dataset` into ``s3://`` or ``gs://``: the same tasks, objects for files.

    The bucket is reached (credentials, endpoint) before the source is read or anything is
    written. A store has no atomic swap of a whole prefix, so ``--overwrite`` is refused there:
    a new prefix, or the old one emptied first, does the same job without a mixed dataset.
    """
    kind = options.kind()
    if options.shard_size is not None:
        # Shards are assembled in a local spool (build/shards.py); region tasks that own
        # whole shards will write them straight to the bucket.
        raise BuildError(f"{url}: --sharded builds write to a folder for now (then deploy s3)")
    seg = options.segmentation
    if options.volume_type == "segmentation" and seg.mesh and seg.mesh_format == "multires":
        # Its shards are made from fragments the mesh tasks spool in the dataset folder.
        raise BuildError(f"{url}: --mesh multires writes to a folder for now (then deploy s3)")
    try:
        writer = ObjectStoreWriter(
            url, LAYOUTS[options.layout], compress=options.compress,
            options=storage_options(url.partition(":")[0], options.endpoint_url),
        )  # fmt: skip
        check_store(writer)
    except StoreError as e:
        raise BuildError(str(e)) from None
    volume = _open(source, options, kind)
    dataset, factors, codec = plan_for(volume, options, kind)
    planned = _planned(dataset, options, kind)
    mode = _store_mode(writer, options, planned)
    if mode == "done":
        return dataset
    build = _Build(volume, dataset, factors, codec, options, kind, cluster)
    build.writer = writer
    try:
        if mode == "fresh":  # a resumed build's state is there already, and equal
            writer.put_json(STATE_FILE, planned)
        with _scratch_folder(options.scratch) as scratch:
            build.scratch_root = scratch
            build.run(progress, plan)
        writer.commit(dataset)
        writer.delete_prefix(MESH_JOURNAL_DIR)
        writer.delete(STATE_FILE)
    except (SourceError, OSError) as e:
        # Bad data found mid-way, or the store refused a write: a fresh build leaves nothing.
        if mode == "fresh":
            writer.delete_all()
        raise BuildError(f"{writer.url}: {e}") from None
    log.info("built %s: %d scales", writer.url, len(dataset.scales))
    return dataset


@contextlib.contextmanager
def _scratch_folder(given: str | None) -> Iterator[Path]:
    """The root of a bucket build's scratch store: ``given`` (kept after a failure, for
    ``--resume``; emptied after success) or a temporary folder. A resumed build without its
    scratch runs every pyramid task again, and each stores only the chunks not there yet."""
    if given is None:
        with tempfile.TemporaryDirectory(prefix="precomp-scratch-") as tmp:
            (Path(tmp) / TMP_DIR).mkdir()
            yield Path(tmp)
        return
    root = Path(given)
    (root / TMP_DIR).mkdir(parents=True, exist_ok=True)
    yield root
    shutil.rmtree(root / TMP_DIR, ignore_errors=True)


def _store_mode(writer: ObjectStoreWriter, options: BuildOptions, planned: dict[str, Any]) -> str:
    """``fresh``, ``resume`` or ``done`` for a build into an object store (see :func:`_mode`)."""
    where = writer.url
    if not writer.listing():
        return "fresh"
    if options.overwrite:
        raise BuildError(
            f"{where}: --overwrite cannot replace a dataset in an object store in one step; "
            "build into a new prefix (or empty this one first)"
        )
    if not options.resume:
        raise BuildError(f"{where}: not empty (use --resume, or another prefix)")
    info = writer.get_json("info")
    if info is not None:
        differs = _first_difference({"info": info}, {"info": planned["info"]})
        if differs:
            raise BuildError(f"{where}: holds a finished build with other settings ({differs})")
        return "done"
    state = writer.get_json(STATE_FILE)
    if state is None:
        raise BuildError(f"{where}: nothing to resume (no interrupted build here)")
    differs = _first_difference(state, planned)
    if differs:
        raise BuildError(f"{where}: the interrupted build used other settings ({differs})")
    return "resume"


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
        build.scratch_root = root
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
    #: Runs the tasks when the build has ``--cluster`` (else a thread pool here does).
    cluster: DaskExecutor | None = None
    writer: Writer = field(init=False)
    #: The folder of the scratch store (the dataset folder, or one for a bucket build).
    scratch_root: Path = field(init=False)

    def run(
        self, progress: Callable[[Progress], None] | None, plan: Callable[[str], None] | None
    ) -> None:
        options, writer = self.options, self.writer
        workers = options.workers or os.cpu_count() or 1
        voxel_bytes = np.dtype(self.volume.dtype).itemsize * self.volume.num_channels
        sink, align = self.chunk_output()
        stages = plan_pyramid(self.dataset, self.factors, voxel_bytes=voxel_bytes,
                              budget=options.region_bytes, align=align)  # fmt: skip
        scratch = Scratch(self.scratch_root)
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
        cluster = self.cluster
        with self.kind.extra_tasks(
            self.volume, scale, writer, resume=options.resume,
            workers=None if cluster is not None else workers,
        ) as extras:  # fmt: skip
            chunks = sum(s.num_chunks() for s in self.dataset.scales)
            tracker = Tracker(chunks + len(extras), progress)
            if plan is not None:
                plan(describe(stages, len(extras)))
            tracker.report()  # 0 of the total: a first line before the first task ends
            if cluster is not None:
                # Stage by stage: a stage reads what the one before stored in the scratch.
                # Progress comes back with each finished task (a callback cannot cross
                # processes), counted as the task's chunks.
                def done(result: tuple[int, int]) -> None:
                    tracker.add(*result)

                for stage in stages:
                    calls = self._remote_calls(stage, settings, tracker)
                    cluster.run(calls, done, shared=[settings])
                sink.close()
                cluster.run(extras, tracker.add, shared=_common_args(extras))
                self.kind.write_metadata(
                    writer, scratch, scale, resume=options.resume, workers=workers
                )
                return
            executor = ThreadExecutor(workers, tracker)
            try:
                for stage in stages:
                    executor.run(self._pyramid_calls(stage, settings, tracker))
                sink.close()
                executor.run(functools.partial(_counted, fn, tracker) for fn in extras)
                self.kind.write_metadata(
                    writer, scratch, scale, resume=options.resume, workers=workers
                )
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

    def _remote_calls(
        self, tasks: list[PyramidTask], settings: PyramidSettings, tracker: Tracker
    ) -> Iterator[Callable[[], tuple[int, int]]]:
        for task in tasks:
            if settings.resume and is_finished(task, settings):
                tracker.add(0, task.chunks)
                continue
            yield functools.partial(_pyramid_on_worker, task, settings)


def _pyramid_on_worker(task: PyramidTask, settings: PyramidSettings) -> tuple[int, int]:
    """A pyramid task on a cluster worker: its bytes stored and its chunks (progress)."""
    return run_pyramid_task(task, settings), task.chunks


def _common_args(tasks: Sequence[Callable[[], int]]) -> list[object]:
    """The arguments every task (a ``functools.partial``) shares: its settings, sent to
    a cluster's workers once."""
    partials = [t for t in tasks if isinstance(t, functools.partial)]
    if not partials or len(partials) < len(tasks):
        return []
    return [a for a in partials[0].args if all(any(a is b for b in p.args) for p in partials)]


def _counted(fn: Callable[[], int], tracker: Tracker) -> int:
    n = fn()
    tracker.add(n)
    return n
