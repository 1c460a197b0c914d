"""A body is always the bytes of one file (issue 11), under real server processes.

gunicorn (gthread: ``make_app`` with its one-second resolution cache, bodies over
``READ_LIMIT`` sent with ``sendfile``) and the dev server (``precomp_host.host.devserver``)
serve a dataset while it is rebuilt 10 times in each of three ways: rewritten in place (every
file replaced by rename, as the writer does), a new build moved over it (``mv`` aside, ``mv``
in, the old one deleted), and a symlink swapped to a new build. Clients decode every body and
compare it with the bytes of some version of the file: none may be torn or cut off, every
response carries CORS, none is a 5xx. Each version has other sizes, so a length kept from an
older file shows as a wrong body.

Also: 16 concurrent identity requests for a ``.gz``-only chunk of 128 MiB decoded keep the
server process under 300 MB (``VmHWM``).
"""

from __future__ import annotations

import gzip
import http.client
import os
import random
import shutil
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from precomp_host.core.encodings import GZIP
from tests.realservers import free_port, running_process

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VERSIONS = 10
#: name -> (size of version 0, stored plain?); plain ones above and below READ_LIMIT (32 KiB)
FILES = {
    "info": (300, True),
    "8_8_8/0-64_0-64_0-64": (9_000, True),
    "8_8_8/64-128_0-64_0-64": (150_000, True),
    "8_8_8/0-64_64-128_0-64": (90_000, False),
    "8_8_8/64-128_64-128_0-64": (400_000, False),
}
ACCEPTS = (None, "gzip", "gzip, deflate, br", "identity")


def content(name: str, version: int) -> bytes:
    size, _ = FILES[name]
    unit = f"{name}@{version};".encode()
    return (unit * (size // len(unit) + 2 * version + 2))[: size + 1013 * version]


def put(path: Path, data: bytes) -> None:
    """As the writer stores a file: beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_version(folder: Path, version: int) -> None:
    for name, (_, plain) in FILES.items():
        data = content(name, version)
        if plain:
            put(folder / name, data)
        else:
            put(folder / (name + ".gz"), GZIP.compress(data))


def rebuild_in_place(root: Path, version: int) -> None:
    write_version(root / "ds", version)


def rebuild_by_mv(root: Path, version: int) -> None:
    new, old = root / f"ds.new{version}", root / f"ds.old{version}"
    write_version(new, version)
    os.rename(root / "ds", old)
    os.rename(new, root / "ds")
    shutil.rmtree(old)


def rebuild_by_symlink(root: Path, version: int) -> None:
    builds = root / "builds"
    write_version(builds / f"v{version}", version)
    link = root / f"ds.link{version}"
    link.symlink_to(Path("builds") / f"v{version}")
    previous = os.readlink(root / "ds")
    os.replace(link, root / "ds")
    shutil.rmtree(root / previous)


REBUILDS: dict[str, Callable[[Path, int], None]] = {
    "in-place": rebuild_in_place,
    "mv": rebuild_by_mv,
    "symlink": rebuild_by_symlink,
}


def first_version(root: Path, how: str) -> None:
    if how == "symlink":
        write_version(root / "builds" / "v0", 0)
        (root / "ds").symlink_to(Path("builds") / "v0")
    else:
        write_version(root / "ds", 0)


def check_one(port: int, name: str, accept: str | None, tally: Counter[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        headers = {"Connection": "close"}
        if accept is not None:
            headers["Accept-Encoding"] = accept
        conn.request("GET", "/ds/" + name, headers=headers)
        resp = conn.getresponse()
        body = resp.read()  # IncompleteRead when cut short of its Content-Length
    except (OSError, http.client.HTTPException) as e:
        tally[f"dropped or cut off: {type(e).__name__}"] += 1
        return
    finally:
        conn.close()
    if resp.getheader("Access-Control-Allow-Origin") != "*":
        tally[f"no CORS on {resp.status}"] += 1
    if resp.status >= 500:
        tally[f"{resp.status}"] += 1
    if resp.status != 200:
        tally[f"status {resp.status}"] += 1  # a 404 while a folder is swapped is allowed
        return
    try:
        if resp.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        elif resp.getheader("Content-Encoding") is not None:
            import brotli

            body = brotli.decompress(body)
    except Exception:
        tally["torn: does not decode"] += 1
        return
    if body not in {content(name, v) for v in range(VERSIONS + 1)}:
        tally["torn: bytes of no version"] += 1
        return
    tally["ok"] += 1


def hammer(port: int, stop: threading.Event, tally: Counter[str]) -> None:
    rng = random.Random(port)
    names = list(FILES)
    while not stop.is_set():
        check_one(port, rng.choice(names), rng.choice(ACCEPTS), tally)


def rebuilt_under_load(port: int, root: Path, how: str) -> Counter[str]:
    tallies: list[Counter[str]] = [Counter() for _ in range(4)]
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(port, stop, t)) for t in tallies]
    for t in threads:
        t.start()
    try:
        for version in range(1, VERSIONS + 1):
            time.sleep(0.08)
            REBUILDS[how](root, version)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return sum(tallies, Counter())


def _pythonpath() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@contextmanager
def gunicorn(root: Path, port: int, threads: int = 4) -> Iterator[int]:
    app = f"precomp_host.middleware:make_app({str(root)!r})"
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--threads", str(threads), app]  # fmt: skip
    with running_process(argv, port, env=_pythonpath()) as proc:
        yield proc.pid


@contextmanager
def devserver(root: Path, port: int) -> Iterator[int]:
    code = f"from precomp_host.host.devserver import serve; serve({str(root)!r}, port={port})"
    with running_process([sys.executable, "-c", code], port, env=_pythonpath()) as proc:
        yield proc.pid


SERVERS = {"gunicorn": gunicorn, "devserver": devserver}


@pytest.mark.parametrize("how", list(REBUILDS))
@pytest.mark.parametrize("server", list(SERVERS))
def test_every_body_is_one_file_while_rebuilt(tmp_path: Path, server: str, how: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first_version(root, how)
    port = free_port()
    with SERVERS[server](root, port):
        tally = rebuilt_under_load(port, root, how)
    bad = {k: n for k, n in tally.items() if k not in ("ok", "status 404")}
    assert not bad, (bad, tally)
    assert tally["ok"] > 50, tally  # the clients did get through


def _peak_rss_mb(pid: int) -> float:
    """The most memory ``pid`` and its children ever had resident (VmHWM), in MB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    peak = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024


def test_identity_of_a_large_coded_chunk_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    decoded = 128 * 1024 * 1024
    block = (bytes(range(256)) * 4096)[: 1 << 20]  # 1 MiB, compressible
    put(root / "ds" / "big.gz", GZIP.compress(block * (decoded // len(block))))
    port = free_port()
    sizes: list[int] = []
    lock = threading.Lock()

    def fetch() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("GET", "/ds/big", headers={"Accept-Encoding": "identity"})
            resp = conn.getresponse()
            n = 0
            while piece := resp.read(1 << 20):
                n += len(piece)
            with lock:
                sizes.append(n if resp.status == 200 else -resp.status)
        finally:
            conn.close()

    with gunicorn(root, port, threads=16) as pid:
        threads = [threading.Thread(target=fetch) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _peak_rss_mb(pid)
    assert sizes == [decoded] * 16
    assert peak < 300, f"server peaked at {peak:.0f} MB resident"
