"""Requests/s serving one precomputed chunk, ours against the usual alternatives: :func:`main`.

``python benchmarks/serve.py [--duration 5] [--million]`` (from the repository root) starts, one
after another on loopback ports, each server over the same chunks and drives it with ``wrk``
(Debian package ``wrk``):

* ``precomp_host``: :func:`precomp_host.middleware.make_app` under gunicorn (gthread), on the
  nested, gz-only tree the generator writes (flat URLs rewritten on each request);
* ``whitenoise``: WhiteNoise under the same gunicorn, on a flat copy *with* the identity files
  it requires beside each ``.gz``;
* ``shared_data``: werkzeug's SharedDataMiddleware under the same gunicorn (identity only: it
  serves no precompressed files);
* ``http.server``: ``python -m http.server`` (identity only);
* ``nginx``: Debian's nginx with ``gzip_static on`` on the flat copy.

Two URLs: a small gzip-compressible chunk (sent as gzip where the server can) and a 256 KiB
incompressible chunk (sent plain). With ``--million``, a dataset of 1,000,000 (empty) chunk files
is generated and the time from process start to the first response is measured for ours and
for whitenoise (which scans the tree at start-up). Prints a Markdown table; ``--json`` writes
the figures. ``benchmarks/serve_inprocess.py`` measures the per-request Python cost of ours and
whitenoise without sockets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

REPO = Path(__file__).resolve().parent.parent
SMALL = "/bench/1_1_1/0-32_0-32_0-32"  # 32 KiB uint8 of short runs, 11 KiB gzip
LARGE = "/bench/2_2_2/0-64_0-64_0-64"  # 256 KiB, incompressible, stored plain
ACCEPT = "gzip, deflate"  # what Chromium sends to a non-loopback http origin


# -- apps that gunicorn imports ------------------------------------------------------------


def _not_found(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


def whitenoise_app(root: str) -> WSGIApplication:
    from whitenoise import WhiteNoise

    app: WSGIApplication = WhiteNoise(_not_found, root=root)
    return app


def shared_data_app(root: str) -> WSGIApplication:
    from werkzeug.middleware.shared_data import SharedDataMiddleware

    return SharedDataMiddleware(_not_found, {"/": root})


# -- trees -----------------------------------------------------------------------------------


def make_trees(base: Path) -> tuple[Path, Path]:
    """(nested gz-only tree as the generator writes it, flat tree with identity + .gz)."""
    sys.path.insert(0, str(REPO))
    from precomp_host.core.encodings import GZIP
    from precomp_host.core.layout import nested_url

    rng = random.Random(0)
    runs = bytearray()
    while len(runs) < 32**3:
        runs += bytes([min(255, int(rng.expovariate(0.2)))]) * rng.randrange(1, 6)
    small = bytes(runs[: 32**3])
    large = rng.randbytes(64**3)
    nested, flat = base / "nested", base / "flat"
    for url, data, gz in ((SMALL, small, True), (LARGE, large, False)):
        for root, rel in ((nested, nested_url(url)), (flat, url)):
            path = root / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if gz:
                Path(f"{path}.gz").write_bytes(GZIP.compress(data))
            if not gz or root == flat:
                path.write_bytes(data)
    for root in (nested, flat):
        (root / "bench" / "info").write_text('{"type": "image"}')
    return nested, flat


def make_million(root: Path) -> float:
    """1,000,000 empty chunk files (100^3 grid), nested; returns the seconds it took."""
    start = time.perf_counter()
    scale = root / "big" / "1_1_1"
    for x in range(100):
        for y in range(100):
            folder = scale / f"{x}-{x + 1}" / f"{y}-{y + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            for z in range(100):
                (folder / f"{z}-{z + 1}.gz").touch()
    (root / "big" / "info").write_text('{"type": "image"}')
    return time.perf_counter() - start


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gunicorn(app: str, port: int) -> list[str]:
    # Same server for every WSGI app: 2 workers (2 cores), threads for keep-alive connections.
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "-k",
        "gthread",
        "--threads",
        "4",
        "--log-level",
        "warning",
        app,
    ]


def nginx_conf(root: Path, port: int, folder: Path) -> Path:
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
  uwsgi_temp_path {folder}; scgi_temp_path {folder};
  sendfile on;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; gzip_static on; }}
}}
""")
    return conf


