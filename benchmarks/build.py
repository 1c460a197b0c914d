"""``benchmarks/build.py``: precomp_host's build against its peers on one generated volume.

Run on demand (never by pytest), from the repository root::

    python benchmarks/build.py                       # 1024x1024x512 uint8, every tool
    python benchmarks/build.py --shape 256 256 128   # quick iteration
    python benchmarks/build.py --only precomp_host --only tensorstore --keep
    python benchmarks/build.py --case labels         # 1024x1024x512 uint32 segmentation
    python benchmarks/build.py --case labels-multires   # the same, sharded multires meshes
    python benchmarks/build.py --case sharded        # the image case, sharded

Four cases: ``image`` (issue #2: a uint8 EM-like volume, pyramid, against
neuroglancer-scripts, cloud-volume+igneous and tensorstore), ``labels`` (issue #3: a
uint32 segmentation with ~2,000 segments, compressed_segmentation, mode pyramid and legacy
meshes, against cloud-volume+igneous downsample and mesh tasks), ``labels-multires``
(issue #13: the same segmentation with sharded multi-resolution meshes, against igneous'
sharded multires mesh tasks) and ``sharded`` (issue #13: the image case with ``--sharded``,
against igneous' sharded transfer and downsample tasks and tensorstore's sharded write of scale
0 with the same sharding spec).

The central class is :class:`Tool`: one way to turn the TIFF stack into a precomputed dataset,
as the commands a user of that tool runs. Each tool runs as subprocesses, timed and sampled by
:mod:`benchmarks.measure`, then its output is checked by :mod:`benchmarks.verify` so a peer
that fails quietly is not reported as fast. precomp_host runs in this interpreter's
environment; the peers run in their own venv (:mod:`benchmarks.peers_env`).

Every tool gets the same cores: this process pins itself (and so its children) to ``--cores``
CPUs, and each tool is told to use that many workers where it has such an option.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    # Run as a script: make the repository root importable (benchmarks and precomp_host).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.labels import LabelVolume
from benchmarks.measure import Measurement, measure, output_size
from benchmarks.peers_env import DEFAULT_DIR, PeersEnv
from benchmarks.verify import Verification, verify, verify_sharded
from benchmarks.verify_labels import LabelVerification, verify_labels
from benchmarks.volume import Volume
from precomp_host.build.plan import plan_dataset, plan_sharding
from precomp_host.cli.build import DEFAULT_SHARD_SIZE
from precomp_host.core.shard_grid import ShardPlan, parse_byte_size

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

log = logging.getLogger("benchmarks.build")

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = Path(__file__).resolve().with_name("peers")
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Context:
    """Everything a tool's commands depend on."""

    volume: Volume | LabelVolume
    stack: Path
    out: Path
    work: Path
    resolution: tuple[float, float, float]
    chunk: int
    cores: int
    #: Downsampling factors between consecutive scales, from precomp_host's plan, so the
    #: peers that take factors build the same pyramid.
    factors: tuple[tuple[int, int, int], ...]
    peers: PeersEnv
    #: precomp_host's plan of scale 0 when sharded: tensorstore writes the same shards.
    shard_plan: ShardPlan | None = None

    def res_args(self) -> list[str]:
        return [f"{r:g}" for r in self.resolution]


@dataclass(frozen=True)
class Tool:
    """One tool's way from the TIFF stack to a precomputed dataset.

    :param name: table row name, and ``--only`` value.
    :param what: what it writes, for the table.
    :param top_size: the most voxels along any axis of its coarsest scale, by its own
        definition of a full pyramid (None: it writes scale 0 only).
    :param peer: runs in the peers' venv.
    :param commands: the argv lists, run in order and timed together.
    :param prepare: untimed set-up (files a user writes by hand).
    """

    name: str
    what: str
    top_size: int | None
    peer: bool
    commands: Callable[[Context], list[list[str]]]
    prepare: Callable[[Context], None] | None = None

    @property
    def slug(self) -> str:
        return self.name.replace("+", "_")


