"""Tests for :mod:`precomp_host.build.shards`: whole shard files, read back by independent readers.

tensorstore (and cloud-volume when the ``test-peers`` extra is installed) read sharded images
and segmentations we write at two scales, voxel-exact. Both read a chunk missing from a shard
as zeros, so every test also checks that exactly the expected shard files exist and that the
data read is not all zero.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import tempfile
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tensorstore as ts
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from precomp_host.build.chunk_codecs import make_codec
from precomp_host.build.shards import ShardSink, shard_path, write_shard
from precomp_host.build.writer import DatasetWriter
from precomp_host.core.layout import LAYOUTS
from precomp_host.core.model import ChunkKey, Dataset, Scale, VolumeType
from precomp_host.core.shard_grid import choose_sharding
from precomp_host.core.sharding import (
    ShardingSpec,
    compressed_morton_code,
    morton_bits,
    parse_minishard_index,
    parse_shard_index,
    read_shard,
)
from precomp_host.middleware import make_app
from tests.strategies import sharding_specs

if TYPE_CHECKING:
    from collections.abc import Iterator


def _writer(root: Path) -> DatasetWriter:
    w = DatasetWriter(root, LAYOUTS["flat"])
    w.begin()
    return w


def _members(spec: ShardingSpec, shard: int, ids: list[int]) -> dict[int, bytes]:
    return {i: f"chunk {i}".encode() * (i % 5) for i in ids if spec.locate(i)[0] == shard}


# --- one shard file ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)  # file I/O: time is not the property
@given(sharding_specs(), st.lists(st.integers(0, 2**64 - 1), max_size=40, unique=True))
def test_write_then_read_round_trips(spec: ShardingSpec, ids: list[int]) -> None:
    # One shard of the spec, with whichever of the ids fall in it; small specs only, since the
    # shard index is 16 bytes per minishard.
    spec = dataclasses.replace(spec, minishard_bits=min(spec.minishard_bits, 6))
    shard = spec.locate(ids[0])[0] if ids else 0
    chunks = _members(spec, shard, ids)
    with tempfile.TemporaryDirectory() as tmp:
        size = write_shard(_writer(Path(tmp)), "s", spec, shard, chunks)
        data = (Path(tmp) / shard_path("s", spec, shard)).read_bytes()
    assert size == len(data)
    assert read_shard(spec, data) == chunks


def test_shard_is_plain_atomic_and_independent_of_insertion_order(tmp_path: Path) -> None:
    spec = ShardingSpec(1, 2, 2, minishard_index_encoding="gzip", data_encoding="gzip")
    chunks = _members(spec, 1, list(range(200)))
    assert len(chunks) > 8
    write_shard(_writer(tmp_path / "a"), "s", spec, 1, chunks)
    write_shard(_writer(tmp_path / "b"), "s", spec, 1, dict(reversed(chunks.items())))
    a, b = (tmp_path / d / "s" / "1.shard" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    # Stored plain: no compressed sibling, nothing left in the temporary folder.
    assert sorted(p.name for p in a.parent.iterdir()) == ["1.shard"]
    assert not any((tmp_path / "a" / ".precomp-tmp").iterdir())


def test_chunks_are_read_one_at_a_time_in_id_order(tmp_path: Path) -> None:
    spec = ShardingSpec(0, 1, 0)
    reads: list[int] = []

    class Lazy(dict[int, bytes]):
        def __getitem__(self, key: int) -> bytes:
            reads.append(key)
            return b"x" * key

    write_shard(_writer(tmp_path), "s", spec, 0, Lazy.fromkeys([5, 2, 4, 3], b""))
    # Minishard 0 (even ids) first, then minishard 1; ids ascending within each.
    assert reads == [2, 4, 3, 5]


def test_a_chunk_of_another_shard_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    spec = ShardingSpec(0, 0, 2)
    with pytest.raises(ValueError, match="belongs to shard 3"):
        write_shard(_writer(tmp_path), "s", spec, 1, {1: b"a", 3: b"b"})
    assert not (tmp_path / "s" / "1.shard").exists()


def test_a_failing_chunk_leaves_no_file(tmp_path: Path) -> None:
    class Failing(dict[int, bytes]):
        def __getitem__(self, key: int) -> bytes:
            raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        write_shard(_writer(tmp_path), "s", ShardingSpec(0, 0, 0), 0, Failing.fromkeys([1], b""))
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
    assert not any((tmp_path / ".precomp-tmp").iterdir())


# --- whole sharded volumes, read by tensorstore and cloud-volume ------------------------------


def _image() -> np.ndarray:
    """[x, y, z, c] uint8, odd sizes so edge chunks are clipped, never all zero in a chunk."""
    x, y, z = np.meshgrid(np.arange(45), np.arange(38), np.arange(21), indexing="ij")
    return ((x * 7 + y * 3 + z * 11) % 251 + 1).astype(np.uint8)[..., None]


def _labels() -> np.ndarray:
    """[x, y, z, 1] uint64 labels above 2**32 in 6-voxel blocks (compressed segmentation)."""
    x, y, z = np.meshgrid(np.arange(45), np.arange(38), np.arange(21), indexing="ij")
    return (2**40 + (x // 6) * 1000 + (y // 6) * 10 + z // 6).astype(np.uint64)[..., None]


def _spec_for(kind: str, grid: tuple[int, int, int], chunk_bytes: int) -> ShardingSpec:
    bits = sum(morton_bits(grid))
    if kind == "chosen":  # about 4 chunks a shard: several shards per scale
        return choose_sharding(grid, chunk_bytes, 4 * chunk_bytes).spec
    if kind == "minishards":  # 2 chunks a minishard, 4 minishards, raw everything
        return ShardingSpec(1, 2, max(0, bits - 3))
    # hashed: shards are not boxes; 3 shards bits (some empty), gzip data only
    return ShardingSpec(0, 1, 3, "murmurhash3_x86_128", data_encoding="gzip")


def _write_sharded(
    root: Path, volume: np.ndarray, kind: str, encoding: str, volume_type: VolumeType
) -> tuple[Dataset, list[np.ndarray]]:
    """Two scales (the second halves x and y by striding), every chunk in its shard."""
    codec = make_codec(encoding)
    writer = _writer(root)
    levels = [volume, volume[::2, ::2]]
    offsets = [(3, -5, 7), (1, -3, 7)]
    scales = []
    for level, (arr, offset) in enumerate(zip(levels, offsets, strict=True)):
        res = (8.0 * 2**level, 8.0 * 2**level, 40.0)
        size = (arr.shape[0], arr.shape[1], arr.shape[2])
        scale = Scale(f"s{level}", size, res, (16, 16, 8), offset, encoding)
        grid = scale.grid_shape()
        spec = _spec_for(kind, grid, 16 * 16 * 8 * arr.itemsize)
        by_shard: dict[int, dict[int, bytes]] = {}
        for x, y, z in itertools.product(*map(range, grid)):
            g = (x, y, z)
            key = scale.chunk_key(g)
            box = tuple(
                slice(a - o, b - o) for a, b, o in zip(key.start, key.stop, offset, strict=True)
            )
            zyxc = np.ascontiguousarray(arr[box].transpose(2, 1, 0, 3))
            chunk_id = compressed_morton_code(g, grid)
            by_shard.setdefault(spec.locate(chunk_id)[0], {})[chunk_id] = codec.encode(zyxc)
        for shard, chunks in by_shard.items():
            write_shard(writer, scale.key, spec, shard, chunks)
        extra = dict(codec.scale_info)
        scales.append(dataclasses.replace(scale, sharding=spec, extra=extra))
    dataset = Dataset(volume_type, str(volume.dtype), 1, tuple(scales))
    writer.commit(dataset)
    return dataset, levels


def _expected_shard_files(scale: Scale) -> set[str]:
    spec = scale.sharding
    assert spec is not None
    grid = scale.grid_shape()
    shards = {
        spec.locate(compressed_morton_code(g, grid))[0]
        for g in itertools.product(*map(range, grid))
    }
    return {spec.shard_name(s) for s in shards}


def _check_files(root: Path, dataset: Dataset) -> None:
    for scale in dataset.scales:
        on_disk = {p.name for p in (root / scale.key).iterdir()}
        assert on_disk == _expected_shard_files(scale)  # no siblings, no missing shard
        assert len(on_disk) > 1


def _tensorstore_scales(root: Path, dataset: Dataset) -> Iterator[np.ndarray]:
    for index in range(len(dataset.scales)):
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": f"{root}/"},
            "scale_index": index,
        }
        yield ts.open(spec, read=True).result().read().result()


def _cloudvolume_scales(root: Path, dataset: Dataset) -> Iterator[np.ndarray]:
    cloudvolume = pytest.importorskip("cloudvolume", reason="pip install '.[test-peers]'")
    for mip in range(len(dataset.scales)):
        with warnings.catch_warnings():  # its own dependencies' deprecations, not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            cv = cloudvolume.CloudVolume(
                f"file://{root}", mip=mip, fill_missing=False, progress=False, cache=False
            )
            yield np.asarray(cv[:, :, :])


READERS: dict[str, Any] = {"tensorstore": _tensorstore_scales, "cloudvolume": _cloudvolume_scales}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", ["chosen", "minishards", "hashed"])
@pytest.mark.parametrize(
    ("volume_type", "encoding"), [("image", "raw"), ("segmentation", "compressed_segmentation")]
)
def test_sharded_volume_reads_back_voxel_exact(
    tmp_path: Path, reader: str, kind: str, volume_type: VolumeType, encoding: str
) -> None:
    volume = _image() if volume_type == "image" else _labels()
    dataset, levels = _write_sharded(tmp_path, volume, kind, encoding, volume_type)
    _check_files(tmp_path, dataset)
    read = list(READERS[reader](tmp_path, dataset))
    assert len(read) == 2
    for got, want in zip(read, levels, strict=True):
        assert got.any()  # a missing chunk or shard reads as zeros
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# --- served with Range, as Neuroglancer reads it ----------------------------------------------


def test_middleware_serves_a_shard_by_range_without_content_encoding(tmp_path: Path) -> None:
    """Neuroglancer reads a shard in three Range requests: the shard index, a minishard index,
    a chunk. Each must be a 206 of the stored bytes with no Content-Encoding, even for a
    browser that accepts gzip and br (sharded.md; neuroglancer-scripts' serving notes)."""
    spec = ShardingSpec(1, 2, 1, minishard_index_encoding="gzip", data_encoding="gzip")
    chunks = _members(spec, 1, list(range(64)))
    write_shard(_writer(tmp_path), "s", spec, 1, chunks)
    client = Client(make_app(tmp_path))
    url = "/" + shard_path("s", spec, 1)
    size = (tmp_path / shard_path("s", spec, 1)).stat().st_size

    def fetch(start: int, stop: int) -> bytes:
        headers = {"Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "gzip, deflate, br"}
        with client.get(url, headers=headers) as r:
            assert r.status_code == 206
            assert "Content-Encoding" not in r.headers
            assert r.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
            return r.get_data()

    wanted = max(chunks)  # the last chunk: the largest offsets
    ranges = parse_shard_index(spec, fetch(0, spec.shard_index_size))
    entries = parse_minishard_index(spec, fetch(*ranges[spec.locate(wanted)[1]]))
    entry = next(e for e in entries if e.chunk_id == wanted)
    assert spec.decode_data(fetch(entry.start, entry.stop)) == chunks[wanted] != b""


# --- the streaming sink -----------------------------------------------------------------------


def _sharded_scale(grid_bytes: int = 64) -> Scale:
    """A 7 x 5 x 3 chunk grid (edge shards clipped) with about 8 chunks a shard."""
    scale = Scale("s", (7 * 4 - 1, 5 * 4 - 2, 3 * 4), (8.0, 8.0, 8.0), (4, 4, 4), (2, -3, 5))
    plan = choose_sharding(scale.grid_shape(), grid_bytes, 8 * grid_bytes)
    assert plan.num_shards > 4
    return dataclasses.replace(scale, sharding=plan.spec)


def _chunk(key: ChunkKey) -> bytes:
    return f"{key.name} ".encode() * (1 + key.start[0] % 3)


def _shard_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "s").iterdir())}


