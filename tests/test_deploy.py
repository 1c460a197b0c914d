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
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from precomp_host.core import encodings, headers, layout, media_types, model
from precomp_host.core.templates import templates_dir
from precomp_host.deploy import servers, survey
from precomp_host.deploy import site as deploy
from precomp_host.deploy.survey import TreeSurvey
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


#: Flat-only tree without legacy manifests: neither fallback is needed.
FLAT_TREE = TreeSurvey(datasets=1, flat=True)


def test_rendered_nginx_uses_the_core_values() -> None:
    text = servers.render_nginx(deploy.Site.make("/srv/p", "/data", brotli=True))
    assert f'rewrite "{layout.URL_PATTERN}" "{layout.URL_REPLACEMENT}" last;' in text
    for name, value in headers.cors_headers().items():
        assert f'add_header {name} "{value}" always;' in text
    assert f"default_type {media_types.JSON};" in text
    assert "brotli_static on;" in text
    plain = servers.render_nginx(deploy.Site.make("/srv/p", "/data"))
    assert "brotli_static" not in plain
    assert not any(line.startswith("server {") for line in plain.splitlines())
    assert "listen 127.0.0.1:9 default_server;" in servers.render_nginx(
        deploy.Site.make("/srv/p", "", listen="127.0.0.1:9"))  # fmt: skip


@pytest.mark.parametrize("form", ["nginx", "vhost", "htaccess"])
def test_fallbacks_only_when_the_tree_needs_them(form: str) -> None:
    """The flat->nested rewrite and the legacy manifest names are emitted for a tree that has
    them (or an unknown one), not for a flat tree with ``:`` manifests."""
    site = deploy.Site.make("/srv/p", "/data")

    def render(tree: TreeSurvey) -> str:
        if form == "nginx":
            return servers.render_nginx(site, tree)
        return servers.render_apache(site, form, tree)  # type: ignore[arg-type]

    full, flat = render(TreeSurvey.unknown()), render(FLAT_TREE)
    assert layout.URL_REPLACEMENT in full
    assert layout.URL_REPLACEMENT not in flat
    assert layout.MESH_MANIFEST_PATTERN in full
    assert layout.MESH_MANIFEST_PATTERN not in flat.replace(
        media_types.RULES[2][1], "")  # the JSON type rule may name it  # fmt: skip
    assert len(flat.splitlines()) < len(full.splitlines())


@pytest.mark.parametrize("rel", ["nginx/precomputed.conf", "nginx/precomputed-snippet.conf",
                                 "apache/precomputed.conf", "apache/htaccess"])  # fmt: skip
def test_examples_are_readable(rel: str) -> None:
    """Issue 12's targets, on the rendered examples in deploy/ (one dataset folder, every
    fallback): nginx <= 120 lines, Apache vhost <= 100, .htaccess <= 80; a comment before
    every block; Accept-Encoding read by the server's own module or by a token match."""
    limit = {"nginx": 120, "apache/precomputed.conf": 100, "apache/htaccess": 80}
    text = (REPO / "deploy" / rel).read_text()
    lines = text.splitlines()
    assert len(lines) <= limit.get(rel.split("/")[0], limit.get(rel, 0)), len(lines)
    blocks = ("location ", "server ", "<VirtualHost", "<Location", "<Directory", "<Files", "<If")
    for i, line in enumerate(lines):
        if line.strip().startswith(blocks):
            assert lines[i - 1].strip().startswith("#"), f"no comment before: {line}"
    accept = [line for line in lines if "accept-encoding" in line.lower() and
              not line.lstrip().startswith("#") and "Vary" not in line]  # fmt: skip
    if rel.startswith("nginx"):
        assert accept == []
    else:
        for line in accept:
            assert re.search(r'"\\b[a-z]+\\b" \[NC\]$', line), line


def test_unsafe_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="unsafe"):
        deploy.Site.make("/srv/my data", "/data")
    with pytest.raises(ValueError, match="unsafe"):
        deploy.Site.make("/srv/p", '/da"ta')


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
    rows = {row.split('"', 1)[0]: row for row in page.split('<tr data-path="')[1:]}
    assert "(sharded)" in rows["seg"]  # its one scale is sharded
    assert "(sharded)" not in rows["img"]
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


