"""A dataset's NeuroTrALE store served as precomputed annotation layers (host/live_annotations.py).

Live layers are sharded (a few files a version, so a rebuild is cheap); they are read here with
tensorstore's ``neuroglancer_uint64_sharded`` kvstore, cells decoded from annotations.md alone:
an ``info`` whose index keys name one version, shards of that version that hold every
annotation of the store as it was, a new version after an edit while the old one stays
readable, and no rebuild when nothing changed.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.test import Client

from precomp_host.build.annotation_sources import write_store_layers
from precomp_host.host.annotations import AnnotationStore
from precomp_host.host.live_annotations import LiveAnnotations
from tests.test_annotation_writer import morton, open_index, read
from tests.test_devserver import write_dataset

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

LIVE = "/img/annotations/live"


def point(i: int, x: float = 4.0) -> dict[str, Any]:
    return {"id": i, "type": "point", "anntype": "neuron", "point": [x, 2 * i % 32, 3],
            "reviewed": False, "visited": False}  # fmt: skip


def axon(i: int) -> dict[str, Any]:
    return {"id": i, "type": "linestring", "anntype": "axon", "length": 2.0, "reviewed": True,
            "visited": False, "points": [[1, 1, 1], [9, 9, 1], [20, 4, 1]]}  # fmt: skip


class Counting:
    """The real builder, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, store: Path, dataset: Path, out: Path) -> Sequence[str]:
        self.calls += 1
        return write_store_layers(store, dataset, out)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write_dataset(root / "img", seed=1)
    block = root / "img" / "annotations" / "x1y1z3"
    block.mkdir(parents=True)
    (block / "z-0003.json").write_text(json.dumps([point(i) for i in range(10)]))
    (block / "fibers.json").write_text(json.dumps([axon(100)]))
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def live(root: Path, cache: Path) -> Iterator[tuple[LiveAnnotations, Counting, Client]]:
    builder = Counting()
    app = LiveAnnotations(None, root, builder, cache_dir=cache)  # type: ignore[arg-type]
    yield app, builder, Client(app)
    app.close()


def fetch(client: Client, path: str) -> tuple[int, bytes]:
    with client.get(path) as r:
        return r.status_code, r.get_data()


def spatial_ids(cache: Path, layer: str, info: dict[str, Any], record: int) -> set[int]:
    """Every annotation id in the layer's spatial index (each cell: count, records, ids), read
    from its shards by tensorstore."""
    ids: set[int] = set()
    for level in info["spatial"]:
        kv = open_index(cache / layer, level)
        gx, gy, gz = level["grid_shape"]
        for cell in itertools.product(range(gx), range(gy), range(gz)):
            data = read(kv, morton(list(cell), level["grid_shape"]))
            if data is None:
                continue
            (n,) = struct.unpack_from("<Q", data)
            assert len(data) == 8 + n * (record + 8)
            ids |= set(struct.unpack_from(f"<{n}Q", data, 8 + n * record))
    return ids


def has_id(cache: Path, layer: str, info: dict[str, Any], ann_id: int) -> bool:
    return read(open_index(cache / layer, info["by_id"]), ann_id) is not None


def test_store_is_served_as_versioned_layers(
    live: tuple[LiveAnnotations, Counting, Client], cache: Path
) -> None:
    _, builder, client = live
    status, body = fetch(client, f"{LIVE}/points/info")
    assert status == 200
    info = json.loads(body)
    assert info["@type"] == "neuroglancer_annotations_v1"
    version = info["by_id"]["key"].split("/")[0]
    assert info["by_id"]["key"] == f"{version}/by_id"
    assert all(s["key"].startswith(f"{version}/spatial") for s in info["spatial"])
    # 3 float32 + 3 uint8 properties (anntype, reviewed, visited) + 1 padding byte
    assert spatial_ids(cache, "img/points", info, 16) == set(range(10))
    assert has_id(cache, "img/points", info, 7)
    # The cache is what the URLs serve: a shard, read with Range.
    with client.get(f"{LIVE}/points/{version}/by_id/0.shard", headers={"Range": "bytes=0-15"}) as r:
        assert r.status_code == 206
        assert r.get_data() == (cache / "img/points" / version / "by_id/0.shard").read_bytes()[:16]
    lines = json.loads(fetch(client, f"{LIVE}/lines/info")[1])
    assert lines["annotation_type"] == "LINE"
    assert lines["relationships"][0]["key"] == f"{version}/rel_shape"
    rel = open_index(cache / "img/lines", lines["relationships"][0])
    assert read(rel, 100) is not None  # the axon's segments, by its id
    assert builder.calls == 1  # both layers, one build


