"""The annotation store: paths (block_info.csv, traversal), validation, If-Match, history, safe
writes. The HTTP side and real worker processes are in test_api.py and test_neurotrale_serve.py."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import pytest

from precomp_host.host.annotations import (
    HISTORY,
    AnnotationError,
    AnnotationStore,
    block_folder,
    etag_for,
)

from .neurotrale import BLOCK_SIZE, axon, disk_path, make_annotation_tree, point, polygon

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_annotation_tree(tmp_path)
    return tmp_path


@pytest.fixture
def store(tree: Path) -> AnnotationStore:
    return AnnotationStore(tree, history=3)


def _status(excinfo: pytest.ExceptionInfo[AnnotationError]) -> int:
    return excinfo.value.status


def test_block_folder_is_the_one_based_index_in_x_and_y() -> None:
    assert block_folder((0, 0, 0), (512, 512, 100)) == "x0001_y0001"
    assert block_folder((511, 512, 999), (512, 512, 100)) == "x0001_y0002"
    assert block_folder((1024, 5, 0), (512, 512, 100)) == "x0003_y0001"


def test_path_with_block_info(store: AnnotationStore, tree: Path) -> None:
    path = store.path_for("brain", "x600y100z10", "fibers")
    assert path == tree / "brain" / "annotations" / "x0002_y0001" / "fibers.json"
    assert store.block_size(tree / "brain" / "annotations") == BLOCK_SIZE


def test_path_without_block_info_is_the_block_string(store: AnnotationStore, tree: Path) -> None:
    (tree / "other" / "annotations" / "x1y2z3").mkdir(parents=True)
    path = store.path_for("other", "x1y2z3", "z-0001")
    assert path == tree / "other" / "annotations" / "x1y2z3" / "z-0001.json"


@pytest.mark.parametrize(
    ("dataset", "block", "leaf"),
    [
        ("..", "x1y1z1", "fibers"),
        ("brain/..", "x1y1z1", "fibers"),
        ("../brain", "x1y1z1", "fibers"),
        ("brain", "x1y1z1", "../fibers"),
        ("brain", "../x1y1z1", "fibers"),
        ("brain", "x1y1", "fibers"),
        ("", "x1y1z1", "fibers"),
        ("brain", "x1y1z1", ".hidden"),
        (".annotation-history", "x1y1z1", "fibers"),
        ("a\\..", "x1y1z1", "fibers"),
    ],
)
def test_no_path_leaves_the_root(
    store: AnnotationStore, dataset: str, block: str, leaf: str
) -> None:
    with pytest.raises(AnnotationError) as e:
        store.path_for(dataset, block, leaf)
    assert _status(e) == 404


def test_a_symlinked_dataset_pointing_out_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_annotation_tree(outside)
    root.mkdir()
    (root / "link").symlink_to(outside / "brain")
    store = AnnotationStore(root)
    with pytest.raises(AnnotationError) as e:
        store.path_for("link", "x100y100z10", "fibers")
    assert _status(e) == 404


def test_a_symlinked_block_folder_or_file_pointing_out_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_annotation_tree(root)
    (outside / "x1y1z1").mkdir(parents=True)
    (outside / "x1y1z1" / "fibers.json").write_text("[]")
    blocks = root / "brain" / "annotations"
    (blocks / "block_info.csv").unlink()
    (blocks / "x1y1z1").symlink_to(outside / "x1y1z1")
    (blocks / "x100y100z10").mkdir()
    (blocks / "x100y100z10" / "fibers.json").symlink_to(outside / "x1y1z1" / "fibers.json")
    store = AnnotationStore(root)
    for block in ("x1y1z1", "x100y100z10"):
        with pytest.raises(AnnotationError) as e:
            store.path_for("brain", block, "fibers")
        assert _status(e) == 404


def test_put_validates_and_keeps_history(store: AnnotationStore, tree: Path) -> None:
    path = store.path_for("brain", "x100y100z10", "z-0001")
    before, tag = store.read(path)
    new = [point("n1"), polygon("n2")]
    new_tag, count = store.put(path, json.dumps(new).encode(), if_match=f'"{tag}"')
    assert count == 2
    assert json.loads(path.read_bytes()) == new
    assert new_tag == etag_for(path.read_bytes())
    (version,) = store.versions(path)
    assert (path.parent / HISTORY / path.name / version.name).read_bytes() == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"{}", "expected a JSON list"),
        (json.dumps([{"id": 1}]).encode(), "expected an object with type"),
        (json.dumps([dict(point("a"), point=[1, 2])]).encode(), "[0].point"),
        (json.dumps([dict(point("a"), point=[1.5, 2, 3])]).encode(), "[0].point[0]"),
        (json.dumps([dict(axon("a"), anntype="neuron")]).encode(), "[0].anntype"),
        (json.dumps([{k: v for k, v in axon("a").items() if k != "length"}]).encode(), "length"),
        (json.dumps([dict(point("a"), reviewed="no")]).encode(), "[0].reviewed"),
        (json.dumps([point("a"), point("a")]).encode(), "more than once"),
    ],
)
def test_invalid_bodies_get_422_and_change_nothing(
    store: AnnotationStore, body: bytes, reason: str
) -> None:
    path = store.path_for("brain", "x100y100z10", "z-0001")
    before = path.read_bytes()
    with pytest.raises(AnnotationError) as e:
        store.put(path, body)
    assert _status(e) == 422
    assert reason in str(e.value)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == before
    assert store.versions(path) == []


def test_unknown_keys_are_kept(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "z-0001")
    item = dict(point("c"), color="#ff0000")
    store.put(path, json.dumps([item]).encode())
    assert json.loads(path.read_bytes()) == [item]


def test_size_limit(tree: Path) -> None:
    store = AnnotationStore(tree, max_bytes=1000)
    path = store.path_for("brain", "x100y100z10", "z-0001")
    before = path.read_bytes()
    with pytest.raises(AnnotationError) as e:
        store.put(path, json.dumps([point(f"p{i}") for i in range(20)]).encode())
    assert _status(e) == 413
    assert path.read_bytes() == before


def test_stale_if_match_is_412(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "fibers")
    _, tag = store.read(path)
    store.patch(path, "new", json.dumps(axon("new")).encode(), if_match=f'"{tag}"')
    after = path.read_bytes()
    for stale in (f'"{tag}"', f'W/"{etag_for(after)}"', '"other"'):
        with pytest.raises(AnnotationError) as e:
            store.delete(path, "new", if_match=stale)
        assert _status(e) == 412
    assert path.read_bytes() == after
    store.delete(path, "new", if_match="*")
    assert "new" not in {a["id"] for a in json.loads(path.read_bytes())}


def test_patch_replaces_or_appends(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "fibers")
    n = len(json.loads(path.read_bytes()))
    _, created = store.patch(path, "b0-axon1", json.dumps(axon("b0-axon1", 7)).encode())
    assert not created
    items = json.loads(path.read_bytes())
    assert len(items) == n
    assert len(items[1]["points"]) == 7
    _, created = store.patch(path, None, json.dumps(axon("z")).encode())
    assert created
    assert json.loads(path.read_bytes())[-1]["id"] == "z"
    with pytest.raises(AnnotationError) as e:
        store.patch(path, "other", json.dumps(axon("z")).encode())
    assert _status(e) == 422


def test_patch_creates_a_missing_file_but_no_dataset(store: AnnotationStore, tree: Path) -> None:
    path = store.path_for("brain", "x100y100z10", "z-0042")
    store.patch(path, "p", json.dumps(point("p")).encode())
    assert json.loads(path.read_bytes()) == [point("p")]
    (tree / "bare").mkdir()
    with pytest.raises(AnnotationError) as e:
        store.put(store.path_for("bare", "x1y1z1", "fibers"), b"[]")
    assert _status(e) == 404
    assert not (tree / "bare" / "annotations").exists()


def test_delete(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "fibers")
    _, removed = store.delete(path, "b0-axon0")
    assert removed
    _, removed = store.delete(path, "b0-axon0")
    assert not removed
    with pytest.raises(AnnotationError) as e:
        store.delete(store.path_for("brain", "x100y100z10", "z-0099"), "x")
    assert _status(e) == 404


def test_history_is_bounded_and_restorable(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "z-0002")
    contents = [path.read_bytes()]
    for i in range(5):
        store.put(path, json.dumps([point(f"v{i}")]).encode())
        contents.append(path.read_bytes())
    versions = store.versions(path)
    assert len(versions) == 3  # history=3
    assert [v.etag for v in versions] == [etag_for(c) for c in contents[-2:-5:-1]]
    oldest = versions[-1]
    store.restore(path, oldest.name)
    assert path.read_bytes() == contents[-4]
    # the restore saved what it replaced: it can be undone
    assert store.versions(path)[0].etag == etag_for(contents[-1])
    with pytest.raises(AnnotationError) as e:
        store.restore(path, "../../fibers.json")
    assert _status(e) == 404


def test_a_stale_temporary_is_overwritten_not_served(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "fibers")
    stale = path.with_name(f".{path.name}.tmp")
    stale.write_bytes(b"[{half")  # what a writer killed mid-write leaves
    assert json.loads(store.read(path)[0])  # the live file is whole
    store.patch(path, "q", json.dumps(axon("q")).encode())
    assert not stale.exists()
    assert json.loads(path.read_bytes())[-1]["id"] == "q"


def test_history_versions_are_links_that_keep_the_old_bytes(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x100y100z10", "fibers")
    before = path.read_bytes()
    store.put(path, b"[]")
    (version,) = store.versions(path)
    saved = path.parent / HISTORY / path.name / version.name
    assert saved.read_bytes() == before
    assert path.read_bytes() == b"[]\n"


def test_concurrent_patches_in_threads_all_land(store: AnnotationStore) -> None:
    path = store.path_for("brain", "x600y100z10", "fibers")
    n = len(json.loads(path.read_bytes()))

    def work(t: int) -> None:
        for i in range(25):
            store.patch(path, None, json.dumps(axon(f"t{t}-{i}")).encode())

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(json.loads(path.read_bytes())) == n + 100


def test_disk_path_helper_matches_the_store(store: AnnotationStore, tree: Path) -> None:
    url = "/brain/annotations/x600y100z10/z-0002.json"
    assert disk_path(tree, url) == store.path_for("brain", "x600y100z10", "z-0002")
