"""``benchmarks/check.py``: ``precomp-host check --full`` on the image benchmark, served by nginx.

Run on demand (never by pytest), from the repository root::

    python benchmarks/check.py                       # 1024x1024x512 uint8 (issue 17: < 30 s)
    python benchmarks/check.py --shape 256 256 128   # quick iteration

Builds the benchmark volume (:class:`benchmarks.volume.Volume`, the build benchmark's image,
``--compress gzip`` as there) once under ``--cache-dir``, serves it with Debian's nginx and the
config ``precomp-host deploy nginx`` emits (:class:`tests.realservers.RealServer`), then times
``precomp-host check URL --full --json`` as a user runs it and prints how many chunks it read
and decoded. ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.volume import Volume
from precomp_host.deploy import servers
from precomp_host.deploy import site as deploy
from tests.realservers import RealServer

if TYPE_CHECKING:
    from collections.abc import Sequence

REPO = Path(__file__).resolve().parents[1]
#: issue 17's bound for --full on the 1024 x 1024 x 512 image, on 2 cores.
LIMIT_S = 30.0


def ensure_build(volume: Volume, cache: Path) -> Path:
    """The built dataset under ``cache`` (built once: its ``info`` is written last)."""
    out = cache / "check" / volume.name
    if (out / "info").exists():
        return out
    stack = volume.ensure_stack(cache / "stacks")
    subprocess.run(
        [sys.executable, "-m", "precomp_host", "build", str(stack), str(out), "--resolution",
         "8", "8", "8", "--compress", "gzip", "--overwrite", "-q"],
        check=True,
    )  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=(1024, 1024, 512), metavar=("X", "Y", "Z"))
    p.add_argument("--cache-dir", type=Path, default=REPO / "bench-out")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    volume = Volume((args.shape[0], args.shape[1], args.shape[2]))
    cache: Path = args.cache_dir.resolve()
    t0 = time.monotonic()
    root = ensure_build(volume, cache)
    print(f"dataset {root} ready in {time.monotonic() - t0:.1f} s")
    work = cache / "check" / "nginx"
    work.mkdir(parents=True, exist_ok=True)
    server = RealServer("nginx", work, work / "site.conf", listen_in_emitted=True)
    site = deploy.Site.make(root.parent, "/data", listen=server.listen)
    server.emitted.write_text(servers.render_nginx(site, deploy.survey_site(site)))
    url = f"{server.base_url}/data/{root.name}"
    with server:
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "precomp_host", "check", url, "--full", "--json",
             "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.monotonic() - t0
    report = json.loads(done.stdout)
    figures = {
        "shape": list(volume.shape),
        "cpus": len(os.sched_getaffinity(0)),
        "concurrency": args.concurrency,
        "wall_s": round(wall, 2),
        "exit_code": done.returncode,
        "ok": report["ok"],
        "requests": report["requests"],
        "chunks_decoded": report["chunks_decoded"],
        "findings": [f["code"] for f in report["findings"]],
    }
    print(
        f"check --full {url}: exit {done.returncode}, {report['chunks_decoded']} chunks decoded, "
        f"{report['requests']} requests, {wall:.1f} s wall on {figures['cpus']} CPUs "
        f"(limit {LIMIT_S:.0f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if done.returncode == 0 and wall < LIMIT_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
