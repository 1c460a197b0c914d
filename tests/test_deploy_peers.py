"""The emitted configs over the trees the peers write (issue 12): cloud-volume with
``compress="br"`` and ``"gzip"``, neuroglancer-scripts with gzip, flat chunk names, every chunk
stored only compressed. Every chunk, by its URL, through real nginx (with and without the brotli
module) and Apache (vhost and ``.htaccess``): a browser gets a coding it accepts that decodes to
the stored data; a client without any gets the decoded bytes or a 406, never a 404.

The trees are made by the peers themselves: in this venv with the ``test-peers`` extra, or in
``PEERS_PYTHON`` / ``benchmarks/.venv-peers``; without them this module is skipped, and the
contract tree's ``ngs-gz``, ``flat-gz`` and ``img-br`` resources (the same layouts) still run
everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from precomp_host.core.encodings import BY_SUFFIX, ENCODINGS
from precomp_host.deploy import site as deploy
from precomp_host.deploy import survey
from tests.contract.suite import ContractServer, fetch
from tests.realservers import APACHE, NGINX, RealServer, require
from tests.test_deploy_apache import htaccess_host

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _peers_python() -> Path:
    """``PEERS_PYTHON``, else this Python with the ``test-peers`` extra, else the benchmarks'."""
    if "PEERS_PYTHON" in os.environ:
        return Path(os.environ["PEERS_PYTHON"])
    if all(importlib.util.find_spec(m) for m in ("cloudvolume", "neuroglancer_scripts")):
        return Path(sys.executable)
    return REPO / "benchmarks/.venv-peers/bin/python"


PEERS_PYTHON = _peers_python()
PREFIX = "/data"
BROWSER = "gzip, deflate, br, zstd"


@pytest.fixture(scope="module")
def peers_root() -> Iterator[Path]:
    if not PEERS_PYTHON.exists():
        pytest.skip(f"!!! SKIPPED: no peers venv at {PEERS_PYTHON} (set PEERS_PYTHON)")
    base = Path(tempfile.mkdtemp(prefix="precomp-peers-"))
    os.chmod(base, 0o755)  # Apache's workers (www-data) read the trees
    try:
        subprocess.run([str(PEERS_PYTHON), str(REPO / "tests/peers/make_trees.py"),
                        str(base / "root")], check=True, timeout=300)  # fmt: skip
        for path in (base / "root").rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield base / "root"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stored_chunks(root: Path) -> list[tuple[str, str, bytes]]:
    """(URL, coding, decoded bytes) of every chunk the peers wrote."""
    out = []
    for path in sorted(root.glob("*/8_8_8/*")):
        enc = BY_SUFFIX[path.suffix]
        url = path.relative_to(root).as_posix().removesuffix(enc.suffix)
        out.append((url, enc.name, enc.decompress(path.read_bytes())))
    return out


@pytest.mark.parametrize("form", ["nginx", "nginx-brotli", "apache-vhost", "apache-htaccess"])
def test_peer_trees_through_real_servers(peers_root: Path, form: str) -> None:
    kind = form.split("-")[0]
    require(NGINX if kind == "nginx" else APACHE, kind)
    brotli = form == "nginx-brotli"
    site = deploy.Site.make(peers_root, PREFIX, brotli=brotli)
    tree = deploy.survey_site(site)
    assert (tree.flat, tree.nested, tree.br_only, tree.gz_only) == (True, False, 8, 16)
    errors = [f.message for f in survey.findings(kind, tree, brotli=brotli) if f.error]  # type: ignore[arg-type]
    # nginx without the brotli module refuses the br-only tree before writing anything.
    assert bool(errors) == (form == "nginx"), errors
    work = Path(tempfile.mkdtemp(prefix="precomp-peers-srv-"))
    os.chmod(work, 0o755)
    try:
        server = RealServer(kind, work / "w", work / "site.conf", brotli=brotli)
        files = deploy.render(kind, site)  # type: ignore[arg-type]
        if form == "apache-htaccess":
            (peers_root / ".htaccess").write_text(files[".htaccess"])
            server.emitted.write_text(htaccess_host(peers_root))
        else:
            server.emitted.write_text(files["nginx.conf" if kind == "nginx" else "apache.conf"])
        with server:
            client = ContractServer(server.base_url + PREFIX, peers_root)
            for url, coding, data in stored_chunks(peers_root):
                sent = coding in ("gzip",) or brotli or kind == "apache"
                for accept in (BROWSER, None):
                    reply = fetch(client, "GET", url, {"Accept-Encoding": accept})
                    assert reply.header("Access-Control-Allow-Origin") == "*"
                    if not sent:  # .br-only behind an nginx without the module
                        assert reply.status == 406, (url, reply.status)
                        continue
                    if reply.status == 406:  # nothing the client takes, no decoder
                        assert accept is None, (url, accept)
                        continue
                    assert reply.status == 200, (url, accept, reply.status)
                    got = reply.header("Content-Encoding")
                    assert got is None or (accept is not None and got in accept)
                    body = reply.body if got is None else ENCODINGS[got].decompress(reply.body)
                    assert body == data, (url, accept)
            info = fetch(client, "GET", "cv-br/info", {"Accept-Encoding": BROWSER})
            assert info.status == 200
            assert info.media_type() == "application/json"
    finally:
        (peers_root / ".htaccess").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
