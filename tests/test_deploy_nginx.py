"""The emitted nginx config on a real nginx: ``nginx -t`` and the HTTP contract suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from precomp_host.core.headers import DEPLOY_CACHE_CONTROL
from precomp_host.deploy import site as deploy
from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import RES, ContractServer, ContractSuite
from tests.realservers import NGINX, RealServer, require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow

PREFIX = "/data"

#: Stored only compressed: what nginx's gunzip module serves to identity clients.
GZ_ONLY = [r.name for r in RES.values() if None not in r.stored and "gzip" in r.stored]


def nginx_limits() -> dict[str, str]:
    """What Debian's nginx 1.22 cannot do, measured; each stays a strict xfail."""
    gunzip_range = (
        "gunzip output has no length: a Range gets 200 with the whole body (inflated, or the .gz "
        "as is for a client that takes gzip)"
    )
    limits: dict[str, str] = {}
    for name in GZ_ONLY:
        limits[f"range:{name}:*"] = gunzip_range
        limits[f"range-416:{name}:*"] = gunzip_range
    return limits


def start_nginx(tmp: Path, *, brotli: bool, listen_form: bool) -> tuple[RealServer, deploy.Site]:
    root = tmp / "root"
    write_contract_tree(root)
    server = RealServer("nginx", tmp / "nginx", tmp / "site.conf", listen_in_emitted=listen_form)
    site = deploy.Site.make(root, PREFIX, listen=server.listen if listen_form else None,
                            brotli=brotli)  # fmt: skip
    server.emitted.write_text(deploy.render_nginx(site))
    return server.start(), site


def nginx_contract_server(tmp: Path, *, brotli: bool) -> Iterator[ContractServer]:
    require(NGINX, "nginx")
    # The brotli run also covers the complete server-block form (--listen).
    nginx, site = start_nginx(tmp, brotli=brotli, listen_form=brotli)
    try:
        server = ContractServer(
            nginx.base_url + PREFIX,
            tmp / "root",
            name=f"nginx{'+brotli' if brotli else ''}",
            encodings=frozenset(deploy.served_encodings(site, "nginx")),
            supports_brotli_decompression=False,
            cache_control=DEPLOY_CACHE_CONTROL,
        )
        server.expected_failures = nginx_limits()
        yield server
    finally:
        nginx.stop()


@pytest.fixture(scope="class")
def contract_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContractServer]:
    brotli: bool = request.cls.BROTLI
    yield from nginx_contract_server(tmp_path_factory.mktemp("nginx"), brotli=brotli)


class TestNginxContract(ContractSuite):
    """The snippet form (inside a server block) without brotli."""

    BROTLI = False


class TestNginxBrotliContract(ContractSuite):
    """The complete server-block form (--listen) with brotli_static."""

    BROTLI = True
