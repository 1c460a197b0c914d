"""Tests for :mod:`precomp_host.core.sharding`: the spec, its hash, Morton codes, shard parsing.

Vectors come from the spec (neuroglancer ``sharded.md``, ``volume.md``) and from tensorstore's
tests (``murmurhash3_test.cc``, ``uint64_sharded_test.cc``, ``metadata_test.cc``). The shard
files parsed here are assembled by hand in this file, byte by byte from the spec's prose, so
the parser is not checked against our own writer only (``test_shards`` does that round trip).
"""

from __future__ import annotations

import gzip
import itertools
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.core.sharding import (
    InvalidShardingError,
    ShardingSpec,
    compressed_morton_code,
    decode_compressed_morton,
    morton_bits,
    parse_minishard_index,
    parse_shard_index,
    read_shard,
)
from tests.strategies import sharding_specs

BASE: dict[str, Any] = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "hash": "murmurhash3_x86_128",
    "preshift_bits": 1,
    "minishard_bits": 2,
    "shard_bits": 3,
    "minishard_index_encoding": "raw",
    "data_encoding": "gzip",
}


# --- the specification ------------------------------------------------------------------------


@given(sharding_specs())
def test_spec_round_trips(spec: ShardingSpec) -> None:
    assert ShardingSpec.from_json(spec.to_json()) == spec


def test_to_json_matches_tensorstore() -> None:
    spec = ShardingSpec(1, 2, 3, "identity", minishard_index_encoding="gzip")
    assert spec.to_json() == {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "identity",
        "preshift_bits": 1,
        "minishard_bits": 2,
        "shard_bits": 3,
        "data_encoding": "raw",
        "minishard_index_encoding": "gzip",
    }


@pytest.mark.parametrize("member", ["data_encoding", "minishard_index_encoding"])
def test_encodings_default_to_raw(member: str) -> None:
    d = {k: v for k, v in BASE.items() if k != member}
    assert getattr(ShardingSpec.from_json(d), member) == "raw"


@pytest.mark.parametrize(
    "member", ["@type", "hash", "preshift_bits", "minishard_bits", "shard_bits"]
)
@pytest.mark.parametrize("value", ["missing", None])
def test_required_members(member: str, value: str | None) -> None:
    d = dict(BASE)
    if value == "missing":
        del d[member]
    else:
        d[member] = value
    with pytest.raises(InvalidShardingError):
        ShardingSpec.from_json(d)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        # tensorstore's limits: preshift in [0, 64], minishard in [0, 60],
        # shard in [0, 64 - minishard_bits]
        *(({"preshift_bits": i}, True) for i in (0, 1, 63, 64)),
        *(({"preshift_bits": i}, False) for i in (-1, -2, 65, 66)),
        *(({"minishard_bits": i, "shard_bits": 0}, True) for i in (0, 1, 59, 60)),
        *(({"minishard_bits": i, "shard_bits": 0}, False) for i in (-1, 61, 62, 63)),
        *(({"minishard_bits": 7, "shard_bits": i}, True) for i in (0, 1, 56, 57)),
        *(({"minishard_bits": 7, "shard_bits": i}, False) for i in (-1, 58, 59, 65)),
        ({"preshift_bits": True}, False),
        ({"preshift_bits": 1.0}, False),
        ({"@type": "neuroglancer_uint64_sharded_v2"}, False),
        ({"hash": "invalid_hash"}, False),
        ({"data_encoding": 1234}, False),
        ({"data_encoding": "invalid_encoding"}, False),
        ({"minishard_index_encoding": "br"}, False),
    ],
)
def test_limits(changes: dict[str, Any], valid: bool) -> None:
    d = {**BASE, **changes}
    if valid:
        assert ShardingSpec.from_json(d).to_json() == {**d}
    else:
        with pytest.raises(InvalidShardingError):
            ShardingSpec.from_json(d)
        if "@type" not in changes:  # the constructor checks the same rules
            with pytest.raises(InvalidShardingError):
                ShardingSpec(**{k: v for k, v in d.items() if k != "@type"})


def test_not_an_object() -> None:
    with pytest.raises(InvalidShardingError):
        ShardingSpec.from_json("invalid")


