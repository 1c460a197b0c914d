"""Object-store uploads: the plan (pure), and a real upload to an S3 API server (moto)."""

from __future__ import annotations

import gzip
import http.client
from typing import TYPE_CHECKING, Any

import pytest

from precomp_host.core import headers
from precomp_host.deploy import objectstores as upload
from precomp_host.deploy import site as deploy
from tests.contract.fixtures import build_tree, write_contract_tree
from tests.realservers import moto_client, moto_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from precomp_host.core.progress import Progress

RES = build_tree().resources
BUCKET = "precomp"
PREFIX = "data"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3") / "root"
    write_contract_tree(root)
    return root


def test_plan_uses_flat_names_and_one_object_per_url(tree: Path) -> None:
    objects = {o.key: o for o in upload.plan_objects(tree)}
    for res in RES.values():
        if res.url.endswith("%3A0"):
            continue  # the same object as its colon spelling
        obj = objects[res.url]
        assert obj.content_type == res.media_type, res.name
        body = obj.body()
        if obj.content_encoding == "gzip":
            assert gzip.decompress(body) == res.identity, res.name
        else:
            assert obj.content_encoding is None
            assert body == res.identity, res.name
    # gz sibling when there is one; br-only re-encoded as gzip; shards plain; no symlinks.
    assert objects["img/8_8_8/0-16_16-32_0-16"].content_encoding == "gzip"
    assert objects["img/8_8_8/16-32_16-32_0-16"].recode == "br"
    assert objects["seg/8_8_8/0.shard"].content_encoding is None
    assert "img/escape-file" not in objects
    assert not any(k.endswith((".gz", ".br")) for k in objects)
    assert list(objects)[-1].endswith("info"), "info files go last"


def test_plan_skips_the_builds_hidden_folders(tmp_path: Path) -> None:
    (tmp_path / "ds" / ".precomp-mesh-regions").mkdir(parents=True)
    (tmp_path / "ds" / ".precomp-mesh-regions" / "0-64_0-64_0-64.json").write_text("{}")
    (tmp_path / "ds" / "info").write_text("{}")
    assert [o.key for o in upload.plan_objects(tmp_path)] == ["ds/info"]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def raw_get(endpoint: str, key: str, **hdrs: str) -> http.client.HTTPResponse:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", f"/{BUCKET}/{PREFIX}/{key}", headers=hdrs)
    return conn.getresponse()


@pytest.mark.slow
def test_upload_to_s3_api(tree: Path, moto_endpoint: str) -> None:
    client = moto_client(moto_endpoint)
    client.create_bucket(Bucket=BUCKET)
    put_order: list[str] = []
    put_object = client.put_object

    def recording_put(**kw: Any) -> Any:
        put_order.append(kw["Key"])
        return put_object(**kw)

    client.put_object = recording_put
    reports: list[Progress] = []
    report = upload.upload_s3(tree, BUCKET, PREFIX, client=client, public_policy=True,
                              workers=4, progress=reports.append)  # fmt: skip
    planned = list(upload.plan_objects(tree))
    assert report.uploaded == len(planned)
    assert report.skipped == 0
    # In parallel, but every info after every other object: a dataset is announced complete.
    infos = [i for i, k in enumerate(put_order) if k.rsplit("/", 1)[-1] == "info"]
    assert infos
    assert min(infos) == len(put_order) - len(infos), put_order
    assert [r.done for r in reports] == list(range(1, len(planned) + 1))
    assert reports[-1].total == len(planned)
    assert reports[-1].bytes_written == report.bytes_sent > 0

    # Every object, listed with its metadata.
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
    keys = {item["Key"] for item in listed["Contents"]}
    assert keys == {f"{PREFIX}/{o.key}" for o in planned}
    for obj in planned:
        meta = client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{obj.key}")
        assert meta["ContentType"] == obj.content_type, obj.key
        assert meta.get("ContentEncoding") == obj.content_encoding, obj.key
        assert meta["CacheControl"] == headers.DEPLOY_CACHE_CONTROL

    # A gz-only chunk through the HTTP endpoint: Content-Encoding exactly gzip, decoded bytes
    # equal the build's.
    res = RES["img-gz"]
    resp = raw_get(moto_endpoint, res.url, **{"Accept-Encoding": "gzip"})
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Encoding") == "gzip"
        assert resp.getheader("Content-Type") == "application/octet-stream"
        assert gzip.decompress(resp.read()) == res.identity
    finally:
        resp.close()
    # A shard: plain, and a Range on it works.
    shard = RES["seg-shard"]
    resp = raw_get(moto_endpoint, shard.url, Range="bytes=10-19")
    try:
        assert resp.status == 206
        assert resp.getheader("Content-Encoding") is None
        assert resp.read() == shard.identity[10:20]
    finally:
        resp.close()

    # CORS rules and the public-read policy are set.
    cors = client.get_bucket_cors(Bucket=BUCKET)
    rule = cors["CORSRules"][0]
    assert rule["AllowedOrigins"] == ["*"]
    assert set(rule["AllowedMethods"]) == {"GET", "HEAD"}
    assert {h.lower() for h in rule["AllowedHeaders"]} >= {"range"}
    assert set(rule["ExposeHeaders"]) >= {"Content-Range", "Content-Encoding", "ETag"}
    assert '"s3:GetObject"' in client.get_bucket_policy(Bucket=BUCKET)["Policy"]

    # Resumable: nothing is sent again; a changed file is.
    again = upload.upload_s3(tree, BUCKET, PREFIX, client=client)
    assert (again.uploaded, again.skipped) == (0, len(planned))
    (tree / "seg" / "8_8_8" / "0.shard").write_bytes(b"changed")
    try:
        third = upload.upload_s3(tree, BUCKET, PREFIX, client=client)
        assert (third.uploaded, third.skipped) == (1, len(planned) - 1)
    finally:
        (tree / "seg" / "8_8_8" / "0.shard").write_bytes(shard.identity)


def test_render_s3_files_come_from_headers() -> None:
    site = deploy.Site.make("/srv/data", "/data")
    files = deploy.render("s3", site, bucket="lab-bucket")
    assert '"arn:aws:s3:::lab-bucket/data/*"' in files["bucket-policy.json"]
    assert "Range" in files["cors.json"]
    assert "Content-Encoding" in files["cors.json"]
