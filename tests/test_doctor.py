"""The hosting doctor (:mod:`precomp_host.check.doctor`, issue 17): servers nobody would call
correct, each diagnosed with its own cause; the servers we set up, passed.

The broken servers are our middleware with one defect each (:data:`DEFECTS`: a request or
response rewritten the way a misconfigured server, proxy or bucket answers), plus the two
configurations the community publishes (neuroglancer-docker's nginx.conf, neuroglancer-scripts'
Apache snippet, verbatim in ``tests/published/``) on real servers. Each defect's findings are
compared as a whole: the cause, and nothing that is not a consequence of it.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from precomp_host.build.annotation_writer import write_annotations
from precomp_host.build.builder import BuildOptions, build_dataset
from precomp_host.build.chunk_codecs import make_codec
from precomp_host.build.shards import write_shard
from precomp_host.build.sources import volume_from_array
from precomp_host.build.writer import DatasetWriter
from precomp_host.check.doctor import check
from precomp_host.cli import main
from precomp_host.core import layout
from precomp_host.core.datasets import read_dataset
from precomp_host.core.model import Dataset, Scale, VolumeType
from precomp_host.core.sharding import ShardingSpec, compressed_morton_code
from precomp_host.deploy import servers
from precomp_host.deploy import site as deploy
from precomp_host.host.devserver import DevServer
from precomp_host.middleware import make_app
from tests.realservers import (
    APACHE,
    APACHE_MODULES,
    MOTO_ENV,
    NGINX,
    RealServer,
    free_port,
    moto_client,
    moto_server,
    require,
)
from tests.realservers import running_process as running
from tests.test_annotations import point_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from precomp_host.check.findings import Report

    #: A defect: the request our middleware sees (environ changed in place) and the response
    #: changed on its way out.
    Change = Callable[[WSGIEnvironment], None]
    Fix = Callable[[WSGIEnvironment, Response], Response]

PUBLISHED = Path(__file__).parent / "published"
_CHUNK_URL = re.compile(layout.URL_PATTERN)


def build_image(out: Path, shape: tuple[int, int, int] = (40, 36, 20)) -> Dataset:
    """A small uint8 image, nested, .gz + .br without plain files (the default build)."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    vol = (100 + 60 * np.sin(x / 5.0) * np.cos(y / 4.0) + z).astype(np.uint8)
    volume = volume_from_array(np.ascontiguousarray(vol.transpose(2, 1, 0)), "ZYX")
    return build_dataset(volume, out, BuildOptions(resolution=(4.0, 4.0, 4.0),
                                                   chunk_size=(16, 16, 16)))  # fmt: skip


def build_sharded(out: Path) -> Dataset:
    """A uint32 segmentation of one sharded scale (2 shards of 2 minishards), raw chunks."""
    spec = ShardingSpec(preshift_bits=0, minishard_bits=1, shard_bits=1)
    scale = Scale("8_8_8", (32, 32, 16), (8.0, 8.0, 8.0), (16, 16, 16), sharding=spec)
    ds = Dataset("segmentation", "uint32", 1, (scale,))
    codec, grid = make_codec("raw"), scale.grid_shape()
    shards: dict[int, dict[int, bytes]] = {}
    for key in scale.iter_chunk_keys():
        g = scale.grid_index(key)
        x, y, z = key.shape
        data = np.full((z, y, x, 1), 1 + g[0] + 2 * g[1], np.uint32)
        cid = compressed_morton_code(g, grid)
        shards.setdefault(spec.locate(cid)[0], {})[cid] = codec.encode(data)
    writer = DatasetWriter(out, layout.NESTED)
    writer.begin()
    for shard, chunks in shards.items():
        write_shard(writer, scale.key, spec, shard, chunks)
    writer.commit(ds)
    return ds


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doctor") / "root"
    build_image(root / "img")
    build_sharded(root / "seg")
    return root


