"""Segmentation builds end to end: cseg/raw chunks, the mode pyramid, meshes, properties, CLI."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from precomp_host.build.builder import BuildError, BuildOptions, build_dataset
from precomp_host.build.meshes import merge_fragments, parse_fragment
from precomp_host.build.segment_properties import SegmentRow, validate
from precomp_host.build.segmentation import MESH_JOURNAL_DIR, SegmentationOptions
from precomp_host.build.sources import volume_from_array

from .precomputed_reader import assert_all_chunks_present, flat_copy, read_scale
from .test_pyramid_mode import reference_mode

REPO = Path(__file__).resolve().parent.parent
SHAPE = (70, 45, 33)  # x, y, z
OFFSET = (3, 5, 7)
RES = (4.0, 4.0, 6.0)


def make_labels(dtype: str, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """[x, y, z] labels: wavy cells, background, salt noise; big ids for 64-bit types."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    cell = (
        ((x + 2 * np.sin(y / 3.0)) // 9) * 100 + ((y + 2 * np.cos(z / 4.0)) // 7) * 10 + z // 8
    ).astype(np.int64)
    cell = cell - cell.min() + 1
    rng = np.random.default_rng(3)
    cell[rng.random(shape) < 0.03] = 7777
    cell[(x - 35) ** 2 + (y - 22) ** 2 < 40] = 0
    if np.dtype(dtype).itemsize == 8:
        cell = np.where(cell > 0, cell + 2**40, 0)
    out: np.ndarray = cell.astype(dtype)
    return out


