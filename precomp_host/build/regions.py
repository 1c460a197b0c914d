"""The pyramid as region tasks: :func:`plan_pyramid` and :func:`run_pyramid_task`.

A :class:`PyramidTask` is a pure function of a box of the volume and the build's
:class:`PyramidSettings`: it reads only its box (from the source, or from the exact scratch copy
of the scale its stage starts at), downsamples it through the scales of its stage, and writes
the chunks it owns through the settings' :class:`~.sinks.ChunkSink` (files, each written
atomically, or shards). Re-running a task writes the same bytes; with ``resume`` it skips the
chunks already complete, and the orchestration skips finished tasks (:func:`is_finished`: a
record, :meth:`Scratch.mark_done`, and every chunk in the sink). Tasks and settings
are plain picklable data with module-level functions, so a process pool or a Dask cluster can
run them (issue #14); :class:`~.executor.ThreadExecutor` runs them in this process.

**Stages.** Scale ``s + 1`` is scale ``s`` downsampled by ``factors[s]``. A stage is a run of
scales ``first..last`` such that one chunk of ``last`` comes from a box of ``first`` of at
most ``budget`` bytes; its tasks are boxes of whole chunks of ``last``. What a task owns at a
finer scale ``s`` is the preimage of its box (``[a * f, b * f)``, clipped to the scale): the
preimages of all tasks tile the scale, and a chunk belongs to the task whose preimage holds
the chunk's first voxel. Where a scale's ``voxel_offset`` is not a multiple of the factors, a
chunk can straddle two preimages: its task then reads the few voxels beyond (a halo), so
every chunk is computed whole from the same voxels as before. A stage that does not end at
the coarsest scale stores its last scale in the scratch store (raw arrays, chunk by chunk,
exactly as downsampled: never re-decoded from a lossy encoding), which the next stage reads.

**Exactness.** Downsampling blocks are aligned to voxel 0 of each scale
(:mod:`~.pyramid`), and every block a task downsamples is whole or cut by the volume's own
bounds, as in a whole-volume pass: each voxel of each scale, and so each chunk's bytes, are
the same whatever the boxes, their order and the number of workers.

(Over 400 lines: the stage plan, the ownership arithmetic of preimages and halos, the task
function and the scratch store it reads share one coordinate scheme; the scratch store is
the piece to move out if it grows, e.g. for an object store.)
"""

from __future__ import annotations

import io
import math
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.layout import TMP_DIR
from ..core.model import box_name
from .boxes import assemble
from .segment_properties import VoxelCounter
from .sources import read_region
from .writer import SCRATCH_DIR

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from ..core.model import ChunkKey, Dataset, Scale, Vec3
    from .chunk_codecs import ChunkCodec
    from .pyramid import Downsampler
    from .sinks import ChunkSink
    from .sources import Volume

#: A voxel box ``(start, stop)`` in a scale's absolute coordinates (``voxel_offset`` included).
Box = tuple["Vec3", "Vec3"]


#: Default bytes of the box a task reads. A running task holds about three times its box
#: (the box, the first downsampling's wider sums, the next scales), so a build holds a few
#: times this per worker; more tasks cost little (a task's overhead is a few file opens).
REGION_BYTES = 8 << 20


@dataclass(frozen=True)
class Scratch:
    """The scratch store of a build under ``root`` (:data:`~.writer.SCRATCH_DIR`): the exact
    arrays of the scales where stages meet, voxel counts, and the record of each finished task.
    Files are written atomically (a temporary name in TMP_DIR, renamed)."""

    root: Path

    @property
    def folder(self) -> Path:
        return self.root / SCRATCH_DIR

    def _put(self, rel: str, data: bytes) -> None:
        final = self.folder / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / TMP_DIR / f"{uuid.uuid4().hex}.scratch"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def put_array(self, key: ChunkKey, arr: np.ndarray) -> None:
        """The exact ``[z, y, x, c]`` voxels of chunk ``key`` (a scale where stages meet)."""
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        self._put(f"{key.scale}/{key.name}.npy", buf.getvalue())

    def read(self, scale: Scale, start: Vec3, stop: Vec3) -> np.ndarray:
        """Voxels ``[start, stop)`` of ``scale`` (absolute) from the chunks stored for it."""
        return assemble(scale, start, stop, self._get_array)

    def _get_array(self, key: ChunkKey) -> np.ndarray:
        arr: np.ndarray = np.load(self.folder / key.scale / f"{key.name}.npy", allow_pickle=False)
        return arr

    def put_counts(self, name: str, counts: dict[int, int]) -> None:
        """Voxel counts per label of a task's box."""
        ids = np.fromiter(counts.keys(), np.uint64, len(counts))
        buf = io.BytesIO()
        np.savez(buf, ids=ids, counts=np.fromiter(counts.values(), np.uint64, len(counts)))
        self._put(f"counts/{name}.npz", buf.getvalue())

    def add_counts(self, counter: VoxelCounter) -> None:
        """Every task's voxel counts, summed into ``counter`` (the order does not matter)."""
        folder = self.folder / "counts"
        for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
            with np.load(path) as f:
                for v, n in zip(f["ids"].tolist(), f["counts"].tolist(), strict=True):
                    counter.counts[v] = counter.counts.get(v, 0) + n

    def mark_done(self, name: str) -> None:
        """Record task ``name`` as finished: everything it writes is on disk."""
        self._put(f"done/{name}", b"")

    def is_done(self, name: str) -> bool:
        return (self.folder / "done" / name).exists()