def test_an_edit_makes_a_new_version_and_the_old_stays_readable(
    root: Path, live: tuple[LiveAnnotations, Counting, Client], cache: Path
) -> None:
    _, builder, client = live
    old = json.loads(fetch(client, f"{LIVE}/points/info")[1])
    old_version = old["by_id"]["key"].split("/")[0]
    store = AnnotationStore(root)
    path = store.path_for("img", "x1y1z3", "z-0003")
    store.put(path, json.dumps([point(i) for i in range(3, 8)] + [point(50, 20)]).encode())
    new = json.loads(fetch(client, f"{LIVE}/points/info")[1])
    new_version = new["by_id"]["key"].split("/")[0]
    assert new_version != old_version
    assert spatial_ids(cache, "img/points", new, 16) == {3, 4, 5, 6, 7, 50}
    assert not has_id(cache, "img/points", new, 0)
    # A viewer still holding the old info reads the old version whole.
    assert spatial_ids(cache, "img/points", old, 16) == set(range(10))
    assert has_id(cache, "img/points", old, 0)
    assert builder.calls == 2


def test_unchanged_or_touched_store_is_not_rebuilt(
    root: Path, live: tuple[LiveAnnotations, Counting, Client]
) -> None:
    app, builder, client = live
    first = fetch(client, f"{LIVE}/points/info")[1]
    assert fetch(client, f"{LIVE}/points/info")[1] == first
    assert app.layers("img") == ["img/annotations/live/lines", "img/annotations/live/points"]
    leaf = root / "img" / "annotations" / "x1y1z3" / "fibers.json"
    leaf.write_bytes(leaf.read_bytes())  # same content, new mtime
    os.utime(leaf, ns=(1, 1))
    assert fetch(client, f"{LIVE}/points/info")[1] == first
    assert builder.calls == 1


def test_a_store_that_cannot_be_read_keeps_the_last_version(
    root: Path, live: tuple[LiveAnnotations, Counting, Client]
) -> None:
    _, _, client = live
    first = fetch(client, f"{LIVE}/points/info")[1]
    (root / "img" / "annotations" / "x1y1z3" / "z-0003.json").write_text("[{")
    assert fetch(client, f"{LIVE}/points/info") == (200, first)


def test_deleting_every_point_leaves_an_empty_layer(
    root: Path, live: tuple[LiveAnnotations, Counting, Client], cache: Path
) -> None:
    _, _, client = live
    (root / "img" / "annotations" / "x1y1z3" / "z-0003.json").write_text("[]")
    status, body = fetch(client, f"{LIVE}/points/info")
    assert status == 200
    info = json.loads(body)
    assert info["spatial"] == []
    assert not has_id(cache, "img/points", info, 1)


@pytest.mark.parametrize(
    "path",
    [
        "/nothing/annotations/live/points/info",  # no such dataset
        "/img/annotations/live/synapses/info",  # no such layer
        "/img/../img/annotations/live/points/info",
        "/.hidden/annotations/live/points/info",
    ],
)
def test_what_is_not_a_live_layer_is_404(
    live: tuple[LiveAnnotations, Counting, Client], path: str
) -> None:
    assert fetch(live[2], path)[0] == 404


def test_a_dataset_without_a_store_has_no_live_layer(
    root: Path, live: tuple[LiveAnnotations, Counting, Client]
) -> None:
    app, builder, client = live
    write_dataset(root / "bare", seed=2)
    assert fetch(client, "/bare/annotations/live/points/info")[0] == 404
    assert app.layers("bare") == []
    assert builder.calls == 0