@dataclass
class Server:
    name: str
    argv: Callable[[int], list[str]]
    note: str


def servers(nested: Path, flat: Path, work: Path) -> list[Server]:
    def ours(port: int) -> list[str]:
        return gunicorn(f"precomp_host.middleware:make_app({str(nested)!r})", port)

    def ours_uncached(port: int) -> list[str]:
        return gunicorn(f"precomp_host.middleware:make_app({str(nested)!r}, cache_size=0)", port)

    return [
        Server(
            "precomp_host",
            ours,
            "gunicorn gthread 2x4, nested gz-only tree, default make_app (1 s resolution cache)",
        ),
        Server("precomp_host-nocache", ours_uncached, "same, cache_size=0: stats on every request"),
        Server(
            "whitenoise",
            lambda p: gunicorn(f"benchmarks.serve:whitenoise_app({str(flat)!r})", p),
            "gunicorn gthread 2x4, flat tree + identity copies",
        ),
        Server(
            "shared_data",
            lambda p: gunicorn(f"benchmarks.serve:shared_data_app({str(flat)!r})", p),
            "gunicorn gthread 2x4, identity only",
        ),
        Server(
            "http.server",
            lambda p: [
                sys.executable,
                "-m",
                "http.server",
                "-b",
                "127.0.0.1",
                str(p),
                "-d",
                str(flat),
            ],
            "stdlib ThreadingHTTPServer, identity only",
        ),
        Server(
            "nginx",
            lambda p: ["nginx", "-c", str(nginx_conf(flat, p, work)), "-e", str(work / "e")],
            "Debian nginx, 2 workers, gzip_static on",
        ),
    ]


