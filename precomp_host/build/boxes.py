"""Voxel boxes: :func:`assemble` pastes a box together from the chunks it meets (the build's
scratch store, TIFF-tile datasets and precomputed sources read regions this way)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.model import ChunkKey, Scale, Vec3


def assemble(
    scale: Scale, start: Vec3, stop: Vec3, chunk_of: Callable[[ChunkKey], np.ndarray]
) -> np.ndarray:
    """Voxels ``[start, stop)`` of ``scale`` (absolute) as ``[z, y, x, c]``, pasted from the
    chunks they meet; ``chunk_of(key)`` gives a chunk's voxels as ``[z, y, x, c]``."""
    out: np.ndarray | None = None
    for key in scale.iter_chunk_keys_in(*scale.grid_box_of(start, stop)):
        arr = chunk_of(key)
        if out is None:
            shape = (stop[2] - start[2], stop[1] - start[1], stop[0] - start[0], arr.shape[3])
            out = np.empty(shape, arr.dtype)
        lo = [max(p, q) for p, q in zip(start, key.start, strict=True)]
        hi = [min(p, q) for p, q in zip(stop, key.stop, strict=True)]
        out[slices_zyx(_minus(lo, start), _minus(hi, start))] = arr[
            slices_zyx(_minus(lo, key.start), _minus(hi, key.start))
        ]
    assert out is not None, "an empty box is never read"
    return out


def _minus(a: Sequence[int], b: Sequence[int]) -> Vec3:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def slices_zyx(start: Vec3, stop: Vec3) -> tuple[slice, slice, slice]:
    """``[z, y, x]`` index of the box ``[start, stop)``."""
    return (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