def test_index_lists_annotation_layers_with_their_dataset(tmp_path: Path) -> None:
    from precomp_host.build.annotation_writer import write_annotations
    from tests.test_annotations import point_table

    root = tmp_path / "root"
    write_contract_tree(root)
    (root / "img" / "annotations" / "x1y1z1").mkdir(parents=True)  # a NeuroTrALE store beside
    (root / "img" / "annotations" / "x1y1z1" / "z-0001.json").write_text("[]")
    write_annotations({"syn": point_table(5)}, root / "img" / "annotations")
    write_annotations({"": point_table(5)}, root / "loose")
    page = deploy.render_index(deploy.Site.make(root))
    row = page.split('data-path="img"', 1)[1].split("</tr>", 1)[0]
    assert '<a href="img/annotations/syn/info">syn</a>' in row
    link = urllib.parse.unquote(row.split('class="neuroglancer" href="', 1)[1].split('"')[0])
    assert "PRECOMP_PAGE_BASE/img/annotations/syn" in link.replace("&#34;", '"')
    # A collection outside any dataset is a row of its own, opened alone.
    loose = page.split('data-path="loose"', 1)[1].split("</tr>", 1)[0]
    assert "<td>annotation</td>" in loose


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
                        listen_in_emitted=listen_form, brotli=brotli)  # fmt: skip
    site = deploy.Site.make(tmp_path, prefix, listen=server.listen if listen_form else None,
                            brotli=brotli)  # fmt: skip
    server.emitted.write_text(servers.render_nginx(site))
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
        body = servers.render_apache(site, "htaccess")
        server.emitted.write_text(f'<Directory "{tmp_path}">\n{body}</Directory>\n')
    else:
        server.emitted.write_text(servers.render_apache(site, "vhost"))
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
        # As the README runs it: from the repository, with the .venv its first command made.
        proc = subprocess.Popen([str(REPO / "deploy" / kind / "run.sh"), str(base / "root"),
                                 str(port)], cwd=REPO, start_new_session=True,
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
@pytest.mark.parametrize("build", ["default", "keep-identity"])
@pytest.mark.parametrize("form", ["nginx", "nginx-brotli", "apache-vhost", "apache-htaccess"])
def test_built_dataset_through_real_servers(form: str, build: str) -> None:
    """Every chunk of a fresh build (``.gz`` + ``.br``, or with ``--keep-identity`` the plain
    file too), by its flat URL, decodes to the bytes the build wrote."""
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
                        "-q", *(["--keep-identity"] if build == "keep-identity" else [])],
                       check=True, cwd=REPO, timeout=120)  # fmt: skip
        server = RealServer(kind, base / "w", base / "site.conf", listen_in_emitted=True,
                            brotli=form == "nginx-brotli")  # fmt: skip
        site = deploy.Site.make(root, "/data", listen=server.listen, brotli=form == "nginx-brotli")
        if form == "apache-htaccess":
            (root / ".htaccess").write_text(deploy.render("apache", site)[".htaccess"])
            server.emitted.write_text(
                f'<VirtualHost {server.listen}>\nAlias "/data" "{root}"\n<Directory "{root}">\n'
                "Options FollowSymLinks\nAllowOverride FileInfo\nRequire all granted\n"
                "</Directory>\n</VirtualHost>\n"
            )
        elif kind == "apache":
            server.emitted.write_text(deploy.render("apache", site)["apache.conf"])
        else:
            server.emitted.write_text(deploy.render("nginx", site)["nginx.conf"])
        dataset = Dataset.from_json(__import__("json").loads((root / "vol" / "info").read_text()))
        accepts: list[str | None] = ["gzip, deflate, br, zstd", "gzip, deflate"]
        if form != "apache-htaccess" or build == "keep-identity":
            accepts.append(None)  # identity: the plain file, or decoded by the server
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
    server = RealServer(kind, tmp_path / "w", tmp_path / "site.conf", listen_in_emitted=own_server,
                        brotli="brotli_static" in text)  # fmt: skip
    server.emitted.write_text(text)
    checked = server.check()
    assert checked.returncode == 0, checked.stderr


