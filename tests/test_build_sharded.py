"""Sharded builds (``--sharded``): every scale read back by tensorstore and cloud-volume,
byte-identical output for any number of workers, resume, and the file count it saves.

Both readers read a chunk missing from a shard as zeros: each test also checks that exactly
the expected shard files exist (and nothing else in a scale folder) and that data is non-zero.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.builder import BuildOptions, build_dataset
from precomp_host.build.sources import volume_from_array
from precomp_host.core.model import Dataset
from precomp_host.core.shard_grid import ShardPlan

from .test_build import OFFSET, build, make_volume, read_all, reference_pyramid
from .test_shards import READERS, _expected_shard_files

if TYPE_CHECKING:
    from pathlib import Path

    from precomp_host.build.sources import Volume


def _labels(shape: tuple[int, int, int] = (70, 45, 33)) -> np.ndarray:
    """[x, y, z, 1] uint32 labels in 5-voxel blocks: many segments, every chunk non-zero."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (1 + (x // 5) * 10_000 + (y // 5) * 100 + z // 5).astype(np.uint32)[..., None]


def _dataset(root: Path) -> Dataset:
    return Dataset.from_json(json.loads((root / "info").read_text()))


def _check_shard_files(root: Path, dataset: Dataset) -> None:
    for scale in dataset.scales:
        assert scale.sharding is not None
        assert scale.sharding.minishard_index_encoding == "gzip"
        on_disk = {p.name for p in (root / scale.key).iterdir()}
        assert on_disk == _expected_shard_files(scale)  # no siblings, none missing


# 16**3 uint8 chunks are 4 KiB: a 16 KiB target gives 4-chunk shards, several per scale.
SMALL_SHARDS = 16 << 10


@pytest.mark.parametrize("reader", READERS)
def test_sharded_image_reads_back_exactly_at_every_scale(tmp_path: Path, reader: str) -> None:
    vol = make_volume("uint8")
    info = build(vol, tmp_path / "ds", shard_size=SMALL_SHARDS)
    dataset = _dataset(tmp_path / "ds")
    _check_shard_files(tmp_path / "ds", dataset)
    assert len(dataset.scales) >= 3
    assert [s.sharding.data_encoding for s in dataset.scales if s.sharding] == ["gzip"] * len(
        dataset.scales
    )
    assert len(list((tmp_path / "ds" / dataset.scales[0].key).iterdir())) > 4
    got = list(READERS[reader](tmp_path / "ds", dataset))
    for i, (g, want) in enumerate(zip(got, reference_pyramid(vol, info), strict=True)):
        assert g.any(), f"scale {i} read as zeros"
        np.testing.assert_array_equal(g, want, err_msg=f"scale {i}")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("encoding", ["compressed_segmentation", "raw"])
def test_sharded_segmentation_reads_back_like_the_unsharded_one(
    tmp_path: Path, reader: str, encoding: str
) -> None:
    labels = _labels()
    build(labels, tmp_path / "plain", volume_type="segmentation", encoding=encoding)
    build(
        labels,
        tmp_path / "ds",
        volume_type="segmentation",
        encoding=encoding,
        shard_size=SMALL_SHARDS,
    )
    dataset = _dataset(tmp_path / "ds")
    _check_shard_files(tmp_path / "ds", dataset)
    want = read_all(tmp_path / "plain", tmp_path)  # every chunk file checked present
    np.testing.assert_array_equal(want[0], labels)
    got = list(READERS[reader](tmp_path / "ds", dataset))
    assert len(got) == len(want) >= 3
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.any(), f"scale {i} read as zeros"
        np.testing.assert_array_equal(g, w, err_msg=f"scale {i}")


