"""A build written straight into an S3 API server (moto, server mode): the objects are what
``deploy s3`` of the same build would upload, independent readers read them voxel-exact over
the S3 HTTP endpoint, a killed build resumes with only the missing objects, and bad OUTs are
one line before anything is written."""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.builder import BuildError, BuildOptions, build_dataset
from precomp_host.build.objectwriter import StoreError, StoreUrl, is_store_url
from precomp_host.build.sources import volume_from_array
from precomp_host.cli import main
from precomp_host.deploy.objectstores import plan_objects
from tests.precomputed_reader import expected_chunk_names
from tests.realservers import MOTO_ENV, moto_client, moto_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytest.importorskip("boto3")
ts = pytest.importorskip("tensorstore")

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
BUCKET = "precomp-build"


def options(**kw: Any) -> BuildOptions:
    return BuildOptions(
        resolution=(4.0, 4.0, 6.0), chunk_size=(16, 16, 16), voxel_offset=(3, -5, 2), **kw
    )


def test_store_url_is_checked() -> None:
    assert StoreUrl.parse("s3://bkt/a/b/") == StoreUrl("s3", "bkt", "a/b")
    assert StoreUrl.parse("gs://bkt").path("info") == "bkt/info"
    assert is_store_url("s3://bkt/x")
    assert not is_store_url("/data/s3://x")
    with pytest.raises(StoreError, match="no bucket name"):
        StoreUrl.parse("s3:///prefix")


class _Counting(http.server.ThreadingHTTPServer):
    """A forwarding proxy in front of moto that counts requests by method: what the build
    actually sent, seen from the wire."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Counting

    def _forward(self) -> None:
        with self.server.lock:
            self.server.counts[self.command] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(self.server.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=dict(self.headers))
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server() as endpoint:
        moto_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture
def proxy(moto: str) -> Iterator[_Counting]:
    server = _Counting(moto)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in MOTO_ENV.items():
        monkeypatch.setenv(name, value)


def image(shape: tuple[int, int, int] = (70, 45, 33)) -> np.ndarray:
    """[z, y, x, c] uint8, smooth plus noise, never zero."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape[::-1]), indexing="ij")
    rng = np.random.default_rng(5)
    vol = 120 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0) + 30 * np.sin(z / 4.0)
    out: np.ndarray = np.clip(vol + rng.normal(0, 3, vol.shape), 1, 255).astype(np.uint8)
    return out[..., None]


def bucket_objects(client: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """Key (under ``prefix``) -> body as stored and its metadata, listed from the store."""
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            got = client.get_object(Bucket=BUCKET, Key=item["Key"])
            found[item["Key"][len(prefix) :]] = {
                "body": got["Body"].read(),
                "encoding": got.get("ContentEncoding"),
                "type": got["ContentType"],
                "cache": got.get("CacheControl"),
            }
    return found


def deployed(root: Path) -> dict[str, dict[str, Any]]:
    """What ``deploy s3`` would upload of the local build ``root``."""
    from precomp_host.core import headers

    return {
        o.key: {
            "body": o.body(),
            "encoding": o.content_encoding,
            "type": o.content_type,
            "cache": headers.DEPLOY_CACHE_CONTROL,
        }
        for o in plan_objects(root)
    }


@pytest.mark.slow
def test_build_into_s3_reads_back_and_matches_deploy(tmp_path: Path, moto: str) -> None:
    vol = image()
    build_dataset(volume_from_array(vol, "ZYXC"), tmp_path / "ref", options())
    build_dataset(
        volume_from_array(vol, "ZYXC"),
        f"s3://{BUCKET}/lab/img",
        options(endpoint_url=moto),
    )
    client = moto_client(moto)
    stored = bucket_objects(client, "lab/img/")
    # One object per URL, byte for byte and header for header what deploy s3 sends; no build
    # state left behind.
    assert stored == deployed(tmp_path / "ref")
    assert any(o["encoding"] == "gzip" for o in stored.values())

    # tensorstore over the S3 HTTP endpoint (it reads a missing chunk as zeros: every chunk
    # must be there, and the data not zero).
    info = __import__("json").loads(stored["info"]["body"])
    for scale in info["scales"]:
        names = {f"{scale['key']}/{n}" for n in expected_chunk_names(scale)}
        assert names <= stored.keys()
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {
            "driver": "s3",
            "bucket": BUCKET,
            "path": "lab/img/",
            "endpoint": moto,
            "aws_region": MOTO_ENV["AWS_DEFAULT_REGION"],
        },
    }
    read = ts.open({**spec, "scale_index": 0}, read=True).result().read().result()
    assert read.any()
    np.testing.assert_array_equal(np.asarray(read), vol.transpose(2, 1, 0, 3))
    top = len(info["scales"]) - 1
    read_top = ts.open({**spec, "scale_index": top}, read=True).result().read().result()
    assert np.asarray(read_top).any()


