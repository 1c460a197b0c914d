"""The client tier of the HTTP contract against ``make_app`` under real WSGI servers.

gunicorn (threaded worker: ``wsgi.file_wrapper`` is sendfile) and waitress (its own
buffering and chunking) each serve the contract tree on a free loopback port. They run the
middleware's own code, which test_middleware.py holds to both tiers in-process: here only
what the transport could break (the client tier) is checked again.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import ClientTier, ContractServer
from tests.realservers import free_port, running_process

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def run_server(argv: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with running_process(argv, port, env={**env, "PYTHONPATH": pythonpath}):
        yield


@pytest.fixture(scope="module")
def contract_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "root"
    write_contract_tree(root)
    return root


class TestGunicorn(ClientTier):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls, contract_root: Path) -> Iterator[ContractServer]:
        port = free_port()
        # gunicorn >= 20.1 calls an app factory with literal arguments.
        factory = f"make_app({str(contract_root)!r}, cache_control='no-cache')"
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            f"precomp_host.middleware:{factory}",
        ]
        with run_server(argv, port, {}):
            yield ContractServer(
                f"http://127.0.0.1:{port}", contract_root, name="gunicorn", cache_control="no-cache"
            )


class TestWaitress(ClientTier):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls, contract_root: Path) -> Iterator[ContractServer]:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{port}",
            "--call",
            "precomp_host.middleware:make_app",
        ]
        with run_server(argv, port, {"PRECOMP_HOST_ROOT": str(contract_root)}):
            yield ContractServer(f"http://127.0.0.1:{port}", contract_root, name="waitress")
