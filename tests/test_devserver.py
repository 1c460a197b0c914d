"""Tests of :mod:`precomp_host.host.devserver`: pages, event streams, and live reload in a real
headless Chromium (Playwright driving Debian's chromium, never a downloaded browser)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from precomp_host.core.encodings import GZIP
from precomp_host.core.headers import REVALIDATE
from precomp_host.core.templates import environment, templates_dir
from precomp_host.core.viewer import fragment
from precomp_host.host.devserver import EVENTS_ROUTE, DevServer, summarize
from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import ContractServer, ContractSuite
from tests.e2e.viewer import CHROMIUM, CHROMIUM_ARGS

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent

CHUNK = "1_1_1/0-32_0-32_0-32"


def write_dataset(folder: Path, seed: int) -> bytes:
    """A one-chunk uint8 image as the generator writes it: nested, gz only, info last."""
    data = bytes((i * 7 + seed * 31 + (i >> 5)) % 251 for i in range(32**3))
    chunk = folder / "1_1_1" / "0-32" / "0-32" / "0-32.gz"
    chunk.parent.mkdir(parents=True, exist_ok=True)
    tmp = chunk.with_name(chunk.name + ".partial")
    tmp.write_bytes(GZIP.compress(data))
    os.replace(tmp, chunk)
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": "uint8",
        "num_channels": 1,
        "scales": [
            {
                "key": "1_1_1",
                "size": [32, 32, 32],
                "resolution": [1, 1, 1],
                "chunk_sizes": [[32, 32, 32]],
                "voxel_offset": [0, 0, 0],
                "encoding": "raw",
            }
        ],
    }
    tmp = folder / "info.partial"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, folder / "info")
    return data


def get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    root = tmp_path / "root"
    write_contract_tree(root)
    with DevServer(root, port=0) as s:
        yield s


def test_templates_found_from_source_checkout() -> None:
    assert (templates_dir() / "index.html.j2").is_file()
    env = environment()
    assert callable(env.autoescape)
    assert env.autoescape("index.html.j2")
    assert not env.autoescape("nginx.conf.j2")
    assert env.from_string("{{ x }}").render(x="<a>") == "<a>"


def test_index_lists_every_dataset(server: DevServer) -> None:
    status, headers, body = get(server.url, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    html = body.decode()
    for ds in ("img", "flat", "ngs", "seg"):
        assert f'data-dataset="{ds}"' in html
    assert "segmentation" in html
    assert "sharded" in html
    assert "open in Neuroglancer" in html


def test_summary(server: DevServer) -> None:
    seg = summarize(server.root, "seg")
    assert (seg.type, seg.data_type, seg.mesh) == ("segmentation", "uint64", "mesh")
    assert seg.segment_properties == "segment_properties"
    assert seg.scales[0].sharded
    assert summarize(server.root, "ngs").stored == ("gzip",)
    (server.root / "broken").mkdir()
    (server.root / "broken" / "info").write_text("{")
    assert summarize(server.root, "broken").error


def test_files_are_served_with_dev_cache_control(server: DevServer) -> None:
    status, headers, body = get(server.url, "/img/info")
    assert status == 200
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, _ = get(server.url, "/nope/info")
    assert status == 404
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_neuroglancer_client_is_served_same_origin(server: DevServer) -> None:
    if server.client_dir is None:
        pytest.skip("the neuroglancer package is not installed")
    status, headers, body = get(server.url, "/v/precomp/")
    assert status == 200
    assert b"<script" in body
    js = next(p.name for p in server.client_dir.glob("main*.js"))
    status, headers, _ = get(server.url, f"/v/precomp/{js}")
    assert status == 200
    assert "javascript" in headers["Content-Type"]
    assert get(server.url, "/v/precomp/../../info")[0] == 404


def read_event_stream(url: str, path: str, until: bytes, timeout: float = 10) -> bytes:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Type", "").startswith("text/event-stream")
        seen = b""
        while until not in seen:
            block = r.read1(4096)
            if not block:
                break
            seen += block
        r.close()
        return seen
    finally:
        conn.close()


def test_epoch_event_stream(server: DevServer) -> None:
    assert b"data: 0" in read_event_stream(server.url, EVENTS_ROUTE, b"data: 0")
    server.epoch.bump()
    assert b"data: 1" in read_event_stream(server.url, EVENTS_ROUTE, b"data: 1")


def test_neuroglancer_event_stream_answers(server: DevServer) -> None:
    got = read_event_stream(server.url, "/events/precomp?c=1&gc=0", b"precomp-host")
    assert got.startswith(b":")


# -- live reload in a real browser -----------------------------------------------------------


def chromium_or_skip() -> None:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"LIVE RELOAD NOT TESTED: {CHROMIUM} missing (apt-get install chromium)")


@pytest.mark.slow
def test_viewer_reloads_with_new_bytes(tmp_path: Path) -> None:
    chromium_or_skip()
    from playwright.sync_api import Response, sync_playwright

    root = tmp_path / "root"
    write_dataset(root / "ds", seed=1)
    with DevServer(root, port=0) as server:
        if server.client_dir is None:
            if os.environ.get("CI"):
                pytest.fail("the neuroglancer package (test extra) is not installed")
            pytest.skip("LIVE RELOAD NOT TESTED: the neuroglancer package is not installed")
        state = summarize(root, "ds").state(server.url)
        chunk_url = f"{server.url}/ds/{CHUNK}"
        responses: list[tuple[float, Response]] = []
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
            )
            try:
                page = context.new_page()
                page.on("response", lambda r: responses.append((time.monotonic(), r)))
                page.goto(f"{server.url}/viewer/{fragment(state)}")

                def chunk_fetched(after: float) -> Response | None:
                    for t, r in list(responses):
                        if t >= after and r.url == chunk_url:
                            return r
                    return None

                deadline = time.monotonic() + 60
                while chunk_fetched(0) is None and time.monotonic() < deadline:
                    page.wait_for_timeout(100)
                first = chunk_fetched(0)
                assert first is not None, "Neuroglancer never fetched the chunk"
                assert first.status == 200

                assert server.watching.wait(timeout=10)
                new = write_dataset(root / "ds", seed=2)
                written = time.time()
                t0 = time.monotonic()
                page.wait_for_function("document.body.dataset.reloads === '1'", timeout=10_000)
                # The page stamps the reload with the wall clock (same machine, same clock):
                # that excludes Playwright's own polling delay from the measure.
                reloaded_at = float(page.evaluate("document.body.dataset.reloadedAt")) / 1000
                reloaded = reloaded_at - written
                while chunk_fetched(t0) is None and time.monotonic() < t0 + 10:
                    page.wait_for_timeout(50)
                second = chunk_fetched(t0)
                assert second is not None, "no chunk fetched after the reload"
                assert second.status == 200, "stale revalidation (304) after a rebuild"
                assert second.body() == new
                refetched = time.monotonic() - t0
                print(f"viewer reloaded {reloaded:.3f} s, new chunk fetched {refetched:.3f} s")
                assert reloaded < 1.0
                # Neuroglancer's own start-up (~0.7 s on 2 busy cores) comes after the reload.
                assert refetched < 5.0
            finally:
                context.close()


class TestDevServerContract(ContractSuite):
    """The dev server serves files exactly as the middleware does (plus no-cache)."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContractServer]:
        root = tmp_path_factory.mktemp("contract") / "root"
        write_contract_tree(root)
        with DevServer(root, port=0) as server:
            yield ContractServer(server.url, root, name="devserver", cache_control="no-cache")


