"""Writing one whole shard file from its chunks: :func:`write_shard`.

A shard is written once, whole, by the one task that owns it (sharded.md: "It is not possible
to re-write the data for individual chunks; the entire shard must be re-written"). The file is
streamed through the :class:`~.writer.DatasetWriter`'s temporary file and renamed into place,
one chunk in memory at a time when ``chunks`` is lazy, so a 2 GB shard needs no 2 GB buffer.
Shards are stored plain, with no ``.gz``/``.br`` sibling: readers fetch them with Range, and a
Content-Encoding would apply to the whole file, not to the ranges (RFC 9110 §14.1.2).

Layout written (sharded.md), for minishards in order: the chunks' data (ids ascending,
``data_encoding`` applied to each), then that minishard's index; the fixed-size shard index at
the start is filled in last. Sorted ids make every delta non-negative and the file a pure
function of its chunks, whatever order or worker produced them.

A chunk may carry ``preceding`` bytes, written immediately before its data but outside its
index entry: a multi-resolution mesh's fragment data sits right before its manifest, and
readers find it from the manifest's offset and the fragment sizes it lists (meshes.md,
"Sharded storage of multi-resolution mesh fragment data").
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..core.sharding import SHARD_INDEX_ENTRY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.sharding import ShardingSpec
    from .writer import Writer


def shard_path(scale_key: str, spec: ShardingSpec, shard: int) -> str:
    """Where shard ``shard`` of a scale lives, relative to the dataset root (volume.md)."""
    return f"{scale_key}/{spec.shard_name(shard)}"


def _minishard_index(ids: list[int], offsets: list[int], sizes: list[int]) -> bytes:
    # [3, n] uint64le in C order: id deltas, then offset deltas (from the end of the previous
    # chunk, or from the end of the shard index for the first), then sizes.
    previous_ids = [0, *ids[:-1]]
    previous_ends = [0, *(o + s for o, s in zip(offsets[:-1], sizes[:-1], strict=True))]
    return struct.pack(
        f"<{3 * len(ids)}Q",
        *(i - p for i, p in zip(ids, previous_ids, strict=True)),
        *(o - e for o, e in zip(offsets, previous_ends, strict=True)),
        *sizes,
    )


def write_shard(
    writer: Writer,
    scale_key: str,
    spec: ShardingSpec,
    shard: int,
    chunks: Mapping[int, bytes],
    *,
    preceding: Mapping[int, bytes] | None = None,
) -> int:
    """Write shard ``shard`` of scale ``scale_key`` holding ``chunks``; returns its size.

    >>> write_shard(writer, "8_8_8", scale.sharding, 0, {0: encoded_0, 1: encoded_1})

    :param writer: the dataset's writer (its temporary folder must exist: ``begin()``).
    :param spec: the scale's sharding; every chunk id must belong to ``shard``.
    :param chunks: chunk id -> encoded chunk (the scale's ``encoding``); read one at a time,
        in id order, so a lazy mapping keeps memory to one chunk.
    :param preceding: chunk id -> bytes stored (never encoded) right before that chunk's
        data and left out of its index entry; read in the same order as ``chunks``.
    """
    by_minishard: dict[int, list[int]] = {}
    for chunk_id in sorted(chunks):
        owner, minishard = spec.locate(chunk_id)
        if owner != shard:
            raise ValueError(f"chunk {chunk_id} belongs to shard {owner}, not {shard}")
        by_minishard.setdefault(minishard, []).append(chunk_id)

    base = spec.shard_index_size  # offsets in the file are relative to the shard index's end
    ranges = [(0, 0)] * spec.num_minishards
    with writer.open_atomic(shard_path(scale_key, spec, shard)) as f:
        f.write(bytes(base))
        position = 0
        for minishard in sorted(by_minishard):
            ids = by_minishard[minishard]
            offsets, sizes = [], []
            for chunk_id in ids:
                if preceding is not None and chunk_id in preceding:
                    before = preceding[chunk_id]
                    f.write(before)
                    position += len(before)
                data = spec.encode_data(chunks[chunk_id])
                f.write(data)
                offsets.append(position)
                sizes.append(len(data))
                position += len(data)
            index = spec.encode_minishard_index(_minishard_index(ids, offsets, sizes))
            f.write(index)
            ranges[minishard] = (position, position + len(index))
            position += len(index)
        f.seek(0)
        f.write(b"".join(SHARD_INDEX_ENTRY.pack(a, b) for a, b in ranges))
    return base + position