@pytest.mark.slow
def test_cluster_build_into_s3_is_the_same(tmp_path: Path, moto: str) -> None:
    pytest.importorskip("distributed")
    vol = image((40, 36, 20))
    build_dataset(volume_from_array(vol, "ZYXC"), tmp_path / "ref", options())
    # The writer travels to the worker processes with each task; they open their own s3fs.
    url = f"s3://{BUCKET}/cluster/img"
    build_dataset(
        volume_from_array(vol, "ZYXC"), url, options(endpoint_url=moto, cluster="local:2")
    )
    assert bucket_objects(moto_client(moto), "cluster/img/") == deployed(tmp_path / "ref")


def test_cloud_volume_reads_over_s3(
    tmp_path: Path, moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudvolume = pytest.importorskip("cloudvolume")
    vol = image((40, 36, 20))
    build_dataset(
        volume_from_array(vol, "ZYXC"),
        f"s3://{BUCKET}/cv/img",
        options(endpoint_url=moto),
    )
    from cloudfiles import paths

    # cloud-files reaches an S3-compatible endpoint through an alias (its own way for MinIO,
    # Ceph and the like): alias://bucket/path means s3://endpoint/bucket/path.
    paths.add_alias("precomptest", f"s3://{moto}/")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")  # cloud-files wants one beside keys
    try:
        cv = cloudvolume.CloudVolume(
            f"precomptest://{BUCKET}/cv/img", mip=0, progress=False, fill_missing=False
        )
        np.testing.assert_array_equal(np.asarray(cv[:, :, :]), vol.transpose(2, 1, 0, 3))
    finally:
        paths.remove_alias("precomptest")


def _keys(client: Any, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])}


@pytest.mark.slow
def test_killed_build_resumes_with_only_the_missing_objects(
    tmp_path: Path, moto: str, proxy: _Counting
) -> None:
    rng = np.random.default_rng(3)
    # Noisy: each chunk takes a moment to compress, so the kill lands midway.
    vol = rng.integers(1, 64, size=(128, 128, 128), dtype=np.uint8)
    np.save(tmp_path / "vol.npy", vol)
    args = ["--resolution", "8", "8", "8", "--chunk-size", "16", "--workers", "2", "-q"]
    ref = tmp_path / "ref"
    assert main(["build", str(tmp_path / "vol.npy"), str(ref), *args]) == 0

    url, prefix = f"s3://{BUCKET}/killed", "killed/"
    client = moto_client(moto)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "precomp_host", "build", str(tmp_path / "vol.npy"), url, *args,
         "--endpoint-url", moto],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_keys(client, prefix)) > 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"build made no progress: {proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    before = _keys(client, prefix)
    assert "info" not in before, "a killed build must not have announced the dataset"
    expected = deployed(ref)
    missing = expected.keys() - before
    assert missing

    assert main(["build", str(tmp_path / "vol.npy"), url, *args, "--resume",
                 "--endpoint-url", proxy.endpoint]) == 0  # fmt: skip
    # One PUT per missing object, nothing else written again (the state object is there).
    assert proxy.counts["PUT"] == len(missing), proxy.counts
    assert bucket_objects(client, prefix) == expected


