"""The emitted nginx config on a real nginx: ``nginx -t``, the client tier of the contract in
full, and one declaration per strict-tier behaviour nginx does not have."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from precomp_host.core.headers import DEPLOY_CACHE_CONTROL
from precomp_host.deploy import servers
from precomp_host.deploy import site as deploy
from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import ClientTier, ContractServer, StrictProbes
from tests.realservers import (
    NGINX,
    RealServer,
    assert_shard_sent_as_stored,
    require,
    shard_compressed_on_the_fly,
    sharded_tree,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow

#: The emitted location's line that keeps an http-level ``gzip on`` away from dataset files.
GZIP_OFF = "    gzip off;\n"

PREFIX = "/data"

#: What Debian's nginx 1.22 does not do of the strict tier, measured on the contract tree
#: (the README's table of server limits, one row each).
NGINX_LIMITS = {
    "plain-file-for-identity": "gzip_static always sends the .gz, which gunzip inflates for "
    "a client without gzip even when the plain file is stored (chunked, no Content-Length)",
    "x-gzip": "gzip_static does not take x-gzip for gzip: the .gz is inflated by gunzip",
    "range-on-decoded-body": "gunzip's output has no length: a Range (and a 416) on a gz-only "
    "file gets 200 with the whole inflated body",
    "range-on-coded-variant": "gzip_static always sends the .gz, and a Range over it gets the "
    "whole .gz (200); files read with Range (shards) are stored plain",
    "416-content-range": "as range-on-decoded-body: gunzip's output has no length",
    "brotli-decoding": "nginx has no brotli decoder: a .br-only file gets 406 without br",
    "etag-per-variant": "gunzip gives the inflated body the .gz's ETag, weakened (W/), and "
    "a weak comparison validates one with the other",
    "directory-404": "a folder gets nginx's 301 to 'folder/' (then 404), not a 404",
}
#: With libnginx-mod-http-brotli-static 1.0.0~rc-3 loaded (measured with curl: "gzip" gets the
#: .gz, "gzip, deflate, br" the same file inflated, chunked).
NGINX_BROTLI_LIMITS = {
    **NGINX_LIMITS,
    "coded-when-accepted": "brotli_static marks a request that accepts br as not accepting "
    "gzip: a file stored as .gz without .br is sent inflated (identity) to browsers",
}


def start_nginx(tmp: Path, *, brotli: bool, listen_form: bool) -> tuple[RealServer, deploy.Site]:
    root = tmp / "root"
    write_contract_tree(root)
    server = RealServer("nginx", tmp / "nginx", tmp / "site.conf", listen_in_emitted=listen_form,
                        brotli=brotli)  # fmt: skip
    site = deploy.Site.make(root, PREFIX, listen=server.listen if listen_form else None,
                            brotli=brotli)  # fmt: skip
    server.emitted.write_text(servers.render_nginx(site, deploy.survey_site(site)))
    return server.start(), site


def nginx_contract_server(tmp: Path, *, brotli: bool) -> Iterator[ContractServer]:
    require(NGINX, "nginx")
    # The brotli run also covers the complete server-block form (--listen).
    nginx, site = start_nginx(tmp, brotli=brotli, listen_form=brotli)
    try:
        yield ContractServer(
            nginx.base_url + PREFIX,
            tmp / "root",
            name=f"nginx{'+brotli' if brotli else ''}",
            encodings=frozenset(servers.served_encodings(site, "nginx")),
            cache_control=DEPLOY_CACHE_CONTROL,
        )
    finally:
        nginx.stop()


@pytest.fixture(scope="class")
def contract_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContractServer]:
    brotli: bool = request.cls.BROTLI
    yield from nginx_contract_server(tmp_path_factory.mktemp("nginx"), brotli=brotli)


class TestNginxContract(ClientTier, StrictProbes):
    """The snippet form (inside a server block) without brotli."""

    LIMITS = NGINX_LIMITS
    BROTLI = False


class TestNginxBrotliContract(ClientTier, StrictProbes):
    """The complete server-block form (--listen) with brotli_static."""

    LIMITS = NGINX_BROTLI_LIMITS
    BROTLI = True


@pytest.mark.parametrize("emitted", [True, False], ids=["emitted", "without-gzip-off"])
def test_shards_are_never_compressed_on_the_fly(emitted: bool) -> None:
    """On an nginx whose http block gzips every type, the emitted config still sends shards
    as stored; without its ``gzip off`` the same server compresses them (the control)."""
    require(NGINX, "nginx")
    base = sharded_tree()
    try:
        root = base / "root"
        server = RealServer("nginx", base / "nginx", base / "site.conf", compress_all=True)
        site = deploy.Site.make(root, PREFIX)
        text = servers.render_nginx(site, deploy.survey_site(site))
        assert GZIP_OFF in text
        server.emitted.write_text(text if emitted else text.replace(GZIP_OFF, ""))
        with server:
            if emitted:
                assert_shard_sent_as_stored(server.base_url + PREFIX, root)
            else:
                assert shard_compressed_on_the_fly(server.base_url + PREFIX, root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
