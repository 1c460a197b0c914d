"""The emitted Apache configs on a real Apache: ``apache2 -t``, the client tier of the contract
in full, and one declaration per strict-tier behaviour each form does not have."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from precomp_host.core.headers import DEPLOY_CACHE_CONTROL
from precomp_host.deploy import servers
from precomp_host.deploy import site as deploy
from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import ClientTier, ContractServer, StrictProbes
from tests.realservers import (
    APACHE,
    RealServer,
    assert_shard_sent_as_stored,
    require,
    shard_compressed_on_the_fly,
    sharded_tree,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

PREFIX = "/data"

#: What Debian's Apache 2.4 does not do of the strict tier, measured on the contract tree,
#: per form (the README's table of server limits, one row each).
COMMON_LIMITS = {
    "q-values": "the variant is chosen with a token match on Accept-Encoding (mod_deflate's "
    "documented recipe): 'br;q=0' still gets the .br",
    "brotli-decoding": "Apache has no brotli decoder: a .br-only file gets 406 without br",
}
APACHE_LIMITS = {
    "vhost": {
        **COMMON_LIMITS,
        "416-content-range": "Apache's own 416 names no length for an inflated body",
    },
    "htaccess": {
        **COMMON_LIMITS,
        "range-on-decoded-body": "INFLATE does not run after a per-directory rewrite: a "
        "gz-only file gets 406 for a client without gzip (use the vhost form)",
        "416-content-range": "as range-on-decoded-body (406)",
        "methods-405": "the 406 of a gz-only file comes from a rewrite, which runs before the "
        "method check: a PUT gets 406, not 405",
        "directory-404": "mod_dir redirects a folder to 'folder/' (DirectorySlash is not a "
        "FileInfo override)",
    },
}


def htaccess_host(root: Path) -> str:
    """What a shared host's admin typically grants: the folder aliased, FileInfo overrides.

    The rest of that host is an empty site (404s), as our own vhost form makes it.
    """
    empty = root.parent / "empty"
    empty.mkdir(exist_ok=True)
    return (
        f'DocumentRoot "{empty}"\n<Directory "{empty}">\n    Require all granted\n</Directory>\n'
        f'Alias "{PREFIX}" "{root}"\n<Directory "{root}">\n'
        "    Options FollowSymLinks\n    AllowOverride FileInfo\n    Require all granted\n"
        "</Directory>\n"
    )


@pytest.fixture(scope="class")
def contract_server(request: pytest.FixtureRequest) -> Iterator[ContractServer]:
    require(APACHE, "apache2")
    form: str = request.cls.FORM
    # Apache's workers run as www-data: the tree lives in a world-readable folder.
    base = Path(tempfile.mkdtemp(prefix="precomp-apache-"))
    os.chmod(base, 0o755)
    try:
        root = base / "root"
        write_contract_tree(root)
        server = RealServer("apache", base / "apache", base / "site.conf",
                            listen_in_emitted=form == "vhost")  # fmt: skip
        site = deploy.Site.make(root, PREFIX, listen=server.listen if form == "vhost" else None)
        tree = deploy.survey_site(site)
        if form == "vhost":
            server.emitted.write_text(servers.render_apache(site, "vhost", tree))
        else:
            (root / ".htaccess").write_text(servers.render_apache(site, "htaccess", tree))
            server.emitted.write_text(htaccess_host(root))
        server.start()
        try:
            yield ContractServer(
                server.base_url + PREFIX,
                root,
                name=f"apache-{form}",
                encodings=frozenset(servers.served_encodings(site, "apache")),
                cache_control=DEPLOY_CACHE_CONTROL,
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


class TestApacheVhostContract(ClientTier, StrictProbes):
    LIMITS = APACHE_LIMITS["vhost"]
    FORM = "vhost"


class TestApacheHtaccessContract(ClientTier, StrictProbes):
    LIMITS = APACHE_LIMITS["htaccess"]
    FORM = "htaccess"


@pytest.mark.parametrize("emitted", [True, False], ids=["emitted", "without-no-gzip"])
@pytest.mark.parametrize("form", ["vhost", "htaccess"])
def test_shards_are_never_compressed_on_the_fly(form: str, emitted: bool) -> None:
    """On an Apache that deflates every dataset type server-wide, the emitted config still
    sends shards as stored; without its no-gzip rule the same server compresses them."""
    require(APACHE, "apache2")
    base = sharded_tree()
    try:
        root = base / "root"
        server = RealServer("apache", base / "apache", base / "site.conf",
                            listen_in_emitted=form == "vhost", compress_all=True)  # fmt: skip
        site = deploy.Site.make(root, PREFIX, listen=server.listen if form == "vhost" else None)
        text = servers.render_apache(site, "vhost" if form == "vhost" else "htaccess")
        rule = 'RewriteRule "\\.shard$" - [E=no-gzip:1]\n'
        assert rule in text
        text = text if emitted else text.replace(rule, "")
        if form == "vhost":
            server.emitted.write_text(text)
        else:
            (root / ".htaccess").write_text(text)
            server.emitted.write_text(htaccess_host(root))
        with server:
            if emitted:
                assert_shard_sent_as_stored(server.base_url + PREFIX, root)
            else:
                assert shard_compressed_on_the_fly(server.base_url + PREFIX, root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
