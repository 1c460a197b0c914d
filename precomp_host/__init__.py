"""precomp_host: build, serve and deploy Neuroglancer precomputed volumes."""

from __future__ import annotations

from .core.layout import FLAT, LAYOUTS, NESTED, Layout
from .core.model import ChunkKey, Dataset, InvalidInfoError, Scale

__all__ = [
    "FLAT",
    "LAYOUTS",
    "NESTED",
    "ChunkKey",
    "Dataset",
    "InvalidInfoError",
    "Layout",
    "Scale",
]
__version__ = "0.1.0"
