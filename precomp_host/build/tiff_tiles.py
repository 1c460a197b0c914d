"""A TIFF-tile dataset (``precomputed-tif`` output) as a build source: :class:`TiffTileVolume`.

Such a dataset is an ``info`` file plus one 3D TIFF per chunk, ``{scale}/{x0-x1_y0-y1_z0-z1}.tiff``,
each array in z, y, x order (issue #15). ``precomp-host build`` converts its finest scale into a
regular precomputed dataset (codecs, content codings, pyramid), reading only the tiles a region
meets, so memory is bounded by the region, not the volume.

Problems raise :class:`TiffTileError` (a ``ValueError``) with one line naming the file; the
source opener turns it into its own ``SourceError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.datasets import read_dataset
from ..core.model import InvalidInfoError
from .boxes import assemble

if TYPE_CHECKING:
    import os

    from ..core.model import ChunkKey, Vec3

#: A chunk's file: the chunk name plus this suffix, in the scale's folder.
TIFF_SUFFIX = ".tiff"


class TiffTileError(ValueError):
    """The folder is not a readable TIFF-tile dataset; the message names the file."""


def _read_chunk(path: Path) -> np.ndarray:
    """A chunk's TIFF as ``[z, y, x, c]``."""
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as e:
        raise TiffTileError(f"{path}: not a readable TIFF ({e})") from None
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    return arr


class TiffTileVolume:
    """The finest scale of a TIFF-tile dataset, read lazily in z-slabs (a ``Volume``).

    :param folder: the dataset's folder (holding ``info``).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            dataset = read_dataset(self.folder)
        except (OSError, ValueError, InvalidInfoError) as e:
            raise TiffTileError(f"{self.folder / 'info'}: {e}") from None
        if not dataset.scales:
            raise TiffTileError(f"{self.folder / 'info'}: no scales")
        self.scale = dataset.scales[0]
        if self.scale.encoding != "raw":
            raise TiffTileError(f"{self.folder / 'info'}: scale 0 is not raw-encoded TIFF tiles")
        self.shape = self.scale.size
        self.dtype: np.dtype[Any] = np.dtype(dataset.data_type)
        self.num_channels = dataset.num_channels
        # Checked before anything is built: every chunk's file exists.
        for key in self.scale.iter_chunk_keys():
            path = self._path(key.name)
            if not path.is_file():
                raise TiffTileError(f"{path}: chunk file missing")

    def _path(self, name: str) -> Path:
        return self.folder / self.scale.key / (name + TIFF_SUFFIX)

    def read_region(self, start: Vec3, stop: Vec3) -> np.ndarray:
        """Voxels ``[start, stop)`` (x, y, z, from 0) as ``[z, y, x, c]``: the tiles it meets."""
        origin = self.scale.voxel_offset
        a = (start[0] + origin[0], start[1] + origin[1], start[2] + origin[2])
        b = (stop[0] + origin[0], stop[1] + origin[1], stop[2] + origin[2])
        return assemble(self.scale, a, b, self._tile)

    def _tile(self, key: ChunkKey) -> np.ndarray:
        arr = _read_chunk(self._path(key.name))
        want = (key.shape[2], key.shape[1], key.shape[0], self.num_channels)
        if arr.shape != want or arr.dtype != self.dtype:
            raise TiffTileError(
                f"{self._path(key.name)}: {arr.shape} {arr.dtype}, expected {want} {self.dtype}"
            )
        return arr

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Slices ``[z0, z1)`` (0-based within the volume) as ``[z, y, x, c]``."""
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))