@dataclass(frozen=True)
class Started:
    seconds: float
    pid: int

    def tree_cpu_s(self) -> float:
        """CPU seconds (user + system) the server and its workers have used so far."""
        import psutil

        root = psutil.Process(self.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def tree_rss_mib(self) -> float:
        """Resident memory of the server and its workers (an upper bound: shared pages count
        once per process)."""
        import psutil

        root = psutil.Process(self.pid)
        rss: int = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        return rss / 2**20


@contextmanager
def running(argv: Sequence[str], port: int, timeout: float = 120) -> Iterator[Started]:
    """Start ``argv``; yields the seconds until a first answer on ``/bench/info``, and the pid."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = start + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/info", timeout=5):
                    break
            except OSError:
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.01)
        yield Started(time.perf_counter() - start, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str]:
    """(requests/s, transfer/s) from ``wrk``; 0 if any response was not 2xx."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "-H",
            f"Accept-Encoding: {ACCEPT}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        return 0.0, "errors"
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+(\S+)", out)
    return rps, transfer.group(1) if transfer else ""


def encoding_sent(url: str) -> str:
    req = urllib.request.Request(url, headers={"Accept-Encoding": ACCEPT})
    with urllib.request.urlopen(req) as r:
        r.read()
        return str(r.headers.get("Content-Encoding") or "identity")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--repeat", type=int, default=3, help="wrk runs per server and URL; the best counts"
    )
    parser.add_argument("--million", action="store_true", help="also the 1M-file start-up")
    parser.add_argument("--only", nargs="*", default=None, help="server names to run ([] none)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is missing: apt-get install wrk")
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="precomp-bench-") as tmp:
        work = Path(tmp)
        nested, flat = make_trees(work)
        chosen = [
            s
            for s in servers(nested, flat, work)
            if (args.only is None or s.name in args.only)
            and (s.name != "nginx" or shutil.which("nginx") is not None)
        ]
        with ExitStack() as stack:
            ports: dict[str, int] = {}
            procs: dict[str, Started] = {}
            for server in chosen:
                port = ports[server.name] = free_port()
                started = procs[server.name] = stack.enter_context(running(server.argv(port), port))
                results[server.name] = {"note": server.note, "start_s": round(started.seconds, 3)}
                for label, path in (("small", SMALL), ("large", LARGE)):
                    url = f"http://127.0.0.1:{port}{path}"
                    results[server.name][f"{label}_encoding"] = encoding_sent(url)
                    results[server.name][f"{label}_rps"] = 0
                    results[server.name][f"{label}_cpu_us"] = math.inf
            # All servers run at once and take turns, in alternating order, and the best of
            # the rounds counts: on a shared machine other load only ever slows a run down,
            # and interleaving spreads it over every server alike.
            for round_ in range(args.repeat):
                for server in chosen if round_ % 2 == 0 else chosen[::-1]:
                    row = results[server.name]
                    for label, path in (("small", SMALL), ("large", LARGE)):
                        url = f"http://127.0.0.1:{ports[server.name]}{path}"
                        cpu_before = procs[server.name].tree_cpu_s()
                        rps, transfer = wrk(url, args.duration, args.connections)
                        # Server CPU a request: steadier than requests/s on a small machine,
                        # where wrk itself competes with the server for the cores.
                        cpu = procs[server.name].tree_cpu_s() - cpu_before
                        if rps > 0:
                            cpu_us = round(cpu / (rps * args.duration) * 1e6, 1)
                            row[f"{label}_cpu_us"] = min(float(str(row[f"{label}_cpu_us"])), cpu_us)
                        if rps > float(str(row[f"{label}_rps"])):
                            row[f"{label}_rps"], row[f"{label}_transfer"] = round(rps), transfer
                print(f"round {round_ + 1}/{args.repeat} done", file=sys.stderr)
        if args.million:
            million = work / "million"
            print("writing 1,000,000 files...", file=sys.stderr)
            took = make_million(million)
            (million / "bench").mkdir()
            (million / "bench" / "info").write_text("{}")
            results["million"] = {"files_written_s": round(took, 1)}
            for name, app in (
                ("precomp_host", f"precomp_host.middleware:make_app({str(million)!r})"),
                ("whitenoise", f"benchmarks.serve:whitenoise_app({str(million)!r})"),
            ):
                port = free_port()
                cmd = gunicorn(app, port)
                cmd[cmd.index("-w") + 1] = "1"
                with running(cmd, port, timeout=600) as started:
                    results["million"][f"{name}_first_response_s"] = round(started.seconds, 3)
                    results["million"][f"{name}_rss_mib"] = round(started.tree_rss_mib())
            print("million", results["million"], file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def table(results: dict[str, dict[str, object]]) -> str:
    lines = [
        "| server | small chunk req/s (sent as) | 256 KiB chunk req/s "
        "| server CPU us/req small / large | start s | setup |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name == "million":
            continue
        lines.append(
            f"| {name} | {r['small_rps']} ({r['small_encoding']}) | {r['large_rps']} "
            f"| {r['small_cpu_us']} / {r['large_cpu_us']} | {r['start_s']} | {r['note']} |"
        )
    for mine_name in ("precomp_host", "precomp_host-nocache"):
        ours = results.get(mine_name, {})
        for peer in ("whitenoise", "http.server"):
            if peer in results and ours:
                ratios = []
                for label in ("small", "large"):
                    mine, theirs = ours[f"{label}_rps"], results[peer][f"{label}_rps"]
                    assert isinstance(mine, int)
                    assert isinstance(theirs, int)
                    ratios.append(f"{label} {mine / max(1, theirs):.2f}x")
                    cpu_mine, cpu_theirs = ours[f"{label}_cpu_us"], results[peer][f"{label}_cpu_us"]
                    assert isinstance(cpu_mine, float)
                    assert isinstance(cpu_theirs, float)
                    ratios.append(f"server CPU a request {cpu_theirs / cpu_mine:.2f}x less")
                lines.append(f"\n{mine_name} / {peer}: {', '.join(ratios)}")
    if "million" in results:
        lines.append(f"\n1,000,000 files: {asdict_str(results['million'])}")
    return "\n".join(lines)


def asdict_str(d: dict[str, object]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in d.items())


if __name__ == "__main__":
    raise SystemExit(main())
