"""Issue #15 in the browser: Neuroglancer draws a TIFF-tile dataset served by ``precomp-host
serve --workers 2`` (chunks converted from TIFF on request, on another origin), and Swagger UI
at ``/api/`` renders every operation with no request leaving loopback."""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from precomp_host.host.routes import ROUTES
from tests.neurotrale import write_tiff_tiles
from tests.realservers import free_port, running_process

from .viewer import check_view, image_state, is_chunk_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .viewer import Browser, ViewResult

    View = Callable[[dict[str, Any], str], ViewResult]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHAPE = (160, 160, 40)  # x, y, z
RESOLUTION = (8.0, 8.0, 8.0)


@contextmanager
def production_server(root: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "precomp_host", "serve", str(root), "--workers", "2"]
    argv += ["--port", str(port)]
    with running_process(argv, port, env={"PYTHONPATH": str(REPO)}, cwd=REPO):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def tiles_root() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="precomp-e2e-tiff-"))
    try:
        x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
        vol = (30000 + 25000 * np.sin(x / 9.0) * np.cos(y / 7.0) + z * 50).astype(np.uint16)
        write_tiff_tiles(base / "tiles", np.ascontiguousarray(vol.transpose(2, 1, 0)), (64, 64, 32),
                         RESOLUTION)  # fmt: skip
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_neuroglancer_draws_a_tiff_tile_dataset(view: View, tiles_root: Path) -> None:
    with production_server(tiles_root) as url:
        state = image_state(f"precomputed://{url}/tiles", SHAPE, RESOLUTION)
        result = view(state, url)
    assert check_view(result, min_chunks=4) == [], result.summary()
    chunks = [r for r in result.requests if is_chunk_path(r.path) and r.ok]
    # Only TIFFs are stored: every chunk drawn was converted on request.
    assert not list(tiles_root.glob("tiles/1_1_1/*-*_*-*_*-[0-9]"))
    assert all("/tiles/1_1_1/" in r.path for r in chunks), result.summary()


def test_swagger_ui_renders_offline(browser: Browser, tiles_root: Path) -> None:
    with production_server(tiles_root) as url, browser.session(url) as session:
        seen: list[str] = []
        session.page.on("request", lambda r: seen.append(r.url))
        session.page.goto(url + "/api/", wait_until="load")
        session.page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
        operations = session.page.locator(".swagger-ui .opblock").count()
        title = session.page.locator(".swagger-ui .title").first.inner_text()
    assert operations == len(ROUTES)
    assert "NeuroTrALE" in title
    away = [u for u in seen if urlsplit(u).scheme in ("http", "https")
            and urlsplit(u).hostname not in ("127.0.0.1", "localhost", "::1")]  # fmt: skip
    assert away == [], away
    assert any(u.endswith("/api/openapi.json") for u in seen), seen
