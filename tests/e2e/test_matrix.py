"""The matrix of issue #6: the embedded sample (image, and segmentation with meshes) built by
``precomp-host sample``, served by (1) ``precomp-host serve``, (2) real nginx with the config
``precomp_host.deploy.site`` emits, (3) real Apache with the emitted ``<VirtualHost>`` and with the
``.htaccess`` form, (4) an S3 API (moto) after ``precomp_host.deploy.objectstores``, each opened
in the real Neuroglancer client on another origin, so CORS, the flat-to-nested rewrite, the
``.gz`` siblings without identity copies, the upload's object names and metadata, and the
``<id>:0`` mesh manifests are all exercised. (moto answers CORS for any origin by itself, so the
S3 case proves names and metadata; the CORS rules we set are checked in ``tests/test_upload.py``.)
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

import pytest

from precomp_host.core.model import Dataset
from precomp_host.deploy import objectstores as upload
from precomp_host.deploy import site as deploy
from tests.realservers import (
    APACHE,
    NGINX,
    RealServer,
    free_port,
    moto_client,
    moto_server,
    require,
    running_process,
)
from tests.test_deploy_apache import htaccess_host

from .servers import LoopbackServer, StaticDataHandler
from .viewer import check_view, image_state, is_chunk_path, segmentation_state

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .viewer import ViewResult

    View = Callable[[dict[str, Any], str], ViewResult]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/data"
#: The view at the sample's middle z shows a 3x3 block of 64^3 chunks at the finest scale.
MIN_CHUNKS = 4


@pytest.fixture(scope="module")
def sample() -> Iterator[Path]:
    """``precomp-host sample`` output (``image/``, ``labels/``), readable by Apache's www-data."""
    base = Path(tempfile.mkdtemp(prefix="precomp-e2e-sample-"))
    os.chmod(base, 0o755)
    try:
        root = base / "sample"
        subprocess.run(
            [sys.executable, "-m", "precomp_host", "sample", str(root)],
            check=True,
            capture_output=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def devserver(root: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "precomp_host", "serve", str(root), "--port", str(port)]
    with running_process(argv, port, env={"PYTHONPATH": str(REPO)}, cwd=REPO):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def real_server(kind: str, root: Path) -> Iterator[str]:
    """nginx, nginx with ``.br`` (as a complete server block), Apache (``<VirtualHost>``) or
    Apache serving a folder with our ``.htaccess`` (as on a shared host)."""
    program = APACHE if kind.startswith("apache") else NGINX
    require(program, kind)
    work = Path(tempfile.mkdtemp(prefix=f"precomp-e2e-{kind}-"))
    os.chmod(work, 0o755)  # Apache's workers (www-data) read the copied tree
    try:
        if kind == "apache-htaccess":
            site_root = work / "root"
            shutil.copytree(root, site_root)
            site = deploy.Site.make(site_root, PREFIX)
            (site_root / ".htaccess").write_text(deploy.render("apache", site)[".htaccess"])
            server = RealServer("apache", work / kind, work / "site.conf")
            server.emitted.write_text(htaccess_host(site_root))
            with server:
                yield server.base_url + PREFIX
            return
        # The complete server-block / <VirtualHost> forms, as users deploy them; plain nginx
        # covers the snippet form.
        whole = kind != "nginx"
        server = RealServer(
            "apache" if kind == "apache" else "nginx",
            work / kind,
            work / "site.conf",
            listen_in_emitted=whole,
            brotli=kind == "nginx-brotli",
        )
        listen = server.listen if whole else None
        if kind == "apache":
            site = deploy.Site.make(root, PREFIX, listen=listen)
            emitted = deploy.render("apache", site)["apache.conf"]
        else:
            site = deploy.Site.make(root, PREFIX, listen=listen, brotli=kind == "nginx-brotli")
            emitted = deploy.render("nginx", site)["nginx.conf"]
        server.emitted.write_text(emitted)
        with server:
            yield server.base_url + PREFIX
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def tiny_server(root: Path, **knobs: bool) -> Iterator[str]:
    with LoopbackServer(StaticDataHandler, root=root, **knobs) as server:
        yield server.origin


#: The harness's own static server: correct (the baseline the controls differ from by one
#: planted defect), without CORS, and sending the .gz bytes without Content-Encoding.
TINY = {
    "tiny": {"cors": True, "content_encoding": True},
    "tiny-no-cors": {"cors": False, "content_encoding": True},
    "tiny-no-content-encoding": {"cors": True, "content_encoding": False},
}


@contextmanager
def s3_bucket(root: Path) -> Iterator[str]:
    """``root`` uploaded by :mod:`precomp_host.deploy.objectstores` to an S3 API; yields its URL."""
    with moto_server() as endpoint:
        client = moto_client(endpoint)
        client.create_bucket(Bucket="precomp")
        upload.upload_s3(root, "precomp", "data", client=client, public_policy=True)
        yield f"{endpoint}/precomp/data"


SERVERS = ["serve", "nginx", "nginx-brotli", "apache", "apache-htaccess", "s3", *TINY]


@pytest.fixture(scope="module", params=SERVERS)
def data_url(request: pytest.FixtureRequest, sample: Path) -> Iterator[str]:
    """Base URL of the sample folder behind one server of the matrix."""
    if request.param == "s3":
        with s3_bucket(sample) as url:
            yield url
    elif request.param == "serve":
        with devserver(sample) as url:
            yield url
    elif request.param in TINY:
        with tiny_server(sample, **TINY[request.param]) as url:
            yield url
    else:
        with real_server(request.param, sample) as url:
            yield url


def origin_of(url: str) -> str:
    return "/".join(url.split("/", 3)[:3])


def shape_and_resolution(path: Path) -> tuple[list[int], list[float]]:
    scale = Dataset.from_json(json.loads((path / "info").read_text())).scales[0]
    return list(scale.size), list(scale.resolution)


def expect(request: pytest.FixtureRequest, problems: list[str], summary: str) -> None:
    """No problem for a correct server; for a negative control, the planted failure."""
    server = request.node.callspec.params["data_url"]
    if server == "tiny-no-cors":
        assert "info not loaded" in problems, summary
        assert any("cors" in p.lower() for p in problems), problems
    elif server == "tiny-no-content-encoding":
        # The gzip bytes reach the decoder as chunk data: Neuroglancer fails those chunks.
        assert any("FAILED" in p for p in problems), summary
        assert any("panel blank" in p for p in problems), summary
    else:
        assert problems == [], summary


def test_sample_image_renders(
    view: View, sample: Path, data_url: str, request: pytest.FixtureRequest
) -> None:
    shape, resolution = shape_and_resolution(sample / "image")
    state = image_state(f"precomputed://{data_url}/image", shape, resolution)
    result = view(state, origin_of(data_url))
    expect(request, check_view(result, min_chunks=MIN_CHUNKS), result.summary())
    if request.node.callspec.params["data_url"].startswith("tiny-"):
        return
    chunks = [r for r in result.requests if is_chunk_path(r.path)]
    # The generator stores .gz/.br only: every chunk must have come with a Content-Encoding,
    # except the declared nginx+brotli limit (README, coded-when-accepted): brotli_static makes
    # nginx inflate a chunk stored without .br for a client that accepts br.
    coded: tuple[str | None, ...] = ("gzip", "br")
    if request.node.callspec.params["data_url"] == "nginx-brotli":
        coded = (*coded, None)
    assert chunks
    assert all(r.content_encoding in coded for r in chunks), result.summary()
    if request.node.callspec.params["data_url"] in ("serve", "nginx-brotli"):
        # Chromium offers br to loopback origins; these servers send the smaller .br sibling.
        assert any(r.content_encoding == "br" for r in chunks), result.summary()


def test_sample_segmentation_renders_meshes(
    view: View, sample: Path, data_url: str, request: pytest.FixtureRequest
) -> None:
    labels = sample / "labels"
    shape, resolution = shape_and_resolution(labels)
    segments = sorted(int(p.name[:-2]) for p in (labels / "mesh").glob("*:0"))[:4]
    assert segments, "the sample has no mesh manifests"
    state = segmentation_state(f"precomputed://{data_url}/labels", shape, segments, resolution)
    result = view(state, origin_of(data_url))
    problems = check_view(result, min_chunks=MIN_CHUNKS, meshes=True)
    expect(request, problems, result.summary())


@pytest.mark.parametrize("server", ["serve", "nginx"])
def test_negative_voxel_offset_renders(view: View, tmp_path: Path, server: str) -> None:
    """A build with a negative voxel_offset: Neuroglancer asks for ``-64-0_...`` chunk names,
    which the dev server and nginx's emitted rewrite map to the nested files."""
    import numpy as np

    base = Path(tempfile.mkdtemp(prefix="precomp-e2e-neg-"))
    os.chmod(base, 0o755)
    try:
        x, y, z = np.meshgrid(np.arange(160), np.arange(160), np.arange(40), indexing="ij")
        vol = (128 + 100 * np.sin(x / 9.0) * np.cos(y / 7.0) + z % 3).astype(np.uint8)
        np.save(base / "vol.npy", np.ascontiguousarray(vol.transpose(2, 1, 0)))
        offset = (-100, -64, -20)
        subprocess.run(
            [sys.executable, "-m", "precomp_host", "build", str(base / "vol.npy"),
             str(base / "root" / "neg"), "--resolution", "8", "8", "8", "--chunk-size", "64",
             "--voxel-offset", *map(str, offset), "-q"],
            check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
        )  # fmt: skip
        assert (base / "root" / "neg" / "8_8_8" / "-100--36").is_dir()
        serving = (
            devserver(base / "root") if server == "serve" else real_server(server, base / "root")
        )
        with serving as url:
            state = image_state(f"precomputed://{url}/neg", [160, 160, 40], [8, 8, 8],
                                offset=offset)  # fmt: skip
            result = view(state, origin_of(url))
        assert check_view(result, min_chunks=MIN_CHUNKS) == [], result.summary()
        assert any("/-100--36_" in r.path for r in result.requests), result.summary()
    finally:
        shutil.rmtree(base, ignore_errors=True)