@contextlib.contextmanager
def serving(app: WSGIApplication) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- one defect per server ------------------------------------------------------------------


def _drop_cors(resp: Response) -> None:
    for name in [k for k, _ in resp.headers if k.lower().startswith("access-control-")]:
        del resp.headers[name]


def _no_cors(environ: WSGIEnvironment, resp: Response) -> Response:
    _drop_cors(resp)
    return resp


def _cors_on_200_only(environ: WSGIEnvironment, resp: Response) -> Response:
    if resp.status_code >= 400:
        _drop_cors(resp)
    return resp


def _gzip_without_content_encoding(environ: WSGIEnvironment, resp: Response) -> Response:
    # The S3 console's default: a .gz uploaded under the plain name, no metadata.
    resp.headers.pop("Content-Encoding", None)
    return resp


def _gzip_on_shards(environ: WSGIEnvironment, resp: Response) -> Response:
    # nginx's `gzip on` with application/octet-stream in gzip_types: the whole shard, coded.
    if environ["PATH_INFO"].endswith(".shard") and resp.status_code in (200, 206):
        resp.set_data(gzip.compress(resp.get_data()))
        resp.status_code = 200
        resp.headers["Content-Encoding"] = "gzip"
        resp.headers.pop("Content-Range", None)
    return resp


def _forbidden_for_missing(environ: WSGIEnvironment, resp: Response) -> Response:
    # S3 without s3:ListBucket: 403 AccessDenied for a key that does not exist.
    if resp.status_code == 404:
        resp.status_code = 403
    return resp


def _info_as_html(environ: WSGIEnvironment, resp: Response) -> Response:
    if environ["PATH_INFO"].endswith("/info"):
        resp.headers["Content-Type"] = "text/html; charset=utf-8"
    return resp


def _options_405(environ: WSGIEnvironment, resp: Response) -> Response:
    if environ["REQUEST_METHOD"] == "OPTIONS":
        out = Response(status=405, headers={"Allow": "GET, HEAD"})
        out.headers["Access-Control-Allow-Origin"] = "*"
        return out
    return resp


def _wrong_size(environ: WSGIEnvironment, resp: Response) -> Response:
    if _CHUNK_URL.match(environ["PATH_INFO"]) and resp.status_code == 200:
        resp.set_data(resp.get_data()[:-16])  # a chunk of another shape: a whole, short body
    return resp


def _identity_for_chunks(environ: WSGIEnvironment) -> None:
    if _CHUNK_URL.match(environ["PATH_INFO"]):
        environ["HTTP_ACCEPT_ENCODING"] = "identity"


#: name -> (request change, response change, the findings it must give, exactly).
DEFECTS: dict[str, tuple[Change | None, Fix | None, set[str]]] = {
    "no CORS at all": (None, _no_cors, {"no-cors", "preflight-rejected"}),
    "CORS on 200 only": (None, _cors_on_200_only, {"no-cors-on-errors"}),
    "gzip without Content-Encoding": (
        lambda env: env.__setitem__("HTTP_ACCEPT_ENCODING", "gzip"),
        _gzip_without_content_encoding,
        {"gzip-without-content-encoding"},
    ),
    "Content-Encoding gzip on shards": (None, _gzip_on_shards, {"coded-shard"}),
    "br to every client": (
        lambda env: env.__setitem__("HTTP_ACCEPT_ENCODING", "br"),
        None,
        {"unrequested-encoding"},
    ),
    "403 for missing chunks": (None, _forbidden_for_missing, {"missing-is-403"}),
    "info as text/html": (None, _info_as_html, {"info-not-json"}),
    "OPTIONS 405": (None, _options_405, {"preflight-rejected"}),
    "chunk of the wrong size": (_identity_for_chunks, _wrong_size, {"chunk-size-mismatch"}),
}