def test_sink_output_does_not_depend_on_arrival_order_or_threads(tmp_path: Path) -> None:
    scale = _sharded_scale()
    keys = list(scale.iter_chunk_keys())
    in_order = ShardSink(_writer(tmp_path / "a"), [scale])
    for key in keys:
        in_order.put(key, _chunk(key))
    in_order.close()
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    threaded = ShardSink(_writer(tmp_path / "b"), [scale])
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda k: threaded.put(k, _chunk(k)), shuffled))
    threaded.close()
    a, b = _shard_files(tmp_path / "a"), _shard_files(tmp_path / "b")
    assert a == b
    assert set(a) == _expected_shard_files(scale)
    assert not any((tmp_path / "b" / ".precomp-tmp").iterdir())  # spools removed
    # Every chunk is in its shard, gzip-encoded as the spec says.
    spec = scale.sharding
    assert spec is not None
    assert spec.data_encoding == "gzip"
    stored = {}
    for data in a.values():
        stored.update(read_shard(spec, data))
    grid = scale.grid_shape()
    assert stored == {compressed_morton_code(scale.grid_index(k), grid): _chunk(k) for k in keys}


def test_sink_writes_a_shard_when_its_last_chunk_arrives(tmp_path: Path) -> None:
    scale = _sharded_scale()
    sink = ShardSink(_writer(tmp_path), [scale])
    first = next(iter(scale.iter_chunk_keys()))
    members = [
        k for k in scale.iter_chunk_keys() if sink.shard_path_of(k) == sink.shard_path_of(first)
    ]
    assert len(members) > 2
    for key in members[:-1]:
        sink.put(key, _chunk(key))
    assert not (tmp_path / sink.shard_path_of(first)).exists()
    assert not sink.is_complete(first)
    with pytest.raises(RuntimeError, match=f"of {len(members)} chunks"):
        sink.close()
    with pytest.raises(ValueError, match="put twice"):
        sink.put(members[0], b"again")
    sink.put(members[-1], _chunk(members[-1]))
    assert sink.is_complete(first)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        Path(sink.shard_path_of(first)).name
    ]
    sink.close()