# --- hashing and locating a chunk --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low64"),
    # tensorstore murmurhash3_test.cc, seed 0 (the spec's seed): h[0] | h[1] << 32
    [(0, 0x4772B084_E028AE41), (1, 0xE8BD67D6_16D4CE9A), (42, 0xC20B94F9_5119F47A)],
)
def test_murmurhash_matches_tensorstore_vectors(value: int, low64: int) -> None:
    spec = ShardingSpec(0, 0, 0, "murmurhash3_x86_128")
    assert spec.hashed(value) == low64
    # The preshift applies before hashing: id 84 >> 1 hashes as 42.
    assert ShardingSpec(1, 0, 0, "murmurhash3_x86_128").hashed(value * 2 + 1) == low64


def test_locate_takes_the_spec_bits() -> None:
    spec = ShardingSpec(preshift_bits=3, minishard_bits=2, shard_bits=4)
    #            unused shard minishard preshift
    chunk_id = 0b1_0110_11_101
    assert spec.locate(chunk_id) == (0b0110, 0b11)
    hashed = ShardingSpec(3, 2, 4, "murmurhash3_x86_128")
    h = hashed.hashed(chunk_id)
    assert hashed.locate(chunk_id) == ((h >> 2) & 0b1111, h & 0b11)


@given(sharding_specs(), st.integers(0, 2**64 - 1))
def test_locate_is_in_range(spec: ShardingSpec, chunk_id: int) -> None:
    shard, minishard = spec.locate(chunk_id)
    assert 0 <= shard < spec.num_shards
    assert 0 <= minishard < spec.num_minishards
    if spec.hash == "identity":  # the id's bits, read back from where the spec puts them
        inner = chunk_id >> spec.preshift_bits
        assert minishard == inner % spec.num_minishards
        assert shard == (inner >> spec.minishard_bits) % spec.num_shards


@pytest.mark.parametrize(
    ("shard_bits", "shard", "name"),
    [
        (0, 0, "0.shard"),
        (1, 1, "1.shard"),
        (4, 15, "f.shard"),
        (5, 3, "03.shard"),
        (11, 0x1A, "01a.shard"),
    ],
)
def test_shard_name_is_padded_lowercase_hex(shard_bits: int, shard: int, name: str) -> None:
    spec = ShardingSpec(0, 0, shard_bits)
    assert spec.shard_name(shard) == name
    with pytest.raises(ValueError, match="outside"):
        spec.shard_name(spec.num_shards)


# --- compressed Morton codes -------------------------------------------------------------------


def test_morton_bits_match_tensorstore() -> None:
    # GetCompressedZIndexBits({79, 80, 144}, {20, 20, 12}): a grid of 4 x 4 x 12 chunks
    assert morton_bits((4, 4, 12)) == (2, 2, 4)
    assert morton_bits((1, 2**32, 2**62)) == (0, 32, 62)


@pytest.mark.parametrize(
    ("grid", "code"),
    # tensorstore EncodeCompressedZIndexTest with bits {4, 2, 1}: a 16 x 4 x 2 grid
    [
        ((0, 0, 0), 0),
        ((1, 0, 0), 1),
        ((0, 1, 0), 2),
        ((0b10, 0b0, 0b1), 0b1100),
        ((0b10, 0b11, 0b0), 0b11010),
        ((0b1001, 0b10, 0b1), 0b1010101),
    ],
)
def test_morton_code_matches_tensorstore(grid: tuple[int, int, int], code: int) -> None:
    assert compressed_morton_code(grid, (16, 4, 2)) == code
    assert decode_compressed_morton(code, (16, 4, 2)) == grid


@pytest.mark.parametrize(
    ("grid", "bit"),
    # volume.md's diagram: x of 16 bits, y of 14, z of 24. Below bit 42 the axes interleave;
    # once y runs out x and z alternate, and once x runs out z takes every bit.
    [
        ((1 << 13, 0, 0), 39),
        ((0, 1 << 13, 0), 40),
        ((0, 0, 1 << 13), 41),
        ((1 << 14, 0, 0), 42),
        ((1 << 15, 0, 0), 44),
        ((0, 0, 1 << 15), 45),
        ((0, 0, 1 << 23), 53),
    ],
)
def test_morton_code_matches_the_spec_diagram(grid: tuple[int, int, int], bit: int) -> None:
    assert compressed_morton_code(grid, (2**16, 2**14, 2**24)) == 1 << bit


