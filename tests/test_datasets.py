"""Tests of :mod:`precomp_host.core.datasets`: which folders are datasets, and that the dev
server's index and the deployed ``index.html`` list the same ones and open the same view."""

from __future__ import annotations

import html
import json
import re
import shutil
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest

from precomp_host.core.datasets import MAX_DEPTH, dataset_name, find_datasets, read_dataset
from precomp_host.core.model import INFO_NAME, InvalidInfoError
from precomp_host.core.viewer import PAGE_BASE, PUBLIC_VIEWER
from precomp_host.deploy import site as deploy
from precomp_host.host.devserver import DevServer
from tests.contract.fixtures import write_contract_tree
from tests.e2e.viewer import CHROMIUM, CHROMIUM_ARGS
from tests.test_devserver import chromium_or_skip, get

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for ds in ("a", "b", "group/c"):
        (tmp_path / ds / "1_1_1").mkdir(parents=True)
        (tmp_path / ds / INFO_NAME).write_text("{}")
    (tmp_path / "a" / "mesh").mkdir()
    (tmp_path / "a" / "mesh" / INFO_NAME).write_text("{}")
    (tmp_path / "not-a-dataset").mkdir()
    return tmp_path


def test_find_datasets_stops_at_info(root: Path) -> None:
    assert find_datasets(root) == ["a", "b", "group/c"]
    (root / INFO_NAME).write_text("{}")
    assert find_datasets(root) == [""]


def test_find_datasets_depth_rule(root: Path) -> None:
    deep = root / "g" / "h" / "c"
    deep.mkdir(parents=True)
    (deep / INFO_NAME).write_text("{}")
    assert MAX_DEPTH == 3
    assert "g/h/c" in find_datasets(root)
    too_deep = root / "w" / "x" / "y" / "z"
    too_deep.mkdir(parents=True)
    (too_deep / INFO_NAME).write_text("{}")
    assert "w/x/y/z" not in find_datasets(root)
    assert "w/x/y/z" in find_datasets(root, max_depth=4)


def test_find_datasets_skips_hidden_folders(root: Path) -> None:
    hidden = root / ".precomp-tmp" / "d"
    hidden.mkdir(parents=True)
    (hidden / INFO_NAME).write_text("{}")
    assert find_datasets(root) == ["a", "b", "group/c"]


def test_dataset_name(root: Path) -> None:
    assert dataset_name(root, "group/c") == "c"
    assert dataset_name(root, "") == root.name


def test_read_dataset_errors(root: Path) -> None:
    with pytest.raises(InvalidInfoError):
        read_dataset(root / "a")  # "{}" is JSON but not an info
    (root / "b" / INFO_NAME).write_text("{")
    with pytest.raises(ValueError, match="Expecting"):
        read_dataset(root / "b")
    with pytest.raises(FileNotFoundError):
        read_dataset(root / "not-a-dataset")


def _dev_links(server: DevServer) -> dict[str, str]:
    """Dataset path -> "open in Neuroglancer" link, from the dev server's index page."""
    status, _, body = get(server.url, "/")
    assert status == 200
    row = r'<tr data-dataset="([^"]*)">.*?class="open" href="([^"]*)"'
    return dict(re.findall(row, body.decode(), re.S))


def _state(href: str) -> dict[str, Any]:
    app, _, frag = html.unescape(href).partition("#!")
    assert app == PUBLIC_VIEWER
    state: dict[str, Any] = json.loads(urllib.parse.unquote(frag))
    return state


def add_annotations(root: Path) -> None:
    """A collection in ``img/annotations`` (opened with img) and one on its own."""
    from precomp_host.build.annotation_writer import write_annotations
    from tests.test_annotations import point_table

    write_annotations({"syn": point_table(5)}, root / "img" / "annotations")
    write_annotations({"": point_table(5)}, root / "loose")


def test_dev_and_deployed_index_list_the_same_datasets(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_contract_tree(root)
    shutil.copytree(root / "img", root / "g" / "h" / "c")  # 3 levels deep
    add_annotations(root)
    site = deploy.Site.make(root)
    deployed = deploy.render_index(site)
    row = r'<tr data-path="([^"]*)">.*?class="neuroglancer" href="([^"]*)"'
    deployed_links = dict(re.findall(row, deployed, re.S))
    with DevServer(root, port=0, watch=False, client_dir=False) as server:
        dev_links = _dev_links(server)
        assert "g/h/c" in dev_links
        assert sorted(dev_links) == sorted(deployed_links) == find_datasets(root)
        # The same link: the deployed one once its page fills in the URL it is served at.
        for rel, href in deployed_links.items():
            served = href.replace(PAGE_BASE, urllib.parse.quote(server.url, safe=""))
            assert _state(served) == _state(dev_links[rel]), rel
    img = _state(dev_links["img"])
    assert [layer["type"] for layer in img["layers"]] == ["image", "annotation"]
    assert img["layers"][1]["source"].endswith("/img/annotations/syn")


@pytest.mark.slow
def test_deployed_index_links_open_the_dev_server_state(tmp_path: Path) -> None:
    # The page fills in the URL it is served at in a real browser (the substitution is its only
    # script), and then links to exactly the state the dev server's index links to.
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    root = tmp_path / "root"
    write_contract_tree(root)
    shutil.copytree(root / "img", root / "g" / "h" / "c")
    add_annotations(root)
    (root / "index.html").write_text(deploy.render_index(deploy.Site.make(root)))
    with DevServer(root, port=0, watch=False, client_dir=False) as server:
        dev_links = _dev_links(server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
            try:
                page = browser.new_page()
                page.goto(f"{server.url}/index.html")
                links = page.eval_on_selector_all(
                    "tr[data-path]",
                    "rows => rows.map(r => [r.dataset.path,"
                    " r.querySelector('a.neuroglancer').href])",
                )
            finally:
                browser.close()
    assert sorted(dict(links)) == sorted(dev_links)
    for rel, href in links:
        assert PAGE_BASE not in href
        assert _state(href) == _state(dev_links[rel]), rel
