"""Where a build puts its encoded chunks: a :class:`ChunkSink` (:func:`sink_for` picks one).

The build has one choke point for chunk data: each encoded chunk goes to ``sink.put(key,
data)`` from a worker thread. Unsharded scales store a file per chunk with its compressed
siblings (:class:`FileSink`, the :class:`~.writer.DatasetWriter`'s rule); sharded scales
gather chunks into shard files (:class:`~.shards.ShardSink`). The build's pyramid, tasks and
``--resume`` logic are the same for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .shards import ShardSink
from .writer import DatasetWriter

if TYPE_CHECKING:
    from ..core.model import ChunkKey, Dataset
    from .writer import Writer


class ChunkSink(Protocol):
    """Takes the encoded chunks of a build, from any thread, in any order."""

    def put(self, key: ChunkKey, data: bytes) -> int:
        """Store chunk ``key`` (encoded by its scale's codec); returns the bytes stored."""

    def is_complete(self, key: ChunkKey) -> bool:
        """Whether an earlier run stored ``key`` for good (``--resume`` skips it)."""

    def close(self) -> None:
        """After the last chunk: fails if a chunk that was expected never came."""


class FileSink:
    """One file per chunk at its layout's path, with effective ``.gz``/``.br`` siblings."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def put(self, key: ChunkKey, data: bytes) -> int:
        return self.writer.put(self.writer.layout.path_for(key), data)

    def is_complete(self, key: ChunkKey) -> bool:
        return self.writer.is_complete(self.writer.layout.path_for(key))

    def close(self) -> None:
        pass  # each chunk was written whole by its own put


def sink_for(writer: Writer, dataset: Dataset) -> ChunkSink:
    """The sink for ``dataset``'s chunks: shards when its scales are sharded, else files."""
    sharded = [s for s in dataset.scales if s.is_sharded]
    if not sharded:
        return FileSink(writer)
    if len(sharded) != len(dataset.scales):
        raise ValueError("a build shards every scale or none")
    if not isinstance(writer, DatasetWriter):
        # ShardSink spools shards in the output's temporary folder (the builder refuses this
        # case before writing anything).
        raise ValueError("sharded output is written to a folder")
    return ShardSink(writer, dataset.scales)