def _as_in_a_terminal() -> None:
    # Ctrl+C reaches a foreground process with SIGINT at its default; a test run started in the
    # background of a shell (as CI scripts may) inherits SIGINT ignored, which Python keeps.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_in_a_process_until_interrupted(tmp_path: Path, signum: int) -> None:
    """serve() as the CLI calls it, in its own process; Ctrl+C or kill ends it cleanly."""
    root = tmp_path / "root"
    write_contract_tree(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"from precomp_host.host.devserver import serve; serve({str(root)!r}, port={port})"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stderr=subprocess.DEVNULL,
        preexec_fn=_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, body = get(f"http://127.0.0.1:{port}", "/img/info")
                break
            except OSError:
                assert time.monotonic() < deadline, "serve() did not start"
                assert proc.poll() is None, "serve() exited"
                time.sleep(0.05)
        assert status == 200
        assert json.loads(body)["type"] == "image"
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pages_follow_the_events_route(server: DevServer) -> None:
    # The route is handed to the templates: the pages subscribe to the stream the server answers.
    for path in ("/", "/viewer/"):
        status, headers, body = get(server.url, path)
        assert status == 200
        assert headers["Cache-Control"] == REVALIDATE
        assert f"new EventSource({json.dumps(EVENTS_ROUTE)})" in body.decode(), path


def test_index_opens_datasets_with_their_live_annotation_layers(tmp_path: Path) -> None:
    from precomp_host.build.annotation_sources import write_store_layers
    from precomp_host.host.write_policy import WritePolicy

    root = tmp_path / "root"
    write_dataset(root / "img", seed=1)
    write_dataset(root / "bare", seed=2)
    block = root / "img" / "annotations" / "x1y1z1"
    block.mkdir(parents=True)
    ann = {"id": 1, "type": "point", "anntype": "neuron", "point": [3, 4, 5],
           "reviewed": False, "visited": False}  # fmt: skip
    (block / "z-0001.json").write_text(json.dumps([ann]))
    policy = WritePolicy(token="s3cret")
    with DevServer(
        root, port=0, poll=True, policy=policy, annotation_builder=write_store_layers
    ) as server:
        html = get(server.url, "/")[2].decode()
        row = html.split('data-dataset="img"', 1)[1].split("</tr>", 1)[0]
        assert "live/points" in row
        assert "live/lines" in row
        link = urllib.parse.unquote(row.split('class="open" href="', 1)[1].split('"', 1)[0])
        state = json.loads(link.split("#!", 1)[1].replace("&#34;", '"'))
        assert [layer["type"] for layer in state["layers"]] == ["image", "annotation", "annotation"]
        source = state["layers"][2]["source"].removeprefix("precomputed://")
        assert source == f"{server.url}/img/annotations/live/points"
        status, _, body = get(server.url, "/img/annotations/live/points/info")
        assert status == 200
        assert json.loads(body)["annotation_type"] == "POINT"
        bare = html.split('data-dataset="bare"', 1)[1].split("</tr>", 1)[0]
        assert "live/" not in bare
        # A write through the API is announced at once: the polling watcher does not look
        # inside the store's block folders.
        epoch = server.epoch.value
        u = urllib.parse.urlsplit(server.url)
        conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
        try:
            conn.request("PUT", "/img/annotations/x1y1z1/z-0001.json", body=b"[]",
                         headers={"Authorization": "Bearer s3cret"})  # fmt: skip
            assert conn.getresponse().status in (200, 204)
        finally:
            conn.close()
        assert server.epoch.value > epoch
        info = json.loads(get(server.url, "/img/annotations/live/points/info")[2])
        assert info["spatial"] == []  # regenerated: the store is empty now
