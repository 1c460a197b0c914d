"""``benchmarks/annotations.py``: precomp_host's annotation writer against Neuroglancer's.

Run on demand (never by pytest), from the repository root::

    python benchmarks/annotations.py                 # 1,000,000 points
    python benchmarks/annotations.py --count 100000  # quick iteration

One generated input (issue 16): points in a 20 x 20 x 2 um box, with three properties (a
float32 score, a uint16 count, a uint8 enum) and one relationship (a segment id out of 10,000
for each point), saved once as ``.npz``. Each writer runs in its own process on that file, timed
and sampled by :mod:`benchmarks.measure`:
``precomp_host.build.annotation_writer.write_annotations`` (multi-level spatial index,
gzip/brotli siblings), the same with ``sharded=True`` (every index as a few shard files) and
``neuroglancer.write_annotations`` (PyPI, one spatial cell). Every output is then checked to
hold every annotation in ``by_id`` and in the spatial index, so a writer that fails quietly is
not reported as fast. The central function is :func:`main`; it prints each tool's figures and
our/their ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import measure, output_size

SEGMENTS = 10_000
RESOLUTION = (4.0, 4.0, 40.0)  # nm
#: Ours unsharded (a file per annotation in by_id), ours with --sharded, Neuroglancer's.
TOOLS = ("precomp_host", "precomp_host_sharded", "neuroglancer")


def make_input(path: Path, count: int) -> None:
    rng = np.random.default_rng(20261202)
    np.savez(
        path,
        xyz=(rng.random((count, 3)) * [5000, 5000, 50]).astype(np.float32),
        score=rng.random(count).astype(np.float32),
        count=rng.integers(0, 60000, count).astype(np.uint16),
        kind=rng.integers(0, 3, count).astype(np.uint8),
        segment=rng.integers(1, SEGMENTS + 1, count).astype(np.uint64),
    )


def run_precomp_host(src: Path, out: Path, sharded: bool = False) -> None:
    from precomp_host.build.annotation_writer import write_annotations as write
    from precomp_host.build.annotations import AnnotationTable, Property, Related

    d = np.load(src)
    dims = {a: (r * 1e-9, "m") for a, r in zip("xyz", RESOLUTION, strict=True)}
    table = AnnotationTable(
        "POINT",
        d["xyz"],
        np.arange(1, len(d["xyz"]) + 1, dtype=np.uint64),
        dims,
        [
            (Property("score", "float32"), d["score"]),
            (Property("count", "uint16"), d["count"]),
            (
                Property("kind", "uint8", enum_values=(0, 1, 2), enum_labels=("a", "b", "c")),
                d["kind"],
            ),
        ],  # fmt: skip
        {"segment": Related.one_each(d["segment"])},
    )
    write({"": table}, out, sharded=sharded)


def run_neuroglancer(src: Path, out: Path) -> None:
    import neuroglancer
    from neuroglancer.write_annotations import AnnotationWriter

    d = np.load(src)
    space = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=RESOLUTION)
    spec = neuroglancer.AnnotationPropertySpec
    writer = AnnotationWriter(
        space,
        "point",
        relationships=["segment"],
        properties=[
            spec(id="score", type="float32"),
            spec(id="count", type="uint16"),
            spec(id="kind", type="uint8", enum_values=[0, 1, 2], enum_labels=["a", "b", "c"]),
        ],
    )
    xyz = d["xyz"].tolist()
    score, cnt, kind, seg = (d[k].tolist() for k in ("score", "count", "kind", "segment"))
    for i in range(len(xyz)):
        writer.add_point(
            xyz[i], id=i + 1, score=score[i], count=cnt[i], kind=kind[i], segment=seg[i]
        )
    writer.write(out)


def _read(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    import gzip

    return gzip.decompress(path.with_name(path.name + ".gz").read_bytes())


def check_sharded(out: Path, info: dict[str, Any], count: int) -> str:
    from precomp_host.core.sharding import ShardingSpec, read_shard

    def entries(index: dict[str, Any]) -> list[bytes]:
        spec = ShardingSpec.from_json(index["sharding"])
        found: list[bytes] = []
        for f in (out / index["key"]).iterdir():
            found += read_shard(spec, f.read_bytes()).values()
        return found

    by_id = len(entries(info["by_id"]))
    if by_id != count:
        return f"by_id holds {by_id} of {count}"
    placed = sum(struct.unpack_from("<Q", e)[0] for lv in info["spatial"] for e in entries(lv))
    return "" if placed == count else f"spatial index holds {placed} of {count}"


def check(out: Path, count: int) -> str:
    """'' if ``out`` holds every annotation in by_id and the spatial index, else the problem."""
    info = json.loads((out / "info").read_text())
    if "sharding" in info["by_id"]:
        return check_sharded(out, info, count)
    by_id = sum(1 for _ in (out / "by_id").iterdir())
    if by_id != count:
        return f"by_id holds {by_id} of {count}"
    placed = 0
    for level in info["spatial"]:
        for f in (out / level["key"]).iterdir():
            if f.suffix in (".gz", ".br") and f.with_suffix("").exists():
                continue
            if f.suffix == ".br" and f.with_suffix(".gz").exists():
                continue
            placed += struct.unpack_from("<Q", _read(f.with_suffix("") if f.suffix else f))[0]
    return "" if placed == count else f"spatial index holds {placed} of {count}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=None, help="folder (default: a temp dir)")
    parser.add_argument("--run", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:  # a child: one writer, measured from outside
        if args.run == "neuroglancer":
            run_neuroglancer(args.src, args.out)
        else:
            run_precomp_host(args.src, args.out, sharded=args.run == "precomp_host_sharded")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="precomp-bench-ann-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "points.npz"
    make_input(src, args.count)
    repo = Path(__file__).resolve().parents[1]
    results = {}
    for tool in TOOLS:
        out = work / tool
        shutil.rmtree(out, ignore_errors=True)
        argv_ = [sys.executable, str(Path(__file__).resolve()), "--run", tool,
                 "--src", str(src), "--out", str(out)]  # fmt: skip
        m = measure([argv_], env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)}, cwd=repo,
                    log=work / f"{tool}.log")  # fmt: skip
        problem = f"exit code {m.returncode}" if m.returncode else check(out, args.count)
        size = output_size(out) if out.exists() else None
        results[tool] = m
        print(
            f"{tool:20s} wall {m.wall_s:7.1f} s  cpu {m.cpu_s:7.1f} s  peak RSS"
            f" {m.peak_tree_rss / 2**20:7.0f} MiB  files {size.files if size else 0:8d}"
            f"  bytes {size.bytes if size else 0:11d}  {problem or 'ok'}",
            flush=True,
        )
    ours, theirs = results["precomp_host"], results["neuroglancer"]
    print(
        f"ratio precomp_host/neuroglancer: wall {ours.wall_s / theirs.wall_s:.2f}"
        f"  cpu {ours.cpu_s / theirs.cpu_s:.2f}"
        f"  peak RSS {ours.peak_tree_rss / theirs.peak_tree_rss:.2f}"
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
