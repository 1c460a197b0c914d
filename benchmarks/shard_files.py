"""``benchmarks/shard_files.py``: files written by a sharded segmentation vs an unsharded one.

Run on demand, from the repository root::

    python benchmarks/shard_files.py                      # the 1024x1024x512 label volume
    python benchmarks/shard_files.py --shape 256 256 128  # quick

Issue 13 wants the sharded segmentation of the label benchmark's volume in at most 1 % of
the files of the unsharded build. Both builds here are the volume alone (compressed
segmentation, mode pyramid, gzip siblings): legacy meshes are a file or two per segment
either way, and sharded multi-resolution meshes are the mesh half of the issue.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.labels import LabelVolume
from benchmarks.measure import measure, output_size

if TYPE_CHECKING:
    from collections.abc import Sequence

REPO = Path(__file__).resolve().parents[1]
#: The ratio issue 13 asks for: sharded files / unsharded files.
TARGET = 0.01


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--shape", type=int, nargs=3, default=(1024, 1024, 512),
                   metavar=("X", "Y", "Z"))  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=REPO / "bench-out")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    volume = LabelVolume((args.shape[0], args.shape[1], args.shape[2]))
    cache: Path = args.cache_dir.resolve()
    stack = volume.ensure_stack(cache / "stacks")
    counts = {}
    for name, extra in (("unsharded", []), ("sharded", ["--sharded"])):
        out = cache / "runs" / f"labels-{name}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "precomp_host", "build", str(stack), str(out),
                   "--resolution", "8", "8", "40", "--type", "segmentation", "--compress",
                   "gzip", "--workers", str(args.cores), *extra]  # fmt: skip
        (cache / "logs").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        m = measure([command], env=env, cwd=cache, log=cache / "logs" / f"shard-files-{name}.log")
        if m.returncode != 0:
            print(f"{name} build failed ({m.returncode}); see the log", file=sys.stderr)
            return 1
        size = output_size(out)
        counts[name] = size.files
        print(f"{name}: {size.files} files, {size.bytes / 1e6:.1f} MB, {m.wall_s:.1f} s, "
              f"peak RSS {m.peak_tree_rss >> 20} MiB")  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    ratio = counts["sharded"] / counts["unsharded"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    x, y, z = volume.shape
    print(f"{x}x{y}x{z} labels: sharded / unsharded files = {100 * ratio:.2f} % "
          f"(target <= {100 * TARGET:g} %: {verdict})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