def test_sink_holds_index_entries_not_chunk_data(tmp_path: Path) -> None:
    # One shard of 64 chunks of 256 KiB, all but its last chunk put: 16 MiB spooled. The sink
    # may hold their index entries (a few dozen bytes each), not their data.
    scale = Scale("s", (16, 16, 16), (1.0, 1.0, 1.0), (4, 4, 4))
    spec = ShardingSpec(6, 0, 0, data_encoding="raw")
    sink = ShardSink(_writer(tmp_path), [dataclasses.replace(scale, sharding=spec)])
    keys = list(scale.iter_chunk_keys())
    tracemalloc.start()
    try:
        for key in keys[:-1]:
            data = np.random.default_rng(0).bytes(256 << 10)
            sink.put(key, data)
            del data
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1 << 20
    sink.put(keys[-1], b"last")
    shard = (tmp_path / "s" / "0.shard").read_bytes()
    assert len(shard) > 63 * (256 << 10)
    assert read_shard(spec, shard)[compressed_morton_code((3, 3, 3), (4, 4, 4))] == b"last"


def test_sink_resumes_unfinished_shards_and_keeps_finished_ones(tmp_path: Path) -> None:
    scale = _sharded_scale()
    keys = list(scale.iter_chunk_keys())
    first = ShardSink(_writer(tmp_path), [scale])
    for key in keys[: len(keys) // 2]:  # interrupted half way
        first.put(key, _chunk(key))
    done = {first.shard_path_of(k) for k in keys if first.is_complete(k)}
    assert done
    assert len(done) < len({first.shard_path_of(k) for k in keys})
    # A resumed run: begin() drops the spools, finished shards are skipped chunk by chunk.
    again = ShardSink(_writer(tmp_path), [scale])
    for key in keys:
        if not again.is_complete(key):
            again.put(key, _chunk(key))
    again.close()
    fresh = ShardSink(_writer(tmp_path / "fresh"), [scale])
    for key in keys:
        fresh.put(key, _chunk(key))
    assert _shard_files(tmp_path) == _shard_files(tmp_path / "fresh")


def test_sink_refuses_scales_whose_shards_are_not_boxes(tmp_path: Path) -> None:
    scale = _sharded_scale()
    hashed = ShardingSpec(0, 1, 3, "murmurhash3_x86_128")
    with pytest.raises(ValueError, match="not boxes"):
        ShardSink(_writer(tmp_path), [dataclasses.replace(scale, sharding=hashed)])
    with pytest.raises(ValueError, match="not sharded"):
        ShardSink(_writer(tmp_path), [dataclasses.replace(scale, sharding=None)])