grid_shapes = st.tuples(*[st.integers(1, 2**20)] * 3)


@given(grid_shapes, st.data())
def test_morton_code_round_trips_below_its_bit_count(
    shape: tuple[int, int, int], data: st.DataObject
) -> None:
    grid = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    code = compressed_morton_code(grid, shape)
    assert 0 <= code < 2 ** sum(morton_bits(shape))
    assert decode_compressed_morton(code, shape) == grid


@given(st.tuples(*[st.integers(1, 9)] * 3))
def test_morton_codes_of_a_grid_are_distinct(shape: tuple[int, int, int]) -> None:
    codes = {compressed_morton_code(g, shape) for g in itertools.product(*map(range, shape))}
    assert len(codes) == shape[0] * shape[1] * shape[2]


def test_morton_code_rejects_positions_outside_the_grid() -> None:
    with pytest.raises(IndexError):
        compressed_morton_code((4, 0, 0), (4, 4, 4))
    with pytest.raises(ValueError, match="more bits"):
        decode_compressed_morton(64, (4, 4, 4))


# --- parsing a shard file assembled by hand ---------------------------------------------------


def _hand_made_shard(gzip_index: bool) -> tuple[ShardingSpec, bytes]:
    """Two minishards (of four): minishard 1 holds ids 5 and 9, minishard 3 holds id 7.

    The data sits before the minishard indices and with a 3-byte gap after the first chunk,
    so the offset deltas are not all zero.
    """
    spec = ShardingSpec(0, 2, 0, minishard_index_encoding="gzip" if gzip_index else "raw")
    data = b"five" + b"---" + b"nine!" + b"seven"  # ids 5 at 0, 9 at 7, 7 at 12 (after 64)
    # [3, n] uint64le: id deltas, offset deltas from the previous chunk's end, sizes.
    ms1 = struct.pack("<6Q", 5, 4, 0, 3, 4, 5)
    ms3 = struct.pack("<3Q", 7, 12, 5)
    if gzip_index:
        ms1, ms3 = gzip.compress(ms1), gzip.compress(ms3)
    ms1_at, ms3_at = len(data), len(data) + len(ms1)
    index = struct.pack(
        "<8Q", 0, 0, ms1_at, ms1_at + len(ms1), 0, 0, ms3_at, ms3_at + len(ms3)
    )  # offsets relative to the end of the 64-byte shard index
    return spec, index + data + ms1 + ms3


@pytest.mark.parametrize("gzip_index", [False, True])
def test_parse_hand_made_shard(gzip_index: bool) -> None:
    spec, shard = _hand_made_shard(gzip_index)
    ranges = parse_shard_index(spec, shard)
    assert ranges[0] == ranges[2] == (64, 64)
    entries = parse_minishard_index(spec, shard[ranges[1][0] : ranges[1][1]])
    assert [(e.chunk_id, e.start, e.stop) for e in entries] == [(5, 64, 68), (9, 71, 76)]
    assert read_shard(spec, shard) == {5: b"five", 9: b"nine!", 7: b"seven"}


def test_read_shard_decodes_gzip_data() -> None:
    spec = ShardingSpec(0, 0, 0, data_encoding="gzip")
    body = gzip.compress(b"chunk")
    shard = (
        struct.pack("<2Q", len(body), len(body) + 24) + body + struct.pack("<3Q", 3, 0, len(body))
    )
    assert read_shard(spec, shard) == {3: b"chunk"}


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        (b"\0" * 63, "needs 64 bytes"),
        (struct.pack("<8Q", 0, 0, 5, 4, 0, 0, 0, 0), "reversed"),
        (struct.pack("<8Q", 0, 0, 0, 24, 0, 0, 0, 0), "past the file's end"),
        (struct.pack("<8Q", 0, 0, 0, 23, 0, 0, 0, 0) + b"\0" * 23, "not 24 \\* n"),
        (struct.pack("<8Q", 0, 0, 0, 24, 0, 0, 0, 0) + struct.pack("<3Q", 1, 30, 1), "chunk 1"),
    ],
)
def test_read_shard_rejects_damaged_files(shard: bytes, message: str) -> None:
    with pytest.raises(InvalidShardingError, match=message):
        read_shard(ShardingSpec(0, 2, 0), shard)
