"""Tests for :mod:`precomp_host.build.mesh_shards`: ``--mesh multires`` builds, read back by
cloud-volume (``test-peers`` extra), byte-identical for any ``--workers``, resumable by shard,
and computed a bounded window ahead of the shard writer."""

from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.builder import BuildOptions, build_dataset
from precomp_host.build.mesh_shards import MeshStream, write_mesh_shards
from precomp_host.build.multires import MultiresMesh, MultiresSettings
from precomp_host.build.segmentation import MESH_JOURNAL_DIR, SegmentationOptions
from precomp_host.build.sources import volume_from_array
from precomp_host.build.writer import DatasetWriter
from precomp_host.core.layout import LAYOUTS
from precomp_host.core.model import MULTILOD_MESH_TYPE
from precomp_host.core.sharding import ShardingSpec, read_shard

from .test_build_segmentation import OFFSET, RES, make_labels

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

SHAPE = (60, 40, 36)


def _build(out: Path, *, mesh_format: str = "multires", workers: int = 1) -> np.ndarray:
    """A segmentation of wavy cells and salt noise, meshed in 2 x 2 x 3 regions; its labels."""
    labels = make_labels("uint32", SHAPE)
    seg = SegmentationOptions(mesh=True, mesh_format=mesh_format,  # type: ignore[arg-type]
                              region_size=(32, 32))  # fmt: skip
    options = BuildOptions(resolution=RES, volume_type="segmentation", chunk_size=(16, 16, 16),
                           voxel_offset=OFFSET, segmentation=seg, workers=workers)  # fmt: skip
    build_dataset(volume_from_array(np.ascontiguousarray(labels.transpose(2, 1, 0)), "ZYX"),
                  out, options)  # fmt: skip
    return labels


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    out = tmp_path_factory.mktemp("multires") / "labels"
    return out, _build(out)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_build_writes_sharded_multires_meshes_only(built: tuple[Path, np.ndarray]) -> None:
    out, labels = built
    info = json.loads((out / "info").read_text())
    assert info["mesh"] == "mesh"
    mesh_info = json.loads((out / "mesh" / "info").read_text())
    assert mesh_info["@type"] == MULTILOD_MESH_TYPE
    spec = ShardingSpec.from_json(mesh_info["sharding"])
    names = sorted(p.name for p in (out / "mesh").iterdir())
    # Shards (stored plain: read with Range) and the info; no legacy fragment or manifest.
    assert all(n == "info" or n.endswith(".shard") for n in names), names
    found: set[int] = set()
    for shard in (out / "mesh").glob("*.shard"):
        found |= set(read_shard(spec, shard.read_bytes()))
    assert found == set(np.unique(labels)) - {0}
    assert not (out / MESH_JOURNAL_DIR).exists(), "the scratch fragments must go at commit"


def test_cloudvolume_reads_every_segment_within_its_box(built: tuple[Path, np.ndarray]) -> None:
    cloudvolume = pytest.importorskip("cloudvolume")
    out, labels = built
    cv = cloudvolume.CloudVolume(f"file://{out}", progress=False)
    segments = sorted(int(s) for s in np.unique(labels) if s)
    meshes = cv.mesh.get(segments)
    assert sorted(meshes) == segments
    res, offset = np.array(RES), np.array(OFFSET)
    for s in segments:
        where = np.argwhere(labels == s)  # [x, y, z] voxel indices
        # Voxel i spans [i, i + 1) * resolution nm (neuroglancer's frame), plus one voxel.
        low = (where.min(axis=0) + offset - 1) * res
        high = (where.max(axis=0) + 1 + offset + 1) * res
        got = meshes[s]
        assert len(got.faces) > 0, s
        assert (got.vertices >= low).all(), s
        assert (got.vertices <= high).all(), s