def build(labels_xyz: np.ndarray, out: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("encoding", "compressed_segmentation")
    kw.setdefault("voxel_offset", OFFSET)
    options = BuildOptions(
        resolution=RES,
        volume_type="segmentation",
        chunk_size=(16, 16, 16),
        **kw,
    )
    volume = volume_from_array(np.ascontiguousarray(labels_xyz.transpose(2, 1, 0)), "ZYX")
    build_dataset(volume, out, options)
    info: dict[str, Any] = json.loads((out / "info").read_text())
    return info


def mode_pyramid(labels_xyz: np.ndarray, info: dict[str, Any], *, sparse: bool) -> list[np.ndarray]:
    """Each scale from the one above by an independent per-block Counter mode ([x, y, z])."""
    out = [labels_xyz]
    scales = info["scales"]
    for prev, cur in zip(scales, scales[1:], strict=False):
        f = [round(c / p) for p, c in zip(prev["resolution"], cur["resolution"], strict=True)]
        zyxc = out[-1].transpose(2, 1, 0)[..., None]
        down = reference_mode(zyxc, (f[0], f[1], f[2]), tuple(prev["voxel_offset"]), sparse=sparse)
        out.append(down[..., 0].transpose(2, 1, 0))
        assert list(out[-1].shape) == cur["size"]
    return out


@pytest.mark.parametrize(
    ("dtype", "stored", "encoding", "sparse"),
    [
        ("uint16", "uint32", "compressed_segmentation", False),
        ("uint64", "uint64", "compressed_segmentation", True),
        ("int32", "uint32", "raw", False),
    ],
)
def test_every_scale_is_the_mode_of_the_one_above(
    tmp_path: Path, dtype: str, stored: str, encoding: str, sparse: bool
) -> None:
    labels = make_labels(dtype)
    info = build(
        labels,
        tmp_path / "ds",
        encoding=encoding,
        downsample="mode_sparse" if sparse else None,
        compress=("gzip",),
    )
    assert info["data_type"] == stored
    assert len(info["scales"]) >= 3
    scale0 = info["scales"][0]
    assert scale0["encoding"] == encoding
    if encoding == "compressed_segmentation":
        assert scale0["compressed_segmentation_block_size"] == [8, 8, 8]
    flat = flat_copy(tmp_path / "ds", tmp_path / "flat")
    assert_all_chunks_present(flat)
    want = mode_pyramid(labels.astype(stored), info, sparse=sparse)
    for i, w in enumerate(want):
        got = read_scale(flat, i)[..., 0]
        np.testing.assert_array_equal(got, w, err_msg=f"scale {i}")
    props = json.loads((tmp_path / "ds" / "segment_properties" / "info").read_text())
    validate(props)
    ids = sorted(int(i) for i in np.unique(labels) if i)
    assert props["inline"]["ids"] == [str(i) for i in ids]
    (voxels,) = props["inline"]["properties"]
    assert voxels["values"] == [int((labels == i).sum()) for i in ids]
    assert info["segment_properties"] == "segment_properties"
    assert "mesh" not in info


def test_stride_downsampling(tmp_path: Path) -> None:
    labels = make_labels("uint32")
    info = build(labels, tmp_path / "ds", downsample="stride", compress=())
    flat = flat_copy(tmp_path / "ds", tmp_path / "flat")
    got = read_scale(flat, 1)[..., 0]
    s0, s1 = info["scales"][0], info["scales"][1]
    factors = [round(b / a) for a, b in zip(s0["resolution"], s1["resolution"], strict=True)]
    # The first existing voxel of each block aligned to voxel 0: local index 0, then every
    # block start after it.
    index = [
        np.r_[0, np.arange(-o % f or f, n, f)]
        for n, o, f in zip(SHAPE, s0["voxel_offset"], factors, strict=True)
    ]
    np.testing.assert_array_equal(got, labels[np.ix_(*index)])


@pytest.mark.parametrize("offset", [OFFSET, (-37, -9, -20)], ids=["offset", "negative-offset"])
def test_meshes_and_names(tmp_path: Path, offset: tuple[int, int, int]) -> None:
    labels = np.zeros(SHAPE, np.uint32)
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    labels[((x - 30) / 25.0) ** 2 + ((y - 22) / 15.0) ** 2 + ((z - 16) / 12.0) ** 2 < 1] = 5
    labels[60:, 40:, :] = 9  # touches the volume's faces
    names = (SegmentRow(5, "ball", ("round",)), SegmentRow(9, "corner post"))
    info = build(
        labels,
        tmp_path / "ds",
        segmentation=SegmentationOptions(mesh=True, names=names, region_size=(32, 32)),
        compress=("gzip", "br"),
        voxel_offset=offset,
    )
    assert info["mesh"] == "mesh"
    np.testing.assert_array_equal(
        read_scale(flat_copy(tmp_path / "ds", tmp_path / "f0"), 0)[..., 0], labels
    )
    flat = flat_copy(tmp_path / "ds", tmp_path / "flat")
    assert json.loads((flat / "mesh" / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    res = np.array(RES)
    for seg in (5, 9):
        manifest = json.loads((flat / "mesh" / f"{seg}:0").read_text())
        frags = [(flat / "mesh" / name).read_bytes() for name in manifest["fragments"]]
        if seg == 5:
            assert len(frags) > 4, "the ball spans several regions and slabs"
        verts = np.concatenate([parse_fragment(f)[0] for f in frags])
        xyz = np.argwhere(labels == seg)
        lo, hi = (xyz.min(0) + offset) * res, (xyz.max(0) + 1 + offset) * res
        assert (verts >= lo - res).all()
        assert (verts <= hi + res).all()
        _, faces = merge_fragments(frags)
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 2).all(), f"segment {seg}: mesh not closed"
    # Fragments are precompressed like chunks: no plain copy beside a .gz.
    gz = list((tmp_path / "ds" / "mesh").glob("5:0:*.gz"))
    assert gz
    assert not any(p.with_suffix("").exists() for p in gz)
    props = json.loads((flat / "segment_properties" / "info").read_text())
    validate(props)
    by_type = {p["type"]: p for p in props["inline"]["properties"]}
    assert props["inline"]["ids"] == ["5", "9"]
    assert by_type["label"]["values"] == ["ball", "corner post"]
    assert by_type["tags"]["tags"] == ["round"]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_output_with_meshes_is_identical_across_worker_counts(tmp_path: Path) -> None:
    labels = make_labels("uint32")
    seg = SegmentationOptions(mesh=True, region_size=(32, 32))
    build(labels, tmp_path / "a", workers=1, segmentation=seg)
    build(labels, tmp_path / "b", workers=3, segmentation=seg)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert any(k.startswith("mesh/") for k in a)
    assert a == b


def test_library_rejects_float_and_negative_labels(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="labels must be integers, got float32"):
        build(make_labels("uint16").astype(np.float32), tmp_path / "f")
    bad = make_labels("int16")
    bad[5, 5, 30] = -4
    with pytest.raises(BuildError, match="negative label -4"):
        build(bad, tmp_path / "n")
    assert not any((tmp_path / "n").rglob("*")), "a failed build leaves nothing behind"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "precomp_host", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_cli_segmentation_build_and_errors(tmp_path: Path) -> None:
    labels = make_labels("uint16", (40, 30, 20)).transpose(2, 1, 0)
    np.save(tmp_path / "labels.npy", labels)
    (tmp_path / "names.csv").write_text("id,name\n101,first\n")
    r = _cli(
        "build", str(tmp_path / "labels.npy"), str(tmp_path / "out"),
        "--resolution", "4", "4", "40", "--type", "segmentation", "--mesh",
        "--segments", "101,102", "--names", str(tmp_path / "names.csv"), "--block-size", "4",
        "--sparse", "-q",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "out" / "info").read_text())
    assert info["scales"][0]["encoding"] == "compressed_segmentation"
    assert info["scales"][0]["compressed_segmentation_block_size"] == [4, 4, 4]
    meshed = sorted(p.name for p in (tmp_path / "out" / "mesh").glob("*:0"))
    assert meshed == ["101:0", "102:0"]

    np.save(tmp_path / "float.npy", labels.astype(np.float32))
    (tmp_path / "bad.csv").write_text("1,a\nnope,b\n")
    neg = labels.astype(np.int32)
    neg[0, 0, 0] = -1
    np.save(tmp_path / "neg.npy", neg)
    cases = [
        ([str(tmp_path / "float.npy")], "labels must be integers"),
        ([str(tmp_path / "neg.npy")], "negative label -1"),
        ([str(tmp_path / "labels.npy"), "--names", str(tmp_path / "bad.csv")], "bad.csv:2:"),
        ([str(tmp_path / "labels.npy"), "--encoding", "jpeg"], "jpeg encoding needs uint8"),
    ]
    for n, (args, message) in enumerate(cases):
        out = str(tmp_path / f"err{n}")
        r = _cli("build", args[0], out, *args[1:], "--resolution", "1", "1", "1",
                 "--type", "segmentation", "-q")  # fmt: skip
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli("build", str(tmp_path / "labels.npy"), str(tmp_path / "img"), "--resolution",
             "1", "1", "1", "--mesh")  # fmt: skip
    assert r.returncode == 2
    assert "--mesh needs --type segmentation" in r.stderr


def _read_plain_or_gz(path: Path) -> bytes:
    gz = path.with_name(path.name + ".gz")
    return path.read_bytes() if path.exists() else gzip.decompress(gz.read_bytes())


def test_mesh_simplification_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from precomp_host.cli.commands import main

    labels = np.zeros((12, 16, 16), np.uint32)  # [z, y, x]
    labels[2:10, 3:13, 4:12] = 5
    np.save(tmp_path / "labels.npy", labels)
    common = [str(tmp_path / "labels.npy"), "--resolution", "4", "4", "40", "--type",
              "segmentation", "--compress", "gzip", "-q"]  # fmt: skip
    assert main(["build", common[0], str(tmp_path / "e"), *common[1:],
                 "--mesh-simplification", "quadric"]) == 2  # fmt: skip
    assert "--mesh-simplification applies to --mesh" in capsys.readouterr().err
    triangles = {}
    for how in ("none", "quadric", "fqmr"):
        out = tmp_path / how
        assert main(["build", common[0], str(out), *common[1:], "--mesh",
                     "--mesh-simplification", how]) == 0  # fmt: skip
        manifest = json.loads(_read_plain_or_gz(out / "mesh" / "5:0"))
        frags = [_read_plain_or_gz(out / "mesh" / n) for n in manifest["fragments"]]
        triangles[how] = len(merge_fragments(frags)[1])
    assert triangles["quadric"] < triangles["none"]
    assert triangles["fqmr"] < triangles["none"]


class _Cut(Exception):
    """Stands for a build interrupted mid-way (the process killed, the machine down)."""


def test_resume_reuses_the_meshed_regions(tmp_path: Path) -> None:
    labels = make_labels("uint32")
    volume = volume_from_array(np.ascontiguousarray(labels.transpose(2, 1, 0)), "ZYX")
    seg = SegmentationOptions(mesh=True, region_size=(32, 32))
    options = BuildOptions(resolution=RES, volume_type="segmentation", chunk_size=(16, 16, 16),
                           voxel_offset=OFFSET, segmentation=seg, workers=2)  # fmt: skip
    build_dataset(volume, tmp_path / "ref", options)

    out = tmp_path / "cut"
    journal = out / MESH_JOURNAL_DIR

    def cut_after_two_regions(_: object) -> None:
        if len(list(journal.glob("*.json"))) >= 2:
            raise _Cut

    with pytest.raises(_Cut):
        build_dataset(volume, out, options, progress=cut_after_two_regions)
    assert not (out / "info").exists()
    # A region's record names its segments; their fragments were written before it.
    done: dict[Path, int] = {}
    for record in journal.glob("*.json"):
        bounds = record.name.removesuffix(".json")
        for segment in json.loads(record.read_text())["segments"]:
            fragment = out / "mesh" / f"{segment}:0:{bounds}"
            fragment = fragment if fragment.exists() else fragment.with_name(fragment.name + ".gz")
            done[fragment] = fragment.stat().st_mtime_ns
    assert done, "the interrupted build recorded no finished region"

    build_dataset(volume, out, replace(options, resume=True))
    assert {f: f.stat().st_mtime_ns for f in done} == done, "a recorded region was meshed again"
    assert not journal.exists()
    ref = {p.relative_to(tmp_path / "ref"): p.read_bytes() for p in (tmp_path / "ref").rglob("*")
           if p.is_file()}  # fmt: skip
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == ref


def test_resume_refuses_other_mesh_settings(tmp_path: Path) -> None:
    labels = make_labels("uint32")
    volume = volume_from_array(np.ascontiguousarray(labels.transpose(2, 1, 0)), "ZYX")
    seg = SegmentationOptions(mesh=True, region_size=(32, 32))
    options = BuildOptions(resolution=RES, volume_type="segmentation", chunk_size=(16, 16, 16),
                           segmentation=seg)  # fmt: skip
    with pytest.raises(_Cut):
        build_dataset(volume, tmp_path / "ds", options, progress=lambda _: _raise(_Cut()))
    other = replace(seg, region_size=(64, 64))
    with pytest.raises(BuildError, match="other settings"):
        build_dataset(volume, tmp_path / "ds", replace(options, segmentation=other, resume=True))


def _raise(e: Exception) -> None:
    raise e


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_mesh_workers_die_with_a_killed_build(tmp_path: Path) -> None:
    # kill -9 of a --mesh build used to leave its workers blocked on their queue for good.
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(1, 400, (12, 16, 16)), np.ones((8, 8, 8))).astype(np.uint32)
    np.save(tmp_path / "labels.npy", labels)
    cmd = [sys.executable, "-m", "precomp_host", "build", str(tmp_path / "labels.npy"),
           str(tmp_path / "out"), "--resolution", "8", "8", "8", "--type", "segmentation",
           "--mesh", "--workers", "2", "-q"]  # fmt: skip
    build = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and build.poll() is None:
            time.sleep(0.05)
            workers = _children(build.pid)
        assert len(workers) >= 2, "the build must have started its mesh workers"
        os.kill(build.pid, signal.SIGKILL)
        build.wait()
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "orphaned mesh workers are still alive"
    finally:
        build.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
