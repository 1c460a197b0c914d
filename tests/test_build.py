"""build_dataset end to end: every scale read back by tensorstore against a numpy reference."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile

from precomp_host.build.builder import BuildOptions, build_dataset
from precomp_host.build.sources import volume_from_array
from precomp_host.core.encodings import BROTLI, GZIP

from .precomputed_reader import assert_all_chunks_present, flat_copy, read_scale

if TYPE_CHECKING:
    from precomp_host.core.progress import Progress

REPO = Path(__file__).resolve().parent.parent
SHAPE = (70, 45, 33)  # x, y, z: odd, so edge chunks are clipped at every scale
OFFSET = (3, 5, 7)  # not a multiple of 2: partial downsampling blocks at the start


def _reduce_axis(a: np.ndarray, axis: int, origin: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Block sums and counts along one axis, blocks aligned to absolute multiples of f."""
    ids = (origin + np.arange(a.shape[axis])) // f
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    counts = np.diff(np.r_[starts, a.shape[axis]])
    return np.add.reduceat(a, starts, axis=axis), counts


def reference_pyramid(vol: np.ndarray, info: dict[str, Any]) -> list[np.ndarray]:
    """Mean pyramid of ``vol`` [x, y, z, c], cascaded scale by scale like the spec's scales."""
    out = [vol]
    scales = info["scales"]
    for prev, cur in zip(scales, scales[1:], strict=False):
        factors = [round(c / p) for p, c in zip(prev["resolution"], cur["resolution"], strict=True)]
        a = out[-1].astype(np.float64)
        count = np.ones(1)
        for axis in range(3):
            a, n = _reduce_axis(a, axis, prev["voxel_offset"][axis], factors[axis])
            shape = [1, 1, 1, 1]
            shape[axis] = len(n)
            count = count * n.reshape(shape)
        if vol.dtype.kind == "f":
            out.append((a / count).astype(vol.dtype))
        else:
            out.append(np.floor((a + count // 2) / count).astype(vol.dtype))
        assert list(out[-1].shape[:3]) == cur["size"]
    return out


def make_volume(dtype: str, channels: int = 1, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A smooth pattern plus noise, [x, y, z, c], never all zero."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    rng = np.random.default_rng(7)
    base = 100 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0) + 30 * np.sin(z / 4.0)
    vol = np.stack([base + 10 * c for c in range(channels)], axis=-1)
    vol = vol + rng.normal(0, 3, vol.shape)
    if dtype == "float32":
        return (vol / 50).astype(np.float32)
    scale = {"uint8": 1, "uint16": 200, "uint32": 70000}[dtype]
    out: np.ndarray = np.clip(vol * scale, 1, None).astype(dtype)
    return out


def build(vol_xyzc: np.ndarray, out: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("voxel_offset", OFFSET)
    options = BuildOptions(resolution=(4.0, 4.0, 6.0), chunk_size=(16, 16, 16), **kw)
    volume = volume_from_array(np.ascontiguousarray(vol_xyzc.transpose(2, 1, 0, 3)), "ZYXC")
    build_dataset(volume, out, options)
    info: dict[str, Any] = json.loads((out / "info").read_text())
    return info


def read_all(out: Path, tmp: Path) -> list[np.ndarray]:
    flat = flat_copy(out, tmp / "flat")
    assert_all_chunks_present(flat)
    info = json.loads((flat / "info").read_text())
    return [read_scale(flat, i) for i in range(len(info["scales"]))]


@pytest.mark.parametrize(
    ("dtype", "channels", "layout", "compress"),
    [
        ("uint8", 1, "nested", ("gzip", "br")),
        ("uint8", 3, "flat", ("gzip",)),
        ("uint16", 1, "nested", ("br",)),
        ("uint32", 1, "flat", ()),
        ("float32", 2, "nested", ("gzip", "br")),
    ],
)
def test_every_scale_reads_back_exactly(
    tmp_path: Path, dtype: str, channels: int, layout: str, compress: tuple[str, ...]
) -> None:
    vol = make_volume(dtype, channels)
    info = build(vol, tmp_path / "ds", layout=layout, compress=compress)
    assert len(info["scales"]) >= 3
    assert info["scales"][0]["voxel_offset"] == list(OFFSET)
    got = read_all(tmp_path / "ds", tmp_path)
    for i, (g, want) in enumerate(zip(got, reference_pyramid(vol, info), strict=True)):
        assert g.shape == want.shape, f"scale {i}"
        assert np.any(g != 0), f"scale {i} read as zeros"
        if dtype == "float32":
            np.testing.assert_allclose(g, want, rtol=1e-6, err_msg=f"scale {i}")
        else:
            np.testing.assert_array_equal(g, want, err_msg=f"scale {i}")


@pytest.mark.parametrize("offset", [(-37, -5, -70), (-32, 0, -16)])
def test_negative_voxel_offset_reads_back_exactly(
    tmp_path: Path, offset: tuple[int, int, int]
) -> None:
    """volume.md allows any integer voxel_offset: chunk names then hold negative numbers
    (``-37--21_...``), which tensorstore reads and the nested layout stores."""
    vol = make_volume("uint16")
    info = build(vol, tmp_path / "ds", voxel_offset=offset)
    assert info["scales"][0]["voxel_offset"] == list(offset)
    first = tmp_path / "ds" / info["scales"][0]["key"] / f"{offset[0]}-{offset[0] + 16}"
    assert first.is_dir(), "nested folders named with negative coordinates"
    got = read_all(tmp_path / "ds", tmp_path)
    for i, (g, want) in enumerate(zip(got, reference_pyramid(vol, info), strict=True)):
        assert np.any(g != 0), f"scale {i} read as zeros"
        np.testing.assert_array_equal(g, want, err_msg=f"scale {i}")


def test_variants_follow_the_storage_rule(tmp_path: Path) -> None:
    build(make_volume("uint8"), tmp_path / "ds")
    files = {p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds").rglob("*")}
    chunks = [f for f in files if f.endswith(".gz")]
    assert chunks, "compressible data must get .gz siblings"
    for gz in chunks:
        assert gz[:-3] not in files, "no identity copy beside .gz without --keep-identity"
        # .br beside .gz only when smaller (recomputed here: brotli output is deterministic).
        packed = (tmp_path / "ds" / gz).read_bytes()
        br_size = len(BROTLI.compress(GZIP.decompress(packed)))
        assert (gz[:-3] + ".br" in files) == (br_size < len(packed)), gz
    assert any(f.endswith(".br") for f in files), "smooth data: brotli beats gzip somewhere"
    assert not any(".precomp" in f for f in files), "temporary files left behind"


def test_keep_identity_stores_plain_files_too(tmp_path: Path) -> None:
    build(make_volume("uint8"), tmp_path / "ds", keep_identity=True, compress=("gzip",))
    gz = list((tmp_path / "ds").rglob("*.gz"))
    assert gz
    assert all(p.with_suffix("").exists() for p in gz)


def smooth_uint8(channels: int) -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    base = 120 + 50 * np.sin(x / 9.0) * np.cos(y / 7.0) + 30 * np.cos(z / 6.0)
    return np.stack([base + 20 * c for c in range(channels)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_reads_back_exactly(tmp_path: Path, channels: int) -> None:
    vol = smooth_uint8(channels)
    info = build(vol, tmp_path / "ds", encoding="png")
    assert {s["encoding"] for s in info["scales"]} == {"png"}
    for i, (g, want) in enumerate(
        zip(read_all(tmp_path / "ds", tmp_path), reference_pyramid(vol, info), strict=True)
    ):
        np.testing.assert_array_equal(g, want, err_msg=f"scale {i}")


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quality_95_is_above_40_db(tmp_path: Path, channels: int) -> None:
    vol = smooth_uint8(channels)
    info = build(vol, tmp_path / "ds", encoding="jpeg", codec_options={"quality": 95})
    assert info["scales"][0]["jpeg_quality"] == 95
    for i, (g, want) in enumerate(
        zip(read_all(tmp_path / "ds", tmp_path), reference_pyramid(vol, info), strict=True)
    ):
        mse = np.mean((g.astype(np.float64) - want.astype(np.float64)) ** 2)
        psnr = 10 * np.log10(255**2 / max(float(mse), 1e-12))
        assert psnr >= 40, f"scale {i}: PSNR {psnr:.1f} dB"


def _write_stack(folder: Path, vol_xyz: np.ndarray) -> None:
    folder.mkdir()
    for z in range(vol_xyz.shape[2]):
        tifffile.imwrite(folder / f"slice_{z}.tif", np.ascontiguousarray(vol_xyz[:, :, z].T))


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "precomp_host", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        **kw,
    )


def test_cli_builds_a_tiff_stack_in_natural_order(tmp_path: Path) -> None:
    vol = make_volume("uint16")[..., 0]
    _write_stack(tmp_path / "stack", vol)  # slice_2 must come before slice_10
    r = _cli(
        "build",
        str(tmp_path / "stack"),
        str(tmp_path / "ds"),
        "--resolution",
        "4",
        "4",
        "6",
        "--chunk-size",
        "16",
        "--workers",
        "2",
    )
    assert r.returncode == 0, r.stderr
    flat = flat_copy(tmp_path / "ds", tmp_path / "flat")
    assert_all_chunks_present(flat)
    np.testing.assert_array_equal(read_scale(flat, 0)[..., 0], vol)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_output_is_identical_across_worker_counts_and_reruns(tmp_path: Path) -> None:
    vol = make_volume("uint8")
    trees = []
    for i, workers in enumerate((1, 3, 3)):
        build(vol, tmp_path / f"ds{i}", workers=workers)
        trees.append(_tree(tmp_path / f"ds{i}"))
    assert trees[0] == trees[1] == trees[2]


def _big_npy(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    # Noisy enough that every chunk compresses slowly: the build takes a few seconds.
    vol = rng.integers(0, 64, size=(256, 192, 192), dtype=np.uint8)
    np.save(tmp_path / "vol.npy", vol)
    return tmp_path / "vol.npy"


BIG_ARGS = ("--resolution", "8", "8", "8", "--chunk-size", "16", "--workers", "2")


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_output(tmp_path: Path) -> None:
    src = _big_npy(tmp_path)
    ref = _cli("build", str(src), str(tmp_path / "ref"), *BIG_ARGS, "-q")
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "precomp_host", "build", str(src), str(out), *BIG_ARGS, "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and sum(1 for _ in out.rglob("*.gz")) > 300:
                break
            time.sleep(0.02)
        else:
            pytest.fail("build made no progress")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "info").exists(), "killed build must not have published info"

    again = _cli("build", str(src), str(out), *BIG_ARGS, "--resume", "-q")
    assert again.returncode == 0, again.stderr
    assert _tree(out) == _tree(tmp_path / "ref")


@pytest.mark.slow
def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    import gzip

    import brotli

    src = _big_npy(tmp_path)
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "precomp_host", "build", str(src), str(out), *BIG_ARGS, "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checked: set[str] = set()
    info_seen_with_missing = False
    try:
        while proc.poll() is None or len(checked) == 0:
            for p in list(out.rglob("*")) if out.exists() else []:
                rel = p.relative_to(out).as_posix()
                if ".precomp-tmp" in rel or rel in checked or not p.is_file():
                    continue
                data = p.read_bytes()
                if rel.endswith(".gz"):
                    raw = gzip.decompress(data)
                elif rel.endswith(".br"):
                    raw = brotli.decompress(data)
                elif rel == "info" or rel.endswith(".json"):
                    json.loads(data)
                    if rel == "info" and proc.poll() is None:
                        info_seen_with_missing = True
                    continue
                else:
                    raw = data
                # Every chunk file at a final name holds its whole uint8 chunk box.
                box = re.findall(r"(\d+)-(\d+)", rel.split("/", 1)[1])
                assert len(box) == 3, rel
                assert len(raw) == math.prod(int(b) - int(a) for a, b in box), rel
                checked.add(rel)
    finally:
        proc.wait()
    assert proc.returncode == 0
    assert len(checked) > 1000
    # info is written last: while the build was still running, it was never there early
    # enough to be missing chunks (the build only exits after writing it).
    if info_seen_with_missing:
        assert_all_chunks_present(flat_copy(out, tmp_path / "flat"))


def test_progress_reports_reach_the_total(tmp_path: Path) -> None:
    seen: list[Progress] = []
    volume = volume_from_array(
        np.ascontiguousarray(make_volume("uint8").transpose(2, 1, 0, 3)), "ZYXC"
    )
    build_dataset(
        volume,
        tmp_path / "ds",
        BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16)),
        seen.append,
    )
    assert seen
    assert seen[-1].done == seen[-1].total
    assert all(a.done <= b.done for a, b in zip(seen, seen[1:], strict=False))


def _peak_rss_of_build(src: Path, out: Path) -> int:
    code = (
        "import sys\n"
        "from precomp_host.cli.commands import main\n"
        f"rc = main(['build', {str(src)!r}, {str(out)!r}, '--resolution', '8', '8', '8',"
        " '--chunk-size', '32', '--compress', 'gzip', '--workers', '2', '-q'])\n"
        "assert rc == 0\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked pytest.
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return int(r.stdout.split()[-1]) * 1024


@pytest.mark.slow
def test_memory_does_not_grow_with_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    plane = rng.integers(0, 200, size=(1, 512, 512), dtype=np.uint8)
    rss = {}
    for depth in (32, 512):  # 8 MB and 128 MB of voxels
        np.save(tmp_path / f"d{depth}.npy", np.repeat(plane, depth, axis=0))
        rss[depth] = _peak_rss_of_build(tmp_path / f"d{depth}.npy", tmp_path / f"out{depth}")
    # Streaming in z-slabs: 16x the depth may cost a few more slabs in flight, not the volume.
    assert rss[512] - rss[32] < 48 * 2**20, rss