def _precomp_host(c: Context, *extra: str, out: str | None = None) -> list[list[str]]:
    return [
        [
            sys.executable,
            "-m",
            "precomp_host",
            "build",
            str(c.stack),
            out or str(c.out),
            "--resolution",
            *c.res_args(),
            *extra,
            "--compress",
            "gzip",
            "--workers",
            str(c.cores),
        ]
    ]


def _precomp_host_labels(
    c: Context, simplification: str = "fqmr", mesh: str = "legacy"
) -> list[list[str]]:
    return _precomp_host(
        c, "--type", "segmentation", "--mesh", mesh, "--mesh-simplification", simplification
    )


def cluster_tool(base: Tool, address: str) -> Tool:
    """``base`` (a precomp_host row) with its region tasks on the Dask cluster ``address``."""
    return dataclasses.replace(
        base,
        name=f"{base.name}-cluster",
        what=f"as {base.name}, --cluster {address}",
        commands=lambda c: [[*cmd, "--cluster", address] for cmd in base.commands(c)],
    )


@dataclass(frozen=True)
class S3:
    """An S3 API server (moto) the two S3 rows write to; each row's objects are copied back
    into its ``out`` folder (untimed, bodies decoded, flat names) so :mod:`benchmarks.verify`
    checks them like any other output."""

    endpoint: str
    bucket: str = "bench"

    def prefix(self, c_out: Path) -> str:
        """Where a row's dataset lands in the bucket (the deploy row: under its URL prefix)."""
        return f"{c_out.name}/{c_out.name}/"

    def tools(self) -> tuple[Tool, Tool]:
        def direct(c: Context) -> list[list[str]]:
            url = f"s3://{self.bucket}/{self.prefix(c.out)}"
            return _precomp_host(c, "--endpoint-url", self.endpoint, out=url)

        def deployed(c: Context) -> list[list[str]]:
            site = c.work / "site"
            deploy = [
                sys.executable, "-m", "precomp_host", "deploy", "s3", str(site),
                "--bucket", self.bucket, "--url-prefix", f"/{c.out.name}",
                "--endpoint-url", self.endpoint, "--out", str(c.work / "deploy-out"),
            ]  # fmt: skip
            return [*_precomp_host(c, out=str(site / c.out.name)), deploy]

        what = "pyramid, gzip, "
        return (
            Tool("precomp_host-s3", what + "straight into s3://", 64, False, direct),
            Tool("precomp_host+deploy-s3", what + "to disk, then deploy s3", 64, False, deployed),
        )

    def clear(self, out: Path) -> None:
        """Remove a row's objects (a run starts from an empty prefix, as from an empty OUT)."""
        from precomp_host.deploy.objectstores import s3_client

        client = s3_client(self.endpoint)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix(out)
        )
        for page in pages:
            for item in page.get("Contents", []):
                client.delete_object(Bucket=self.bucket, Key=item["Key"])

    def fetch(self, out: Path) -> None:
        """Copy the objects of the row whose output folder is ``out`` into it, decoded."""
        import gzip

        from precomp_host.deploy.objectstores import s3_client

        client = s3_client(self.endpoint)
        prefix = self.prefix(out)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                got = client.get_object(Bucket=self.bucket, Key=item["Key"])
                body = got["Body"].read()
                if got.get("ContentEncoding") == "gzip":
                    body = gzip.decompress(body)
                target = out / item["Key"][len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(body)


def _ngs_prepare(c: Context) -> None:
    # The hand-written full-resolution info of neuroglancer-scripts' documented workflow.
    info = {
        "type": "image",
        "data_type": "uint8",
        "num_channels": 1,
        "scales": [
            {
                "chunk_sizes": [],
                "encoding": "raw",
                "key": "full",
                "resolution": list(c.resolution),
                "size": list(c.volume.shape),
                "voxel_offset": [0, 0, 0],
            }
        ],
    }
    (c.work / "info_fullres.json").write_text(json.dumps(info))


def _ngs(c: Context) -> list[list[str]]:
    # Its documented image workflow with its defaults: gzip (level 9) on, nested layout
    # ("By default the chunks are stored in sub-directories"), average downscaling, one process.
    return [
        [
            str(c.peers.script("generate-scales-info")),
            "--target-chunk-size",
            str(c.chunk),
            str(c.work / "info_fullres.json"),
            str(c.out),
        ],
        [str(c.peers.script("slices-to-precomputed")), str(c.stack), str(c.out)],
        [str(c.peers.script("compute-scales")), str(c.out)],
    ]


def _cv_igneous(c: Context, layer_type: str = "image", mesh: str = "legacy") -> list[list[str]]:
    return [
        [
            str(c.peers.python),
            str(PEERS_DIR / "cloudvolume_igneous.py"),
            str(c.stack),
            str(c.out),
            "--resolution",
            *c.res_args(),
            "--chunk-size",
            str(c.chunk),
            "--factors",
            ";".join(",".join(map(str, f)) for f in c.factors),
            "--cores",
            str(c.cores),
            "--layer-type",
            layer_type,
            "--mesh",
            mesh,
        ]
    ]


def _tensorstore(c: Context) -> list[list[str]]:
    return [
        [
            str(c.peers.python),
            str(PEERS_DIR / "tensorstore_scale0.py"),
            str(c.stack),
            str(c.out),
            "--resolution",
            *c.res_args(),
            "--chunk-size",
            str(c.chunk),
            "--cores",
            str(c.cores),
        ]
    ]


def _tensorstore_sharded(c: Context) -> list[list[str]]:
    # tensorstore is in precomp_host's own "bench" extra: no peers' venv needed.
    plan = c.shard_plan
    assert plan is not None
    depth = plan.shard_shape[2] * c.chunk
    command = _tensorstore(c)[0]
    command[0] = sys.executable
    return [[*command, "--sharding", json.dumps(plan.spec.to_json()), "--slab-depth", str(depth)]]


TOOLS: tuple[Tool, ...] = (
    Tool("precomp_host", "pyramid, gzip (libdeflate 6), nested", 64, False, _precomp_host),
    # Its own pyramid (dyadic_pyramid.py) halves x and y and never z for 8x8x40 nm, and stops
    # early: the coarsest scale still has many chunks (the table's "top chunks"), which means
    # less work than a full pyramid. Its chunks are anisotropic, ~64^3 voxels.
    Tool(
        "neuroglancer-scripts",
        "its pyramid, gzip 9, nested, 1 process",
        None,
        True,
        _ngs,
        _ngs_prepare,
    ),
    # cloud-files compresses with libdeflate at level 9 when the deflate package is present.
    Tool("cloud-volume+igneous", "pyramid, gzip (libdeflate 9), flat", 64, True, _cv_igneous),
    Tool("tensorstore", "scale 0 only, raw, flat", None, True, _tensorstore),
)
LABEL_TOOLS: tuple[Tool, ...] = (
    Tool(
        "precomp_host",
        "cseg, mode pyramid, meshes, gzip, nested",
        64,
        False,
        _precomp_host_labels,
    ),
    # 128: it cannot build a z-only top level (see peers/cloudvolume_igneous.py).
    Tool(
        "cloud-volume+igneous",
        "cseg, mode pyramid, meshes, gzip, flat",
        128,
        True,
        lambda c: _cv_igneous(c, "segmentation"),
    ),
    # Like for like: our build with igneous' own simplifier and defaults (quadric, 40 nm).
    Tool(
        "precomp_host-quadric",
        "as precomp_host, igneous' mesh simplification",
        64,
        False,
        lambda c: _precomp_host_labels(c, "quadric"),
    ),
)

#: Issue #13: the same segmentation with sharded multi-resolution meshes (the names as in the
#: labels case: the table's ratios are to "precomp_host").
MULTIRES_TOOLS: tuple[Tool, ...] = (
    Tool(
        "precomp_host",
        "cseg, mode pyramid, sharded multires meshes, gzip, nested",
        64,
        False,
        lambda c: _precomp_host_labels(c, mesh="multires"),
    ),
    Tool(
        "cloud-volume+igneous",
        "cseg, mode pyramid, sharded multires meshes (our octree settings), gzip, flat",
        128,
        True,
        lambda c: _cv_igneous(c, "segmentation", mesh="multires"),
    ),
)


SHARDED_TOOLS: tuple[Tool, ...] = (
    Tool(
        "precomp_host",
        f"pyramid, sharded ({DEFAULT_SHARD_SIZE} target), gzip data and indices",
        64,
        False,
        lambda c: _precomp_host(c, "--sharded"),
    ),
    # The same work from the same stack: igneous shards from a layer, so its command writes an
    # unsharded raw scale 0 first (timed: its user has to; the log has each phase's time).
    Tool(
        "cloud-volume+igneous",
        "pyramid, sharded (its 3.5 GB target), gzip data and indices",
        64,
        True,
        lambda c: [[*_cv_igneous(c)[0], "--sharded", str(c.work / "source")]],
    ),
    Tool(
        "tensorstore-sharded",
        "scale 0 only, raw, the same shards, gzip",
        None,
        False,
        _tensorstore_sharded,
    ),
)


@dataclass(frozen=True)
class Case:
    """A benchmark case: its volume, tools, checker and the issue's targets."""

    name: str
    data_type: str
    volume_type: str
    tools: tuple[Tool, ...]
    make_volume: Callable[[tuple[int, int, int]], Volume | LabelVolume]
    verify: Callable[..., Verification]
    rss_target: int
    speedup_targets: dict[str, float]
    #: Peers whose time ratio is printed without a target (a floor rather than a peer).
    compared: tuple[str, ...] = ()
    sharded: bool = False


CASES = {
    # Issue #2's targets.
    "image": Case(
        "image",
        "uint8",
        "image",
        TOOLS,
        Volume,
        lambda root, volume, top_size: verify(root, volume, top_size=top_size),
        512 * MIB,
        {"neuroglancer-scripts": 5.0, "cloud-volume+igneous": 2.0},
    ),
    # Issue #3's targets.
    "labels": Case(
        "labels",
        "uint32",
        "segmentation",
        LABEL_TOOLS,
        LabelVolume,
        lambda root, volume, top_size: verify_labels(root, volume, top_size=top_size),
        3 * GIB // 2,
        {"cloud-volume+igneous": 1.5},
    ),
    # Issue #13's targets for the sharded multi-resolution meshes.
    "labels-multires": Case(
        "labels-multires",
        "uint32",
        "segmentation",
        MULTIRES_TOOLS,
        LabelVolume,
        lambda root, volume, top_size: verify_labels(root, volume, top_size=top_size),
        3 * GIB // 2,
        {"cloud-volume+igneous": 1.5},
    ),
    # Issue #13's sharded image: >= 1.5x faster than igneous' sharded transfer and downsample,
    # peak RSS <= 1.5 GiB, and the ratio to tensorstore's sharded scale-0 write (scale 0 only:
    # a floor, not the same work).
    "sharded": Case(
        "sharded",
        "uint8",
        "image",
        SHARDED_TOOLS,
        Volume,
        lambda root, volume, top_size: verify_sharded(root, volume, top_size=top_size),
        3 * GIB // 2,
        {"cloud-volume+igneous": 1.5},
        compared=("tensorstore-sharded",),
        sharded=True,
    ),
}


@dataclass(frozen=True)
class Result:
    tool: str
    what: str
    measurement: Measurement
    files: int
    bytes: int
    verification: Verification

    @property
    def ok(self) -> bool:
        return self.measurement.returncode == 0 and self.verification.ok


def _environment(cores: int) -> dict[str, str]:
    env = dict(os.environ)
    # precomp_host is not installed in the shared venv; the peers never import it.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cores)
    return env


def _warm(stack: Path) -> None:
    # Every tool then reads the slices from the page cache, not only the ones that run later.
    for path in sorted(stack.iterdir()):
        with path.open("rb") as f:
            while f.read(1 << 20):
                pass


def _run_once(tool: Tool, ctx: Context, log_path: Path) -> Measurement:
    for d in (ctx.out, ctx.work):
        if d.exists():
            shutil.rmtree(d)
    ctx.work.mkdir(parents=True)
    if tool.prepare is not None:
        tool.prepare(ctx)
    return measure(tool.commands(ctx), env=_environment(ctx.cores), cwd=ctx.work, log=log_path)


def run_tool(
    tool: Tool,
    ctx: Context,
    logs: Path,
    *,
    case: Case,
    repeat: int,
    keep: bool,
    s3: S3 | None = None,
) -> Result:
    """Run ``tool`` ``repeat`` times from scratch; keep the fastest time and the highest peaks.

    The last run's output is measured and verified.
    """
    log_path = logs / f"{case.name}-{tool.slug}.log"
    log_path.unlink(missing_ok=True)
    runs: list[Measurement] = []
    for i in range(repeat):
        if s3 is not None:
            s3.clear(ctx.out)
        log.info("running %s (%d/%d, log: %s)", tool.name, i + 1, repeat, log_path)
        runs.append(_run_once(tool, ctx, log_path))
        log.info("%s: %.1f s", tool.name, runs[-1].wall_s)
        if runs[-1].returncode != 0:
            break
    if s3 is not None and runs[-1].returncode == 0:
        s3.fetch(ctx.out)
    fastest = min(runs, key=lambda r: r.wall_s)
    m = Measurement(
        wall_s=fastest.wall_s,
        cpu_s=fastest.cpu_s,
        peak_tree_rss=max(r.peak_tree_rss for r in runs),
        max_process_rss=max(r.max_process_rss for r in runs),
        returncode=runs[-1].returncode,
    )
    size = output_size(ctx.out) if ctx.out.exists() else None
    if m.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        log.error("%s exited with %d:\n%s", tool.name, m.returncode, "\n".join(tail))
        v = Verification(problems=[f"exit code {m.returncode}, see {log_path}"])
    else:
        v = case.verify(ctx.out, ctx.volume, top_size=tool.top_size)
        for p in v.problems:
            log.error("%s: %s", tool.name, p)
    if not keep:
        shutil.rmtree(ctx.out, ignore_errors=True)
    shutil.rmtree(ctx.work, ignore_errors=True)
    return Result(
        tool.name,
        tool.what,
        m,
        size.files if size else 0,
        size.bytes if size else 0,
        v,
    )


def _table(results: Sequence[Result]) -> str:
    base = next((r for r in results if r.tool == "precomp_host" and r.ok), None)
    header = (
        "tool",
        "writes",
        "scales",
        "top chunks",
        "files",
        "output MB",
        "wall s",
        "cpu s",
        "tree RSS MiB",
        "max proc MiB",
        "vs precomp_host",
        "check",
    )
    rows = [header]
    for r in results:
        m = r.measurement
        ratio = f"{m.wall_s / base.measurement.wall_s:.2f}x" if base and r.ok else "-"
        rows.append(
            (
                r.tool,
                r.what,
                str(r.verification.scales),
                str(r.verification.top_chunks),
                str(r.files),
                f"{r.bytes / 1e6:.1f}",
                f"{m.wall_s:.1f}",
                f"{m.cpu_s:.1f}",
                f"{m.peak_tree_rss / MIB:.0f}",
                f"{m.max_process_rss / MIB:.0f}",
                ratio,
                "ok" if r.ok else "FAILED",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(results: Sequence[Result], case: Case) -> list[str]:
    by = {r.tool: r for r in results}
    base = by.get("precomp_host")
    if base is None or not base.ok:
        return ["precomp_host did not produce a verified dataset: no ratios."]
    t = base.measurement.wall_s
    lines = []
    for name, target in case.speedup_targets.items():
        peer = by.get(name)
        if peer is None or not peer.ok:
            continue
        ratio = peer.measurement.wall_s / t
        cpu = peer.measurement.cpu_s / base.measurement.cpu_s
        verdict = "met" if ratio >= target else "NOT met"
        lines.append(
            f"{name} / precomp_host wall time: {ratio:.2f}x (target >= {target:g}x: {verdict}); "
            f"CPU time: {cpu:.2f}x"
        )
    for name in case.compared:
        peer = by.get(name)
        if peer is not None and peer.ok:
            lines.append(
                f"{name} / precomp_host wall time: "
                f"{peer.measurement.wall_s / t:.2f}x (no target); peak RSS "
                f"{peer.measurement.peak_tree_rss / MIB:.0f} MiB"
            )
    rss = base.measurement.peak_tree_rss
    target = case.rss_target
    verdict = "met" if rss <= target else "NOT met"
    lines.append(
        f"precomp_host peak RSS (process tree): {rss / MIB:.0f} MiB of {target // MIB} MiB "
        f"target ({100 * rss / target:.0f} %: {verdict}); largest process "
        f"{base.measurement.max_process_rss / MIB:.0f} MiB"
    )
    return lines


@contextlib.contextmanager
def moto_s3(work: Path) -> Iterator[S3]:
    """moto's S3 API server (``moto[server]``, beside this Python) on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION")})  # fmt: skip
    server = Path(sys.executable).with_name("moto_server")
    work.mkdir(parents=True, exist_ok=True)
    with (work / "moto.log").open("wb") as out:
        proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"moto_server did not start (see {work / 'moto.log'})")
            time.sleep(0.1)
        s3 = S3(f"http://127.0.0.1:{port}")
        from precomp_host.deploy.objectstores import s3_client

        s3_client(s3.endpoint).create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        proc.terminate()
        proc.wait()


def _path_ratios(results: Sequence[Result], cluster: str | None) -> list[str]:
    """The --cluster and --s3 rows against the paths they replace (issue 14's targets)."""
    by = {r.tool: r for r in results if r.ok}
    lines = []
    pairs = [
        ("precomp_host-cluster", "precomp_host", f"--cluster {cluster} / in-process", 1.15),
        ("precomp_host-s3", "precomp_host+deploy-s3", "s3:// / build then deploy s3", None),
    ]
    for name, base, label, target in pairs:
        if name in by and base in by:
            ratio = by[name].measurement.wall_s / by[base].measurement.wall_s
            verdict = ""
            if target is not None:
                verdict = f" (target <= {target:g}x: {'met' if ratio <= target else 'NOT met'})"
            lines.append(f"{label} wall time: {ratio:.2f}x{verdict}")
    return lines


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(1024, 1024, 512),
        metavar=("X", "Y", "Z"),
        help="volume size in voxels (default 1024 1024 512)",
    )
    p.add_argument(
        "--case",
        choices=sorted(CASES),
        default="image",
        help="image (uint8, issue #2) or labels (uint32 segmentation with meshes, issue #3)",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted({t.name for c in CASES.values() for t in c.tools}),
        metavar="NAME",
        help="run only this tool (repeatable): "
        + ", ".join(f"{c.name}: {', '.join(t.name for t in c.tools)}" for c in CASES.values()),
    )
    p.add_argument("--keep", action="store_true", help="keep each tool's output under CACHE/runs")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / "bench-out",
        help="TIFF stacks (kept), runs, logs (default ./bench-out)",
    )
    p.add_argument(
        "--peers-venv",
        type=Path,
        default=DEFAULT_DIR,
        help="venv of the peers, created on first use (default benchmarks/.venv-peers)",
    )
    p.add_argument("--cores", type=int, default=2, help="CPUs every tool may use (default 2)")
    p.add_argument(
        "--resolution",
        type=float,
        nargs=3,
        default=(8.0, 8.0, 40.0),
        metavar=("X", "Y", "Z"),
        help="voxel size in nm (default 8 8 40)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per tool; the fastest counts (default 1)"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="also run precomp_host with --cluster ADDRESS (e.g. local:2) and print its "
        "overhead against the in-process build",
    )
    p.add_argument(
        "--s3",
        action="store_true",
        help="image case: also build straight into a local S3 API server (moto) and compare "
        "with building to disk then deploy s3",
    )
    return p


def _context(
    tool: Tool,
    volume: Volume | LabelVolume,
    stack: Path,
    cache: Path,
    resolution: tuple[float, float, float],
    chunk: int,
    cores: int,
    factors: tuple[tuple[int, int, int], ...],
    peers: PeersEnv,
    shard_plan: ShardPlan | None,
) -> Context:
    return Context(
        volume=volume,
        stack=stack,
        out=cache / "runs" / tool.slug,
        work=cache / "work" / tool.slug,
        resolution=resolution,
        chunk=chunk,
        cores=cores,
        factors=factors,
        peers=peers,
        shard_plan=shard_plan,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    case = CASES[args.case]
    tools = [t for t in case.tools if not args.only or t.name in args.only]
    if args.cluster:
        tools += [cluster_tool(t, args.cluster) for t in tools if t.name == "precomp_host"]
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    if len(cpus) < args.cores:
        log.warning("only %d CPUs available, not %d", len(cpus), args.cores)
    os.sched_setaffinity(0, cpus)

    volume = case.make_volume((args.shape[0], args.shape[1], args.shape[2]))
    cache: Path = args.cache_dir.resolve()
    stack = volume.ensure_stack(cache / "stacks")
    peers = PeersEnv(args.peers_venv.resolve())
    if any(t.peer for t in tools):
        peers.ensure()
    resolution = (args.resolution[0], args.resolution[1], args.resolution[2])
    chunk = 64
    dataset, factors = plan_dataset(
        volume_type=case.volume_type,  # type: ignore[arg-type]
        data_type=case.data_type,
        num_channels=1,
        size=volume.shape,
        resolution=resolution,
        chunk_size=(chunk, chunk, chunk),
    )
    shard_plan = None
    if case.sharded:
        # The plan `--sharded` prints (one byte a voxel); tensorstore gets scale 0's spec.
        sharded = plan_sharding(
            dataset, parse_byte_size(DEFAULT_SHARD_SIZE), voxel_bytes=1, gzip_data=True
        )
        plans = [ShardPlan.for_scale(s) for s in sharded.scales]
        for scale, plan in zip(sharded.scales, plans, strict=True):
            assert plan is not None
            log.info("%s: %d shards of up to %d chunks", scale.key, plan.num_shards,
                     plan.chunks_per_shard)  # fmt: skip
        shard_plan = plans[0]
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _warm(stack)
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    results = []
    with contextlib.ExitStack() as stack_:
        s3 = stack_.enter_context(moto_s3(cache / "s3")) if args.s3 else None
        s3_tools = s3.tools() if s3 is not None else ()
        for tool in [*tools, *s3_tools]:
            ctx = _context(tool, volume, stack, cache, resolution, chunk, len(cpus), factors,
                           peers, shard_plan)  # fmt: skip
            row_s3 = s3 if tool in s3_tools else None
            results.append(
                run_tool(tool, ctx, logs, case=case, repeat=args.repeat, keep=args.keep, s3=row_s3)
            )

    x, y, z = volume.shape
    print()
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{x}x{y}x{z} {case.data_type} ({volume.nbytes / 1e6:.0f} MB) TIFF stack, "
        f"{len(cpus)} cores, "
        f"best of {args.repeat}, load average now {load} (before: {load_before})"
    )
    print(_table(results))
    print()
    for r in results:
        v = r.verification
        if isinstance(v, LabelVerification):
            print(
                f"{r.tool}: meshes of {v.segments} sampled segments: {v.fragments} fragments, "
                f"{v.vertices} vertices, {v.triangles} triangles"
            )
    for line in [*_summary(results, case), *_path_ratios(results, args.cluster)]:
        print(line)
    if args.json:
        doc = {
            "case": case.name,
            "shape": volume.shape,
            "cores": len(cpus),
            "results": [asdict(r) | {"ok": r.ok} for r in results],
        }
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
