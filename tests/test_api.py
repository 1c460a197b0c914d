"""The NeuroTrALE API in process (werkzeug's test client): routes, who may write, CORS for
writes, the write log, the OpenAPI document and Swagger UI's files."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

import pytest
from werkzeug.test import Client

from precomp_host.host.api import AnnotationApi, make_api_app
from precomp_host.host.middleware import PrecomputedMiddleware
from precomp_host.host.routes import ROUTES, openapi_document
from precomp_host.host.write_policy import WritePolicy

from .neurotrale import axon, disk_path, make_annotation_tree, point

if TYPE_CHECKING:
    from pathlib import Path

    from werkzeug.test import TestResponse

VIEWER = "http://viewer.example:8080"
TOKEN = "s3cret-token"
FIBERS = "/brain/annotations/x100y100z10/fibers.json"
SLICE = "/brain/annotations/x600y100z10/z-0001.json"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_annotation_tree(tmp_path)
    (tmp_path / "brain" / "info").write_text("{}")
    return tmp_path


def _client(root: Path, policy: WritePolicy | None = None) -> Client:
    return Client(make_api_app(PrecomputedMiddleware(None, root), root, policy))


@pytest.fixture
def client(tree: Path) -> Client:
    return _client(tree, WritePolicy(TOKEN, frozenset({VIEWER})))


def _get(client: Client, url: str, headers: dict[str, str] | None = None) -> TestResponse:
    r = client.get(url, headers=headers)
    r.get_data()
    r.close()
    return r


def test_get_is_the_file_with_an_etag_and_304(client: Client, tree: Path) -> None:
    r = _get(client, SLICE)
    assert r.status_code == 200
    assert r.data == disk_path(tree, SLICE).read_bytes()
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    r2 = _get(client, SLICE, headers={"If-None-Match": r.headers["ETag"]})
    assert r2.status_code == 304
    assert r2.data == b""


def test_the_viewer_saves_by_put_as_text_plain(client: Client, tree: Path) -> None:
    body = json.dumps([point("v1"), point("v2")])
    headers = {"Origin": VIEWER, "Content-Type": "text/plain;charset=UTF-8"}
    with client.put(SLICE, data=body, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["Access-Control-Allow-Origin"] == VIEWER
        assert r.headers["Vary"] == "Origin"
        tag = r.headers["ETag"]
    assert json.loads(disk_path(tree, SLICE).read_bytes()) == json.loads(body)
    assert _get(client, SLICE).headers["ETag"] == tag


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Origin": "http://evil.example"}, 401),
        ({"Origin": VIEWER + "/"}, 401),  # an Origin never ends with a slash: no match
    ],
)
def test_a_write_without_the_token_changes_nothing(
    client: Client, tree: Path, headers: dict[str, str], status: int
) -> None:
    before = disk_path(tree, FIBERS).read_bytes()
    for method, url, body in (
        ("PUT", FIBERS, "[]"),
        ("PATCH", FIBERS + "?id=x", json.dumps(axon("x"))),
        ("DELETE", FIBERS + "?id=b0-axon0", ""),
    ):
        with client.open(url, method=method, data=body, headers=headers) as r:
            assert r.status_code == status
            assert r.headers.get("WWW-Authenticate") == "Bearer"
            assert "Access-Control-Allow-Origin" not in r.headers
    assert disk_path(tree, FIBERS).read_bytes() == before
    assert not (disk_path(tree, FIBERS).parent / ".annotation-history").exists()


def test_read_only_by_default(tree: Path) -> None:
    client = _client(tree)
    before = disk_path(tree, FIBERS).read_bytes()
    with client.put(FIBERS, data="[]", headers={"Origin": VIEWER}) as r:
        assert r.status_code == 403
    assert disk_path(tree, FIBERS).read_bytes() == before
    assert _get(client, FIBERS).status_code == 200


def test_token_writes_patch_delete(client: Client, tree: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client.patch(FIBERS + "?id=new", data=json.dumps(axon("new")), headers=auth) as r:
        assert r.status_code == 201
    with client.patch(FIBERS + "?id=new", data=json.dumps(axon("new", 9)), headers=auth) as r:
        assert r.status_code == 200
    items = json.loads(disk_path(tree, FIBERS).read_bytes())
    assert [len(a["points"]) for a in items if a["id"] == "new"] == [9]
    with client.delete(FIBERS + "?id=new", headers=auth) as r:
        assert r.status_code == 200
    with client.delete(FIBERS + "?id=new", headers=auth) as r:
        assert r.status_code == 404
    with client.delete(FIBERS, headers=auth) as r:
        assert r.status_code == 204  # no id: nothing done, as NeuroTrALE does
    assert "new" not in {a["id"] for a in json.loads(disk_path(tree, FIBERS).read_bytes())}


def test_stale_if_match_is_412_over_http(client: Client, tree: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tag = _get(client, FIBERS).headers["ETag"]
    with client.put(FIBERS, data="[]", headers={**auth, "If-Match": tag}) as r:
        assert r.status_code == 200
    with client.put(FIBERS, data=json.dumps([axon("a")]), headers={**auth, "If-Match": tag}) as r:
        assert r.status_code == 412
    assert json.loads(disk_path(tree, FIBERS).read_bytes()) == []


def test_422_is_one_line(client: Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client.put(FIBERS, data=json.dumps([{"id": 1, "type": "star"}]), headers=auth) as r:
        assert r.status_code == 422
        assert r.data.decode().count("\n") == 1
        assert r.data.startswith(b"[0]: expected an object with type")


def test_body_size_limit_is_413_before_reading(tree: Path) -> None:
    files = PrecomputedMiddleware(None, tree)
    app = AnnotationApi(files, tree, policy=WritePolicy(TOKEN))
    app.store.max_bytes = 100
    client = Client(app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client.put(FIBERS, data="[" + " " * 200 + "]", headers=auth) as r:
        assert r.status_code == 413


def test_preflights_for_writes_answer_only_allowed_origins(client: Client) -> None:
    asks = {
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type",
    }
    with client.options(SLICE, headers={"Origin": VIEWER, **asks}) as r:
        assert r.status_code == 204
        assert r.headers["Access-Control-Allow-Origin"] == VIEWER
        assert "PUT" in r.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    with client.options(SLICE, headers={"Origin": "http://evil.example", **asks}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "Access-Control-Allow-Methods" not in r.headers
    with client.options(
        SLICE, headers={"Origin": "http://any", "Access-Control-Request-Method": "GET"}
    ) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_every_write_is_logged(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="precomp_host.host.api")
    env = {"REMOTE_ADDR": "10.1.2.3"}
    with client.patch(
        FIBERS + "?id=q",
        data=json.dumps(axon("q")),
        headers={"Origin": VIEWER},
        environ_base=env,
    ):
        pass
    with client.put(FIBERS, data="[]", environ_base=env):
        pass
    added, refused = (r.getMessage() for r in caplog.records)
    for part in ("PATCH", VIEWER, "10.1.2.3", "added id q"):
        assert part in added
    for part in ("refused PUT", "10.1.2.3"):
        assert part in refused


def test_history_over_http(client: Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    original = _get(client, FIBERS).data
    with client.put(FIBERS, data="[]", headers=auth):
        pass
    versions = json.loads(_get(client, FIBERS + "/versions").data)
    assert len(versions) == 1
    url = f"{FIBERS}/versions/{versions[0]['version']}/restore"
    with client.post(url) as r:
        assert r.status_code == 401
    with client.post(url, headers=auth) as r:
        assert r.status_code == 200
    assert _get(client, FIBERS).data == original


def test_the_history_folder_is_not_served_as_files(client: Client, tree: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client.put(FIBERS, data="[]", headers=auth):
        pass
    folder = disk_path(tree, FIBERS).parent / ".annotation-history" / "fibers.json"
    name = next(p.name for p in folder.iterdir() if p.name != "lock")
    url = f"/brain/annotations/x0001_y0001/.annotation-history/fibers.json/{name}"
    assert _get(client, url).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/%2e%2e/annotations/x1y1z1/fibers.json",
        "/brain/%2e%2e/annotations/x1y1z1/fibers.json",
        "/brain/annotations/x1y1z1/%2e%2e%2ffibers.json",
    ],
)
def test_encoded_traversal_reads_and_writes_nothing(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    make_annotation_tree(root)
    outside = tmp_path / "annotations" / "x1y1z1"
    outside.mkdir(parents=True)
    (outside / "fibers.json").write_text("[]")
    client = _client(root, WritePolicy(TOKEN))
    assert _get(client, path).status_code == 404
    with client.put(
        path, data=json.dumps([axon("a")]), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as r:
        assert r.status_code == 404
    assert (outside / "fibers.json").read_text() == "[]"


def test_index_lists_datasets(client: Client, tree: Path) -> None:
    r = _get(client, "/index.html")
    assert r.status_code == 200
    assert b'href="brain/info"' in r.data
    (tree / "index.html").write_text("stored")  # e.g. the one `deploy` writes: it wins
    assert _get(client, "/index.html").data == b"stored"


def test_openapi_document_is_valid_and_from_the_route_table(client: Client) -> None:
    from openapi_spec_validator import validate

    doc = json.loads(_get(client, "/api/openapi.json").data)
    assert doc == openapi_document()
    validate(doc)
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        if route.write:
            assert {"401", "412", "422"} <= set(op["responses"])
        documented = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert documented == set(re.findall(r"{(\w+)}", route.path))


def test_every_route_has_a_handler() -> None:
    assert {r.handler for r in ROUTES if r.handler} == set(AnnotationApi.HANDLERS)


def test_swagger_ui_is_served_from_the_package(client: Client) -> None:
    page = _get(client, "/api/")
    assert page.status_code == 200
    assert b"//" not in page.data.replace(b"// no validator", b"")  # no absolute URL
    for name, media in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        r = _get(client, f"/api/static/{name}")
        assert r.status_code == 200
        assert media in r.headers["Content-Type"]
    assert _get(client, "/api/static/../../../etc/passwd").status_code == 404
    assert _get(client, "/api").status_code == 308


def test_policy_describes_what_it_allows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRECOMP_HOST_WRITE_TOKEN", raising=False)
    assert "read-only" in WritePolicy.from_options(None).describe()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    policy = WritePolicy.from_options(token_file, [VIEWER + "/"])
    assert policy.token == TOKEN
    assert policy.origins == {VIEWER}
    assert "weaker than a token" in policy.describe()
    monkeypatch.setenv("PRECOMP_HOST_WRITE_TOKEN", "from-env")
    assert WritePolicy.from_options(None).token == "from-env"
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        WritePolicy.from_options(token_file)
