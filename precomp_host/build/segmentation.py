"""What a segmentation build adds: :class:`LabelVolume`, :class:`MeshObserver` and the voxel counts.

Labels are checked and widened slab by slab (:class:`LabelVolume`: uint8/16/32 and non-negative
int8/16/32 are stored as uint32, 64-bit labels as uint64, the two types volume.md allows for
``compressed_segmentation``). The extras see every scale-0 slab as it streams by: they count
voxels per label for ``segment_properties`` and, with meshing on, mesh each slab's regions
(plus the first slice of the next slab, read on its own so that no slab waits for the next
one, see :mod:`precomp_host.meshes`) in worker processes:
zmesh holds the GIL while it meshes and simplifies, so threads would mesh on one core. After
the chunks, their ``write_metadata`` writes the manifests, ``mesh/info`` and
``segment_properties/info``. Both are slab observers of the segmentation volume kind
(:mod:`precomp_host.build.kinds`).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.model import box_name
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
from .segment_properties import (
    SEGMENT_PROPERTIES_DIR,
    SegmentRow,
    VoxelCounter,
    properties_info,
)
from .sources import SourceError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.model import Dataset, Scale, Vec3

    #: A region's core box ``(start, stop)`` in absolute voxels.
    Box = tuple[Vec3, Vec3]
    from .sources import Volume
    from .writer import Writer

log = logging.getLogger(__name__)

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
        arr = self.inner.read(z0, z1)
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
            raise SourceError(
                f"negative label {int(arr.min())} in slices {z0}-{z1}: labels must be >= 0"
            )
        out: np.ndarray = arr.astype(self.dtype, copy=False)
        return out


@dataclass(frozen=True)
class SegmentationOptions:
    """The segmentation part of a build: meshes, which segments, names."""

    mesh: bool = False
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


class VoxelCountObserver:
    """Counts voxels per label in the scale-0 slabs, for ``segment_properties/info``."""

    busy = False

    def __init__(self, options: SegmentationOptions, writer: Writer) -> None:
        self.options, self.writer = options, writer
        self.counter = VoxelCounter()

    def num_tasks(self, slab_depth: int) -> int:
        return 0

    def push(self, slab: np.ndarray, z0: int) -> None:
        self.counter.add(slab)

    def write_metadata(self) -> None:
        doc = properties_info(self.options.names, self.counter.counts)
        self.writer.put_json(f"{SEGMENT_PROPERTIES_DIR}/info", doc)

    def close(self) -> None:
        pass


class MeshObserver:
    """Legacy meshes of the scale-0 slabs: one mesh task per region, run in worker processes.

    :param submit: runs a task (returning bytes written) on the build's worker pool; a mesh
        task there hands its region to one of ``workers`` processes and writes the result.
    :param read_slice: reads slice ``z`` (from 0) of the volume as ``[1, y, x, 1]`` labels:
        a slab's regions reach one slice into the next slab.
    :param resume: skip the regions an interrupted build recorded as meshed (meshing is most
        of a segmentation build's time; a region's result depends only on its labels and the
        settings, which ``--resume`` checks are unchanged).
    """

    busy = True

    def __init__(
        self,
        scale: Scale,
        options: SegmentationOptions,
        writer: Writer,
        submit: Callable[[Callable[[], int]], None],
        workers: int = 1,
        read_slice: Callable[[int], np.ndarray] | None = None,
        resume: bool = False,
    ) -> None:
        self.read_slice = read_slice
        self.resume = resume
        self.scale, self.options, self.writer, self.submit = scale, options, writer, submit
        # spawn, not fork: the build process runs threads, and a forked child could inherit a
        # lock held by one of them.
        self._procs: ProcessPoolExecutor | None = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        self.fragments: dict[int, list[str]] = defaultdict(list)
        self._lock = threading.Lock()

    def num_tasks(self, slab_depth: int) -> int:
        """Mesh tasks a build will run (for progress totals)."""
        x, y, z = self.scale.size
        rx, ry = self.options.region_size
        return -(-x // rx) * -(-y // ry) * -(-z // slab_depth)

    def push(self, slab: np.ndarray, z0: int) -> None:
        """Scale-0 slices ``[z0, z0 + len(slab))`` (absolute), in order."""
        end = z0 + slab.shape[0]
        next_slice = None
        if end < self.scale.stop[2]:
            if self.read_slice is None:
                raise ValueError("meshing a slab that is not the last needs read_slice")
            next_slice = self.read_slice(end - self.scale.voxel_offset[2])
        ox, oy, _ = self.scale.voxel_offset
        stop = (self.scale.stop[0], self.scale.stop[1], end)
        rx, ry = self.options.region_size
        for core in iter_regions((ox, oy, z0), stop, (rx, ry, slab.shape[0])):
            self.submit(functools.partial(self._mesh_region, core, slab, z0, next_slice))

    def _mesh_region(
        self, core: Box, slab: np.ndarray, z0: int, next_slice: np.ndarray | None
    ) -> int:
        record = self.writer.get_json(_journal_record(core)) if self.resume else None
        if record is not None:
            segments = record["segments"]
            with self._lock:
                for segment in segments:
                    self.fragments[segment].append(fragment_name(segment, *core))
            return 0
        ox, oy, _ = self.scale.voxel_offset
        a, b = data_box(*core, self.scale.stop)
        xs, ys = slice(a[0] - ox, b[0] - ox), slice(a[1] - oy, b[1] - oy)
        block = slab[:, ys, xs, 0]
        if b[2] > z0 + slab.shape[0]:
            assert next_slice is not None
            block = np.concatenate([block, next_slice[:, ys, xs, 0]])
        assert self._procs is not None
        frags = self._procs.submit(
            mesh_region,
            np.ascontiguousarray(block),
            a,
            self.scale.resolution,
            self.options.segments,
            volume_box=(self.scale.voxel_offset, self.scale.stop),
            core_stop=core[1],
            simplification=self.options.simplification,
        ).result()
        written = 0
        for segment, data in frags.items():
            name = fragment_name(segment, *core)
            written += self.writer.put(f"{MESH_DIR}/{name}", data)
            with self._lock:
                self.fragments[segment].append(name)
        # Last: a region with a record has all its fragments on disk.
        self.writer.put_json(_journal_record(core), {"segments": sorted(frags)})
        return written

    def close(self) -> None:
        """Stop the mesh processes (after :meth:`write_metadata`, or on failure)."""
        if self._procs is not None:
            self._procs.shutdown(wait=True, cancel_futures=True)
            self._procs = None

    def write_metadata(self) -> None:
        """The manifests and ``mesh/info``; after every task is done."""
        for segment in sorted(self.fragments):
            self.writer.put(
                f"{MESH_DIR}/{manifest_name(segment)}", manifest_bytes(self.fragments[segment])
            )
        self.writer.put_json(f"{MESH_DIR}/info", MESH_INFO)
        log.info("meshes: %d segments", len(self.fragments))


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


def parse_segments(values: Sequence[str]) -> tuple[int, ...]:
    """``--segments 3 5,7`` -> (3, 5, 7); ``ValueError`` naming a bad id."""
    out: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if not part.isdigit() or int(part) >= 2**64:
                raise ValueError(f"not a segment id: {part!r}")
            out.append(int(part))
    return tuple(sorted(set(out)))