@dataclass(frozen=True)
class PyramidSettings:
    """What every pyramid task of a build shares (picklable)."""

    volume: Volume
    dataset: Dataset
    factors: tuple[Vec3, ...]
    codec: ChunkCodec
    downsampler: Downsampler
    sink: ChunkSink
    scratch: Scratch
    #: Count voxels per label at scale 0 (segment properties).
    count_voxels: bool = False
    resume: bool = False


@dataclass(frozen=True)
class PyramidTask:
    """Scales ``first..last`` of the box of chunks ``[grid_start, grid_stop)`` of ``last``."""

    first: int
    last: int
    grid_start: Vec3
    grid_stop: Vec3
    #: Chunks it owns over all its scales (progress).
    chunks: int

    @property
    def name(self) -> str:
        return f"{self.first}-{self.last}_{box_name(self.grid_start, self.grid_stop)}"


def _voxels_of_grid(scale: Scale, g0: Vec3, g1: Vec3) -> Box:
    """Voxel box of the grid box ``[g0, g1)``, clipped to the scale."""
    off, c, end = scale.voxel_offset, scale.chunk_size, scale.stop
    a = tuple(o + g * n for o, g, n in zip(off, g0, c, strict=True))
    b = tuple(min(o + g * n, e) for o, g, n, e in zip(off, g1, c, end, strict=True))
    return (a[0], a[1], a[2]), (b[0], b[1], b[2])