def broken(root: Path, change: Change | None, fix: Fix | None) -> Any:
    inner = make_app(root)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if change is not None:
            change(environ)
        resp = Response.from_app(inner, environ, buffered=True)
        if fix is not None:
            resp = fix(environ, resp)
        return resp(environ, start_response)

    return app


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_broken_server_is_diagnosed_with_its_own_cause(tree: Path, defect: str) -> None:
    change, fix, expected = DEFECTS[defect]
    with serving(broken(tree, change, fix)) as base:
        reports = [check(f"{base}/{ds}") for ds in ("img", "seg")]
    errors = {f.code for r in reports for f in r.findings if f.rule.severity == "error"}
    assert errors == expected, [f.line(r.server) for r in reports for f in r.findings]
    assert not all(r.ok for r in reports)


def test_truncated_bodies(tree: Path) -> None:
    """Content-Length says the whole chunk, the connection closes half way."""
    inner = make_app(tree)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        resp = Response.from_app(inner, environ, buffered=True)
        body = resp.get_data()
        if not _CHUNK_URL.match(environ["PATH_INFO"]) or resp.status_code != 200:
            return resp(environ, start_response)
        headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "connection"]
        start_response(resp.status, [*headers, ("Connection", "close")])
        return [body[: len(body) // 2]]

    with serving(app) as base:
        report = check(f"{base}/img")
    assert {f.code for f in report.findings} == {"truncated-body"}, report.to_json()


def test_flat_urls_404_on_a_nested_tree(tree: Path) -> None:
    """A plain static server (our middleware told the tree is flat) over a nested tree."""
    with serving(make_app(tree, layout=layout.FLAT)) as base:
        report = check(f"{base}/img")
    assert {f.code for f in report.findings} == {"flat-url-404"}, report.to_json()
    finding = report.findings[0]
    # Each chunk it reads once (first, middle, last of each grid: 3 + 2 + 1 on three scales).
    assert finding.count == 6
    assert "/img/4_4_4/" in finding.example


def test_healthy_middleware_passes_and_full_decodes_every_chunk(tree: Path) -> None:
    img, seg = read_dataset(tree / "img"), read_dataset(tree / "seg")
    seen: list[int] = []
    with serving(make_app(tree)) as base:
        sample = check(f"{base}/img")
        full = check(
            f"{base}/img", full=True, concurrency=4, progress=lambda p: seen.append(p.done)
        )
        shards = check(f"{base}/seg", full=True)
    assert sample.findings == full.findings == shards.findings == []
    assert sample.ok
    n_img = sum(s.num_chunks() for s in img.scales)
    # Every chunk of every scale, each counted once (the sampled ones are read three times).
    assert full.chunks_decoded == n_img > sample.chunks_decoded == 6
    assert seen == list(range(1, len(seen) + 1))
    assert seen[-1] > n_img - 1
    assert shards.chunks_decoded == seg.scales[0].num_chunks() == 4
    assert sample.server == "other"
    assert "Werkzeug" in sample.server_label


# -- real servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def public_tree() -> Iterator[Path]:
    """The tree in a world-readable folder: Apache's workers run as www-data."""
    base = Path(tempfile.mkdtemp(prefix="precomp-doctor-"))
    try:
        root = base / "root"
        build_image(root / "img")
        build_sharded(root / "seg")
        for folder, dirs, files in os.walk(base):
            for name in [*dirs, *files]:
                os.chmod(os.path.join(folder, name), 0o755 if name in dirs else 0o644)
        os.chmod(base, 0o755)
        yield root
    finally:
        shutil.rmtree(base)


def neuroglancer_docker_conf(data: Path, work: Path, port: int) -> str:
    """The published nginx.conf, run in place: its paths moved under ``work``, its data root
    (``root /;`` and the chunk alias's ``$1``, both absolute in the image) under ``data``,
    port 80 to ``port``; nothing else changed."""
    text = (PUBLISHED / "neuroglancer-docker.nginx.conf").read_text()
    user = "user root;" if os.geteuid() == 0 else ""
    temps = " ".join(f"{k}_temp_path {work / k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    for old, new in (
        ("user  nginx;", f"daemon off;\n{user}"),
        ("/var/log/nginx/error.log", str(work / "error.log")),
        ("/var/run/nginx.pid", str(work / "nginx.pid")),
        ("/var/log/nginx/access.log", str(work / "access.log")),
        ("listen       80;", f"listen 127.0.0.1:{port};"),
        ("root   /;", f"root   {data};"),
        ("alias $1/$2/$3/$4;", f"alias {data}$1/$2/$3/$4;"),
        ("sendfile        on;", f"sendfile        on;\n    {temps}"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_neuroglancer_docker_nginx_conf(public_tree: Path, tmp_path: Path) -> None:
    require(NGINX, "nginx")
    data = tmp_path / "data"
    (data / "precomputed").mkdir(parents=True)
    for ds in ("img", "seg"):
        shutil.copytree(public_tree / ds, data / "precomputed" / ds)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(neuroglancer_docker_conf(data, tmp_path, port))
    argv = [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
    with running(argv, port):
        reports = [check(f"http://127.0.0.1:{port}/precomputed/{ds}") for ds in ("img", "seg")]
    assert reports[0].server == "nginx"
    codes = {f.code for r in reports for f in r.findings}
    # add_header without `always`: no CORS on 404s; no Expose-Headers; `info` has no
    # extension: octet-stream; a static location answers OPTIONS with 405.
    assert codes == {"no-cors-on-errors", "cors-expose", "info-not-json", "preflight-rejected"}, [
        f.line(r.server) for r in reports for f in r.findings
    ]


def neuroglancer_scripts_host(root: Path) -> str:
    """A vhost as a shared host grants it to a .htaccess that sets Options (AllowOverride All),
    with mod_negotiation, which the snippet's MultiViews needs."""
    return (
        f"LoadModule negotiation_module {APACHE_MODULES / 'mod_negotiation.so'}\n"
        f'DocumentRoot "{root}"\n<Directory "{root}">\n'
        "    AllowOverride All\n    Require all granted\n</Directory>\n"
    )


#: The snippet as published, and with its Options lines commented out as its own first comment
#: advises for a 403: (text change, the findings, exactly).
SNIPPET_CASES = {
    # `Options Multiviews` replaces `Options FollowSymLinks` (no +): RewriteRule is then
    # forbidden (AH00670) and every URL, info included, is a 403 without CORS.
    "as published": ({}, {"forbidden", "no-cors-on-errors"}),
    # Without MultiViews the .gz are never found: chunks 404; `Header set` skips those 404s;
    # `info` has no type; OPTIONS gets Apache's 200 without Allow-Headers.
    "Options commented out": (
        {"\nOptions ": "\n# Options ", "    Options Multiviews": "    # Options Multiviews"},
        {"gz-not-served", "no-cors-on-errors", "info-not-json", "preflight-rejected",
         "cors-expose"},
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SNIPPET_CASES))
def test_neuroglancer_scripts_apache_snippet(public_tree: Path, tmp_path: Path, case: str) -> None:
    require(APACHE, "apache2")
    changes, expected = SNIPPET_CASES[case]
    text = (PUBLISHED / "neuroglancer-scripts.htaccess").read_text()
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    (public_tree / ".htaccess").write_text(text)
    os.chmod(public_tree / ".htaccess", 0o644)
    server = RealServer("apache", tmp_path / "apache", tmp_path / "site.conf")
    server.emitted.write_text(neuroglancer_scripts_host(public_tree))
    try:
        with server:
            reports = [check(f"{server.base_url}/{ds}") for ds in ("img", "seg")]
    finally:
        (public_tree / ".htaccess").unlink()
    assert reports[0].server == "apache"
    codes = {f.code for r in reports for f in r.findings}
    assert codes == expected, [f.line(r.server) for r in reports for f in r.findings]


# -- the servers we set up pass ---------------------------------------------------------------


def assert_passes(reports: list[Report]) -> None:
    lines = [f.line(r.server) for r in reports for f in r.findings]
    assert lines == []
    assert all(r.ok for r in reports)
    assert all(r.chunks_decoded > 0 for r in reports)


def test_dev_server_site_root_passes(public_tree: Path) -> None:
    """The dev server's index page lists the datasets: the site root checks them all."""
    with DevServer(public_tree, port=0) as server:
        report = check(server.url)
    assert sorted(report.datasets) == [f"{server.url.rstrip('/')}/{d}" for d in ("img", "seg")]
    assert_passes([report])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_emitted_configs_pass_on_real_servers(public_tree: Path, tmp_path: Path, kind: str) -> None:
    require(NGINX if kind == "nginx" else APACHE, kind)
    server = RealServer(kind, tmp_path / kind, tmp_path / "site.conf", listen_in_emitted=True)
    site = deploy.Site.make(public_tree, "/data", listen=server.listen)
    tree = deploy.survey_site(site)
    text = (
        servers.render_nginx(site, tree)
        if kind == "nginx"
        else servers.render_apache(site, "vhost", tree)
    )
    server.emitted.write_text(text)
    with server:
        reports = [check(f"{server.base_url}/data/{ds}") for ds in ("img", "seg")]
    assert reports[0].server == kind
    assert_passes(reports)


@pytest.mark.slow
def test_s3_after_deploy_s3_passes(
    public_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    with moto_server() as endpoint:
        moto_client(endpoint).create_bucket(Bucket="lab")
        argv = ["deploy", "s3", str(public_tree), "--bucket", "lab", "--endpoint-url", endpoint,
                "--public", "--no-index", "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
        assert main(argv) == 0
        reports = [check(f"{endpoint}/lab/data/{ds}") for ds in ("img", "seg")]
    assert reports[0].server == "s3"
    # moto's one limit (5.2, measured): a path-style OPTIONS gets 403 (with flask-cors'
    # headers), where S3 answers a preflight that matches the bucket's CORS rule with 200
    # (AWS, "Configuring cross-origin resource sharing"); the GETs carry the rule's headers.
    preflight = [f for r in reports for f in r.findings if f.code == "preflight-rejected"]
    assert [f.detail for f in preflight] == ["status 403", "status 403"]
    for r in reports:
        r.findings = [f for f in r.findings if f.code != "preflight-rejected"]
    assert_passes(reports)


# -- the command ------------------------------------------------------------------------------


def test_command_exit_codes_lines_and_json(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(broken(tree, None, _options_405)) as bad, serving(make_app(tree)) as good:
        assert main(["check", f"{good}/img", "--full", "--concurrency", "2"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[-1].startswith("OK: the viewers can read it")
        assert main(["check", f"precomputed://{bad}/img"]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert main(["check", f"{bad}/img/info", "--json", "--origin", "https://lab.org"]) == 1
        doc = json.loads(capsys.readouterr().out)
    # One line per finding: the count, an example URL, why, and the fix.
    (line,) = [x for x in lines if x.startswith("ERROR")]
    assert line.startswith(f"ERROR preflight-rejected (1x, e.g. {bad}/img/info)")
    assert "Why: a browser preflights a cross-origin request" in line
    assert "Fix on the server: answer OPTIONS with 2xx" in line
    assert doc["ok"] is False
    assert [f["code"] for f in doc["findings"]] == ["preflight-rejected"]
    assert doc["datasets"] == [f"{bad}/img"]
    assert doc["chunks_decoded"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "/srv/data/img"], "URL '/srv/data/img': not an http(s) URL"),
        (["check", "http://x/img", "--origin", "lab.org"], "--origin 'lab.org': not an http(s)"),
    ],
)
def test_command_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


# -- chunk encodings --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jpeg and png images and a compressed_segmentation, built by us."""
    root = tmp_path_factory.mktemp("encoded")
    x, y, z = np.meshgrid(*(np.arange(n) for n in (40, 36, 20)), indexing="ij")
    image = (100 + 60 * np.sin(x / 5.0) * np.cos(y / 4.0) + z).astype(np.uint8)
    labels = ((x // 9) * 10 + y // 7 + 1).astype(np.uint32)
    kinds: list[tuple[str, np.ndarray, VolumeType]] = [
        ("jpeg", image, "image"), ("png", image, "image"),
        ("compressed_segmentation", labels, "segmentation"),
    ]  # fmt: skip
    for name, vol, kind in kinds:
        volume = volume_from_array(np.ascontiguousarray(vol.transpose(2, 1, 0)), "ZYX")
        options = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16),
                               volume_type=kind, encoding=name)  # fmt: skip
        build_dataset(volume, root / name, options)
    return root


def _garbage_chunks(environ: WSGIEnvironment, resp: Response) -> Response:
    if _CHUNK_URL.match(environ["PATH_INFO"]) and resp.status_code == 200:
        resp.set_data(b"\xff\xd8 not a chunk " * 40)
    return resp


@pytest.mark.parametrize("encoding", ["jpeg", "png", "compressed_segmentation"])
def test_encoded_chunks_are_decoded(encoded: Path, encoding: str) -> None:
    info = read_dataset(encoded / encoding)
    with serving(make_app(encoded)) as base:
        good = check(f"{base}/{encoding}", full=True)
    with serving(broken(encoded, _identity_for_chunks, _garbage_chunks)) as base:
        bad = check(f"{base}/{encoding}")
    assert good.findings == []
    assert good.chunks_decoded == sum(s.num_chunks() for s in info.scales)
    assert [f.code for f in bad.findings] == ["chunk-undecodable"]
    assert bad.findings[0].detail.startswith(encoding)


def test_annotation_layer_is_checked_not_refused(tmp_path: Path) -> None:
    """An annotation collection's info is no volume's: its spatial index is read instead."""
    write_annotations({"": point_table(50)}, tmp_path / "ann")
    with serving(make_app(tmp_path)) as base:
        good = check(f"{base}/ann")
    assert good.datasets == [f"{base}/ann"]
    with serving(broken(tmp_path, None, _no_cors)) as base:
        bad = check(f"{base}/ann")
    assert good.findings == []
    assert good.ok
    assert good.requests == 2  # the info and the first cell of the coarsest spatial level
    assert {f.code for f in bad.findings} == {"no-cors"}


def test_redirect_is_followed_and_named(tree: Path) -> None:
    inner = make_app(tree)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path.startswith("/old/"):
            # With CORS: fetch checks CORS on a redirect too, before following it.
            moved = {"Location": "/img/" + path[5:], "Access-Control-Allow-Origin": "*"}
            return Response(status=301, headers=moved)(environ, start_response)
        return inner(environ, start_response)

    with serving(app) as base:
        report = check(f"{base}/old")
    assert [(f.code, f.detail) for f in report.findings] == [("redirect", f"to {base}/img/info")]
    assert report.ok
    assert report.datasets == [f"{base}/img"]


def test_a_file_the_info_names_is_missing(tree: Path, tmp_path: Path) -> None:
    shutil.copytree(tree / "seg", tmp_path / "seg")
    info = json.loads((tmp_path / "seg" / "info").read_text())
    (tmp_path / "seg" / "info").write_text(json.dumps({**info, "segment_properties": "props"}))
    with serving(make_app(tmp_path)) as base:
        report = check(f"{base}/seg")
    assert [(f.code, f.example) for f in report.findings] == [
        ("named-file-missing", f"{base}/seg/props/info")
    ]
