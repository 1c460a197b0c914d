"""Tests for :mod:`precomp_host.core.shard_grid`: shards as grid boxes, and choosing their size.

The box vectors are tensorstore's ``GetChunksPerVolumeShardFunction`` tests (metadata_test.cc).
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from precomp_host.core.shard_grid import (
    MAX_MINISHARD_BITS,
    MINISHARD_CHUNK_BITS,
    ShardPlan,
    choose_sharding,
    parse_byte_size,
    shard_shape_in_chunks,
)
from precomp_host.core.sharding import ShardingSpec, compressed_morton_code, morton_bits

TS_SPEC = ShardingSpec(preshift_bits=1, minishard_bits=2, shard_bits=3, hash="identity")


@pytest.mark.parametrize(
    ("grid", "chunks_per_shard"),
    [
        ((2, 4, 8), [8] * 8),  # AllShardsFull
        ((2, 4, 7), [8, 8, 8, 8, 8, 8, 4, 4]),  # PartialShards1Dim
        ((2, 3, 7), [8, 4, 8, 4, 8, 4, 4, 2]),  # PartialShards2Dims
    ],
)
def test_shard_boxes_match_tensorstore(
    grid: tuple[int, int, int], chunks_per_shard: list[int]
) -> None:
    shape = shard_shape_in_chunks(TS_SPEC, grid)
    assert shape == (2, 2, 2)
    plan = ShardPlan(TS_SPEC, grid, shape)
    boxes = list(plan.iter_shards())
    assert [b.shard for b in boxes] == list(range(8))
    assert [len(list(b.iter_grid())) for b in boxes] == chunks_per_shard
    assert plan.num_shards == 8
    assert plan.chunks_per_shard == 8


def test_shards_are_not_boxes_when_hashed_or_short_of_bits() -> None:
    hashed = ShardingSpec(1, 2, 3, hash="murmurhash3_x86_128")
    assert shard_shape_in_chunks(hashed, (2, 4, 7)) is None  # NotIdentity
    assert shard_shape_in_chunks(ShardingSpec(1, 2, 2), (2, 4, 7)) is None  # NotEnoughBits


grids = st.tuples(*[st.integers(1, 9)] * 3)


@settings(deadline=None)  # up to 729 chunks located one by one; time is not the property
@given(grids, st.integers(0, 6), st.integers(0, 3))
def test_shard_boxes_tile_the_grid_and_hold_their_own_chunks(
    grid: tuple[int, int, int], inner: int, minishard_bits: int
) -> None:
    total = sum(morton_bits(grid))
    minishard_bits = min(minishard_bits, inner)
    spec = ShardingSpec(inner - minishard_bits, minishard_bits, max(0, total - inner))
    shape = shard_shape_in_chunks(spec, grid)
    assert shape is not None
    plan = ShardPlan(spec, grid, shape)
    seen: list[tuple[int, int, int]] = []
    for box in plan.iter_shards():
        cells = list(box.iter_grid())
        assert cells, "no empty shard is listed"
        assert len(cells) <= plan.chunks_per_shard
        assert {spec.locate(compressed_morton_code(g, grid))[0] for g in cells} == {box.shard}
        seen += cells
    assert sorted(seen) == sorted(itertools.product(*map(range, grid)))
    assert len(list(plan.iter_shards())) == plan.num_shards


@given(
    st.tuples(*[st.integers(1, 5000)] * 3),
    st.integers(1, 2**24),
    st.integers(1, 2**40),
)
def test_choose_sharding_fits_the_target(
    grid: tuple[int, int, int], chunk_bytes: int, target: int
) -> None:
    plan = choose_sharding(grid, chunk_bytes, target)
    spec = plan.spec
    inner = spec.preshift_bits + spec.minishard_bits
    assert inner + spec.shard_bits == sum(morton_bits(grid))  # every bit, and no more
    assert spec.hash == "identity"
    assert (spec.data_encoding, spec.minishard_index_encoding) == ("gzip", "gzip")
    # The largest power of two of chunks under the target (one chunk when a chunk is bigger),
    # unless the whole scale fits in one shard.
    full = 2**inner
    assert full * chunk_bytes <= max(target, chunk_bytes)
    assert 2 * full * chunk_bytes > target or spec.shard_bits == 0
    # Small indices: minishards of at most 1024 chunks until the shard index reaches 8 KiB.
    assert spec.shard_index_size <= 16 * 2**MAX_MINISHARD_BITS
    assert spec.preshift_bits <= MINISHARD_CHUNK_BITS or spec.minishard_bits == MAX_MINISHARD_BITS
    assert plan.chunks_per_shard <= full
    assert plan.num_shards * plan.chunks_per_shard >= math.prod(grid)


def test_choose_sharding_example_plan() -> None:
    # The 1 TB uint8 volume of issue 13 at 64^3: 256 KiB chunks, 2 GB shards.
    plan = choose_sharding((157, 157, 157), 64**3, parse_byte_size("2GB"))
    assert plan.chunks_per_shard == 4096  # 16^3 chunks, 1 GiB raw, under 2 GB
    assert plan.spec.minishard_bits == 2
    assert plan.spec.preshift_bits == 10
    assert plan.to_json() == {
        "shards": 1000,  # 10^3 boxes of 16^3 chunks cover 157^3
        "chunks": 157**3,
        "chunks_per_shard": 4096,
        "shard_shape_in_chunks": [16, 16, 16],
        "sharding": plan.spec.to_json(),
    }


def test_choose_sharding_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        choose_sharding((2**22, 2**22, 2**22), 1, 10**9)
    with pytest.raises(ValueError, match="positive"):
        choose_sharding((4, 4, 4), 0, 10**9)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2 * 10**9),
        ("2 GiB", 2 * 2**30),
        ("512MiB", 512 * 2**20),
        ("1.5gb", 1_500_000_000),
        ("100", 100),
        ("64kb", 64_000),
    ],
)
def test_parse_byte_size(text: str, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "2XB", "-1GB", "0.1", "two GB"])
def test_parse_byte_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_byte_size(text)
