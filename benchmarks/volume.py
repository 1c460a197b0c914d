"""The generated benchmark volume: :class:`Volume`, a deterministic uint8 stack of 2D TIFF slices.

Every tool reads the same slices from a cache directory, written once per shape. Each slice is
a pure function of ``(z, shape)``, so the verifier recomputes any voxel without keeping the
volume in memory. The content imitates an EM section: smooth cell-like structure plus noise
inside a tissue mask and a flat background outside it, so it compresses partly, like real data
(pure noise or a constant would make gzip's speed unrepresentative).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from numpy.typing import NDArray

log = logging.getLogger(__name__)

_SEED = 20261122


@dataclass(frozen=True)
class Volume:
    """A generated ``shape = (x, y, z)`` uint8 volume; slices are ``(y, x)`` TIFF pages."""

    shape: tuple[int, int, int]

    @property
    def name(self) -> str:
        x, y, z = self.shape
        return f"uint8_{x}x{y}x{z}"

    @property
    def nbytes(self) -> int:
        x, y, z = self.shape
        return x * y * z

    def slice(self, z: int) -> NDArray[np.uint8]:
        """Slice ``z`` as a ``(y, x)`` array, the row-major order a TIFF page stores."""
        nx, ny, nz = self.shape
        y = np.arange(ny, dtype=np.float32)[:, None]
        x = np.arange(nx, dtype=np.float32)[None, :]
        t = np.float32(z)
        # Membrane-like ridges drifting slowly with z, so neighbouring slices correlate.
        ridges = np.sin(x / 23.0 + t / 17.0) * np.cos(y / 29.0 - t / 13.0)
        cells = 100.0 + 60.0 * np.tanh(4.0 * ridges)
        tissue = self._tissue(x, y, z)
        rng = np.random.default_rng([_SEED, z])
        noise = rng.normal(0.0, 12.0, size=(ny, nx)).astype(np.float32)
        out = np.where(tissue, np.clip(cells + noise, 1, 255), 0)
        return out.astype(np.uint8)

    def _tissue(self, x: NDArray[np.float32], y: NDArray[np.float32], z: int) -> NDArray[np.bool_]:
        # Tissue is an ellipse that grows and shrinks with z; outside is flat background (0),
        # inside every voxel is >= 1, so a box is blank exactly where it misses the ellipse.
        nx, ny, nz = self.shape
        r = 0.35 + 0.1 * np.sin(np.float32(z) / max(nz, 1) * np.pi)
        mask = ((x - nx / 2.0) / (nx * r + 1)) ** 2 + ((y - ny / 2.0) / (ny * r + 1)) ** 2 < 1.0
        return np.asarray(mask)

    def is_blank(self, start: tuple[int, int, int], stop: tuple[int, int, int]) -> bool:
        """Whether every voxel of ``[start, stop)`` is 0, without generating the voxels."""
        x = np.arange(start[0], stop[0], dtype=np.float32)[None, :]
        y = np.arange(start[1], stop[1], dtype=np.float32)[:, None]
        return not any(self._tissue(x, y, z).any() for z in range(start[2], stop[2]))

    def region(self, start: tuple[int, int, int], stop: tuple[int, int, int]) -> NDArray[np.uint8]:
        """Voxels ``[start, stop)`` as an ``(x, y, z)`` array."""
        slabs = [
            self.slice(z)[start[1] : stop[1], start[0] : stop[0]].T
            for z in range(start[2], stop[2])
        ]
        return np.stack(slabs, axis=2)

    def ensure_stack(self, cache_dir: Path) -> Path:
        """Write the TIFF stack under ``cache_dir`` unless a complete one is there; return it."""
        return write_stack(cache_dir, self.name, self.shape[2], self.slice)


def write_stack(
    cache_dir: Path, name: str, depth: int, slice_of: Callable[[int], NDArray[Any]]
) -> Path:
    """``cache_dir/name/z0000.tif...``: slices ``slice_of(z)`` for ``z < depth``, once.

    The folder holds only the slices (neuroglancer-scripts reads every file in it); a marker
    beside it says the stack is complete, so an interrupted write is redone.
    """
    stack = cache_dir / name
    marker = cache_dir / f"{name}.complete"
    if marker.exists():
        return stack
    if stack.exists():
        shutil.rmtree(stack)
    stack.mkdir(parents=True)
    log.info("writing %d slices to %s (once)", depth, stack)
    width = max(4, len(str(depth - 1)))
    for z in range(depth):
        # Zero-padded names: lexicographic order (neuroglancer-scripts) = natural order.
        tifffile.imwrite(stack / f"z{z:0{width}d}.tif", slice_of(z))
    marker.write_text("complete\n")
    return stack
