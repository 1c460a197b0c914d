"""Region tasks (:mod:`precomp_host.build.regions`): the plan tiles every scale, and a build cut
into many small tasks over several stages writes the same bytes as one task per stage, for any
number of workers; sources are read by region, never by whole plane."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.builder import BuildOptions, build_dataset, plan_for
from precomp_host.build.plan import plan_dataset
from precomp_host.build.regions import (
    PyramidSettings,
    Scratch,
    _levels,
    plan_pyramid,
    run_pyramid_task,
)
from precomp_host.build.segmentation import SegmentationOptions
from precomp_host.build.sinks import sink_for
from precomp_host.build.sources import volume_from_array
from precomp_host.build.writer import SCRATCH_DIR, DatasetWriter
from precomp_host.core.layout import LAYOUTS

from .test_build import make_volume
from .test_build_segmentation import make_labels

if TYPE_CHECKING:
    from pathlib import Path

    from precomp_host.core.model import Dataset, Vec3

#: Small enough that a 70 x 45 x 33 volume in 16^3 chunks needs a task per chunk and a stage
#: per downsampling: the scratch store and the halos of odd offsets are then exercised.
TINY = 1


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _plan(
    size: Vec3, offset: Vec3, chunk: Vec3, res: tuple[float, float, float] = (4.0, 4.0, 4.0)
) -> tuple[Dataset, tuple[Vec3, ...]]:
    return plan_dataset(volume_type="image", data_type="uint8", num_channels=1, size=size,
                        resolution=res, chunk_size=chunk, voxel_offset=offset)  # fmt: skip


@pytest.mark.parametrize(
    ("size", "offset", "chunk", "res"),
    [
        ((70, 45, 33), (3, 5, 7), (16, 16, 16), (4.0, 4.0, 6.0)),
        ((200, 130, 9), (0, 0, 0), (16, 16, 16), (8.0, 8.0, 40.0)),
        ((100, 61, 40), (1001, -3, 1), (8, 16, 4), (4.0, 4.0, 4.0)),
    ],
)
@pytest.mark.parametrize("budget", [TINY, 40_000, 1 << 30])
def test_tasks_own_every_chunk_once(
    size: Vec3, offset: Vec3, chunk: Vec3, res: tuple[float, float, float], budget: int
) -> None:
    dataset, factors = _plan(size, offset, chunk, res)
    stages = plan_pyramid(dataset, factors, voxel_bytes=1, budget=budget)
    owned: dict[int, list[Vec3]] = {i: [] for i in range(len(dataset.scales))}
    for n, stage in enumerate(stages):
        if n:  # a stage starts where the one before it ended
            assert stage[0].first == stages[n - 1][0].last
        for task in stage:
            levels = _levels(task, dataset, factors)
            for i, level in enumerate(levels):
                if i == 0 and task.first > 0:
                    continue
                (a, b) = level.owned
                owned[task.first + i] += [
                    (x, y, z)
                    for z in range(a[2], b[2])
                    for y in range(a[1], b[1])
                    for x in range(a[0], b[0])
                ]
            # What a task computes of each scale holds what it owns.
            for level in levels:
                (na, nb), (ra, rb) = level.needed, level.region
                assert all(p <= q for p, q in zip(na, ra, strict=True))
                assert all(p >= q for p, q in zip(nb, rb, strict=True))
    for i, scale in enumerate(dataset.scales):
        assert sorted(owned[i]) == sorted(set(owned[i])), f"scale {i}: a chunk owned twice"
        assert len(owned[i]) == scale.num_chunks(), f"scale {i}: a chunk owned by no task"
    assert sum(t.chunks for s in stages for t in s) == sum(s.num_chunks() for s in dataset.scales)
    if budget == TINY:
        assert len(stages) == len(dataset.scales) - 1
    if budget == 1 << 30:
        assert len(stages) == 1
        assert len(stages[0]) == 1


def test_a_task_runs_the_same_from_pickled_settings(tmp_path: Path) -> None:
    # A cluster (issue #14) ships a task and its settings to another process: the copy must
    # hold everything the task needs (volume, codec, downsampler, sink, scratch) and write the
    # same bytes as the original.
    options = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16))
    xyzc = make_volume("uint8")
    volume = volume_from_array(np.ascontiguousarray(xyzc.transpose(2, 1, 0, 3)), "ZYXC")
    dataset, factors, codec = plan_for(volume, options)
    trees = []
    for name in ("original", "copy"):
        writer = DatasetWriter(tmp_path / name, LAYOUTS["nested"])
        writer.begin()
        settings = PyramidSettings(
            volume=volume, dataset=dataset, factors=factors, codec=codec,
            downsampler=options.kind().downsampler(None), sink=sink_for(writer, dataset),
            scratch=Scratch(tmp_path / name),
        )  # fmt: skip
        if name == "copy":
            settings = pickle.loads(pickle.dumps(settings))
        (task, *_), *_ = plan_pyramid(dataset, factors, voxel_bytes=1)
        assert run_pyramid_task(pickle.loads(pickle.dumps(task)), settings) > 0
        trees.append(_tree(tmp_path / name))
    assert trees[0] == trees[1]
    assert any(name.endswith(".gz") for name in trees[0])


@pytest.mark.parametrize(
    ("offset", "align"),
    [((0, 0, 0), (4, 4, 2)), ((1, 1, 1), (4, 4, 2)), ((0, 0, 0), (16, 16, 4))],
)
def test_aligned_boxes_are_never_shared(offset: Vec3, align: Vec3) -> None:
    # Sharded builds pass each scale's shard shape: no two tasks may write into one shard.
    dataset, factors = _plan((256, 256, 64), offset, (16, 16, 16))
    boxes: list[Vec3 | None] = [align] * len(dataset.scales)
    owners: dict[tuple[int, Vec3], set[str]] = {}
    for stage in plan_pyramid(dataset, factors, voxel_bytes=1, budget=TINY, align=boxes):
        for task in stage:
            for i, level in enumerate(_levels(task, dataset, factors)):
                if i == 0 and task.first > 0:
                    continue
                (a, b) = level.owned
                for z in range(a[2], b[2]):
                    for y in range(a[1], b[1]):
                        for x in range(a[0], b[0]):
                            shard = (x // align[0], y // align[1], z // align[2])
                            owners.setdefault((task.first + i, shard), set()).add(task.name)
    assert owners
    assert all(len(names) == 1 for names in owners.values())


def _image(out: Path, **kw: Any) -> dict[str, bytes]:
    vol = make_volume("uint16", 2)
    options = BuildOptions(resolution=(4.0, 4.0, 6.0), chunk_size=(16, 16, 16),
                           voxel_offset=(3, 5, 7), **kw)  # fmt: skip
    volume = volume_from_array(np.ascontiguousarray(vol.transpose(2, 1, 0, 3)), "ZYXC")
    build_dataset(volume, out, options)
    return _tree(out)


def _segmentation(out: Path, **kw: Any) -> dict[str, bytes]:
    labels = make_labels("uint64")
    seg = SegmentationOptions(mesh=True, region_size=(32, 32))
    options = BuildOptions(resolution=(4.0, 4.0, 6.0), volume_type="segmentation",
                           chunk_size=(16, 16, 16), voxel_offset=(3, 5, 7),
                           encoding="compressed_segmentation", segmentation=seg, **kw)  # fmt: skip
    volume = volume_from_array(np.ascontiguousarray(labels.transpose(2, 1, 0)), "ZYX")
    build_dataset(volume, out, options)
    return _tree(out)


def _sharded_image(out: Path, **kw: Any) -> dict[str, bytes]:
    return _image(out, shard_size=16 << 10, **kw)


@pytest.mark.parametrize(
    "build", [_image, _segmentation, _sharded_image], ids=["image", "segmentation", "sharded"]
)
def test_same_bytes_for_any_workers_and_any_regions(tmp_path: Path, build: Any) -> None:
    one = build(tmp_path / "one", workers=1)
    assert any(name.startswith("mesh/") for name in one) or build is not _segmentation
    assert any(name.endswith(".shard") for name in one) or build is not _sharded_image
    many = build(tmp_path / "many", workers=3, region_bytes=TINY)
    assert many == one
    assert not (tmp_path / "many" / SCRATCH_DIR).exists()


class _CountingVolume:
    """A volume that records the boxes it is asked for."""

    def __init__(self, array_zyxc: np.ndarray) -> None:
        self.inner = volume_from_array(array_zyxc, "ZYXC")
        self.shape, self.dtype = self.inner.shape, self.inner.dtype
        self.num_channels = self.inner.num_channels
        self.boxes: list[tuple[Vec3, Vec3]] = []

    def read(self, z0: int, z1: int) -> np.ndarray:
        raise AssertionError("a build reads regions, never whole slices")

    def read_region(self, start: Vec3, stop: Vec3) -> np.ndarray:
        self.boxes.append((start, stop))
        out: np.ndarray = self.inner.read_region(start, stop)  # type: ignore[attr-defined]
        return out


def test_a_wide_plane_is_read_by_region(tmp_path: Path) -> None:
    # 1024 x 768 planes, 64^2 x 8 chunks: a task reads at most its budget, and the whole build
    # reads each voxel about once (halos aside), not a plane per task.
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (8, 768, 1024, 1), np.uint8)
    volume = _CountingVolume(vol)
    budget = 300_000
    options = BuildOptions(resolution=(8.0, 8.0, 40.0), chunk_size=(64, 64, 8),
                           region_bytes=budget, workers=2, compress=("gzip",))  # fmt: skip
    build_dataset(volume, tmp_path / "ds", options)
    sizes = [int(np.prod([b - a for a, b in zip(*box, strict=True)])) for box in volume.boxes]
    assert len(sizes) > 1
    assert max(sizes) <= budget < vol.nbytes / 8  # a plane is 786,432 bytes
    assert sum(sizes) == vol.nbytes
    assert _tree(tmp_path / "ds") == _image_of(vol, tmp_path / "ref", options)


def _image_of(vol: np.ndarray, out: Path, options: BuildOptions) -> dict[str, bytes]:
    build_dataset(volume_from_array(vol, "ZYXC"), out, replace(options, region_bytes=1 << 30))
    return _tree(out)


class _Cut(Exception):
    """Stands for a build interrupted mid-way."""


def test_resume_skips_finished_tasks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 255, (20, 96, 96, 1), np.uint8)
    options = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16),
                           region_bytes=TINY, workers=1)  # fmt: skip
    ref = _image_of(vol, tmp_path / "ref", options)
    first_stage = plan_pyramid(*_plan((96, 96, 20), (0, 0, 0), (16, 16, 16)), voxel_bytes=1,
                               budget=TINY)[0]  # fmt: skip
    assert len(first_stage) > 4
    out = tmp_path / "cut"
    done = out / SCRATCH_DIR / "done"

    def cut(_: object) -> None:
        if len(list(done.glob("*"))) >= 4:
            raise _Cut

    with pytest.raises(_Cut):
        build_dataset(volume_from_array(vol, "ZYXC"), out, options, progress=cut)
    finished = {p.name for p in done.glob("*")}
    assert 4 <= len(finished) < len(first_stage)
    volume = _CountingVolume(vol)
    build_dataset(volume, out, replace(options, resume=True))
    # Only the unfinished tasks of the first stage read the source again.
    assert len(volume.boxes) == len(first_stage) - len(finished)
    assert _tree(out) == ref