def test_next_steps_name_what_the_configs_need(tmp_path: Path) -> None:
    out = tmp_path / "out"
    root_host = deploy.Host(root=True, systemd=False)
    nginx = deploy.next_steps("nginx", out, tmp_path, "/data", "*:80", True, root_host)
    assert nginx == [
        "apt-get install libnginx-mod-http-brotli-static  # for --brotli",
        f"cp {out / 'nginx.conf'} /etc/nginx/conf.d/precomputed.conf",
        f"rm {deploy.NGINX_STOCK_SITE}  # Debian's stock site is port 80's default_server too: "
        "nginx -t fails while both are there",
        "nginx -t && nginx -s reload  # or: nginx, to start it",
        "# then open http://<this host>/data/ (the index)",
    ]
    user = deploy.Host(root=False, systemd=True)
    on_8080 = deploy.next_steps("nginx", out, tmp_path, "/data", "127.0.0.1:8080", False, user)
    assert on_8080[-2] == "sudo nginx -t && sudo systemctl reload nginx"
    assert not any("rm " in step for step in on_8080)  # no stock site on 8080
    apache = deploy.next_steps("apache", out, tmp_path, "data", "*:80", host=root_host)
    assert f"a2enmod {' '.join(servers.APACHE_VHOST_MODULES)} && a2ensite precomputed" in apache
    assert any(step.startswith("a2dissite 000-default  #") for step in apache)
    assert "apache2ctl configtest && apache2ctl graceful" in apache
    assert not any("sudo" in step or "systemctl" in step for step in apache + nginx)
    apache_8080 = deploy.next_steps("apache", out, tmp_path, "data", "*:8080", host=user)
    assert any(step.startswith("echo 'Listen 8080' | sudo tee -a") for step in apache_8080)
    # The modules named are the ones each rendered form says it needs.
    site = deploy.Site.make(tmp_path, "/data")
    for form, modules in (("vhost", servers.APACHE_VHOST_MODULES),
                          ("htaccess", servers.APACHE_HTACCESS_MODULES)):  # fmt: skip
        assert f"a2enmod {' '.join(modules)}" in servers.render_apache(site, form)  # type: ignore[arg-type]
    assert deploy.next_steps("s3", tmp_path, tmp_path) == []


def test_survey_reads_the_contract_tree(tmp_path: Path) -> None:
    write_contract_tree(tmp_path / "root")
    tree = deploy.survey_site(deploy.Site.make(tmp_path / "root"))
    assert (tree.datasets, tree.flat, tree.nested, tree.shards) == (5, True, True, True)
    assert tree.legacy_manifests
    assert sorted(tree.symlinks) == ["escape-dir", "img/escape-file"]


def _tree(tmp_path: Path, suffixes: tuple[str, ...]) -> Path:
    """A flat one-chunk dataset stored with ``suffixes`` (as the peers write them)."""
    root = tmp_path / "root"
    write_contract_tree(tmp_path / "c")
    (root / "flat" / "4_4_4").mkdir(parents=True)
    (root / "flat" / "info").write_bytes((tmp_path / "c" / "flat" / "info").read_bytes())
    for suffix in suffixes:
        (root / "flat" / "4_4_4" / f"0-16_0-16_0-16{suffix}").write_bytes(b"x")
    return root


def test_findings_say_what_the_target_will_do(tmp_path: Path) -> None:
    br_only = survey.survey(_tree(tmp_path, (".br",)))
    assert (br_only.br_only, br_only.flat, br_only.nested) == (1, True, False)
    errors = [f for f in survey.findings("nginx", br_only) if f.error]
    assert len(errors) == 1
    assert "--brotli" in errors[0].message
    assert not any(f.error for f in survey.findings("nginx", br_only, brotli=True))
    assert any("406" in f.message for f in survey.findings("apache", br_only))
    shutil.rmtree(tmp_path / "root")
    gz_only = survey.survey(_tree(tmp_path, (".gz",)))
    assert any(".htaccess" in f.message and "406" in f.message
               for f in survey.findings("apache", gz_only))  # fmt: skip
    assert not any(".htaccess" in f.message for f in survey.findings("nginx", gz_only))


def test_options_that_do_not_apply_are_refused() -> None:
    assert survey.refused_options("s3", {"brotli": True, "listen": None}) == [
        "--brotli does not apply to s3 (only to nginx)"]  # fmt: skip
    assert survey.refused_options("apache", {"brotli": True}) != []
    assert survey.refused_options("nginx", {"brotli": True, "listen": "*:80"}) == []
    assert survey.refused_options("nginx", {"bucket": "b", "public": True}) != []


def test_deploy_command_reads_the_tree_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .br-only tree for nginx without --brotli, or an option the target ignores: one
    line, exit 2, nothing written."""
    from precomp_host.cli import main

    root = _tree(tmp_path, (".br",))
    out = tmp_path / "out"
    assert main(["deploy", "nginx", str(root), "--out", str(out)]) == 2
    assert "--brotli" in capsys.readouterr().err
    assert not out.exists()
    assert main(["deploy", "s3", str(root), "--out", str(out), "--brotli"]) == 2
    assert capsys.readouterr().err.strip().endswith("--brotli does not apply to s3 (only to nginx)")
    assert main(["deploy", "nginx", str(root), "--out", str(out), "--brotli"]) == 0
    printed = capsys.readouterr().out
    assert "1 dataset(s), flat chunk names" in printed
    assert "only as .br: clients without br get 406" in printed
