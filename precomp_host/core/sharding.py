"""The sharded precomputed format: :class:`ShardingSpec`, compressed Morton codes, shard reading.

A sharded scale stores its chunks in ``2**shard_bits`` files ``<shard>.shard``; a chunk's
uint64 id (for volumes the compressed Morton code of its grid position) is hashed to a shard and
a minishard inside it. Each shard starts with a fixed-size shard index (one byte range per
minishard) pointing at minishard indices, which list ``(chunk id, offset, size)`` triples.
Sources: neuroglancer ``src/datasource/precomputed/sharded.md`` and ``volume.md`` ("Compressed
morton code"); tensorstore's ``uint64_sharded`` tests for the limits and the hash's vectors.

This module is pure arithmetic and parsing, shared by the builder, server checks and readers.
Shards as boxes of the chunk grid, and choosing their size, are ``core.shard_grid``; writing a
shard is ``build.shards``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

SHARDED_V1 = "neuroglancer_uint64_sharded_v1"
SHARD_SUFFIX = ".shard"
HashName = Literal["identity", "murmurhash3_x86_128"]
DataEncoding = Literal["raw", "gzip"]
HASHES: tuple[HashName, ...] = ("identity", "murmurhash3_x86_128")
DATA_ENCODINGS: tuple[DataEncoding, ...] = ("raw", "gzip")

#: One shard index entry: the minishard index's [start, end) relative to the shard index's end.
SHARD_INDEX_ENTRY = struct.Struct("<QQ")
#: A decoded minishard index is a C-order [3, n] array of uint64le: ids, offsets, sizes.
MINISHARD_ROW_BYTES = 24
_U64 = (1 << 64) - 1

Vec3 = tuple[int, int, int]


class InvalidShardingError(ValueError):
    """A sharding specification or a shard file that does not follow ``sharded.md``."""


def _bits(obj: Mapping[str, Any], name: str, high: int) -> int:
    v = obj.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= high:
        raise InvalidShardingError(f"sharding {name} must be an integer in [0, {high}], got {v!r}")
    return v


def _encoding(obj: Mapping[str, Any], name: str) -> DataEncoding:
    v = obj.get(name, "raw")  # "If not specified, equivalent to raw" (sharded.md)
    if v not in DATA_ENCODINGS:
        raise InvalidShardingError(f"sharding {name} must be 'raw' or 'gzip', got {v!r}")
    return cast("DataEncoding", v)


def _validated(obj: Any) -> dict[str, Any]:
    """The spec's members as keyword arguments, checked with tensorstore's limits: the
    minishard and shard numbers must fit in the 64-bit hashed id together."""
    if not isinstance(obj, Mapping):
        raise InvalidShardingError(f"sharding must be an object, got {obj!r}")
    if obj.get("@type") != SHARDED_V1:
        raise InvalidShardingError(f"sharding @type must be {SHARDED_V1!r}, got {obj!r}")
    if obj.get("hash") not in HASHES:
        raise InvalidShardingError(f"sharding hash must be one of {HASHES}, got {obj!r}")
    minishard_bits = _bits(obj, "minishard_bits", 60)
    return {
        "preshift_bits": _bits(obj, "preshift_bits", 64),
        "minishard_bits": minishard_bits,
        "shard_bits": _bits(obj, "shard_bits", 64 - minishard_bits),
        "hash": obj["hash"],
        "minishard_index_encoding": _encoding(obj, "minishard_index_encoding"),
        "data_encoding": _encoding(obj, "data_encoding"),
    }


def _murmurhash3_x86_128_low64(value: int) -> int:
    try:
        import mmh3  # optional: only murmurhash-sharded data needs it (extra "sharded")
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidShardingError(
            "murmurhash3_x86_128 sharding needs mmh3: pip install 'precomp-host[sharded]'"
        ) from None
    # The shifted id in little endian, seed 0; the low 8 bytes of the 128-bit hash as a
    # little-endian uint64 (sharded.md). mmh3's unsigned int is that little-endian number.
    return int(mmh3.hash128(value.to_bytes(8, "little"), 0, False, signed=False)) & _U64


@dataclass(frozen=True)
class ShardingSpec:
    """The ``sharding`` member of a scale: how chunk ids map to shard files.

    >>> spec = ShardingSpec(preshift_bits=3, minishard_bits=2, shard_bits=4)
    >>> spec.locate(0b1_0110_11_101), spec.shard_name(0b0110)
    ((6, 3), '6.shard')

    :param preshift_bits: low bits of the chunk id left out of the hash (``id >> preshift``).
    :param minishard_bits: bits ``[0, minishard_bits)`` of the hashed id: the minishard.
    :param shard_bits: the next ``shard_bits`` bits of the hashed id: the shard.
    :param hash: ``identity`` (spatial shards for volumes) or ``murmurhash3_x86_128``.
    :param minishard_index_encoding: ``raw`` or ``gzip``, for each minishard index.
    :param data_encoding: ``raw`` or ``gzip``, for each chunk's data.
    """

    preshift_bits: int
    minishard_bits: int
    shard_bits: int
    hash: HashName = "identity"
    minishard_index_encoding: DataEncoding = "raw"
    data_encoding: DataEncoding = "raw"

    def __post_init__(self) -> None:
        _validated(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> ShardingSpec:
        """Parse a ``sharding`` member; :class:`InvalidShardingError` names the first problem."""
        return cls(**_validated(obj))

    def to_json(self) -> dict[str, Any]:
        return {
            "@type": SHARDED_V1,
            "preshift_bits": self.preshift_bits,
            "hash": self.hash,
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": self.minishard_index_encoding,
            "data_encoding": self.data_encoding,
        }

    @property
    def num_shards(self) -> int:
        return 1 << self.shard_bits

    @property
    def num_minishards(self) -> int:
        return 1 << self.minishard_bits

    @property
    def shard_index_size(self) -> int:
        """Bytes of the fixed shard index at the start of every shard file."""
        return SHARD_INDEX_ENTRY.size << self.minishard_bits

    def hashed(self, chunk_id: int) -> int:
        shifted = (chunk_id & _U64) >> self.preshift_bits
        if self.hash == "identity":
            return shifted
        return _murmurhash3_x86_128_low64(shifted)

    def locate(self, chunk_id: int) -> tuple[int, int]:
        """``(shard, minishard)`` of a chunk id."""
        h = self.hashed(chunk_id)
        minishard = h & (self.num_minishards - 1)
        return (h >> self.minishard_bits) & (self.num_shards - 1), minishard

    def shard_name(self, shard: int) -> str:
        """``<shard>.shard``: lowercase hex, zero padded to ``ceil(shard_bits / 4)`` digits."""
        if not 0 <= shard < self.num_shards:
            raise ValueError(f"shard {shard} outside [0, {self.num_shards})")
        return f"{shard:0{-(-self.shard_bits // 4)}x}{SHARD_SUFFIX}"

    def encode_data(self, data: bytes) -> bytes:
        return _gzip(data, self.data_encoding, compress=True)

    def decode_data(self, data: bytes) -> bytes:
        return _gzip(data, self.data_encoding, compress=False)

    def encode_minishard_index(self, data: bytes) -> bytes:
        return _gzip(data, self.minishard_index_encoding, compress=True)

    def decode_minishard_index(self, data: bytes) -> bytes:
        return _gzip(data, self.minishard_index_encoding, compress=False)


def _gzip(data: bytes, encoding: DataEncoding, *, compress: bool) -> bytes:
    if encoding == "raw":
        return data
    # Imported here: the model imports this module, and `--help` must not load brotli/deflate.
    from .encodings import gzip_compress, gzip_decompress

    return gzip_compress(data) if compress else gzip_decompress(data)


# -- compressed Morton codes (volume.md) -------------------------------------------------------


def morton_bits(grid_shape: Sequence[int]) -> Vec3:
    """Bits each axis contributes: enough for ``grid_shape[d] - 1`` (a 1-wide axis gives none)."""
    x, y, z = ((n - 1).bit_length() for n in grid_shape)
    return (x, y, z)


def morton_interleaving(bits: Vec3) -> Iterator[tuple[int, int]]:
    """``(axis, axis bit)`` of each output bit, from the least significant (volume.md's loop)."""
    for i in range(max(bits)):
        for axis in range(3):
            if i < bits[axis]:
                yield axis, i


@functools.lru_cache(maxsize=64)
def _spread_tables(grid_shape: Vec3) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Per axis, per byte of the coordinate: the code bits each of its 256 values sets.

    A lookup instead of volume.md's loop over every bit: a build computes the id of millions
    of chunks (measured under load: 67 us a chunk by the loop, 6 us by the tables).
    """
    positions: list[list[int]] = [[], [], []]
    for j, (axis, _) in enumerate(morton_interleaving(morton_bits(grid_shape))):
        positions[axis].append(j)
    return tuple(
        tuple(
            tuple(sum(((v >> k) & 1) << p for k, p in enumerate(ps[b : b + 8])) for v in range(256))
            for b in range(0, len(ps), 8)
        )
        for ps in positions
    )


def compressed_morton_code(grid: Sequence[int], grid_shape: Sequence[int]) -> int:
    """The chunk id of grid position ``grid``: its bits interleaved, always-zero bits skipped."""
    x, y, z = grid
    nx, ny, nz = grid_shape
    if not (0 <= x < nx and 0 <= y < ny and 0 <= z < nz):
        raise IndexError(f"grid position {tuple(grid)} outside {tuple(grid_shape)}")
    code = 0
    for value, tables in zip(grid, _spread_tables((nx, ny, nz)), strict=True):
        for table in tables:
            code |= table[value & 0xFF]
            value >>= 8
    return code


def decode_compressed_morton(code: int, grid_shape: Sequence[int]) -> Vec3:
    """The grid position of a chunk id (the inverse of :func:`compressed_morton_code`)."""
    g = [0, 0, 0]
    for j, (axis, i) in enumerate(morton_interleaving(morton_bits(grid_shape))):
        g[axis] |= ((code >> j) & 1) << i
    if code >> sum(morton_bits(grid_shape)):
        raise ValueError(f"chunk id {code} has more bits than grid {tuple(grid_shape)} uses")
    return (g[0], g[1], g[2])


# -- reading a shard file --------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkEntry:
    """One chunk of a minishard index: its id and byte range ``[start, stop)`` in the shard."""

    chunk_id: int
    start: int
    stop: int


def parse_shard_index(spec: ShardingSpec, data: bytes) -> list[tuple[int, int]]:
    """Byte ranges ``[start, stop)`` in the shard file of each minishard's index, from the
    shard index (the file's first ``spec.shard_index_size`` bytes; more are ignored)."""
    end = spec.shard_index_size
    if len(data) < end:
        raise InvalidShardingError(f"shard index needs {end} bytes, got {len(data)}")
    out = []
    for start, stop in SHARD_INDEX_ENTRY.iter_unpack(data[:end]):
        if start > stop:
            raise InvalidShardingError(f"minishard index range [{start}, {stop}) is reversed")
        out.append((end + start, end + stop))
    return out


def parse_minishard_index(spec: ShardingSpec, data: bytes) -> list[ChunkEntry]:
    """The chunks of one minishard from its stored (maybe gzip-encoded) index.

    Ids and offsets are delta encoded: an id adds to the previous id, an offset to the end of
    the previous chunk, the first one to the end of the shard index (sharded.md).
    """
    data = spec.decode_minishard_index(data)
    if len(data) % MINISHARD_ROW_BYTES:
        raise InvalidShardingError(f"minishard index of {len(data)} bytes is not 24 * n")
    n = len(data) // MINISHARD_ROW_BYTES
    values = struct.unpack(f"<{3 * n}Q", data)
    chunk_id, position, out = 0, spec.shard_index_size, []
    for i in range(n):
        chunk_id = (chunk_id + values[i]) & _U64
        start = position + values[n + i]
        position = start + values[2 * n + i]
        out.append(ChunkEntry(chunk_id, start, position))
    return out


def read_shard(spec: ShardingSpec, data: bytes) -> dict[int, bytes]:
    """Every chunk of a whole shard file, ``chunk id -> decoded data`` (for checks and tests)."""
    out: dict[int, bytes] = {}
    for start, stop in parse_shard_index(spec, data):
        if stop > len(data):
            raise InvalidShardingError(f"minishard index [{start}, {stop}) past the file's end")
        if start == stop:  # "A zero-length byte range indicates ... no chunk IDs"
            continue
        for entry in parse_minishard_index(spec, data[start:stop]):
            if entry.stop > len(data):
                raise InvalidShardingError(f"chunk {entry.chunk_id} ends past the file's end")
            out[entry.chunk_id] = spec.decode_data(data[entry.start : entry.stop])
    return out
