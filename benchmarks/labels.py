"""The generated label volume of the segmentation benchmark: :class:`LabelVolume`.

A deterministic uint32 segmentation that looks like one: Voronoi cells around jittered seeds
(one per 64-voxel grid cell, ~2,000 at the default 1024x1024x512), their faces warped by slow
sines so they are curved rather than flat, background (0) in a thin "membrane" where two cells
meet and in about 5 % of the cells. Ids are sparse 32-bit numbers, as agglomerated
segmentations have. Any window is a pure function of its coordinates: each voxel's nearest
seed is among the 27 seeds of its own and the neighbouring grid cells, so the verifier
recomputes a chunk, and the expected bounding box of a segment, without the whole volume.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .volume import write_stack

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

_SEED = 20261123
#: Grid cell edge in voxels: one seed (one segment, or background) per cell.
CELL = 64
#: Fraction of cells that are background.
BACKGROUND = 0.05
#: Where the two nearest seeds are closer than this (voxels), the voxel is membrane (0).
MEMBRANE = 1.5
#: Largest displacement of the warp, voxels (a segment reaches this far past its cells).
WARP = 6.0


@dataclass(frozen=True)
class LabelVolume:
    """A generated ``shape = (x, y, z)`` uint32 segmentation; slices are ``(y, x)`` TIFF pages."""

    shape: tuple[int, int, int]
    _grid: tuple[int, int, int] = field(init=False, repr=False, compare=False)
    _seeds: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _ids: NDArray[np.uint32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grid = tuple(-(-n // CELL) for n in self.shape)
        rng = np.random.default_rng(_SEED)
        n = grid[0] * grid[1] * grid[2]
        # Seeds [gz, gy, gx, (x, y, z)], padded by one cell of far-away seeds on every side.
        corner = np.stack(
            np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), np.arange(grid[2]), indexing="ij"),
            axis=-1,
        ).transpose(2, 1, 0, 3)
        inner = (corner + rng.uniform(0.15, 0.85, size=corner.shape)) * CELL
        seeds = np.full((grid[2] + 2, grid[1] + 2, grid[0] + 2, 3), -1e9)
        seeds[1:-1, 1:-1, 1:-1] = inner
        ids = np.unique(rng.integers(1, 2**32 - 1, size=4 * n, dtype=np.uint64))
        ids = rng.permutation(ids)[:n].astype(np.uint32)
        ids[rng.uniform(size=n) < BACKGROUND] = 0
        padded_ids = np.zeros((grid[2] + 2, grid[1] + 2, grid[0] + 2), np.uint32)
        padded_ids[1:-1, 1:-1, 1:-1] = ids.reshape(grid[2], grid[1], grid[0])
        object.__setattr__(self, "_grid", grid)
        object.__setattr__(self, "_seeds", seeds)
        object.__setattr__(self, "_ids", padded_ids)

    @property
    def name(self) -> str:
        x, y, z = self.shape
        return f"labels_uint32_{x}x{y}x{z}"

    @property
    def nbytes(self) -> int:
        x, y, z = self.shape
        return 4 * x * y * z

    def segment_ids(self) -> NDArray[np.uint32]:
        """Ids of the non-background cells, sorted (a few may be all membrane in the volume)."""
        ids = self._ids[1:-1, 1:-1, 1:-1]
        out: NDArray[np.uint32] = np.unique(ids[ids != 0])
        return out

    def cell_of(self, segment: int) -> tuple[int, int, int]:
        """Grid cell ``(gx, gy, gz)`` of ``segment``'s seed."""
        gz, gy, gx = (int(v[0]) - 1 for v in np.nonzero(self._ids == segment))
        return gx, gy, gz

    def bounds(self, segment: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """A box (voxel corners) that holds every voxel of ``segment``: its cell, one cell
        around it (where its nearest-seed region can reach) and the warp, within the volume."""
        cell = self.cell_of(segment)
        lo = tuple(max(0.0, (c - 1) * CELL - WARP - 1) for c in cell)
        hi = tuple(
            min(float(n), (c + 2) * CELL + WARP + 1) for c, n in zip(cell, self.shape, strict=True)
        )
        return lo, hi

    def window(self, z: int, y0: int, y1: int, x0: int, x1: int) -> NDArray[np.uint32]:
        """Labels of slice ``z``, rows ``[y0, y1)``, columns ``[x0, x1)``, as ``(y, x)``."""
        f32 = np.float32
        y = np.arange(y0, y1, dtype=f32)[:, None]
        x = np.arange(x0, x1, dtype=f32)[None, :]
        fz = f32(z)
        # Warped coordinates: faces of the cells curve instead of being planes.
        shape = (y1 - y0, x1 - x0)
        wx = np.broadcast_to(x + f32(WARP) * np.sin(y / f32(37.0) + fz / f32(23.0)), shape)
        wy = np.broadcast_to(y + f32(WARP) * np.sin(x / f32(41.0) - fz / f32(19.0)), shape)
        wz = np.broadcast_to(fz + f32(WARP) * np.sin((x + y) / f32(53.0)), shape)
        gx, gy, gz = self._grid
        cx = np.clip(np.floor(wx / CELL), -1, gx).astype(np.int32) + 1
        cy = np.clip(np.floor(wy / CELL), -1, gy).astype(np.int32) + 1
        cz = np.clip(np.floor(wz / CELL), -1, gz).astype(np.int32) + 1
        # Flat index into the padded seed grid; neighbours are fixed offsets of it (the
        # padding keeps every neighbour of an in-volume cell inside the array).
        sx, sy, sz = (self._seeds[..., k].astype(f32).ravel() for k in range(3))
        flat_ids = self._ids.ravel()
        base = (cz * (gy + 2) + cy) * (gx + 2) + cx
        best = np.full(shape, np.inf, f32)
        second = np.full(shape, np.inf, f32)
        label = np.zeros(shape, np.uint32)
        d = np.empty(shape, f32)
        t = np.empty(shape, f32)
        for dz, dy, dx in itertools.product((-1, 0, 1), repeat=3):
            idx = base + ((dz * (gy + 2) + dy) * (gx + 2) + dx)
            np.clip(idx, 0, flat_ids.size - 1, out=idx)
            np.subtract(wx, sx.take(idx), out=d)
            np.multiply(d, d, out=d)
            np.subtract(wy, sy.take(idx), out=t)
            d += t * t
            np.subtract(wz, sz.take(idx), out=t)
            d += t * t
            closer = d < best
            np.minimum(second, d, out=second)
            np.copyto(second, best, where=closer)
            np.copyto(best, d, where=closer)
            np.copyto(label, flat_ids.take(idx), where=closer)
        membrane = np.sqrt(second) - np.sqrt(best) < MEMBRANE
        label[membrane] = 0
        return label

    def slice(self, z: int) -> NDArray[np.uint32]:
        nx, ny, _ = self.shape
        return self.window(z, 0, ny, 0, nx)

    def region(self, start: tuple[int, int, int], stop: tuple[int, int, int]) -> NDArray[np.uint32]:
        """Voxels ``[start, stop)`` as an ``(x, y, z)`` array."""
        slabs = [
            self.window(z, start[1], stop[1], start[0], stop[0]).T for z in range(start[2], stop[2])
        ]
        return np.stack(slabs, axis=2)

    def ensure_stack(self, cache_dir: Path) -> Path:
        """Write the TIFF stack under ``cache_dir`` unless a complete one is there; return it."""
        return write_stack(cache_dir, self.name, self.shape[2], self.slice)