def test_bad_out_is_one_line_before_anything_is_written(
    tmp_path: Path, moto: str, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "vol.npy", np.ones((8, 8, 8), np.uint8))
    src = str(tmp_path / "vol.npy")
    cases = {
        "s3:///nobucket": ("no bucket name", moto),
        "s3://no-such-bucket/x": ("no such bucket", moto),
        f"s3://{BUCKET}/unreachable": ("cannot reach the endpoint", "http://127.0.0.1:9"),
    }
    for out, (message, endpoint) in cases.items():
        code = main(["build", src, out, "--resolution", "1", "1", "1", "--endpoint-url",
                     endpoint, "-q"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2, out
        assert message in err, err
        assert err.count("\n") == 1, err
    client = moto_client(moto)
    assert not _keys(client, "unreachable")
    # A prefix that holds something is refused unless resuming; --overwrite too (no atomic
    # swap of a prefix), and the object stays.
    client.put_object(Bucket=BUCKET, Key="occupied/info", Body=b"{}")
    volume = volume_from_array(np.ones((8, 8, 8, 1), np.uint8), "ZYXC")
    for extra, message in (({}, "not empty"), ({"overwrite": True}, "--overwrite")):
        with pytest.raises(BuildError, match=message):
            build_dataset(volume, f"s3://{BUCKET}/occupied",
                          options(endpoint_url=moto, **extra))  # fmt: skip
    assert _keys(client, "occupied/") == {"info"}
    with pytest.raises(BuildError, match="--sharded"):
        build_dataset(
            volume, f"s3://{BUCKET}/sharded", options(endpoint_url=moto, shard_size=1 << 20)
        )
    assert not _keys(client, "sharded/")
    # A remote cluster's workers cannot reach this machine's temporary scratch folder: the
    # build says so before it reaches the scheduler (none listens at this address).
    remote = options(endpoint_url=moto, cluster="tcp://127.0.0.1:9")
    with pytest.raises(BuildError, match="--scratch"):
        build_dataset(volume, f"s3://{BUCKET}/remote", remote)
    assert not _keys(client, "remote/")
    with pytest.raises(BuildError, match="--scratch applies"):
        build_dataset(volume, tmp_path / "folder", options(scratch=str(tmp_path / "s")))
    assert not (tmp_path / "folder").exists()


def test_open_atomic_stores_one_plain_object_or_none(moto: str) -> None:
    from precomp_host.build.objectwriter import ObjectStoreWriter, storage_options
    from precomp_host.core.layout import NESTED

    writer = ObjectStoreWriter(f"s3://{BUCKET}/atomic", NESTED, options=storage_options("s3", moto))
    data = np.random.default_rng(1).integers(0, 255, 3 << 20, dtype=np.uint8).tobytes()
    with writer.open_atomic("8_8_8/0.shard") as f:
        f.write(data[: 1 << 20])
        f.write(data[1 << 20 :])

    def fail_midway() -> None:
        with writer.open_atomic("8_8_8/1.shard") as f:
            f.write(data)
            raise RuntimeError("the task failed midway")

    with pytest.raises(RuntimeError):
        fail_midway()
    stored = bucket_objects(moto_client(moto), "atomic/")
    assert list(stored) == ["8_8_8/0.shard"]  # the failed one left nothing
    assert stored["8_8_8/0.shard"]["body"] == data
    assert stored["8_8_8/0.shard"]["encoding"] is None  # read with Range: never a coding


@pytest.mark.slow
def test_segmentation_with_meshes_into_s3_matches_deploy(tmp_path: Path, moto: str) -> None:
    import dataclasses

    from precomp_host.build.sample import sample_labels, sample_labels_options

    labels, opts = volume_from_array(sample_labels()), sample_labels_options(False)
    build_dataset(labels, tmp_path / "ref", opts)
    build_dataset(labels, f"s3://{BUCKET}/seg", dataclasses.replace(opts, endpoint_url=moto))
    stored = bucket_objects(moto_client(moto), "seg/")
    assert any(k.startswith("mesh/") and k.endswith(":0") for k in stored)
    assert stored == deployed(tmp_path / "ref")  # the mesh journal is gone too
