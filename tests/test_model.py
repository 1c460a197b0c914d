"""Tests for :mod:`precomp_host.core.model`: ``info`` round trip, chunk-grid arithmetic."""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.core.model import ChunkKey, Dataset, InvalidInfoError, Scale, scale_key_for
from precomp_host.core.sharding import ShardingSpec
from tests.strategies import chunk_keys, dataset_jsons, scales

# The example of neuroglancer's volume.md, with one member of our own at each level.
EXAMPLE: dict[str, Any] = {
    "@type": "neuroglancer_multiscale_volume",
    "type": "image",
    "data_type": "uint8",
    "num_channels": 1,
    "scales": [
        {
            "key": "8_8_40",
            "size": [70, 45, 33],
            "resolution": [8, 8, 40],
            "chunk_sizes": [[64, 64, 64]],
            "voxel_offset": [5, 0, 7],
            "encoding": "raw",
            "lab:acquired": {"date": "2024-01-01"},
        },
        {
            "key": "16_16_40",
            "size": [35, 23, 33],
            "resolution": [16, 16, 40],
            "chunk_sizes": [[32, 32, 32], [64, 64, 16]],
            "voxel_offset": [2, 0, 7],
            "encoding": "jpeg",
        },
    ],
    "mesh": "mesh",
    "lab:notes": ["kept", 1, None],
}