def test_segment_properties_as_with_legacy_meshes(
    built: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    out, _ = built
    _build(tmp_path / "legacy", mesh_format="legacy")
    props = "segment_properties/info"
    legacy = tmp_path / "legacy" / props
    mine = out / props
    read = [p if p.exists() else p.with_name("info.gz") for p in (legacy, mine)]
    assert read[0].read_bytes() == read[1].read_bytes()


@pytest.mark.slow
def test_same_bytes_for_any_workers(built: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    out, _ = built
    _build(tmp_path / "w3", workers=3)
    assert _files(tmp_path / "w3") == _files(out)


# --- the shard writer, without meshing -------------------------------------------------------


def _fake_mesh(segment: int) -> MultiresMesh:
    """A stand-in mesh: only its bytes matter to the shard writer."""
    from precomp_host.build.mesh_shards import empty_mesh

    m = empty_mesh(SETTINGS)
    return MultiresMesh(m.manifest, segment.to_bytes(8, "little"))


SETTINGS = MultiresSettings(RES)


class _Submitter:
    """Runs tasks at once, counting those submitted but not yet asked for."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.taken: set[int] = set()
        self.most_ahead = 0

    def __call__(self, _: MultiresSettings, refs: Sequence[Any]) -> Future[MultiresMesh | None]:
        segment = int(refs[0][1])
        self.started.append(segment)
        future: Future[MultiresMesh | None] = Future()
        future.set_result(_fake_mesh(segment))
        ahead = len(set(self.started) - self.taken)
        self.most_ahead = max(self.most_ahead, ahead)
        return future


def test_stream_stays_a_window_ahead() -> None:
    submit = _Submitter()
    order = list(range(100, 140))
    stream = MeshStream(order, lambda s: submit(SETTINGS, [("x", s, 0)]), SETTINGS, window=3)
    for s in order:
        assert stream[s].data == s.to_bytes(8, "little")
        assert stream[s] is stream[s]  # data then manifest: computed once
        submit.taken.add(s)
    assert submit.started == order
    assert submit.most_ahead <= 3 + 1  # the window plus the one being written


def test_resume_keeps_a_finished_shard(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, LAYOUTS["flat"])
    writer.begin()
    sources = {s: [("x", s, 0)] for s in range(1, 9000)}  # 3 shards of murmurhashed ids
    submit = _Submitter()
    spec = write_mesh_shards(writer, "mesh", sources, SETTINGS, submit, window=4)
    assert spec.num_shards > 1
    first = tmp_path / "mesh" / spec.shard_name(0)
    kept = first.stat().st_mtime_ns
    first_segments = set(read_shard(spec, first.read_bytes()))
    (tmp_path / "mesh" / spec.shard_name(1)).unlink()
    again = _Submitter()
    write_mesh_shards(writer, "mesh", sources, SETTINGS, again, window=4, resume=True)
    assert first.stat().st_mtime_ns == kept
    assert not first_segments & set(again.started)
    assert (tmp_path / "mesh" / spec.shard_name(1)).is_file()


def test_cli_multires_without_draco_stops_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from precomp_host.cli.commands import main

    np.save(tmp_path / "labels.npy", make_labels("uint16", (20, 20, 20)))
    argv = ["build", str(tmp_path / "labels.npy"), str(tmp_path / "out"), "--resolution",
            "4", "4", "40", "--type", "segmentation", "-q", "--mesh", "multires"]  # fmt: skip
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "DracoPy" else real(name, *a)
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--mesh multires needs DracoPy" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert main(argv) == 0
    mesh_info = json.loads((tmp_path / "out" / "mesh" / "info").read_text())
    assert mesh_info["@type"] == MULTILOD_MESH_TYPE


class _Cut(Exception):
    """Stands for a build interrupted mid-way."""


def test_resume_reuses_the_regions_scratch_fragments(
    built: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    ref, labels = built
    out = tmp_path / "cut"
    journal = out / MESH_JOURNAL_DIR
    seg = SegmentationOptions(mesh=True, mesh_format="multires", region_size=(32, 32))
    options = BuildOptions(resolution=RES, volume_type="segmentation", chunk_size=(16, 16, 16),
                           voxel_offset=OFFSET, segmentation=seg, workers=1)  # fmt: skip
    volume = volume_from_array(np.ascontiguousarray(labels.transpose(2, 1, 0)), "ZYX")

    def cut_after_two_regions(_: object) -> None:
        if len(list(journal.glob("*.json"))) >= 2:
            raise _Cut

    with pytest.raises(_Cut):
        build_dataset(volume, out, options, progress=cut_after_two_regions)
    scratch = {p: p.stat().st_mtime_ns for p in journal.glob("*.fragments")}
    assert len(scratch) >= 2, "each finished region keeps its fragments in one scratch file"
    seen: dict[Path, int] = {}

    def remember(_: object) -> None:
        seen.update({p: p.stat().st_mtime_ns for p in scratch if p.exists()})

    build_dataset(volume, out, replace(options, resume=True), progress=remember)
    assert seen == scratch, "a recorded region was meshed again"
    assert _files(out) == _files(ref)
