"""Neuroglancer draws ``--mesh multires`` meshes and ``--sharded`` volumes: the sample's labels
built with sharded multi-resolution meshes, and the sample's image and labels built sharded,
served by ``precomp-host serve``, by real nginx and by real Apache with the emitted configs,
opened in the real client (issue 13).

Every mesh byte, and every chunk of a sharded scale, Neuroglancer reads from a ``.shard`` file
by Range. For meshes that is: the shard index,
a minishard index, a segment's manifest, then its fragments. The check counts those requests
(answered 206, or 200 for a whole file, never with a ``Content-Encoding``: a Range applies to
the encoded bytes, RFC 9110 §14.1.2) and the 3D panel's lit pixels. The negative control is the
emitted Apache ``<VirtualHost>`` with ``Header set Content-Encoding gzip`` on the shards (a
server that labels shards as it labels chunks): Chromium cannot decode the ranges, and the check
must say so. On-the-fly compression is no control here (measured): Chromium sends no gzip in
``Accept-Encoding`` with a Range, so Apache's ``SetOutputFilter DEFLATE`` (which gzips ranges
for curl: ``Content-Range: bytes 0-15/51520`` of a 53,894-byte shard) and nginx's ``gzip on``
(which compresses 200 responses only) both answer it with plain 206s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.sample import SAMPLE_RESOLUTION, sample_image, sample_labels
from precomp_host.deploy import site as deploy
from tests.realservers import APACHE, RealServer, require

from .test_matrix import MIN_CHUNKS, PREFIX, devserver, origin_of, real_server, shape_and_resolution
from .viewer import check_view, image_state, segmentation_state

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .viewer import DataRequest, ViewResult

    View = Callable[[dict[str, Any], str], ViewResult]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
#: shard index, minishard index, manifest, fragment data: at least one of each.
MIN_SHARD_REQUESTS = 4


@pytest.fixture(scope="module")
def multires_root() -> Iterator[Path]:
    """A folder readable by Apache's www-data holding the sample's labels with ``--mesh
    multires`` (``labels/``), and the sample's image and labels built ``--sharded`` with small
    shards, so that a view reads several (``image-sharded/``, ``labels-sharded/``)."""
    base = Path(tempfile.mkdtemp(prefix="precomp-e2e-multires-"))
    os.chmod(base, 0o755)
    try:
        np.save(base / "labels.npy", sample_labels())
        np.save(base / "image.npy", sample_image())
        root = base / "root"
        sharded = ["--sharded", "--shard-size", "256KiB"]
        labels = ["--type", "segmentation", "--mesh", "multires"]
        for source, name, extra in (
            ("labels", "labels", labels),
            ("image", "image-sharded", sharded),
            ("labels", "labels-sharded", labels + sharded),
        ):
            subprocess.run(
                [sys.executable, "-m", "precomp_host", "build", str(base / f"{source}.npy"),
                 str(root / name), *extra, "--resolution", *map(str, SAMPLE_RESOLUTION), "-q"],
                check=True, capture_output=True, cwd=REPO, timeout=300,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
        assert list((root / "labels" / "mesh").glob("*.shard")), "no mesh shard was built"
        assert len(list((root / "image-sharded").glob("*/*.shard"))) > 4
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def apache_gzip_labelled_shards(root: Path) -> Iterator[str]:
    """The emitted ``<VirtualHost>`` plus ``Content-Encoding: gzip`` on the shards."""
    require(APACHE, "apache2")
    work = Path(tempfile.mkdtemp(prefix="precomp-e2e-apache-gzip-"))
    os.chmod(work, 0o755)
    try:
        server = RealServer("apache", work / "apache", work / "site.conf", listen_in_emitted=True)
        site = deploy.Site.make(root, PREFIX, listen=server.listen)
        emitted = deploy.render("apache", site)["apache.conf"]
        end = "    </Directory>"
        assert emitted.count(end) == 1
        wrong = '<FilesMatch "\\.shard$">\n    Header set Content-Encoding gzip\n</FilesMatch>\n'
        server.emitted.write_text(emitted.replace(end, wrong + end))
        with server:
            yield server.base_url + PREFIX
    finally:
        shutil.rmtree(work, ignore_errors=True)


SERVERS = ["serve", "nginx", "apache", "apache-gzip-shards"]


@pytest.fixture(scope="module", params=SERVERS)
def data_url(request: pytest.FixtureRequest, multires_root: Path) -> Iterator[str]:
    if request.param == "serve":
        with devserver(multires_root) as url:
            yield url
    elif request.param == "apache-gzip-shards":
        with apache_gzip_labelled_shards(multires_root) as url:
            yield url
    else:
        with real_server(request.param, multires_root) as url:
            yield url


def is_shard(request: DataRequest) -> bool:
    return request.path.split("?")[0].endswith(".shard")


def check_shard_reads(result: ViewResult, what: str, least: int) -> list[str]:
    """At least ``least`` reads of ``what`` (``mesh`` or ``volume``) shards answered 206/200,
    none with a Content-Encoding."""
    problems = []
    is_mesh = what == "mesh"
    shards = [r for r in result.requests if is_shard(r) and ("/mesh/" in r.path) == is_mesh]
    answered = [r for r in shards if r.ok and r.status in (200, 206)]
    if len(answered) < least:
        problems.append(f"only {len(answered)} of {len(shards)} {what} shard reads answered")
    encoded = [r for r in shards if r.content_encoding]
    if encoded:
        problems.append(f"{len(encoded)} {what} shard reads sent with a Content-Encoding")
    return problems


def check_multires_meshes(result: ViewResult) -> list[str]:
    """What is wrong with the meshes of a view of selected segments; empty when drawn."""
    problems = check_shard_reads(result, "mesh", MIN_SHARD_REQUESTS)
    threed = [p for p in result.panels if p.kind == "3d"]
    if not threed or any(p.blank for p in threed):
        problems.append("3d panel blank")
    return problems


def is_negative_control(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.callspec.params["data_url"] == "apache-gzip-shards")


def test_neuroglancer_draws_sharded_multires_meshes(
    view: View, multires_root: Path, data_url: str, request: pytest.FixtureRequest
) -> None:
    labels = multires_root / "labels"
    shape, resolution = shape_and_resolution(labels)
    mesh_info = json.loads((labels / "mesh" / "info").read_text())
    assert mesh_info["@type"] == "neuroglancer_multilod_draco"
    segments = sorted(int(s) for s in np.unique(sample_labels()) if s)
    state = segmentation_state(f"precomputed://{data_url}/labels", shape, segments, resolution)
    result = view(state, origin_of(data_url))
    problems = check_view(result, min_chunks=MIN_CHUNKS) + check_multires_meshes(result)
    if is_negative_control(request):
        # Chromium fails the reads (ERR_CONTENT_DECODING_FAILED): no mesh, nothing drawn.
        assert "3d panel blank" in problems, result.summary()
        assert any("mesh shard reads answered" in p for p in problems), result.summary()
    else:
        assert problems == [], result.summary()


def test_neuroglancer_draws_a_sharded_image(
    view: View, multires_root: Path, data_url: str, request: pytest.FixtureRequest
) -> None:
    shape, resolution = shape_and_resolution(multires_root / "image-sharded")
    state = image_state(f"precomputed://{data_url}/image-sharded", shape, resolution)
    result = view(state, origin_of(data_url))
    # Chunks come out of shards: check_view's count of chunk URLs does not apply.
    problems = check_view(result, min_chunks=0)
    problems += check_shard_reads(result, "volume", MIN_CHUNKS)
    if result.loaded_chunks < MIN_CHUNKS:
        problems.append(f"only {result.loaded_chunks} chunks loaded")
    if is_negative_control(request):
        # Every shard read fails (ERR_CONTENT_DECODING_FAILED); Neuroglancer then draws the
        # chunks as missing (none in its FAILED state, measured): a blank panel.
        assert any("volume shard reads answered" in p for p in problems), result.summary()
        assert any("panel blank" in p for p in problems), result.summary()
    else:
        assert problems == [], result.summary()


def test_neuroglancer_draws_a_sharded_segmentation_and_its_meshes(
    view: View, multires_root: Path, data_url: str, request: pytest.FixtureRequest
) -> None:
    labels = multires_root / "labels-sharded"
    shape, resolution = shape_and_resolution(labels)
    assert json.loads((labels / "info").read_text())["scales"][0]["sharding"]
    segments = sorted(int(s) for s in np.unique(sample_labels()) if s)
    state = segmentation_state(
        f"precomputed://{data_url}/labels-sharded", shape, segments, resolution
    )
    result = view(state, origin_of(data_url))
    problems = check_view(result, min_chunks=0)
    problems += check_shard_reads(result, "volume", MIN_CHUNKS)
    problems += check_multires_meshes(result)
    if is_negative_control(request):
        assert "3d panel blank" in problems, result.summary()
        assert any("cross-section panel blank" in p for p in problems), result.summary()
    else:
        assert problems == [], result.summary()
