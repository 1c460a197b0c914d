"""The HTTP contract against ``make_app`` under real WSGI servers run as subprocesses.

gunicorn (threaded worker: ``wsgi.file_wrapper`` is sendfile) and waitress (its own
buffering and chunking) each serve the contract tree on a free loopback port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.contract.fixtures import write_contract_tree
from tests.contract.suite import ContractServer, ContractSuite

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def run_server(argv: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    env = {**os.environ, **env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def contract_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "root"
    write_contract_tree(root)
    return root


class TestGunicorn(ContractSuite):
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


class TestWaitress(ContractSuite):
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
