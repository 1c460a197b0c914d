"""TIFF-tile datasets: served as raw chunks (negotiation, ETag, Range, CORS, bounded cache) and
converted by ``build`` into a dataset tensorstore reads voxel-exact."""

from __future__ import annotations

import gzip
import os
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile
from werkzeug.test import Client

from precomp_host.build.builder import BuildOptions, build_dataset
from precomp_host.build.tiff_tiles import TiffTileError, TiffTileVolume
from precomp_host.host.api import AnnotationApi
from precomp_host.host.middleware import PrecomputedMiddleware
from precomp_host.host.tiff_tiles import TiffTileMiddleware, tiff_chunk_bytes

from .neurotrale import tiff_volume, write_tiff_tiles
from .precomputed_reader import assert_all_chunks_present, flat_copy, read_scale

if TYPE_CHECKING:
    from pathlib import Path

CHUNK = (32, 32, 16)


@pytest.fixture
def volume() -> np.ndarray:
    return tiff_volume()


@pytest.fixture
def root(tmp_path: Path, volume: np.ndarray) -> Path:
    write_tiff_tiles(tmp_path / "tiles", volume, CHUNK)
    return tmp_path


def _app(root: Path, **kw: int) -> tuple[Client, TiffTileMiddleware]:
    # As serve composes them: the API sends .tiff URLs to the tiles, the middleware its misses.
    files = PrecomputedMiddleware(None, root)
    tiles = TiffTileMiddleware.behind(files, **kw)
    return Client(AnnotationApi(files, root, tiles=tiles)), tiles


def _expected(volume: np.ndarray, name: str) -> bytes:
    (x0, x1), (y0, y1), (z0, z1) = (map(int, r.split("-")) for r in name.split("_"))
    return volume[z0:z1, y0:y1, x0:x1].astype("<u2").tobytes()


@pytest.mark.parametrize("name", ["0-32_0-32_0-16", "64-70_32-45_32-33", "32-64_0-32_16-32"])
@pytest.mark.parametrize("suffix", ["", ".tiff"])
def test_chunks_are_the_raw_bytes(root: Path, volume: np.ndarray, name: str, suffix: str) -> None:
    client, _ = _app(root)
    with client.get(f"/tiles/1_1_1/{name}{suffix}") as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Content-Encoding" not in r.headers  # no Accept-Encoding: identity
        assert r.data == _expected(volume, name)


def test_gzip_is_negotiated_with_its_own_etag(root: Path, volume: np.ndarray) -> None:
    client, _ = _app(root)
    url = "/tiles/1_1_1/0-32_0-32_0-16"
    with client.get(url, headers={"Accept-Encoding": "gzip, br"}) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(r.data) == _expected(volume, "0-32_0-32_0-16")
        gz_tag = r.headers["ETag"]
    with client.get(url) as r:
        plain_tag = r.headers["ETag"]
    assert gz_tag != plain_tag
    with client.get(url, headers={"If-None-Match": plain_tag}) as r:
        assert r.status_code == 304
        assert r.data == b""
    with client.get(url, headers={"If-None-Match": plain_tag, "Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200  # the gzip variant is another representation


def test_range_and_head(root: Path, volume: np.ndarray) -> None:
    client, _ = _app(root)
    url = "/tiles/1_1_1/0-32_0-32_0-16"
    whole = _expected(volume, "0-32_0-32_0-16")
    with client.get(url, headers={"Range": "bytes=10-19", "Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 206
        assert "Content-Encoding" not in r.headers
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
        assert r.data == whole[10:20]
    with client.get(url, headers={"Range": f"bytes={len(whole)}-"}) as r:
        assert r.status_code == 416
    with client.head(url) as r:
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(len(whole))
        assert r.data == b""


def test_a_rewritten_tiff_is_converted_again(root: Path) -> None:
    client, _ = _app(root)
    url = "/tiles/1_1_1/0-32_0-32_0-16"
    with client.get(url) as r:
        first = r.data
    path = root / "tiles" / "1_1_1" / "0-32_0-32_0-16.tiff"
    tifffile.imwrite(path, np.full((16, 32, 32), 7, np.uint16))
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    with client.get(url) as r:
        assert r.data != first
        assert r.data == np.full((16, 32, 32), 7, "<u2").tobytes()


def test_cache_stays_within_its_bound(root: Path) -> None:
    one = len(tiff_chunk_bytes(root / "tiles" / "1_1_1" / "0-32_0-32_0-16.tiff"))
    client, tiles = _app(root, cache_bytes=3 * one)
    for name in ("0-32_0-32_0-16", "32-64_0-32_0-16", "0-32_32-45_0-16", "32-64_32-45_0-16"):
        with client.get(f"/tiles/1_1_1/{name}") as r:
            assert r.status_code == 200
        assert 0 < tiles.cached_bytes <= 3 * one


def test_other_urls_pass_through(root: Path) -> None:
    client, _ = _app(root)
    with client.get("/tiles/info") as r:
        assert r.status_code == 200
        assert r.json is not None
    with client.get("/tiles/1_1_1/0-32_0-32_0-17") as r:  # no such chunk
        assert r.status_code == 404
    with client.put("/tiles/1_1_1/0-32_0-32_0-16") as r:
        assert r.status_code == 405
        assert r.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_a_stored_chunk_wins_over_its_tiff(root: Path) -> None:
    stored = root / "tiles" / "1_1_1" / "0-32_0-32_0-16"
    stored.write_bytes(b"stored")
    client, tiles = _app(root)
    with client.get("/tiles/1_1_1/0-32_0-32_0-16") as r:
        assert r.data == b"stored"
    assert tiles.cached_bytes == 0  # never converted
    with client.get("/tiles/1_1_1/0-32_0-32_0-16.tiff") as r:  # NeuroTrALE's URL: converted
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert len(r.data) == 32 * 32 * 16 * 2


def test_build_converts_a_tiff_tile_dataset_voxel_exact(root: Path, volume: np.ndarray) -> None:
    out = root / "converted"
    options = BuildOptions(resolution=(1800.0, 1800.0, 2000.0), chunk_size=(16, 16, 16))
    build_dataset(TiffTileVolume(root / "tiles"), out, options)
    flat = flat_copy(out, root / "flat")
    assert_all_chunks_present(flat)
    got = read_scale(flat, 0)  # [x, y, z, c]
    assert got.any()
    np.testing.assert_array_equal(got[..., 0], volume.transpose(2, 1, 0))


def test_a_missing_chunk_fails_when_opened(root: Path) -> None:
    (root / "tiles" / "1_1_1" / "32-64_0-32_16-32.tiff").unlink()
    with pytest.raises(TiffTileError, match="32-64_0-32_16-32.tiff: chunk file missing"):
        TiffTileVolume(root / "tiles")


def test_slabs_across_chunk_rows(root: Path, volume: np.ndarray) -> None:
    vol = TiffTileVolume(root / "tiles")
    assert vol.shape == (70, 45, 33)
    for z0, z1 in ((0, 5), (5, 20), (14, 33), (0, 33)):
        np.testing.assert_array_equal(vol.read(z0, z1)[..., 0], volume[z0:z1])
