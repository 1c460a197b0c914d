"""Source volume -> complete precomputed dataset: :func:`build_dataset` (the orchestration).

A build opens the source as its volume kind reads it (:mod:`precomp_host.build.kinds`), plans
the scales (:mod:`precomp_host.build.plan`), checks the output folder, then streams the volume
through the pyramid (:mod:`precomp_host.build.streaming`), each complete chunk row becoming
encode-compress-write tasks on the worker pool. Each chunk's bytes depend only on the data, so
the output is the same whatever the number of workers and the order they finish in.

The library never prints: it reports through ``progress`` and ``logging``.
"""

from __future__ import annotations

import contextlib
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
from .chunk_codecs import make_codec
from .cluster import DaskExecutor, ExecutorError, Feed
from .kinds import SlabContext, VolumeKind, kind_for
from .objectwriter import ObjectStoreWriter, StoreError, check_store, is_store_url, storage_options
from .output import STATE_FILE, Output, OutputError
from .plan import plan_dataset, plan_sharding
from .segmentation import MESH_JOURNAL_DIR, LabelError, SegmentationOptions
from .sinks import FileSink, sink_for
from .sources import SourceError, Volume, open_volume
from .streaming import Level, Pool, Tracker, in_bands, stream_volume
from .writer import DatasetWriter, DiskFullError, Writer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
    #: OUT in an S3-compatible store other than AWS (MinIO, Ceph, moto): its endpoint URL.
    endpoint_url: str | None = None
    #: Run the chunk tasks on a Dask cluster: a scheduler address or ``local:N``.
    cluster: str | None = None

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
    with _cluster_for(options) as cluster:
        if is_store_url(os.fspath(out)):
            return _build_into_store(source, os.fspath(out), options, progress, cluster)
        return _build_into_folder(source, out, options, progress, cluster)


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
                build = _Build(volume, dataset, codec, options, kind, cluster)
                _write(output, mode, planned, build, factors, progress)
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
    build = _Build(volume, dataset, codec, options, kind, cluster)
    build.writer = writer
    try:
        if mode == "fresh":  # a resumed build's state is there already, and equal
            writer.put_json(STATE_FILE, planned)
        build.run(factors, progress)
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
    #: Runs the chunk tasks when the build has ``--cluster`` (else the pool does).
    cluster: DaskExecutor | None = None
    writer: Writer = field(init=False)
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
        # On a cluster, chunk tasks carry their block to a worker; at most two per worker
        # thread wait here (bounded memory, as the pool's window).
        self.feed = None
        if self.cluster is not None:
            if not isinstance(self.sink, FileSink):
                # A shard gathers chunks from many tasks in this process's memory.
                raise BuildError("--cluster with --sharded needs the region tasks (issue 13)")
            self.feed = Feed(self.cluster, self.tracker.add, 2 * self.cluster.workers)
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
            if self.feed is not None:
                self.feed.finish()
            pool.drain()
            self.sink.close()
            for observer in observers:
                observer.write_metadata()
        finally:
            if self.feed is not None:
                self.feed.close()
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
            if self.feed is not None:
                options = tuple(self.options.codec_options.items())
                task = ChunkTask(self.sink, self.codec.name, options, key, block.copy())
                self.feed.submit(task)
            else:
                self.pool.submit(functools.partial(self._write_chunk, block, key))
        self.tracker.report()

    def _write_chunk(self, block: np.ndarray, key: ChunkKey) -> int:
        return self.sink.put(key, self.codec.encode(block))


@dataclass(frozen=True)
class ChunkTask:
    """One chunk, encoded and stored on a cluster worker: picklable (the codec is rebuilt
    from its name and options there; codecs hold closures)."""

    sink: ChunkSink
    encoding: str
    codec_options: tuple[tuple[str, object], ...]
    key: ChunkKey
    block: np.ndarray

    def __call__(self) -> int:
        codec = _codec(self.encoding, self.codec_options)
        return self.sink.put(self.key, codec.encode(self.block))


@functools.lru_cache(maxsize=8)
def _codec(encoding: str, options: tuple[tuple[str, object], ...]) -> ChunkCodec:
    return make_codec(encoding, **dict(options))