# The sharding member of tensorstore's metadata_test.cc example scale.
SHARDING: dict[str, Any] = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 9,
    "hash": "identity",
    "minishard_bits": 6,
    "shard_bits": 11,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def _info(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(EXAMPLE)
    d.update(changes)
    return d


def _scale_info(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(EXAMPLE)
    d["scales"][0].update(changes)
    return d


# --- the info document ---------------------------------------------------------------------


def test_example_round_trips_with_unknown_members() -> None:
    ds = Dataset.from_json(EXAMPLE)
    assert ds.extra == {"@type": "neuroglancer_multiscale_volume", "lab:notes": ["kept", 1, None]}
    assert ds.scales[0].extra == {"lab:acquired": {"date": "2024-01-01"}}
    assert ds.scales[1].other_chunk_sizes == ((64, 64, 16),)
    assert ds.to_json() == EXAMPLE
    # "@type" first, as neuroglancer and tensorstore write it; then the modelled members.
    assert list(ds.to_json())[:5] == ["@type", "type", "data_type", "num_channels", "scales"]


@given(dataset_jsons())
def test_canonical_info_round_trips(d: dict[str, Any]) -> None:
    assert Dataset.from_json(d).to_json() == d
    # Through JSON text too, as the generator writes it and a server reads it.
    again = Dataset.from_json(json.loads(json.dumps(Dataset.from_json(d).to_json())))
    assert again.to_json() == d


def test_defaults_are_written_explicitly() -> None:
    d = _info()
    del d["scales"][0]["voxel_offset"], d["scales"][0]["encoding"]
    s = Dataset.from_json(d).scales[0]
    assert (s.voxel_offset, s.encoding) == ((0, 0, 0), "raw")
    assert s.to_json()["voxel_offset"] == [0, 0, 0]


def test_integral_resolution_is_written_as_integer() -> None:
    d = _scale_info(resolution=[8.0, 8.0, 40.5])
    text = json.dumps(Dataset.from_json(d).to_json()["scales"][0]["resolution"])
    assert text == "[8, 8, 40.5]"
    assert scale_key_for((8.0, 8.0, 40.0)) == "8_8_40"
    assert scale_key_for((4.5, 4.5, 40)) == "4.5_4.5_40"


def test_sharded_scale_round_trips_typed() -> None:
    d = _scale_info(sharding=SHARDING)
    ds = Dataset.from_json(d)
    s = ds.scales[0]
    assert s.is_sharded
    assert not ds.scales[1].is_sharded
    assert s.sharding == ShardingSpec(
        preshift_bits=9,
        minishard_bits=6,
        shard_bits=11,
        hash="identity",
        minishard_index_encoding="gzip",
        data_encoding="gzip",
    )
    assert "sharding" not in s.extra
    assert ds.to_json() == d
    assert "sharding" not in ds.scales[1].to_json()


def test_sharding_encodings_default_to_raw_and_are_written() -> None:
    sharding = {k: v for k, v in SHARDING.items() if not k.endswith("encoding")}
    s = Dataset.from_json(_scale_info(sharding=sharding)).scales[0]
    assert s.sharding is not None
    assert (s.sharding.data_encoding, s.sharding.minishard_index_encoding) == ("raw", "raw")
    written = s.to_json()["sharding"]
    assert (written["data_encoding"], written["minishard_index_encoding"]) == ("raw", "raw")


def test_invalid_sharding_names_the_scale() -> None:
    with pytest.raises(InvalidInfoError, match="scale 8_8_40: sharding shard_bits"):
        Dataset.from_json(_scale_info(sharding={**SHARDING, "shard_bits": 60}))


def test_scale_lookup() -> None:
    ds = Dataset.from_json(EXAMPLE)
    assert ds.scale("16_16_40") is ds.scales[1]
    with pytest.raises(KeyError):
        ds.scale("1_1_1")


@pytest.mark.parametrize(
    "info",
    [
        pytest.param([], id="not-an-object"),
        pytest.param(_info(type="mesh"), id="bad-type"),
        pytest.param({k: v for k, v in EXAMPLE.items() if k != "type"}, id="missing-type"),
        pytest.param(_info(data_type="float64"), id="bad-data_type"),
        pytest.param(_info(data_type=None), id="missing-data_type"),
        pytest.param(_info(num_channels=0), id="zero-channels"),
        pytest.param(_info(num_channels=True), id="bool-channels"),
        pytest.param(_info(num_channels=1.0), id="float-channels"),
        pytest.param(_info(num_channels="1"), id="string-channels"),
        pytest.param(_info(scales=[]), id="no-scales"),
        pytest.param(_info(scales={"key": "a"}), id="scales-object"),
        pytest.param(_info(scales="abc"), id="scales-string"),
        pytest.param(_info(scales=[1]), id="scale-not-object"),
        pytest.param(_info(scales=[EXAMPLE["scales"][0]] * 2), id="duplicate-keys"),
        pytest.param(_info(mesh=3), id="mesh-not-string"),
        pytest.param(_info(segment_properties=["x"]), id="segment_properties-not-string"),
        pytest.param(_scale_info(key=""), id="empty-key"),
        pytest.param(_scale_info(key=8), id="key-not-string"),
        pytest.param(_scale_info(size=[70, 45]), id="size-2d"),
        pytest.param(_scale_info(size=[70, 0, 33]), id="size-zero"),
        pytest.param(_scale_info(size=[70, -1, 33]), id="size-negative"),
        pytest.param(_scale_info(size=[70, 45.0, 33]), id="size-float"),
        pytest.param(_scale_info(size=[70, True, 33]), id="size-bool"),
        pytest.param(_scale_info(size="703"), id="size-string"),
        pytest.param(_scale_info(size=None), id="size-missing"),
        pytest.param(_scale_info(resolution=[8, 0, 40]), id="resolution-zero"),
        pytest.param(_scale_info(resolution=[8, -8, 40]), id="resolution-negative"),
        pytest.param(_scale_info(resolution=[8, "8", 40]), id="resolution-string"),
        pytest.param(_scale_info(resolution=[8, 8]), id="resolution-2d"),
        pytest.param(_scale_info(resolution=[8, 8, float("nan")]), id="resolution-nan"),
        pytest.param(_scale_info(chunk_sizes=[]), id="chunk_sizes-empty"),
        pytest.param(_scale_info(chunk_sizes=[64, 64, 64]), id="chunk_sizes-flat"),
        pytest.param(_scale_info(chunk_sizes=[[64, 0, 64]]), id="chunk_size-zero"),
        pytest.param(_scale_info(chunk_sizes=[[64, 64, 64], [1, 1]]), id="other-chunk-size-2d"),
        pytest.param(_scale_info(sharding={"@type": "x"}), id="sharding-bad-type"),
        pytest.param(_scale_info(sharding=[]), id="sharding-not-object"),
        pytest.param(
            _scale_info(sharding=SHARDING, chunk_sizes=[[64, 64, 64], [32, 32, 32]]),
            id="sharded-with-two-chunk-sizes",
        ),
        pytest.param(_scale_info(voxel_offset=[0, 0]), id="voxel_offset-2d"),
        pytest.param(_scale_info(voxel_offset=[0, 0.5, 0]), id="voxel_offset-float"),
        pytest.param(_scale_info(encoding=1), id="encoding-not-string"),
    ],
)
def test_invalid_info(info: Any) -> None:
    with pytest.raises(InvalidInfoError):
        Dataset.from_json(info)


def test_missing_scale_members() -> None:
    for member in ("key", "chunk_sizes", "size", "resolution"):
        d = _info()
        del d["scales"][0][member]
        with pytest.raises(InvalidInfoError, match=member):
            Dataset.from_json(d)


def test_invalid_info_error_is_a_value_error() -> None:
    assert issubclass(InvalidInfoError, ValueError)


# --- chunk keys ----------------------------------------------------------------------------


def test_chunk_key_name_and_shape() -> None:
    k = ChunkKey("8_8_40", (64, 0, 7), (70, 64, 40))
    assert k.name == "64-70_0-64_7-40"
    assert k.shape == (6, 64, 33)
    assert ChunkKey.parse("8_8_40", k.name) == k


@pytest.mark.parametrize(
    "name",
    [
        "0-64_0-64",
        "0-64_0-64_0-64_0-64",
        "0-64_0-64_0-64.gz",
        "0-64_0-64_0-64\n",
        " 0-64_0-64_0-64",
        "0-64_0-64_--1-64",  # a doubled sign
        "0-64_0-64_1--64",  # reversed, across zero
        "1_2_3",
        "1:0",
        "1052:0:0-512_0-512_0-512",
        "64-0_0-64_0-64",  # reversed
        "0-64_5-5_0-64",  # empty
        "０-64_0-64_0-64",  # a non-ASCII digit that Python's \d would accept
    ],
)
def test_parse_rejects(name: str) -> None:
    with pytest.raises(InvalidInfoError):
        ChunkKey.parse("s", name)


@given(scales())
def test_iter_chunk_keys_tiles_the_volume_exactly(s: Scale) -> None:
    keys = list(s.iter_chunk_keys())
    assert len(keys) == s.num_chunks() == math.prod(s.grid_shape())
    start, stop = s.voxel_offset, s.stop
    for k in keys:
        assert k.scale == s.key
        for a, b, lo, hi, c in zip(k.start, k.stop, start, stop, s.chunk_size, strict=True):
            assert lo <= a < b <= hi  # within bounds, non-empty
            assert b - a == c or b == hi  # full size, or clipped at the far edge
            assert (a - lo) % c == 0  # on the grid, which starts at voxel_offset
    # Disjoint: no two boxes share a voxel.
    for p, q in itertools.combinations(keys, 2):
        overlap = all(
            a1 < b2 and a2 < b1
            for a1, b1, a2, b2 in zip(p.start, p.stop, q.start, q.stop, strict=True)
        )
        assert not overlap, (p, q)
    # Disjoint boxes inside the volume whose volumes add up to it cover it.
    assert sum(math.prod(k.shape) for k in keys) == math.prod(s.size)


@given(scales())
def test_chunk_key_and_grid_index_round_trip(s: Scale) -> None:
    for k in s.iter_chunk_keys():
        g = s.grid_index(k)
        assert s.chunk_key(g) == k
        assert s.grid_index(ChunkKey.parse(s.key, k.name)) == g


@given(scales())
def test_iteration_order_is_x_fastest(s: Scale) -> None:
    grids = [s.grid_index(k) for k in s.iter_chunk_keys()]
    assert grids == sorted(grids, key=lambda g: (g[2], g[1], g[0]))
    gz = s.grid_shape()[2]
    assert list(s.iter_chunk_keys(range(gz - 1, gz))) == [
        k for k in s.iter_chunk_keys() if s.grid_index(k)[2] == gz - 1
    ]


def test_tiny_volume_edges() -> None:
    s = Scale("8_8_40", (70, 45, 33), (8, 8, 40), (64, 64, 64), voxel_offset=(5, 0, 7))
    assert s.grid_shape() == (2, 1, 1)
    assert [k.name for k in s.iter_chunk_keys()] == ["5-69_0-45_7-40", "69-75_0-45_7-40"]


@given(scales(), st.data())
def test_grid_index_rejects_misaligned_boxes(s: Scale, data: st.DataObject) -> None:
    k = data.draw(chunk_keys(s))
    axis = data.draw(st.integers(0, 2))
    shift = data.draw(
        st.integers(1, s.chunk_size[axis] - 1) if s.chunk_size[axis] > 1 else st.just(0)
    )
    if shift == 0:
        return
    start, stop = list(k.start), list(k.stop)
    start[axis] += shift
    if start[axis] >= stop[axis]:
        stop[axis] = start[axis] + 1
    bad = ChunkKey(s.key, (start[0], start[1], start[2]), (stop[0], stop[1], stop[2]))
    with pytest.raises(InvalidInfoError):
        s.grid_index(bad)


@given(scales(), st.data())
def test_grid_index_rejects_wrong_ends(s: Scale, data: st.DataObject) -> None:
    k = data.draw(chunk_keys(s))
    axis = data.draw(st.integers(0, 2))
    delta = data.draw(st.integers(-5, 5).filter(lambda d: d != 0))
    stop = list(k.stop)
    stop[axis] += delta
    if stop[axis] <= k.start[axis]:
        stop[axis] = k.start[axis] + k.shape[axis] + 1
    bad = ChunkKey(s.key, k.start, (stop[0], stop[1], stop[2]))
    with pytest.raises(InvalidInfoError):
        s.grid_index(bad)


@given(scales(), st.data())
def test_grid_index_rejects_boxes_outside_the_grid(s: Scale, data: st.DataObject) -> None:
    axis = data.draw(st.integers(0, 2))
    start, stop = (
        list(s.voxel_offset),
        [o + c for o, c in zip(s.voxel_offset, s.chunk_size, strict=True)],
    )
    before = data.draw(st.booleans())
    if before:  # one chunk before voxel_offset
        if s.voxel_offset[axis] < s.chunk_size[axis]:
            return
        start[axis] -= s.chunk_size[axis]
        stop[axis] -= s.chunk_size[axis]
    else:  # one chunk past the end
        start[axis] = s.voxel_offset[axis] + s.grid_shape()[axis] * s.chunk_size[axis]
        stop[axis] = start[axis] + s.chunk_size[axis]
    bad = ChunkKey(s.key, (start[0], start[1], start[2]), (stop[0], stop[1], stop[2]))
    with pytest.raises(InvalidInfoError):
        s.grid_index(bad)


def test_grid_index_rejects_other_scales() -> None:
    s = Scale("8_8_40", (70, 45, 33), (8, 8, 40), (64, 64, 64))
    other = ChunkKey("16_16_40", (0, 0, 0), (64, 45, 33))
    with pytest.raises(InvalidInfoError, match="16_16_40"):
        s.grid_index(other)
    assert s.grid_index(ChunkKey("8_8_40", (0, 0, 0), (64, 45, 33))) == (0, 0, 0)


def test_chunk_key_outside_grid_is_an_index_error() -> None:
    s = Scale("s", (70, 45, 33), (8, 8, 40), (64, 64, 64))
    for grid in [(2, 0, 0), (0, 1, 0), (0, 0, -1)]:
        with pytest.raises(IndexError):
            s.chunk_key(grid)
