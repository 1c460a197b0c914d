"""Sharded annotation collections (build/annotation_writer.py) read by tensorstore.

The same table is written unsharded and sharded (same seed, so the same spatial sample); every
file of the unsharded collection must come back, byte for byte, from tensorstore's
``neuroglancer_uint64_sharded`` kvstore opened with the ``sharding`` the sharded ``info``
declares: ``by_id`` and relationship entries by their id, spatial cells by the compressed Morton
code of the cell (computed here from volume.md, not with the package's code).
"""

from __future__ import annotations

import contextlib
import json
import struct
from typing import TYPE_CHECKING, Any

import pytest

from precomp_host.build import annotation_writer
from precomp_host.build.annotation_writer import choose_index_sharding, write_annotations
from precomp_host.cli import main
from tests.test_annotations import point_table

if TYPE_CHECKING:
    from pathlib import Path

ts = pytest.importorskip("tensorstore")


def morton(cell: list[int], grid_shape: list[int]) -> int:
    """volume.md, "Compressed morton code": bits interleaved x, y, z from the lowest, an axis
    dropping out once all its bits are used."""
    bits = [max(0, (n - 1).bit_length()) for n in grid_shape]
    code, out = 0, 0
    for i in range(max(bits)):
        for axis in range(3):
            if i < bits[axis]:
                code |= ((cell[axis] >> i) & 1) << out
                out += 1
    return code


def open_index(folder: Path, entry: dict[str, Any]) -> Any:
    spec = {
        "driver": "neuroglancer_uint64_sharded",
        "base": f"file://{folder / entry['key']}/",
        "metadata": entry["sharding"],
    }
    return ts.KvStore.open(spec).result()


def read(kv: Any, key: int) -> bytes | None:
    r = kv.read(struct.pack(">Q", key)).result()
    return bytes(r.value) if r.state == "value" else None


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many shards and minishards from a table of a few thousand annotations.
    monkeypatch.setattr(annotation_writer, "SHARD_KEYS", 256)
    monkeypatch.setattr(annotation_writer, "MINISHARD_KEYS", 8)


def build_both(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    table = point_table(3000)
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    write_annotations({"": table}, plain, compress=(), limit=200)
    write_annotations({"": table}, sharded, compress=(), limit=200, sharded=True)
    info = json.loads((sharded / "info").read_text())
    return plain, sharded, info


@pytest.mark.usefixtures("small_shards")
def test_every_entry_reads_back_through_tensorstore(tmp_path: Path) -> None:
    plain, sharded, info = build_both(tmp_path)
    plain_info = json.loads((plain / "info").read_text())
    assert [s["grid_shape"] for s in info["spatial"]] == [
        s["grid_shape"] for s in plain_info["spatial"]
    ]
    checked = 0
    entries = [info["by_id"], *info["relationships"]]
    for entry in entries:
        kv = open_index(sharded, entry)
        files = list((plain / entry["key"]).iterdir())
        assert files
        for f in files:
            assert read(kv, int(f.name)) == f.read_bytes(), f
            checked += 1
        assert read(kv, 99) is None  # no annotation or segment has this id
    for level in info["spatial"]:
        kv = open_index(sharded, level)
        for f in (plain / level["key"]).iterdir():
            cell = [int(v) for v in f.name.split("_")]
            assert read(kv, morton(cell, level["grid_shape"])) == f.read_bytes(), f
            checked += 1
    assert checked > 3000
    # Each index is a few shard files, not a file per key.
    shards = list((sharded / "by_id").iterdir())
    assert all(p.suffix == ".shard" for p in shards)
    assert 4 <= len(shards) <= 16
    assert info["by_id"]["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"


@pytest.mark.usefixtures("small_shards")
def test_a_wrong_sharding_in_info_finds_nothing(tmp_path: Path) -> None:
    # The negative control of the test above: the reader follows the info's spec.
    plain, sharded, info = build_both(tmp_path)
    wrong = {**info["by_id"], "sharding": {**info["by_id"]["sharding"]}}
    wrong["sharding"]["minishard_bits"] += 1
    kv = open_index(sharded, wrong)
    right = 0
    for f in list((plain / "by_id").iterdir())[:50]:
        # tensorstore raises ValueError for a byte range that does not decode
        with contextlib.suppress(ValueError):
            right += read(kv, int(f.name)) == f.read_bytes()
    assert right < 25


def test_sharding_sizes() -> None:
    one = choose_index_sharding(1)
    assert (one.shard_bits, one.minishard_bits) == (0, 0)
    million = choose_index_sharding(1_000_000, gzip=False)
    assert million.num_shards == 64  # ~15,600 keys a shard
    assert 1_000_000 / 64 / million.num_minishards <= 64
    assert million.data_encoding == "raw"


def test_cli_sharded(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("x,y,z,id\n" + "".join(f"{i},{i % 7},{i % 3},{i}\n" for i in range(50)))
    out = tmp_path / "out"
    assert main(["annotations", "build", str(table), str(out), "--sharded", "-q"]) == 0
    info = json.loads((out / "info").read_text())
    assert "sharding" in info["by_id"]
    assert all("sharding" in s for s in info["spatial"])
    kv = open_index(out, info["by_id"])
    assert read(kv, 7) is not None
