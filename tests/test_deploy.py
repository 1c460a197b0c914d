"""Deployment files: rendering, one source of truth, ``nginx -t``/``apache2 -t``, the examples."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from precomp_host.core import encodings, headers, layout, media_types, model
from precomp_host.core.templates import templates_dir
from precomp_host.deploy import site as deploy
from tests.contract.fixtures import write_contract_tree
from tests.realservers import APACHE, NGINX, RealServer, free_port, require

REPO = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATES = ["nginx.conf.j2", "apache-vhost.conf.j2", "apache-htaccess.conf.j2",
                    "apache-common.j2"]  # fmt: skip


def test_examples_in_deploy_folder_are_current() -> None:
    """deploy/*/ holds what the templates render (regenerate: deploy/render_examples.py)."""
    stale = [rel for rel, text in deploy.example_files().items()
             if not (REPO / "deploy" / rel).is_file()
             or (REPO / "deploy" / rel).read_text() != text]  # fmt: skip
    assert not stale, f"run PYTHONPATH=. python deploy/render_examples.py; stale: {stale}"


@pytest.mark.parametrize("name", CONFIG_TEMPLATES)
def test_templates_type_nothing_twice(name: str) -> None:
    """Patterns, suffixes, media types and headers come from the core, never the template."""
    text = (templates_dir() / name).read_text()
    typed = [
        layout.URL_PATTERN, layout.MESH_MANIFEST_PATTERN, model.RANGE_PATTERN, r"\d+-\d+",
        *(e.suffix for e in encodings.ENCODINGS.values()),
        media_types.JSON, media_types.OCTET_STREAM,
        *headers.cors_headers(), *headers.preflight_headers(), ", ".join(headers.EXPOSE_HEADERS),
        headers.DEPLOY_CACHE_CONTROL, "max-age",
    ]  # fmt: skip
    assert [t for t in typed if t in text] == []


def test_rendered_nginx_uses_the_core_values() -> None:
    text = deploy.render_nginx(deploy.Site.make("/srv/p", "/data", brotli=True))
    assert f'rewrite "{layout.URL_PATTERN}" "{layout.URL_REPLACEMENT}" last;' in text
    for name, value in headers.cors_headers().items():
        assert f'add_header {name} "{value}" always;' in text
    for _, regex, media in media_types.RULES:
        assert f'location ~ "{regex}" {{\n        default_type "{media}";' in text
    assert "location ^~ /.precomp/br/data/" in text
    plain = deploy.render_nginx(deploy.Site.make("/srv/p", "/data"))
    assert "/.precomp/br/" not in plain
    assert "server {" not in plain
    assert "listen 127.0.0.1:9;" in deploy.render_nginx(
        deploy.Site.make("/srv/p", "", listen="127.0.0.1:9"))  # fmt: skip


def test_unsafe_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="unsafe"):
        deploy.Site.make("/srv/my data", "/data")
    with pytest.raises(ValueError, match="unsafe"):
        deploy.Site.make("/srv/p", '/da"ta')


_CODINGS = st.sampled_from(["gzip", "br", "identity", "deflate", "*", "x-gzip", "GZip", "BR"])
_QS = st.sampled_from(["", ";q=0", ";q=0.0", ";q=0.001", ";q=0.5", ";q=1", " ; q=1.000", ";q=0."])


@given(items=st.lists(st.tuples(_CODINGS, _QS), max_size=5),
       sep=st.sampled_from([", ", ",", " ,  "]))  # fmt: skip
@settings(max_examples=300)
def test_accept_regex_agrees_with_choose(items: list[tuple[str, str]], sep: str) -> None:
    """The servers' Accept-Encoding pattern accepts a coding exactly when choose() would."""
    header = sep.join(c + q for c, q in items)
    for name in encodings.ENCODINGS:
        # One variant and a larger identity: choose() sends it iff the client accepts it.
        expected = encodings.choose(header, {name: 1, None: 10}) == name
        assert bool(re.search(deploy.accept_regex(name), header, re.I)) == expected, header


def test_write_files_and_index(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_contract_tree(root)
    out = tmp_path / "out"
    written = deploy.write_files("apache", root, out, "/data", listen="127.0.0.1:8080")
    assert {p.name for p in written} == {"apache.conf", ".htaccess", "index.html"}
    page = (root / "index.html").read_text()
    for name in ("img", "flat", "ngs", "seg"):
        assert f'data-path="{name}"' in page
    assert 'data-path="seg/mesh"' not in page  # a dataset's own folders are not datasets
    assert {p.name for p in deploy.write_files("s3", root, out, index=False)} == {
        "cors.json", "bucket-policy.json"}  # fmt: skip
    gcs = deploy.write_files("gcs", root, out, "/data", bucket="lab", index=False)
    script = (out / "gcloud-upload.sh").read_text()
    assert {p.name for p in gcs} == {"cors.json", "gcloud-upload.sh", "gcs-stage"}
    assert "--content-encoding=gzip" in script
    assert "gs://lab/data/" in script
    staged = {p.relative_to(out / "gcs-stage").as_posix().split("/", 1)[1]
              for p in (out / "gcs-stage").rglob("*") if p.is_file()}  # fmt: skip
    assert "img/8_8_8/16-32_0-16_0-16" in staged
    assert "seg/mesh/2:0" in staged


# -- real servers accept every emitted config -------------------------------------------------


def _site(root: Path, listen: str | None, brotli: bool = False) -> deploy.Site:
    return deploy.Site.make(root, "/data", listen=listen, brotli=brotli)


@pytest.mark.slow
@pytest.mark.parametrize("brotli", [False, True], ids=["plain", "brotli"])
@pytest.mark.parametrize("listen_form", [False, True], ids=["snippet", "server"])
@pytest.mark.parametrize("prefix", ["/data", ""], ids=["prefix", "root"])
def test_nginx_t_accepts(tmp_path: Path, brotli: bool, listen_form: bool, prefix: str) -> None:
    require(NGINX, "nginx")
    server = RealServer("nginx", tmp_path / "w", tmp_path / "site.conf",
                        listen_in_emitted=listen_form)  # fmt: skip
    site = deploy.Site.make(tmp_path, prefix, listen=server.listen if listen_form else None,
                            brotli=brotli)  # fmt: skip
    server.emitted.write_text(deploy.render_nginx(site))
    checked = server.check()
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vhost", "vhost-include", "htaccess"])
def test_apache2_t_accepts(tmp_path: Path, form: str) -> None:
    require(APACHE, "apache2")
    server = RealServer("apache", tmp_path / "w", tmp_path / "site.conf",
                        listen_in_emitted=form == "vhost")  # fmt: skip
    site = _site(tmp_path, server.listen if form == "vhost" else None)
    if form == "htaccess":
        # apache2 -t does not read .htaccess files: wrap it as the <Directory> block it acts as.
        body = deploy.render_apache(site, "htaccess")
        server.emitted.write_text(f'<Directory "{tmp_path}">\n{body}</Directory>\n')
    else:
        server.emitted.write_text(deploy.render_apache(site, "vhost"))
    checked = server.check()
    assert checked.returncode == 0, checked.stderr


# -- deploy/<server>/run.sh -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_run_script_serves_a_folder(kind: str) -> None:
    require(NGINX if kind == "nginx" else APACHE, kind)
    base = Path(tempfile.mkdtemp(prefix="precomp-run-"))
    os.chmod(base, 0o755)  # Apache's workers (www-data) must read the data
    port = free_port()
    try:
        write_contract_tree(base / "root")
        env = {**os.environ, "PYTHON": sys.executable}
        proc = subprocess.Popen([str(REPO / "deploy" / kind / "run.sh"), str(base / "root"),
                                 str(port)], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/data/img/info"
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        assert resp.headers["Content-Type"] == media_types.JSON
                        assert b'"8_8_8"' in resp.read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        err = proc.stderr.read().decode() if proc.stderr else ""
                        pytest.fail(f"run.sh did not serve {url}: {err}")
                    time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/", timeout=2) as resp:
                assert b"open in Neuroglancer" in resp.read()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
            if proc.stderr:
                proc.stderr.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- a dataset built by `precomp-host build`, through the real servers ------------------------


def _fetch(url: str, accept: str | None) -> tuple[int, dict[str, str], bytes]:
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.putrequest("GET", parts.path, skip_accept_encoding=True)
        if accept is not None:
            conn.putheader("Accept-Encoding", accept)
        conn.endheaders()
        resp = conn.getresponse()
        try:
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            resp.close()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["nginx", "nginx-brotli", "apache-vhost", "apache-htaccess"])
def test_built_dataset_through_real_servers(form: str) -> None:
    """Every chunk of a fresh build, by its flat URL, decodes to the bytes the build wrote."""
    import numpy as np

    from precomp_host.core.model import Dataset

    kind = form.split("-")[0]
    require(NGINX if kind == "nginx" else APACHE, kind)
    base = Path(tempfile.mkdtemp(prefix="precomp-built-"))
    os.chmod(base, 0o755)
    try:
        volume = (np.arange(40 * 50 * 70) % 251).astype("uint8").reshape(40, 50, 70)
        np.save(base / "vol.npy", volume)
        root = base / "root"
        subprocess.run([sys.executable, "-m", "precomp_host", "build", str(base / "vol.npy"),
                        str(root / "vol"), "--resolution", "8", "8", "8", "--chunk-size", "32",
                        "-q"], check=True, cwd=REPO, timeout=120)  # fmt: skip
        server = RealServer(kind, base / "w", base / "site.conf", listen_in_emitted=True)
        site = deploy.Site.make(root, "/data", listen=server.listen, brotli=form == "nginx-brotli")
        if form == "apache-htaccess":
            (root / ".htaccess").write_text(deploy.render_apache(site, "htaccess"))
            server.emitted.write_text(
                f'<VirtualHost {server.listen}>\nAlias "/data" "{root}"\n<Directory "{root}">\n'
                "Options FollowSymLinks\nAllowOverride FileInfo\nRequire all granted\n"
                "</Directory>\n</VirtualHost>\n"
            )
        elif kind == "apache":
            server.emitted.write_text(deploy.render_apache(site, "vhost"))
        else:
            server.emitted.write_text(deploy.render_nginx(site))
        dataset = Dataset.from_json(__import__("json").loads((root / "vol" / "info").read_text()))
        accepts: list[str | None] = ["gzip, deflate, br, zstd", "gzip, deflate"]
        if form != "apache-htaccess":
            accepts.append(None)  # identity: decoded by the server
        with server:
            status, hdrs, body = _fetch(f"{server.base_url}/data/vol/info", "gzip")
            assert status == 200
            assert hdrs["content-type"] == media_types.JSON
            seen: dict[str | None, set[str | None]] = {a: set() for a in accepts}
            for scale in dataset.scales:
                for key in scale.iter_chunk_keys():
                    stored = root / "vol" / layout.NESTED.path_for(key)
                    gz = stored.with_name(stored.name + ".gz")
                    expected = (stored.read_bytes() if stored.exists()
                                else encodings.GZIP.decompress(gz.read_bytes()))  # fmt: skip
                    # The build stores .gz, and .br where smaller: a browser offering br gets
                    # the .br wherever there is one (and the server sends br), else gzip.
                    has_br = stored.with_name(stored.name + ".br").exists()
                    best = "br" if has_br and form != "nginx" else "gzip"
                    for accept in accepts:
                        url = f"{server.base_url}/data/vol/{layout.FLAT.path_for(key)}"
                        status, hdrs, body = _fetch(url, accept)
                        assert status == 200, (url, accept, status)
                        coding = hdrs.get("content-encoding")
                        if coding is not None:
                            assert accept is not None
                            assert coding in accept
                            body = encodings.ENCODINGS[coding].decompress(body)
                        assert body == expected, (url, accept)
                        if accept == "gzip, deflate, br, zstd":
                            assert coding == best, (url, coding)
                        seen[accept].add(coding)
        assert seen["gzip, deflate, br, zstd"] >= ({"br"} if form != "nginx" else {"gzip"})
        assert seen["gzip, deflate"] == {"gzip"}
        assert seen.get(None, {None}) == {None}
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("rel", [rel for rel in deploy.example_files()
                                 if rel.startswith(("nginx/", "apache/"))])  # fmt: skip
def test_examples_pass_the_server_check(tmp_path: Path, rel: str) -> None:
    kind = "nginx" if rel.startswith("nginx/") else "apache"
    require(NGINX if kind == "nginx" else APACHE, kind)
    text = (REPO / "deploy" / rel).read_text()
    if rel == "apache/htaccess":
        text = f'<Directory "{deploy.EXAMPLE_SITE["root"]}">\n{text}</Directory>\n'
    own_server = not rel.endswith(("snippet.conf", "htaccess"))
    server = RealServer(kind, tmp_path / "w", tmp_path / "site.conf", listen_in_emitted=own_server)
    server.emitted.write_text(text)
    checked = server.check()
    assert checked.returncode == 0, checked.stderr


def test_next_steps_name_what_the_configs_need(tmp_path: Path) -> None:
    server = deploy.next_steps("nginx", tmp_path / "out", tmp_path, "/data", "127.0.0.1:8080", True)
    assert any("libnginx-mod-http-brotli-static" in step for step in server)
    assert any(f"sudo cp {tmp_path / 'out' / 'nginx.conf'} /etc/nginx/conf.d/" in s for s in server)
    assert server[-1] == "then open http://<this host>:8080/data/ (the index)"
    apache = deploy.next_steps("apache", tmp_path / "out", tmp_path, "data", "*:80")
    assert "a2enmod rewrite headers deflate buffer mime " in apache[0]
    assert apache[-1] == "then open http://<this host>/data/ (the index)"
    # The modules named are the ones each rendered form says it needs.
    site = deploy.Site.make(tmp_path, "/data")
    for form, modules in (("vhost", deploy.APACHE_VHOST_MODULES),
                          ("htaccess", deploy.APACHE_HTACCESS_MODULES)):  # fmt: skip
        assert f"a2enmod {' '.join(modules)}" in deploy.render_apache(site, form)  # type: ignore[arg-type]
    assert deploy.next_steps("s3", tmp_path, tmp_path) == []
