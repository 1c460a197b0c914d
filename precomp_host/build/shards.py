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

:class:`ShardSink` is the build's streaming writer: chunks of a sharded scale arrive one by one,
in any order, from worker threads; each is spooled to a temporary file of its shard and only
its index entry stays in memory. The chunk that completes a shard triggers :func:`write_shard`,
which copies the spooled chunks in canonical order, so the file is the same for any
``--workers``.

A chunk may carry ``preceding`` bytes, written immediately before its data but outside its
index entry: a multi-resolution mesh's fragment data sits right before its manifest, and
readers find it from the manifest's offset and the fragment sizes it lists (meshes.md,
"Sharded storage of multi-resolution mesh fragment data").
"""

from __future__ import annotations

import math
import os
import struct
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core.shard_grid import ShardPlan
from ..core.sharding import SHARD_INDEX_ENTRY, compressed_morton_code

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from ..core.model import ChunkKey, Scale, Vec3
    from ..core.sharding import ShardingSpec
    from .writer import DatasetWriter, Writer


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
    encoded: bool = False,
) -> int:
    """Write shard ``shard`` of scale ``scale_key`` holding ``chunks``; returns its size.

    >>> write_shard(writer, "8_8_8", scale.sharding, 0, {0: encoded_0, 1: encoded_1})

    :param writer: the dataset's writer (its temporary folder must exist: ``begin()``).
    :param spec: the scale's sharding; every chunk id must belong to ``shard``.
    :param chunks: chunk id -> encoded chunk (the scale's ``encoding``); read one at a time,
        in id order, so a lazy mapping keeps memory to one chunk.
    :param preceding: chunk id -> bytes stored (never encoded) right before that chunk's
        data and left out of its index entry; read in the same order as ``chunks``.
    :param encoded: the chunks already have the spec's ``data_encoding`` applied (the
        :class:`ShardSink` gzips them on the worker threads, in parallel).
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
                data = chunks[chunk_id] if encoded else spec.encode_data(chunks[chunk_id])
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


class _Spooled(Mapping[int, bytes]):
    """A shard's chunks as spooled: ``chunk id -> bytes`` read back from the spool file."""

    def __init__(self, fd: int, entries: dict[int, tuple[int, int]]) -> None:
        self.fd, self.entries = fd, entries

    def __getitem__(self, chunk_id: int) -> bytes:
        offset, size = self.entries[chunk_id]
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise OSError(f"spool of chunk {chunk_id} is short: {len(data)} of {size} bytes")
        return data

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class _OpenShard:
    """A shard some of whose chunks have arrived: its spool file and their index entries."""

    spool: Path
    expected: int
    #: chunk id -> (offset, size) in the spool: all the sink holds in memory for a chunk.
    entries: dict[int, tuple[int, int]] = field(default_factory=dict)
    size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _ShardedScale:
    scale: Scale
    spec: ShardingSpec
    grid_shape: Vec3
    shard_shape: Vec3

    def locate(self, key: ChunkKey) -> tuple[int, int, Vec3]:
        """``(chunk id, shard, grid position of the shard's first chunk)`` of ``key``."""
        grid = self.scale.grid_index(key)
        chunk_id = compressed_morton_code(grid, self.grid_shape)
        start = tuple(g // s * s for g, s in zip(grid, self.shard_shape, strict=True))
        return chunk_id, self.spec.locate(chunk_id)[0], (start[0], start[1], start[2])

    def chunks_in_shard(self, start: Vec3) -> int:
        # Shards at the far edges of the grid are clipped like chunks are.
        return math.prod(
            min(a + s, g) - a
            for a, s, g in zip(start, self.shard_shape, self.grid_shape, strict=True)
        )


class ShardSink:
    """Chunks of sharded scales, put in any order from any thread, into whole shard files.

    >>> sink = ShardSink(writer, dataset.scales)
    >>> sink.put(scale.chunk_key((0, 0, 0)), encoded)   # from the worker threads
    >>> sink.close()                                     # after the last chunk

    A shard file appears, atomically and complete, when its last chunk arrives; until then its
    chunks wait in a spool file under the writer's temporary folder (dropped by an interrupted
    run's ``--resume``, which rebuilds that shard, while finished shards are kept:
    :meth:`is_complete`). Scales must use shards that are boxes of the chunk grid
    (:func:`~precomp_host.core.shard_grid.choose_sharding`'s), so a shard's chunk count is known
    without listing the grid.

    :param writer: the dataset's writer, after ``begin()``.
    :param scales: every scale that chunks will be put to; each needs a ``sharding``.
    """

    def __init__(self, writer: DatasetWriter, scales: Sequence[Scale]) -> None:
        self.writer = writer
        self._scales: dict[str, _ShardedScale] = {}
        for scale in scales:
            plan = ShardPlan.for_scale(scale)
            if plan is None:
                raise ValueError(
                    f"scale {scale.key} is not sharded"
                    if scale.sharding is None
                    else f"scale {scale.key}: its shards are not boxes of the chunk grid"
                )
            shape = plan.shard_shape
            self._scales[scale.key] = _ShardedScale(scale, plan.spec, plan.grid_shape, shape)
        self._open: dict[tuple[str, int], _OpenShard] = {}
        self._lock = threading.Lock()

    def shard_path_of(self, key: ChunkKey) -> str:
        scale = self._scales[key.scale]
        return shard_path(key.scale, scale.spec, scale.locate(key)[1])

    def is_complete(self, key: ChunkKey) -> bool:
        """Whether ``key``'s shard was written whole (by this run or an interrupted one)."""
        return self.writer.is_complete(self.shard_path_of(key))

    def put(self, key: ChunkKey, data: bytes) -> int:
        """Store chunk ``key`` (encoded by its scale's codec); returns the bytes it takes in
        its shard. Writes the shard file when this is its last chunk."""
        scale = self._scales[key.scale]
        chunk_id, shard, start = scale.locate(key)
        data = scale.spec.encode_data(data)
        with self._lock:
            state = self._open.get((key.scale, shard))
            if state is None:
                spool = self.writer.tmp / f"{uuid.uuid4().hex}.spool"
                state = _OpenShard(spool, scale.chunks_in_shard(start))
                self._open[(key.scale, shard)] = state
        with state.lock:
            if chunk_id in state.entries:
                raise ValueError(f"chunk {key.name} of scale {key.scale} was put twice")
            # Opened per chunk rather than held: a slab completes every shard of its band
            # at once, and open shards could outnumber the file descriptors allowed.
            with open(state.spool, "ab") as f:
                f.write(data)
            state.entries[chunk_id] = (state.size, len(data))
            state.size += len(data)
            complete = len(state.entries) == state.expected
        if complete:
            self._finish(scale, shard, state)
        return len(data)

    def _finish(self, scale: _ShardedScale, shard: int, state: _OpenShard) -> None:
        fd = os.open(state.spool, os.O_RDONLY)
        try:
            chunks = _Spooled(fd, state.entries)
            write_shard(self.writer, scale.scale.key, scale.spec, shard, chunks, encoded=True)
        finally:
            os.close(fd)
        state.spool.unlink()
        with self._lock:
            del self._open[(scale.scale.key, shard)]

    def close(self) -> None:
        """Check that every shard that got a chunk was written (a build puts every chunk)."""
        with self._lock:
            unfinished = sorted(self._open.items(), key=lambda item: item[0])
        if unfinished:
            (key, shard), state = unfinished[0]
            raise RuntimeError(
                f"{len(unfinished)} shards unfinished, e.g. shard {shard} of scale {key}: "
                f"{len(state.entries)} of {state.expected} chunks"
            )
