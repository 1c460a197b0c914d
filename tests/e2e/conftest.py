"""Fixtures for the end-to-end tests: Chromium, Neuroglancer's client origin, a view runner.

Every test here drives the real Neuroglancer client (the PyPI package's built bundle) in Debian's
headless Chromium. Without Chromium, Playwright or the ``neuroglancer`` package the tests skip
loudly, and in CI (``CI`` set) they fail instead: a missing browser must never pass silently.
Set ``E2E_SCREENSHOT_DIR`` to keep each view's canvas as a PNG named after the test.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .servers import ClientHandler, LoopbackServer
from .viewer import CHROMIUM, Browser, ViewResult, missing, neuroglancer_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


# Package scope: Playwright's sync API allows one running instance per thread, and other test
# modules (tests/test_devserver.py) start their own after this package is done.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed")
    with sync_playwright() as playwright:
        yield Browser(playwright)


@dataclass(frozen=True)
class Client:
    """Neuroglancer's client on its own loopback origin."""

    origin: str
    token: str

    def url(self, state: dict[str, Any]) -> str:
        return neuroglancer_url(self.origin, self.token, state)


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    try:
        import neuroglancer
    except ImportError:
        missing("the neuroglancer package (its built client) is not installed")
    client_dir = Path(neuroglancer.__file__).parent / "static" / "client"
    if not (client_dir / "index.html").is_file():
        missing(f"no built client in {client_dir}")
    token = secrets.token_hex(8)
    with LoopbackServer(ClientHandler, client_dir=client_dir, token=token) as server:
        yield Client(server.origin, token)


@pytest.fixture
def view(
    browser: Browser, client: Client, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[dict[str, Any], str], ViewResult]:
    """``view(state, data_origin)``: open the state, wait, return what was observed.

    The canvas PNG goes to ``tmp_path`` (and ``E2E_SCREENSHOT_DIR`` when set); the result's
    summary is attached to the test report so a failure shows every data request.
    """

    def run(state: dict[str, Any], data_origin: str) -> ViewResult:
        result = browser.open_view(client.url(state), data_origin)
        name = re.sub(r"[^\w.-]+", "_", request.node.name) + ".png"
        (tmp_path / name).write_bytes(result.screenshot)
        keep = os.environ.get("E2E_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / name).write_bytes(result.screenshot)
        request.node.user_properties.append(("view", result.summary()))
        print(result.summary())  # shown by pytest on failure
        return result

    return run
