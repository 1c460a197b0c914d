"""precomp_host: build, serve and deploy Neuroglancer precomputed volumes."""

from __future__ import annotations

from .core.layout import FLAT, LAYOUTS, NESTED, Layout
from .core.model import ChunkKey, Dataset, InvalidInfoError, Scale
from .core.sharding import InvalidShardingError, ShardingSpec

__all__ = [
    "FLAT",
    "LAYOUTS",
    "NESTED",
    "ChunkKey",
    "Dataset",
    "InvalidInfoError",
    "InvalidShardingError",
    "Layout",
    "Scale",
    "ShardingSpec",
]
__version__ = "0.1.0"
