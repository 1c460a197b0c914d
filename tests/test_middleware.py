"""Tests of :class:`precomp_host.host.middleware.PrecomputedMiddleware`.

The HTTP contract suite (``tests/contract``) runs against the middleware on a real threaded
werkzeug server on a loopback port, in three configurations; the rest are unit tests of what the
contract cannot see (fall-through to the wrapped app, the cache, no startup scan). Resolution on
its own is tested in ``test_resolve.py``.
"""

from __future__ import annotations

import gc
import io
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.test import Client

from precomp_host.core.encodings import GZIP, iter_decoded
from precomp_host.core.layout import FLAT, mesh_manifest_fallbacks
from precomp_host.host.middleware import READ_LIMIT, PrecomputedMiddleware, make_app
from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import ContractServer, ContractSuite, fetch

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment


class NoDelayServer(ThreadedWSGIServer):
    """werkzeug's threaded server with TCP_NODELAY: it writes headers and body separately, and
    Nagle's algorithm plus the client's delayed ACK would add 40 ms to every response."""

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


@contextmanager
def running(app: WSGIApplication) -> Iterator[str]:
    """``app`` on a threaded werkzeug server on a free loopback port; yields its base URL."""
    server = NoDelayServer("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def contract_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "root"
    write_contract_tree(root)
    return root


class TestContract(ContractSuite):
    """Defaults: stat on every request, small siblings decoded in memory."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls, contract_root: Path) -> Iterator[ContractServer]:
        app = PrecomputedMiddleware(None, contract_root, cache_control="no-cache")
        with running(app) as url:
            yield ContractServer(url, contract_root, name="middleware", cache_control="no-cache")


class TestContractCachedStreaming(ContractSuite):
    """With the resolution cache on and every decode streamed (no Content-Length)."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls, contract_root: Path) -> Iterator[ContractServer]:
        app = PrecomputedMiddleware(None, contract_root, cache_size=64, decode_in_memory_limit=0)
        with running(app) as url:
            yield ContractServer(url, contract_root, name="middleware-cached-streaming")


class TestContractGzipOnly(ContractSuite):
    """Configured to send gzip only, as the nginx config is without the brotli module: the
    same contract over the plain files and ``.gz`` siblings (``.br`` files are not looked at)."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls, contract_root: Path) -> Iterator[ContractServer]:
        app = PrecomputedMiddleware(None, contract_root, encodings=["gzip"])
        with running(app) as url:
            yield ContractServer(
                url, contract_root, name="middleware-gzip", encodings=frozenset({"gzip"})
            )


def test_unknown_encoding_is_refused(contract_root: Path) -> None:
    with pytest.raises(ValueError, match="zstd"):
        PrecomputedMiddleware(None, contract_root, encodings=["gzip", "zstd"])


def test_contract_under_url_prefix(contract_root: Path) -> None:
    """Mounted under /data with DispatcherMiddleware, as a deployment under a prefix is."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    inner = PrecomputedMiddleware(None, contract_root)
    app = DispatcherMiddleware(inner.not_found, {"/data": inner})
    with running(app) as url:
        server = ContractServer(url + "/data", contract_root)
        reply = fetch(server, "GET", "img/8_8_8/32-48_0-16_0-16", {"Accept-Encoding": "br"})
        assert reply.status == 200
        assert reply.header("Content-Encoding") == "br"
        assert fetch(server, "GET", "../data/img/info").status in (400, 404)


# -- unit tests -----------------------------------------------------------------------------


def _fallback_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wrapped app"]


def test_falls_through_to_the_wrapped_app(contract_root: Path) -> None:
    client = Client(PrecomputedMiddleware(_fallback_app, contract_root))
    with client.get("/not/a/dataset/file") as r:
        assert r.get_data() == b"wrapped app"
    with client.get("/img/info") as r:
        assert r.mimetype == "application/json"
    with client.get("/../secret.txt") as r:
        assert r.get_data() == b"wrapped app"


def test_without_app_missing_is_404_with_cors(contract_root: Path) -> None:
    with Client(make_app(contract_root)).get("/nope") as r:
        assert r.status_code == 404
        assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_make_app_reads_root_from_environment(
    contract_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRECOMP_HOST_ROOT", str(contract_root))
    with Client(make_app()).get("/img/info") as r:
        assert r.status_code == 200
    monkeypatch.delenv("PRECOMP_HOST_ROOT")
    with pytest.raises(ValueError, match="PRECOMP_HOST_ROOT"):
        make_app()


def test_cors_off(contract_root: Path) -> None:
    client = Client(PrecomputedMiddleware(None, contract_root, cors=False))
    with client.get("/img/info") as r:
        assert "Access-Control-Allow-Origin" not in r.headers


def test_flat_layout_does_not_rewrite(contract_root: Path) -> None:
    client = Client(PrecomputedMiddleware(None, contract_root, layout=FLAT))
    with client.get("/img/8_8_8/0-16_0-16_0-16") as r:
        assert r.status_code == 404
    with client.get("/flat/4_4_4/0-16_0-16_0-16") as r:
        assert r.status_code == 200


def test_cache_serves_stale_until_invalidated(tmp_path: Path) -> None:
    """The cache is only as fresh as its invalidation: the watcher must call invalidate()."""
    (tmp_path / "ds").mkdir()
    app = PrecomputedMiddleware(None, tmp_path, cache_size=8)
    client = Client(app)
    with client.get("/ds/info") as r:
        assert r.status_code == 404
    (tmp_path / "ds" / "info").write_text("{}")
    with client.get("/ds/info") as r:
        assert r.status_code == 404
    app.invalidate()
    with client.get("/ds/info") as r:
        assert r.status_code == 200


def test_cache_entries_expire_after_their_ttl(tmp_path: Path) -> None:
    """The standalone app's cache: a rewritten file is seen once its entry expires."""
    (tmp_path / "ds").mkdir()
    clock = [1000.0]
    app = PrecomputedMiddleware(None, tmp_path, cache_size=8, cache_ttl=1.0)
    with mock.patch("precomp_host.host.resolve.time.monotonic", side_effect=lambda: clock[0]):
        assert app.find("/ds/info") is None
        (tmp_path / "ds" / "info").write_text("{}")
        clock[0] += 0.5
        assert app.find("/ds/info") is None  # still cached
        clock[0] += 0.6
        assert app.find("/ds/info") is not None


def test_standalone_app_caches_briefly_by_default(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert app.cache_size > 0
    assert app.cache_ttl == 1.0


def test_cache_is_bounded(tmp_path: Path) -> None:
    app = PrecomputedMiddleware(None, tmp_path, cache_size=3)
    for i in range(10):
        assert app.find(f"/x/{i}") is None
    assert len(app.cache) == 3


def test_first_response_does_not_depend_on_tree_size(tmp_path: Path) -> None:
    """No startup scan: constructing the app touches no file below the root."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "info").write_text("{}")
    start = time.perf_counter()
    app = PrecomputedMiddleware(None, tmp_path)
    with Client(app).get("/ds/info") as r:
        assert r.status_code == 200
    assert time.perf_counter() - start < 0.5


def test_multiple_ranges_are_ignored(contract_root: Path) -> None:
    """RFC 9110 §14.2: a server may ignore a Range it does not support (multipart)."""
    with Client(make_app(contract_root)).get(
        "/seg/8_8_8/0.shard", headers={"Range": "bytes=0-1,5-6"}
    ) as r:
        assert r.status_code == 200
        assert len(r.get_data()) == 3000


def test_if_range(contract_root: Path) -> None:
    client = Client(make_app(contract_root))
    with client.get("/seg/8_8_8/0.shard") as r:
        etag = r.headers["ETag"]
        last_modified = r.headers["Last-Modified"]
    for if_range, status in (
        (etag, 206),
        ('"other"', 200),
        (last_modified, 206),
        ("Sat, 01 Jan 2000 00:00:00 GMT", 200),
    ):
        with client.get(
            "/seg/8_8_8/0.shard", headers={"Range": "bytes=0-9", "If-Range": if_range}
        ) as r:
            assert r.status_code == status, if_range


def test_core_helpers_used_here() -> None:
    """The two core additions this module relies on."""
    assert mesh_manifest_fallbacks("seg/mesh/12:0") == ["seg/mesh/12", "seg/mesh/12.json"]
    assert mesh_manifest_fallbacks("12:0") == ["12", "12.json"]
    assert mesh_manifest_fallbacks("seg/mesh/12:1") == []
    assert mesh_manifest_fallbacks("seg/mesh/12:0:0-1_0-1_0-1") == []
    data = bytes(range(256)) * 300
    coded = GZIP.compress(data)
    assert b"".join(iter_decoded(io.BytesIO(coded).read, "gzip", 100)) == data


def test_every_answer_closes_the_descriptor_it_opened(tmp_path: Path) -> None:
    """Bodies are sent from raw descriptors, which no ResourceWarning reports: count them."""
    data = bytes(range(256)) * 400
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "coded.gz").write_bytes(GZIP.compress(data))
    client = Client(PrecomputedMiddleware(None, tmp_path, decode_in_memory_limit=1000))
    with client.get("/plain") as r:
        etag = r.headers["ETag"]
    asks: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/plain", {}),
        ("HEAD", "/plain", {}),
        ("GET", "/plain", {"If-None-Match": etag}),
        ("GET", "/plain", {"Range": "bytes=5-9"}),
        ("GET", "/plain", {"Range": "bytes=999999-"}),
        ("GET", "/coded", {"Accept-Encoding": "gzip"}),
        ("GET", "/coded", {}),
        ("HEAD", "/coded", {}),
        ("GET", "/coded", {"Range": "bytes=-5"}),
    ]
    # New descriptors, not the count: in a full run, a file an earlier test left to the garbage
    # collector may close meanwhile, and the count would then hide a leak of ours.
    gc.collect()
    before = set(os.listdir("/proc/self/fd"))
    for method, url, headers in asks * 5:
        with client.open(url, method=method, headers=headers) as r:
            assert r.status_code in (200, 206, 304, 416), (method, url, headers)
    leaked = set(os.listdir("/proc/self/fd")) - before
    assert not leaked, [os.readlink(f"/proc/self/fd/{fd}") for fd in leaked if fd.isdigit()]


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    """Only links leaving the root are refused (the contract checks those)."""
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "info").write_text("{}")
    (root / "alias").symlink_to("real")
    (root / "real" / "link-info").symlink_to("info")
    client = Client(make_app(root))
    for url in ("/alias/info", "/real/link-info"):
        with client.get(url) as r:
            assert r.status_code == 200, url
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "info").write_text("secret")
    app = make_app(root)
    with Client(app).get("/alias/info") as r:
        assert r.status_code == 200
    # A folder swapped for a link to outside the root after its real path was cached is
    # refused once the cache is invalidated (the dev server's watcher does this on changes).
    (root / "alias").unlink()
    (root / "alias").symlink_to(tmp_path / "secret")
    app.invalidate()
    with Client(app).get("/alias/info") as r:
        assert r.status_code == 404


def _call(
    app: WSGIApplication, path: str, **extra: Any
) -> tuple[list[tuple[str, str]], Iterable[bytes], bytes]:
    """(headers, body iterable, body bytes) of ``app`` for a GET, the body closed."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, **extra}
    got: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        got.extend(headers)
        headers.append(("X-Added-By-Server", "1"))  # as wsgiref adds Date and Server

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return got, body, data


@pytest.mark.parametrize("with_file_wrapper", [True, False])
def test_small_files_are_read_larger_ones_wrapped(tmp_path: Path, with_file_wrapper: bool) -> None:
    """Both ways of sending a whole file give its exact bytes and close it: a small file is
    read (``READ_LIMIT``), a larger one goes to ``wsgi.file_wrapper`` (or werkzeug's reader)."""
    from werkzeug.wsgi import FileWrapper

    app = make_app(tmp_path)
    sizes = {"at-limit": READ_LIMIT, "above": READ_LIMIT + 1}
    wrapped: list[object] = []

    def file_wrapper(file: Any, block_size: int = 8192) -> FileWrapper:
        wrapped.append(file)
        return FileWrapper(file, block_size)

    extra = {"wsgi.file_wrapper": file_wrapper} if with_file_wrapper else {}
    for name, size in sizes.items():
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        (tmp_path / name).write_bytes(data)
        headers, body, sent = _call(app, f"/{name}", **extra)
        assert sent == data
        assert dict(headers)["Content-Length"] == str(size)
        assert isinstance(body, list) == (size <= READ_LIMIT)
    assert len(wrapped) == (1 if with_file_wrapper else 0)


def test_remembered_headers_are_not_shared_with_the_server(contract_root: Path) -> None:
    """A cached resolution's header lists are copied for each response: a server that adds
    to the list it gets must not change the next response."""
    app = make_app(contract_root)
    url = "/img/8_8_8/32-48_0-16_0-16"
    for accept in ("gzip", "identity"):
        first = _call(app, url, HTTP_ACCEPT_ENCODING=accept)[0]
        again = _call(app, url, HTTP_ACCEPT_ENCODING=accept)[0]
        assert first == again
        assert ("X-Added-By-Server", "1") not in again


# -- a body is always the bytes of one file (issue 11) ------------------------------------------


def test_a_file_gone_since_it_was_resolved_is_a_404_with_cors(tmp_path: Path) -> None:
    """A cached resolution of a file deleted since: a clean 404, not an exception (a 500)."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "c.gz").write_bytes(GZIP.compress(b"chunk" * 100))
    client = Client(PrecomputedMiddleware(None, tmp_path, cache_size=8))
    for accept in ("gzip", "identity"):
        with client.get("/ds/c", headers={"Accept-Encoding": accept}) as r:
            assert r.status_code == 200
    (tmp_path / "ds" / "c.gz").unlink()
    for accept in ("gzip", "identity"):
        with client.get("/ds/c", headers={"Accept-Encoding": accept}) as r:
            assert r.status_code == 404
            assert r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("size", [100, READ_LIMIT + 5000])
def test_a_file_replaced_since_it_was_resolved_is_sent_as_it_is_now(
    tmp_path: Path, size: int
) -> None:
    """The length and validators come from the file that is sent, never from the cache."""
    (tmp_path / "ds").mkdir()
    path = tmp_path / "ds" / "c"
    path.write_bytes(b"a" * size)
    client = Client(PrecomputedMiddleware(None, tmp_path, cache_size=8))
    with client.get("/ds/c") as r:
        old_etag = r.headers["ETag"]
    new = tmp_path / "ds" / ".c.partial"
    new.write_bytes(b"b" * (size + 777))
    os.replace(new, path)  # as a rebuild replaces it
    with client.get("/ds/c") as r:
        assert r.get_data() == b"b" * (size + 777)
        assert r.headers["Content-Length"] == str(size + 777)
        assert r.headers["ETag"] != old_etag
    with client.get("/ds/c", headers={"If-None-Match": old_etag}) as r:
        assert r.status_code == 200  # the old tag no longer validates


def test_identity_from_a_sibling_is_decoded_in_bounded_pieces(tmp_path: Path) -> None:
    """A gzip of zeros holds ~1000x its size: decoding it for an identity client must not
    hold the whole in memory (the limit is on decoded bytes, not on the sibling's size)."""
    decoded = 64 * 1024 * 1024
    (tmp_path / "big.gz").write_bytes(GZIP.compress(bytes(decoded)))
    app = PrecomputedMiddleware(None, tmp_path)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/big", "HTTP_ACCEPT_ENCODING": "identity"}
    got: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        got.extend(headers)

    body = app(environ, start_response)
    try:
        total = largest = 0
        for piece in body:
            total += len(piece)
            largest = max(largest, len(piece))
    finally:
        getattr(body, "close", lambda: None)()
    assert total == decoded
    assert "Content-Length" not in dict(got)  # past decode_in_memory_limit: streamed
    assert largest <= 256 * 1024


def test_a_range_that_would_decode_past_the_limit_is_406_with_cors(tmp_path: Path) -> None:
    (tmp_path / "c.gz").write_bytes(GZIP.compress(bytes(range(256)) * 40))
    client = Client(PrecomputedMiddleware(None, tmp_path, decode_limit=5000))
    with client.get("/c", headers={"Range": "bytes=0-9"}) as r:
        assert r.status_code == 406
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    client = Client(PrecomputedMiddleware(None, tmp_path, decode_limit=256 * 40))
    with client.get("/c", headers={"Range": "bytes=-3"}) as r:
        assert r.status_code == 206
        assert r.get_data() == bytes([253, 254, 255])
        assert r.headers["Content-Range"] == f"bytes {256 * 40 - 3}-{256 * 40 - 1}/{256 * 40}"
