"""What a segmentation build adds: :class:`LabelVolume`, mesh tasks and the voxel counts.

Labels are checked and widened region by region (:class:`LabelVolume`: uint8/16/32 and
non-negative int8/16/32 are stored as uint32, 64-bit labels as uint64, the two types volume.md
allows for ``compressed_segmentation``). The pyramid tasks count voxels per label of their
share of scale 0 (:mod:`~.regions`); :func:`write_segment_properties` sums them. With meshing
on, each :class:`MeshTask` reads its region of scale 0 (plus one voxel on its high sides, see
:mod:`precomp_host.build.meshes`) and meshes it, in worker processes in this process's build
(:class:`ProcessMesher`: zmesh holds the GIL while it meshes and simplifies, so threads would
mesh on one core). A region's journal record, written after its fragments, names its
segments: :func:`write_mesh_metadata` builds the manifests from them, and ``--resume`` skips
recorded regions. With ``--mesh multires`` a region keeps its fragments in one scratch file
instead, and :func:`write_mesh_metadata` makes the sharded multi-resolution meshes from them
(:mod:`precomp_host.build.mesh_shards`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from ..core.model import box_name
from .mesh_shards import segment_multires, write_mesh_shards
from .meshes import (
    MESH_INFO,
    REGION_SIZE,
    Simplification,
    data_box,
    fragment_name,
    iter_regions,
    manifest_bytes,
    manifest_name,
    mesh_region,
)
from .multires import MultiresSettings
from .segment_properties import (
    SEGMENT_PROPERTIES_DIR,
    SegmentRow,
    VoxelCounter,
    properties_info,
)
from .sources import SourceError, read_region
from .writer import DatasetWriter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Future

    from ..core.model import Dataset, Scale, Vec3

    #: A region's core box ``(start, stop)`` in absolute voxels.
    Box = tuple[Vec3, Vec3]
    from .mesh_shards import FragmentRef
    from .regions import Scratch
    from .sources import Volume
    from .writer import Writer

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``legacy`` or ``multires`` (``names.MESH_FORMAT_NAMES``, which ``--mesh`` offers).
MeshFormat = Literal["legacy", "multires"]

#: Folder of the legacy meshes, the value of ``info["mesh"]``.
MESH_DIR = "mesh"
#: Journal of meshed regions, for ``--resume``: one record per region, written after its last
#: fragment, naming the segments it has fragments for. Removed when the build is committed.
MESH_JOURNAL_DIR = ".precomp-mesh-regions"


class LabelError(ValueError):
    """Labels that cannot be stored (float, negative, more than one channel)."""


def storage_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """uint32 for labels of up to 32 bits, uint64 for 64-bit ones; ``LabelError`` otherwise."""
    if dtype.kind not in "ui":
        raise LabelError(f"segmentation labels must be integers, got {dtype}")
    return np.dtype(np.uint64 if dtype.itemsize == 8 else np.uint32)


@dataclass
class LabelVolume:
    """A source volume read as storable labels; negative labels fail the read that meets them."""

    inner: Volume

    def __post_init__(self) -> None:
        if self.inner.num_channels != 1:
            raise LabelError(
                f"a segmentation has one channel of labels, got {self.inner.num_channels}"
            )
        self.shape = self.inner.shape
        self.dtype: np.dtype[Any] = storage_dtype(np.dtype(self.inner.dtype))
        self.num_channels = 1

    def read(self, z0: int, z1: int) -> np.ndarray:
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))

    def read_region(self, start: Vec3, stop: Vec3) -> np.ndarray:
        arr = read_region(self.inner, start, stop)
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
            raise SourceError(
                f"negative label {int(arr.min())} in voxels {box_name(start, stop)}"
                " (from 0): labels must be >= 0"
            )
        out: np.ndarray = arr.astype(self.dtype, copy=False)
        return out


@dataclass(frozen=True)
class SegmentationOptions:
    """The segmentation part of a build: meshes, which segments, names."""

    mesh: bool = False
    #: ``legacy`` (one manifest and fragment files per segment) or ``multires`` (sharded
    #: multi-resolution Draco meshes, :mod:`precomp_host.build.mesh_shards`).
    mesh_format: MeshFormat = "legacy"
    segments: tuple[int, ...] | None = None
    names: tuple[SegmentRow, ...] = ()
    region_size: tuple[int, int] = (REGION_SIZE[0], REGION_SIZE[1])
    simplification: Simplification = Simplification()


def plan_segmentation(dataset: Dataset, options: SegmentationOptions) -> Dataset:
    """``dataset`` with its ``mesh`` and ``segment_properties`` keys (volume.md)."""
    return replace(
        dataset,
        mesh=MESH_DIR if options.mesh else None,
        segment_properties=SEGMENT_PROPERTIES_DIR,
    )


def write_segment_properties(options: SegmentationOptions, writer: Writer,
                             scratch: Scratch) -> None:  # fmt: skip
    """``segment_properties/info`` from the voxel counts the pyramid tasks stored."""
    counter = VoxelCounter()
    scratch.add_counts(counter)
    doc = properties_info(options.names, counter.counts)
    writer.put_json(f"{SEGMENT_PROPERTIES_DIR}/info", doc)


@dataclass(frozen=True)
class MeshTask:
    """One region of legacy meshes: its core box (absolute voxels of scale 0)."""

    core: Box


@dataclass(frozen=True)
class MeshSettings:
    """What every mesh task of a build shares (picklable).

    :param resume: skip the regions an interrupted build recorded as meshed (meshing is most
        of a segmentation build's time; a region's result depends only on its labels and the
        settings, which ``--resume`` checks are unchanged).
    """

    volume: Volume
    scale: Scale
    options: SegmentationOptions
    writer: Writer
    resume: bool = False


def plan_meshes(scale: Scale, options: SegmentationOptions) -> list[MeshTask]:
    """The mesh regions of scale 0: ``region_size`` in x and y, a chunk deep, x fastest."""
    rx, ry = options.region_size
    size = (rx, ry, scale.chunk_size[2])
    return [MeshTask(core) for core in iter_regions(scale.voxel_offset, scale.stop, size)]


def run_mesh_task(
    task: MeshTask, settings: MeshSettings, mesher: Callable[..., dict[int, bytes]] = mesh_region
) -> int:
    """Mesh ``task``'s region (its core plus one voxel on the high sides) and write its
    fragments, then its journal record; returns the bytes stored.

    :param mesher: :func:`~.meshes.mesh_region`, or a callable that runs it elsewhere (zmesh
        holds the GIL: an in-process build meshes in worker processes).
    """
    core = task.core
    writer, scale, options = settings.writer, settings.scale, settings.options
    if settings.resume and writer.get_json(_journal_record(core)) is not None:
        return 0
    off = scale.voxel_offset
    a, b = data_box(*core, scale.stop)
    labels = read_region(
        settings.volume,
        (a[0] - off[0], a[1] - off[1], a[2] - off[2]),
        (b[0] - off[0], b[1] - off[1], b[2] - off[2]),
    )
    frags = mesher(
        np.ascontiguousarray(labels[..., 0]),
        a,
        scale.resolution,
        options.segments,
        volume_box=(scale.voxel_offset, scale.stop),
        core_stop=core[1],
        simplification=options.simplification,
    )
    segments = sorted(frags)
    record: dict[str, Any] = {"segments": segments}
    written = 0
    if options.mesh_format == "multires":
        # One scratch file per region, not per segment and region: the fragments are only
        # the input of the multi-resolution meshes, and go with the journal at commit.
        record["sizes"] = [len(frags[s]) for s in segments]
        data = b"".join(frags[s] for s in segments)
        written += writer.put(_scratch_file(core), data, precompress=False)
    else:
        for segment in segments:
            written += writer.put(f"{MESH_DIR}/{fragment_name(segment, *core)}", frags[segment])
    # Last: a region with a record has all its fragments on disk.
    writer.put_json(_journal_record(core), record)
    return written


def write_mesh_metadata(
    writer: Writer,
    scale: Scale,
    options: SegmentationOptions,
    *,
    resume: bool = False,
    workers: int = 1,
) -> None:
    """The mesh files, from the regions' journal records (after every mesh task is done): the
    legacy manifests and ``mesh/info``, or with ``--mesh multires`` the sharded
    multi-resolution meshes, made in ``workers`` processes (``resume`` keeps finished shards).

    Records are read by name, region by region in plan order: an object store has no folder to
    list cheaply, a record exists for every region once its task is done, and each segment's
    fragments then come in one order whatever the number of workers.
    """
    if options.mesh_format == "multires":
        if not isinstance(writer, DatasetWriter):
            raise TypeError("multi-resolution meshes are made from a folder build's scratch")
        _write_multires(writer, scale, options, resume, workers)
        return
    fragments: dict[int, list[str]] = defaultdict(list)
    for task in plan_meshes(scale, options):
        record = writer.get_json(_journal_record(task.core))
        for segment in record["segments"]:
            fragments[segment].append(fragment_name(segment, *task.core))
    for segment in sorted(fragments):
        writer.put(f"{MESH_DIR}/{manifest_name(segment)}", manifest_bytes(fragments[segment]))
    writer.put_json(f"{MESH_DIR}/info", MESH_INFO)
    log.info("meshes: %d segments", len(fragments))


def _write_multires(
    writer: DatasetWriter, scale: Scale, options: SegmentationOptions, resume: bool, workers: int
) -> None:
    sources: dict[int, list[FragmentRef]] = defaultdict(list)
    for task in plan_meshes(scale, options):
        record = writer.get_json(_journal_record(task.core))
        path, offset = _scratch_file(task.core), 0
        for segment, size in zip(record["segments"], record["sizes"], strict=True):
            sources[segment].append((path, offset, size))
            offset += size
    multires = MultiresSettings(scale.resolution)
    mesher = ProcessMesher(workers)
    root = str(writer.root)
    try:
        spec = write_mesh_shards(
            writer,
            MESH_DIR,
            sources,
            multires,
            lambda st, refs: mesher.submit(segment_multires, root, refs, st),
            window=2 * workers,
            resume=resume,
        )
    finally:
        mesher.close()
    writer.put_json(f"{MESH_DIR}/info", multires.info(spec))
    log.info("multi-resolution meshes: %d segments", len(sources))


class ProcessMesher:
    """:func:`~.meshes.mesh_region` in ``workers`` processes, called from the build's threads."""

    def __init__(self, workers: int) -> None:
        # spawn, not fork: the build process runs threads, and a forked child could inherit a
        # lock held by one of them.
        self._procs = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> dict[int, bytes]:
        out: dict[int, bytes] = self._procs.submit(mesh_region, *args, **kwargs).result()
        return out

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a worker process (the multi-resolution step)."""
        return self._procs.submit(fn, *args)

    def close(self) -> None:
        """Stop the processes (after the mesh tasks, or on failure)."""
        self._procs.shutdown(wait=True, cancel_futures=True)


def _die_with_parent(parent: int) -> None:
    """First thing in each mesh worker: end it when the build process ends.

    A worker waiting for work outlives a killed (``kill -9``) parent, blocked on its queue for
    good (186 MB each, issue 11). Once orphaned, a process gets a new parent, which a thread
    notices; polling works on every platform, unlike Linux's ``PR_SET_PDEATHSIG``, which fires
    when the *thread* that started the worker ends, not the process.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="precomp-parent-watch", daemon=True).start()


def _journal_record(core: Box) -> str:
    return f"{MESH_JOURNAL_DIR}/{box_name(*core)}.json"


def _scratch_file(core: Box) -> str:
    # _write_multires finds it beside the record: the same name, .fragments for .json.
    return f"{MESH_JOURNAL_DIR}/{box_name(*core)}.fragments"


def parse_segments(values: Sequence[str]) -> tuple[int, ...]:
    """``--segments 3 5,7`` -> (3, 5, 7); ``ValueError`` naming a bad id."""
    out: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if not part.isdigit() or int(part) >= 2**64:
                raise ValueError(f"not a segment id: {part!r}")
            out.append(int(part))
    return tuple(sorted(set(out)))
