"""Shards as boxes of the chunk grid, and choosing their size: :func:`choose_sharding`.

With the identity hash, a shard holds a run of consecutive compressed Morton codes, which is an
aligned power-of-two box of chunks; a build task can then own one shard whole and write it in
one go (issue 13). :func:`choose_sharding` picks such a spec for a target shard size
(``--shard-size 2GB``, :func:`parse_byte_size`) and returns the :class:`ShardPlan` the CLI
prints: shards per scale, chunks per shard, and each shard's grid box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .sharding import (
    DataEncoding,
    ShardingSpec,
    Vec3,
    compressed_morton_code,
    morton_bits,
    morton_interleaving,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .model import Scale


def shard_shape_in_chunks(spec: ShardingSpec, grid_shape: Sequence[int]) -> Vec3 | None:
    """Chunks along each axis of one shard, when every shard is one box of the grid.

    That holds for the identity hash when the shard number takes every Morton bit above the
    ``preshift_bits + minishard_bits`` low ones (tensorstore's ``GetShardChunkHierarchy``): a
    shard is then a run of consecutive codes, which is an aligned power-of-two box. ``None``
    otherwise (hashed shards are scattered, and leftover high bits fold boxes together).
    """
    bits = morton_bits(grid_shape)
    inner = spec.preshift_bits + spec.minishard_bits
    if spec.hash != "identity" or inner + spec.shard_bits < sum(bits):
        return None
    counts = [0, 0, 0]
    for j, (axis, _) in enumerate(morton_interleaving(bits)):
        if j >= inner:
            break
        counts[axis] += 1
    return (1 << counts[0], 1 << counts[1], 1 << counts[2])


@dataclass(frozen=True)
class ShardBox:
    """One shard file of a scale: its number and the grid box ``[start, stop)`` it holds."""

    shard: int
    start: Vec3
    stop: Vec3

    def iter_grid(self) -> Iterator[Vec3]:
        """Grid positions in the box, x fastest."""
        for z in range(self.start[2], self.stop[2]):
            for y in range(self.start[1], self.stop[1]):
                for x in range(self.start[0], self.stop[0]):
                    yield (x, y, z)

    def voxels(self, scale: Scale) -> tuple[Vec3, Vec3]:
        """The voxel box ``[start, stop)`` of the shard in ``scale`` (``voxel_offset``
        included, clipped to the volume): what a build task owning the shard must write."""
        start = scale.chunk_key(self.start).start
        stop = scale.chunk_key((self.stop[0] - 1, self.stop[1] - 1, self.stop[2] - 1)).stop
        return start, stop


@dataclass(frozen=True)
class ShardPlan:
    """How one scale is sharded: the spec and what it gives (the printed plan, as data).

    :param spec: the ``sharding`` member to write into the scale.
    :param grid_shape: chunks along each axis of the scale.
    :param shard_shape: chunks along each axis of one (unclipped) shard.
    """

    spec: ShardingSpec
    grid_shape: Vec3
    shard_shape: Vec3

    @classmethod
    def for_scale(cls, scale: Scale) -> ShardPlan | None:
        """The plan of a sharded scale whose shards are boxes of its grid (None otherwise:
        unsharded, or hashed shards that scatter over the grid)."""
        if scale.sharding is None:
            return None
        grid = scale.grid_shape()
        shape = shard_shape_in_chunks(scale.sharding, grid)
        return None if shape is None else cls(scale.sharding, grid, shape)

    @property
    def num_chunks(self) -> int:
        return math.prod(self.grid_shape)

    @property
    def chunks_per_shard(self) -> int:
        """Chunks of a full shard; shards at the far edges of the grid hold fewer."""
        return math.prod(min(s, g) for s, g in zip(self.shard_shape, self.grid_shape, strict=True))

    @property
    def num_shards(self) -> int:
        """Shard files written: the shard numbers that hold at least one chunk."""
        return math.prod(-(-g // s) for g, s in zip(self.grid_shape, self.shard_shape, strict=True))

    def iter_shards(self) -> Iterator[ShardBox]:
        """Every non-empty shard with its grid box, in shard number order."""
        inner = self.spec.preshift_bits + self.spec.minishard_bits
        boxes = []
        axes = [range(0, g, s) for g, s in zip(self.grid_shape, self.shard_shape, strict=True)]
        for z in axes[2]:
            for y in axes[1]:
                for x in axes[0]:
                    start = (x, y, z)
                    stop = tuple(
                        min(a + s, g)
                        for a, s, g in zip(start, self.shard_shape, self.grid_shape, strict=True)
                    )
                    code = compressed_morton_code(start, self.grid_shape)
                    boxes.append(ShardBox(code >> inner, start, (stop[0], stop[1], stop[2])))
        return iter(sorted(boxes, key=lambda b: b.shard))

    def to_json(self) -> dict[str, Any]:
        return {
            "shards": self.num_shards,
            "chunks": self.num_chunks,
            "chunks_per_shard": self.chunks_per_shard,
            "shard_shape_in_chunks": list(self.shard_shape),
            "sharding": self.spec.to_json(),
        }


#: A shard index above 8 KiB (512 minishards) costs every first read of a shard more than it
#: saves; igneous's image recommendation uses the same bound.
MAX_MINISHARD_BITS = 9
#: Chunks per minishard before the shard index grows: 1024 chunks is a 24 KiB minishard index,
#: fetched once per minishard and cached by Neuroglancer.
MINISHARD_CHUNK_BITS = 10


def choose_sharding(
    grid_shape: Sequence[int],
    chunk_bytes: int,
    target_bytes: int,
    *,
    data_encoding: DataEncoding = "gzip",
    minishard_index_encoding: DataEncoding = "gzip",
) -> ShardPlan:
    """Spatial shards of at most ``target_bytes``, for chunks of about ``chunk_bytes`` each.

    Shards use the identity hash so that each is a box of the grid (a build task can own it
    whole); a shard holds the largest power of two of chunks that fits the target, and the
    shard number takes the remaining Morton bits. Within a shard, minishards of up to
    ``2**MINISHARD_CHUNK_BITS`` consecutive codes (``preshift_bits``) keep each minishard
    index small, at most ``2**MAX_MINISHARD_BITS`` of them keep the shard index small.

    :param grid_shape: chunks along each axis of the scale.
    :param chunk_bytes: the stored size of a chunk (an estimate; the uncompressed size bounds it).
    :param target_bytes: the wanted size of a shard file (``--shard-size``).
    """
    if chunk_bytes <= 0 or target_bytes <= 0:
        raise ValueError("chunk and target sizes must be positive")
    grid = morton_bits(grid_shape)
    total = sum(grid)
    if total > 64:
        raise ValueError(f"grid {tuple(grid_shape)} needs {total} > 64 bits of chunk id")
    inner = min(total, max(0, (target_bytes // chunk_bytes).bit_length() - 1))
    minishard_bits = min(MAX_MINISHARD_BITS, max(0, inner - MINISHARD_CHUNK_BITS))
    spec = ShardingSpec(
        preshift_bits=inner - minishard_bits,
        minishard_bits=minishard_bits,
        shard_bits=total - inner,
        hash="identity",
        minishard_index_encoding=minishard_index_encoding,
        data_encoding=data_encoding,
    )
    shape = shard_shape_in_chunks(spec, grid_shape)
    assert shape is not None  # identity hash, every bit used: shards are boxes
    x, y, z = grid_shape
    return ShardPlan(spec, (x, y, z), shape)


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40})


def parse_byte_size(text: str) -> int:
    """``"2GB"`` -> 2_000_000_000, ``"512MiB"`` -> 536_870_912 (SI and IEC units, as du says)."""
    s = text.strip().lower().replace(" ", "")
    number = s.rstrip("kmgtib")
    unit = s[len(number) :]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"not a size: {text!r} (e.g. 2GB, 512MiB)") from None
    if not value >= 1:
        raise ValueError(f"size must be at least one byte: {text!r}")
    return int(value)
