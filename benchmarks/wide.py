"""``benchmarks/wide.py``: building planes wider than memory allows whole-plane slabs of.

Run on demand (never by pytest), from the repository root::

    python benchmarks/wide.py                  # 16 slices of 20,000^2 uint8, both sources
    python benchmarks/wide.py --source zarr    # the Zarr source only (issue #18's bound)
    python benchmarks/wide.py --plane 4000 --depth 8    # quick iteration

Issue #13: a stack of 16 slices of 20,000 x 20,000 uint8 (6.4 GB) builds to a full pyramid in
at most 1 GiB peak RSS of the build's process tree; whole-plane slabs needed 23.8 GiB for 64 such
slices. The benchmark writes the source into ``--cache-dir`` (a folder of 2D TIFF slices with
tifffile, uncompressed as microscopes write them; a Zarr array in 1-slice, 1024 x 1024 chunks),
runs ``precomp-host build`` in a subprocess measured by :mod:`benchmarks.measure` (the
process tree's summed RSS and its processes' ``VmHWM``, polled at 10 Hz), checks that
every chunk file of every scale exists, and compares a few chunks with the source.

Writing the source and checking the output run in subprocesses of their own: Linux keeps a
process's peak RSS across ``exec`` (``signal->maxrss`` takes the old address space's high
water mark), so a build started from a parent that once held a 400 MB plane would report the
parent's peak as its own ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import measure, output_size

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("benchmarks.wide")

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
#: Issue #13's bound for this case.
BOUND = 1 * GIB


def plane(n: int, z: int) -> np.ndarray:
    """Slice ``z``: a pattern with texture at every scale (not constant, not noise only)."""
    rng = np.random.default_rng(z)
    rows = (np.arange(n, dtype=np.uint32) * 7 // 5 + rng.integers(0, 8, n)).astype(np.uint8)
    cols = (np.arange(n, dtype=np.uint32) // 3 + 11 * z).astype(np.uint8)
    return np.add.outer(rows, cols)  # uint8 wraps around: stripes of every width


def write_tiffs(folder: Path, n: int, depth: int) -> Path:
    import tifffile

    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for z in range(depth):
        tifffile.imwrite(folder / f"z{z:03d}.tif", plane(n, z), photometric="minisblack")
    done.touch()
    return folder


def write_zarr(path: Path, n: int, depth: int) -> Path:
    import zarr

    done = path.with_name(path.name + ".complete")
    if done.exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    arr = zarr.create_array(str(path), shape=(depth, n, n), chunks=(1, 1024, 1024), dtype="uint8")
    for z in range(depth):
        arr[z] = plane(n, z)
    done.touch()
    return path


def check(out: Path, n: int, depth: int) -> list[str]:
    """Every chunk of every scale is on disk; a few scale-0 chunks equal the source."""
    sys.path.insert(0, str(REPO))
    from precomp_host.core.datasets import read_dataset
    from precomp_host.core.layout import NESTED

    problems = []
    dataset = read_dataset(out)
    for scale in dataset.scales:
        missing = [
            k.name
            for k in scale.iter_chunk_keys()
            if not (out / (NESTED.path_for(k) + ".gz")).exists()
            and not (out / NESTED.path_for(k)).exists()
        ]
        if missing:
            problems.append(f"scale {scale.key}: {len(missing)} chunks missing, e.g. {missing[0]}")
    scale = dataset.scales[0]
    for grid in ((0, 0, 0), (n // 128, n // 200, 0), tuple(g - 1 for g in scale.grid_shape())):
        key = scale.chunk_key((grid[0], grid[1], grid[2]))
        path = out / (NESTED.path_for(key) + ".gz")
        got = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8)
        (x0, y0, z0), (x1, y1, z1) = key.start, key.stop
        want = np.stack([plane(n, z)[y0:y1, x0:x1] for z in range(z0, z1)])
        if not np.array_equal(got.reshape(want.shape), want):
            problems.append(f"chunk {key.name} differs from the source")
        elif not want.any():
            problems.append(f"chunk {key.name} is all zero: not a check")
    return problems


def _in_subprocess(env: dict[str, str], call: str) -> str:
    """``call`` (an expression on this module) evaluated in a fresh interpreter; its repr."""
    code = f"import benchmarks.wide as w; print(repr({call}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--plane", type=int, default=20_000, help="plane edge (default 20000)")
    p.add_argument("--depth", type=int, default=16, help="slices (default 16)")
    p.add_argument(
        "--source", choices=("tiff", "zarr"), action="append", help="default: both, in turn"
    )
    p.add_argument("--cores", type=int, default=2, help="CPUs and --workers (default 2)")
    p.add_argument(
        "--compress", default="gzip", help="build's --compress (default gzip: brotli is slow)"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=Path("/tmp/precomp-wide"), help="sources and outputs"
    )
    p.add_argument("--keep", action="store_true", help="keep the sources and outputs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cpus)
    cache: Path = args.cache_dir.resolve()
    n, depth = args.plane, args.depth
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    ok = True
    rows = []
    for source in args.source or ["tiff", "zarr"]:
        log.info("writing the %s source (%d x %d x %d uint8)", source, n, n, depth)
        src = cache / ("tiffs" if source == "tiff" else "vol.zarr")
        writer = "write_tiffs" if source == "tiff" else "write_zarr"
        _in_subprocess(env, f"w.{writer}(w.Path({str(src)!r}), {n}, {depth})")
        out = cache / f"out-{source}"
        shutil.rmtree(out, ignore_errors=True)
        argv_ = [sys.executable, "-m", "precomp_host", "build", str(src), str(out),
                 "--resolution", "8", "8", "40", "--workers", str(len(cpus)),
                 "--compress", args.compress]  # fmt: skip
        log.info("building: %s", " ".join(argv_))
        m = measure([argv_], env=env, cwd=cache, log=cache / f"build-{source}.log")
        problems = (
            ast.literal_eval(_in_subprocess(env, f"w.check(w.Path({str(out)!r}), {n}, {depth})"))
            if m.returncode == 0
            else [f"exit {m.returncode}"]
        )
        size = output_size(out) if out.exists() else None
        within = m.peak_tree_rss <= BOUND
        ok = ok and not problems and within
        rows.append(
            f"{source:5} {m.wall_s:8.1f} s {m.cpu_s:8.1f} s cpu  peak tree RSS "
            f"{m.peak_tree_rss / GIB:5.2f} GiB (max process {m.max_process_rss / GIB:4.2f} GiB, "
            f"{'within' if within else 'OVER'} {BOUND / GIB:.0f} GiB)  "
            f"{size.files if size else 0} files {size.bytes / 1e9 if size else 0:.2f} GB"
            + (f"  PROBLEMS: {'; '.join(problems)}" if problems else "")
        )
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print()
    print(f"{n}x{n}x{depth} uint8 ({n * n * depth / 1e9:.1f} GB), {len(cpus)} cores, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")  # fmt: skip
    for row in rows:
        print(row)
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