def test_jpeg_chunks_are_stored_without_gzip(tmp_path: Path) -> None:
    # sharded.md allows gzip on any data; on JPEG it costs decoding time and saves nothing.
    build(make_volume("uint8"), tmp_path / "ds", encoding="jpeg", shard_size=SMALL_SHARDS)
    dataset = _dataset(tmp_path / "ds")
    _check_shard_files(tmp_path / "ds", dataset)
    assert {s.sharding.data_encoding for s in dataset.scales if s.sharding} == {"raw"}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class _Interrupted:
    """A volume whose ``stop_at``-th read is a Ctrl+C (read by whole slices: a build crops
    each task's box from them)."""

    def __init__(self, volume: Volume, stop_at: int) -> None:
        self.volume, self.reads, self.stop_at = volume, 0, stop_at
        self.shape, self.dtype, self.num_channels = volume.shape, volume.dtype, volume.num_channels

    def read(self, z0: int, z1: int) -> np.ndarray:
        self.reads += 1
        if self.reads == self.stop_at:
            raise KeyboardInterrupt
        return self.volume.read(z0, z1)


def test_resume_keeps_finished_shards_and_rebuilds_the_rest(tmp_path: Path) -> None:
    vol = make_volume("uint8", shape=(70, 45, 70))
    zyxc = np.ascontiguousarray(vol.transpose(2, 1, 0, 3))
    # Region tasks of one chunk of scale 1 each (region_bytes=1): the volume is read once per
    # task, so the third read comes after shards of the first tasks are complete.
    options = BuildOptions(
        resolution=(4.0, 4.0, 6.0), chunk_size=(16, 16, 16), voxel_offset=OFFSET,
        shard_size=SMALL_SHARDS, workers=2, region_bytes=1,
    )  # fmt: skip
    build_dataset(volume_from_array(zyxc, "ZYXC"), tmp_path / "ref", options)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        build_dataset(_Interrupted(volume_from_array(zyxc, "ZYXC"), 3), out, options)
    assert not (out / "info").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*.shard")}
    assert finished  # the first slabs' shards were written whole
    assert len(finished) < len(list((tmp_path / "ref").rglob("*.shard")))  # not all of them
    resume = BuildOptions(**{**options.__dict__, "resume": True})
    build_dataset(volume_from_array(zyxc, "ZYXC"), out, resume)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # kept, not rewritten
    assert _tree(out) == _tree(tmp_path / "ref")


def test_sharded_segmentation_has_under_one_percent_of_the_files(tmp_path: Path) -> None:
    """The label benchmark's grid (1024 x 1024 x 512 at 64**3 is 16 x 16 x 8 chunks), at 16**3
    chunks: the same chunk counts per scale, so the same file ratio, in a test-sized volume."""
    labels = _labels((256, 256, 128))
    kw: dict[str, Any] = {
        "volume_type": "segmentation",
        "encoding": "compressed_segmentation",
        "voxel_offset": (0, 0, 0),
    }
    build(labels, tmp_path / "plain", **kw)
    build(labels, tmp_path / "ds", shard_size=2 * 10**9, **kw)
    plain = sum(1 for p in (tmp_path / "plain").rglob("*") if p.is_file())
    sharded = sum(1 for p in (tmp_path / "ds").rglob("*") if p.is_file())
    dataset = _dataset(tmp_path / "ds")
    assert dataset.scales[0].grid_shape() == (16, 16, 8)
    _check_shard_files(tmp_path / "ds", dataset)
    assert plain > 2048
    assert sharded <= plain / 100, (sharded, plain)


def test_shard_boxes_tile_the_scale_in_voxels(tmp_path: Path) -> None:
    # What a region task owning a shard writes: the boxes are disjoint and cover the scale.
    build(make_volume("uint8"), tmp_path / "ds", shard_size=SMALL_SHARDS)
    for scale in _dataset(tmp_path / "ds").scales:
        plan = ShardPlan.for_scale(scale)
        assert plan is not None
        covered = np.zeros(scale.size, dtype=np.int8)
        for box in plan.iter_shards():
            start, stop = box.voxels(scale)
            covered[
                tuple(
                    slice(a - o, b - o)
                    for a, b, o in zip(start, stop, scale.voxel_offset, strict=True)
                )
            ] += 1
        assert (covered == 1).all()
