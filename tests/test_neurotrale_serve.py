"""Issue #15's done-when, against ``precomp-host serve --workers 4`` (real gunicorn processes).

The NeuroTrALE viewer's calls replayed on a tree with ``block_info.csv``, ``fibers.json`` and
``z-NNNN.json`` files (PUTs as ``text/plain`` from another origin, after a preflight); 8
processes x 200 PATCHes of distinct ids; a stale ``If-Match``; writes without the token; and a
``kill -9`` of the whole server during a write storm, after which every file must be valid JSON
holding one of the contents that were written (or the original).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from .neurotrale import axon, disk_path, make_annotation_tree, point
from .realservers import free_port, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow

VIEWER = "http://127.0.0.1:9"  # the viewer's origin: another origin than the server's
TOKEN = "the-write-token"
WORKERS = 4


@contextmanager
def serve_workers(root: Path, tmp: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``precomp-host serve ROOT --workers 4`` in its own process group, once it listens."""
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    argv = [sys.executable, "-m", "precomp_host", "serve", str(root), "--workers", str(WORKERS)]
    argv += ["--port", str(port), "--write-token-file", str(token)]
    argv += ["--allow-writes-from", VIEWER]
    env = {k: v for k, v in os.environ.items() if k != "PRECOMP_HOST_WRITE_TOKEN"}
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for_port(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def request(
    port: int,
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, url, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), data
    finally:
        if own:
            c.close()


def _assert_valid_json_everywhere(root: Path) -> None:
    for path in (root / "brain" / "annotations").rglob("*.json"):
        if ".annotation-history" in path.parts:
            continue
        assert isinstance(json.loads(path.read_bytes()), list), path


def test_the_viewer_replayed_against_four_workers(tmp_path: Path) -> None:
    root = tmp_path / "data"
    files = make_annotation_tree(root)
    statuses: list[int] = []

    def call(*args: Any, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        out = request(*args, **kw)
        statuses.append(out[0])
        return out

    with serve_workers(root, tmp_path) as (port, proc):
        # every GET equals the file
        for url in files:
            status, headers, body = call(port, "GET", url, headers={"Origin": VIEWER})
            assert status == 200
            assert body == disk_path(root, url).read_bytes()
            assert headers["Access-Control-Allow-Origin"] == "*"
            assert headers["ETag"]
        # the viewer's save: a preflight for PUT, then a whole-file PUT as text/plain
        for n, url in enumerate(files):
            status, headers, _ = call(port, "OPTIONS", url, headers={
                "Origin": VIEWER, "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type"})  # fmt: skip
            assert status == 204
            assert headers["Access-Control-Allow-Origin"] == VIEWER
            new = [*files[url][:-1], point(f"saved-{n}")]
            status, headers, _ = call(port, "PUT", url, json.dumps(new), headers={
                "Origin": VIEWER, "Content-Type": "text/plain;charset=UTF-8"})  # fmt: skip
            assert status == 200
            assert headers["Access-Control-Allow-Origin"] == VIEWER
            assert json.loads(disk_path(root, url).read_bytes()) == new
            status, _, body = call(port, "GET", url)
            assert json.loads(body) == new
        # PATCH (replace, append) and DELETE (one id, no id) with the token
        auth = {"Authorization": f"Bearer {TOKEN}"}
        fibers = "/brain/annotations/x100y100z10/fibers.json"
        changed = axon("b0-axon2", 6)
        assert call(port, "PATCH", fibers + "?id=b0-axon2", json.dumps(changed), auth)[0] == 200
        assert call(port, "PATCH", fibers + "?id=new", json.dumps(axon("new")), auth)[0] == 201
        assert call(port, "DELETE", fibers + "?id=b0-axon0", None, auth)[0] == 200
        assert call(port, "DELETE", fibers, None, auth)[0] == 204
        items = json.loads(disk_path(root, fibers).read_bytes())
        ids = [a["id"] for a in items]
        assert "b0-axon0" not in ids
        assert ids[-1] == "new"
        assert changed in items
        # a stale If-Match is 412, and nothing changes
        _, headers, _ = call(port, "GET", fibers)
        tag = headers["ETag"]
        status, _, _ = call(port, "PATCH", fibers, json.dumps(axon("p")), {**auth, "If-Match": tag})
        assert status == 201  # the tag was current
        before = disk_path(root, fibers).read_bytes()
        status, _, _ = call(port, "PUT", fibers, "[]", {**auth, "If-Match": tag})
        assert status == 412
        assert disk_path(root, fibers).read_bytes() == before
        # no token: 401, nothing changed
        unauthorized: list[tuple[str, str | None]] = [
            ("PUT", "[]"),
            ("PATCH", json.dumps(axon("x"))),
            ("DELETE", None),
        ]
        for method, text in unauthorized:
            status, _, _ = call(port, method, fibers + "?id=new", text)
            assert status == 401
        assert disk_path(root, fibers).read_bytes() == before
        _assert_valid_json_everywhere(root)
        assert proc.poll() is None
    assert not [s for s in statuses if s >= 500]
    # the server said at start what it allows, and why an origin is weaker than a token
    said = (tmp_path / "server.log").read_text()
    assert "Serving" in said
    assert f"writes without credentials from pages on {VIEWER}" in said
    assert "weaker than a token" in said


def _patcher(port: int, worker: int, n: int, url: str) -> list[int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    try:
        for i in range(n):
            ann_id = f"w{worker}-{i}"
            status, _, _ = request(port, "PATCH", f"{url}?id={ann_id}", json.dumps(axon(ann_id)),
                                   {"Authorization": f"Bearer {TOKEN}"}, conn)  # fmt: skip
            out.append(status)
    finally:
        conn.close()
    return out


def test_eight_processes_patching_distinct_ids_lose_none(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_annotation_tree(root)
    url = "/brain/annotations/x600y100z10/fibers.json"
    before = {a["id"] for a in json.loads(disk_path(root, url).read_bytes())}
    with serve_workers(root, tmp_path) as (port, _):
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(8) as pool:
            results = pool.starmap(_patcher, [(port, w, 200, url) for w in range(8)])
    assert all(s == 201 for r in results for s in r), {s for r in results for s in r}
    ids = [a["id"] for a in json.loads(disk_path(root, url).read_bytes())]
    assert len(ids) == len(set(ids))
    assert set(ids) == before | {f"w{w}-{i}" for w in range(8) for i in range(200)}


def _storm_bodies(writer: int) -> list[bytes]:
    # Growing lists, so a torn write would be a truncated (invalid) or shorter file.
    return [
        json.dumps([axon(f"s{writer}-{k}-{j}", 20) for j in range(k % 40 + 1)]).encode()
        for k in range(400)
    ]


def _storm(port: int, writer: int, url: str, seconds: float, done: Any) -> None:
    deadline = time.monotonic() + seconds
    bodies = _storm_bodies(writer)
    k = 0
    while time.monotonic() < deadline:
        try:
            status, _, _ = request(
                port, "PUT", url, bodies[k % len(bodies)], {"Authorization": f"Bearer {TOKEN}"}
            )
        except OSError:
            return  # the server is gone
        assert status == 200
        with done.get_lock():
            done.value += 1
        k += 1


def test_kill_9_during_a_write_storm_leaves_every_file_whole(tmp_path: Path) -> None:
    root = tmp_path / "data"
    files = make_annotation_tree(root)
    urls = list(files)[:4]
    with serve_workers(root, tmp_path) as (port, proc):
        ctx = multiprocessing.get_context("spawn")
        done = ctx.Value("i", 0)
        writers = [
            ctx.Process(target=_storm, args=(port, w, urls[w % len(urls)], 60.0, done))
            for w in range(8)
        ]
        for w in writers:
            w.start()
        # Kill once the storm is well under way (spawned writers take a while to start).
        deadline = time.monotonic() + 45
        while done.value < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.value >= 200
        os.killpg(proc.pid, signal.SIGKILL)  # master and every worker, mid-write
        proc.wait()
        for w in writers:
            w.join(timeout=30)
            assert w.exitcode == 0
    for n, url in enumerate(urls):
        allowed = [json.dumps(files[url]).encode()]
        allowed += [b for w in range(8) if w % len(urls) == n for b in _storm_bodies(w)]
        content = json.loads(disk_path(root, url).read_bytes())
        assert content in [json.loads(b) for b in allowed], url
        # 200 writes were answered before the kill: every file had some
        assert content != files[url], url
    _assert_valid_json_everywhere(root)