def _owned_grid(scale: Scale, box: Box) -> tuple[Vec3, Vec3]:
    """Grid box of the chunks whose first voxel lies in ``box``."""
    off, c, shape = scale.voxel_offset, scale.chunk_size, scale.grid_shape()
    a = tuple(min(-(-(s - o) // n), g) for s, o, n, g in zip(box[0], off, c, shape, strict=True))
    b = tuple(min(-(-(e - o) // n), g) for e, o, n, g in zip(box[1], off, c, shape, strict=True))
    return (a[0], a[1], a[2]), (b[0], b[1], b[2])


def _preimage(box: Box, factors: Vec3, lower: Scale) -> Box:
    """The voxels of scale ``lower`` that ``box`` of the next scale is downsampled from."""
    lo, hi = lower.voxel_offset, lower.stop
    a = tuple(max(s * f, o) for s, f, o in zip(box[0], factors, lo, strict=True))
    b = tuple(min(e * f, o) for e, f, o in zip(box[1], factors, hi, strict=True))
    return (a[0], a[1], a[2]), (b[0], b[1], b[2])


def _is_empty(g0: Vec3, g1: Vec3) -> bool:
    return any(b <= a for a, b in zip(g0, g1, strict=True))


def _volume_of(g0: Vec3, g1: Vec3) -> int:
    return 0 if _is_empty(g0, g1) else math.prod(b - a for a, b in zip(g0, g1, strict=True))


@dataclass(frozen=True)
class _Level:
    """One scale of a task: the chunks it owns and the voxels it computes."""

    owned: tuple[Vec3, Vec3]  # grid box
    needed: Box  # voxel box (owned chunks and what the next scale is downsampled from)
    region: Box  # its exact share of the scale (tiles the scale over all tasks)


def _levels(task: PyramidTask, dataset: Dataset, factors: Sequence[Vec3]) -> list[_Level]:
    """The task's scales ``first..last``, in that order."""
    scales = dataset.scales
    top = scales[task.last]
    region = _voxels_of_grid(top, task.grid_start, task.grid_stop)
    levels = [_Level((task.grid_start, task.grid_stop), region, region)]
    for s in range(task.last - 1, task.first - 1, -1):
        region = _preimage(region, factors[s], scales[s])
        owned = _owned_grid(scales[s], region)
        needed = _preimage(levels[-1].needed, factors[s], scales[s])
        if not _is_empty(*owned):
            a, b = _voxels_of_grid(scales[s], *owned)
            needed = (
                (min(a[0], needed[0][0]), min(a[1], needed[0][1]), min(a[2], needed[0][2])),
                (max(b[0], needed[1][0]), max(b[1], needed[1][1]), max(b[2], needed[1][2])),
            )
        levels.append(_Level(owned, needed, region))
    return levels[::-1]


def _crop(arr: np.ndarray, at: Vec3, box: Box) -> np.ndarray:
    """The part ``box`` of ``arr``, whose first voxel is ``at`` (``[z, y, x, c]`` views)."""
    (x0, y0, z0), (x1, y1, z1) = box
    return arr[z0 - at[2] : z1 - at[2], y0 - at[1] : y1 - at[1], x0 - at[0] : x1 - at[0]]


def run_pyramid_task(
    task: PyramidTask, settings: PyramidSettings, on_chunk: Callable[[int], None] | None = None
) -> int:
    """Compute and write ``task``'s chunks; returns the bytes stored.

    :param on_chunk: called with each chunk's stored bytes (progress within the task).
    """
    dataset, factors = settings.dataset, settings.factors
    scales = dataset.scales
    levels = _levels(task, dataset, factors)
    first = scales[task.first]
    start, stop = levels[0].needed
    if task.first == 0:
        off = first.voxel_offset
        data = read_region(
            settings.volume,
            (start[0] - off[0], start[1] - off[1], start[2] - off[2]),
            (stop[0] - off[0], stop[1] - off[1], stop[2] - off[2]),
        )
    else:
        data = settings.scratch.read(first, start, stop)
    if settings.count_voxels and task.first == 0:
        counter = VoxelCounter()
        counter.add(_crop(data, start, levels[0].region))
        settings.scratch.put_counts(task.name, counter.counts)
    written = 0
    for i, level in enumerate(levels):
        s = task.first + i
        scale = scales[s]
        at = level.needed[0]
        # A later stage's first scale was written by the stage before (as its last).
        keys = scale.iter_chunk_keys_in(*level.owned) if i > 0 or task.first == 0 else iter(())
        for key in keys:
            if settings.resume and settings.sink.is_complete(key):
                n = 0
            else:
                block = np.ascontiguousarray(_crop(data, at, (key.start, key.stop)))
                n = settings.sink.put(key, settings.codec.encode(block))
            written += n
            if on_chunk is not None:
                on_chunk(n)
        if s == task.last:
            if s + 1 < len(scales):  # the next stage starts here: keep it exact
                for key in scale.iter_chunk_keys_in(*level.owned):
                    block = np.ascontiguousarray(_crop(data, at, (key.start, key.stop)))
                    settings.scratch.put_array(key, block)
            break
        below = _preimage(levels[i + 1].needed, factors[s], scale)
        data = settings.downsampler(_crop(data, at, below), factors[s], below[0])
        nxt = levels[i + 1].needed
        assert data.shape[2::-1] == tuple(b - a for a, b in zip(*nxt, strict=True)), (
            data.shape,
            nxt,
        )
    settings.scratch.mark_done(task.name)
    return written


def is_finished(task: PyramidTask, settings: PyramidSettings) -> bool:
    """Whether an earlier run finished ``task``: its record exists and the sink holds every
    chunk it owns (a shard sink drops the spooled chunks of unfinished shards when a run stops,
    so a finished task whose shard is not complete runs again)."""
    if not settings.scratch.is_done(task.name):
        return False
    levels = _levels(task, settings.dataset, settings.factors)
    return all(
        settings.sink.is_complete(key)
        for i, level in enumerate(levels)
        if i > 0 or task.first == 0
        for key in settings.dataset.scales[task.first + i].iter_chunk_keys_in(*level.owned)
    )


def _stage_end(scales: Sequence[Scale], factors: Sequence[Vec3], first: int, budget: int,
               voxel_bytes: int) -> int:  # fmt: skip
    """The last scale of the stage starting at ``first``: one chunk of it comes from a box of
    ``first`` of at most ``budget`` bytes (at least one downsampling per stage)."""
    last = first
    while last + 1 < len(scales):
        box = _base_box(scales, factors, first, last + 1, (1, 1, 1))
        if last > first and box * voxel_bytes > budget:
            break
        last += 1
    return last


def _base_box(scales: Sequence[Scale], factors: Sequence[Vec3], first: int, last: int,
              chunks: Vec3) -> int:  # fmt: skip
    """Voxels of scale ``first`` under ``chunks`` chunks of scale ``last`` (clipped)."""
    edge = [c * n for c, n in zip(scales[last].chunk_size, chunks, strict=True)]
    for s in range(first, last):
        edge = [e * f for e, f in zip(edge, factors[s], strict=True)]
    return math.prod(min(e, n) for e, n in zip(edge, scales[first].size, strict=True))


def plan_pyramid(
    dataset: Dataset,
    factors: Sequence[Vec3],
    *,
    voxel_bytes: int,
    budget: int = REGION_BYTES,
    align: Sequence[Vec3 | None] | None = None,
) -> list[list[PyramidTask]]:
    """The build's pyramid tasks, stage by stage (a stage reads what the one before wrote).

    :param voxel_bytes: bytes per voxel of the volume (all channels).
    :param budget: bytes of the box of its first scale a task reads, where one chunk of its
        last scale allows (a stage covers at least one downsampling).
    :param align: per scale, a box of chunks (e.g. a shard's, ``ShardPlan.shard_shape``) that
        no two tasks may share: a task's box at its last scale is a multiple of it, grown
        (beyond the budget if need be) until no finer scale's boxes are cut either.
    """
    scales = dataset.scales
    stages: list[list[PyramidTask]] = []
    first = 0
    while True:
        last = _stage_end(scales, factors, first, budget, voxel_bytes)
        stages.append(_stage_tasks(dataset, factors, first, last, budget, voxel_bytes, align))
        if last + 1 >= len(scales):
            return stages
        first = last


def _stage_tasks(
    dataset: Dataset,
    factors: Sequence[Vec3],
    first: int,
    last: int,
    budget: int,
    voxel_bytes: int,
    align: Sequence[Vec3 | None] | None,
) -> list[PyramidTask]:
    scales = dataset.scales
    grid = scales[last].grid_shape()
    # Chunks of ``last`` per task: grown (doubling every axis that still has room) while the
    # box read stays within the budget: fewer, larger tasks where chunks are small.
    per = [1, 1, 1]
    while True:
        grown = [min(2 * p, g) if p < g else p for p, g in zip(per, grid, strict=True)]
        if grown == per:
            break
        box = _base_box(scales, factors, first, last, (grown[0], grown[1], grown[2]))
        if box * voxel_bytes > budget:
            break
        per = grown
    shard = align[last] if align is not None else None
    if shard is not None:
        per = [max(p, -(-p // a) * a) for p, a in zip(per, shard, strict=True)]
    while True:
        tasks = _tasks_of(dataset, factors, first, last, (per[0], per[1], per[2]))
        if align is None or _is_aligned(dataset, factors, tasks, align):
            return tasks
        # A finer scale's boxes are cut: larger tasks (doubling keeps the multiples).
        per = [min(2 * p, g) if p < g else p for p, g in zip(per, grid, strict=True)]


def _tasks_of(
    dataset: Dataset, factors: Sequence[Vec3], first: int, last: int, per: Vec3
) -> list[PyramidTask]:
    grid = dataset.scales[last].grid_shape()
    tasks = []
    for gz in range(0, grid[2], per[2]):
        for gy in range(0, grid[1], per[1]):
            for gx in range(0, grid[0], per[0]):
                g0 = (gx, gy, gz)
                g1 = (min(gx + per[0], grid[0]), min(gy + per[1], grid[1]),
                      min(gz + per[2], grid[2]))  # fmt: skip
                task = PyramidTask(first, last, g0, g1, 0)
                levels = _levels(task, dataset, factors)
                # A stage's first scale belongs to the stage before it (its last scale).
                owned = levels[1:] if first > 0 else levels
                chunks = sum(_volume_of(*lv.owned) for lv in owned)
                tasks.append(PyramidTask(first, last, g0, g1, chunks))
    return tasks


def _is_aligned(
    dataset: Dataset,
    factors: Sequence[Vec3],
    tasks: Sequence[PyramidTask],
    align: Sequence[Vec3 | None],
) -> bool:
    """Whether every task owns whole aligned boxes (or the grid's end) at each scale."""
    for task in tasks:
        for i, level in enumerate(_levels(task, dataset, factors)):
            s = task.first + i
            box = align[s]
            if box is None or (i == 0 and task.first > 0) or _is_empty(*level.owned):
                continue
            grid = dataset.scales[s].grid_shape()
            for g0, g1, a, n in zip(*level.owned, box, grid, strict=True):
                if g0 % a or (g1 % a and g1 != n):
                    return False
    return True


def describe(stages: Sequence[Sequence[PyramidTask]], mesh_tasks: int = 0) -> str:
    """One line: tasks per stage (and mesh tasks)."""
    parts = [f"{len(t)} for scales {t[0].first}-{t[0].last}" for t in stages if t]
    text = f"{sum(len(t) for t in stages)} region tasks ({', '.join(parts)})"
    return text + (f" and {mesh_tasks} mesh tasks" if mesh_tasks else "")
