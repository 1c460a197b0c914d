"""A TIFF-tile dataset (``precomputed-tif`` output) as a build source: :class:`TiffTileVolume`.

Such a dataset is an ``info`` file plus one 3D TIFF per chunk, ``{scale}/{x0-x1_y0-y1_z0-z1}.tiff``,
each array in z, y, x order (issue #15). ``precomp-host build`` converts its finest scale into a
regular precomputed dataset (codecs, content codings, pyramid), reading one chunk row of z at a
time so memory is bounded by a row, not the volume.

Problems raise :class:`TiffTileError` (a ``ValueError``) with one line naming the file; the
source opener turns it into its own ``SourceError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.datasets import read_dataset
from ..core.model import InvalidInfoError

if TYPE_CHECKING:
    import os

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
        self._row: tuple[int, np.ndarray] | None = None

    def _path(self, name: str) -> Path:
        return self.folder / self.scale.key / (name + TIFF_SUFFIX)

    def _chunk_row(self, k: int) -> np.ndarray:
        """Grid row ``k`` of z, as ``[z, y, x, c]`` (cached: slabs are read in order)."""
        if self._row is not None and self._row[0] == k:
            return self._row[1]
        ox, oy, _ = self.scale.voxel_offset
        keys = list(self.scale.iter_chunk_keys(range(k, k + 1)))
        depth = keys[0].shape[2]
        row = np.zeros((depth, self.shape[1], self.shape[0], self.num_channels), self.dtype)
        for key in keys:
            arr = _read_chunk(self._path(key.name))
            want = (key.shape[2], key.shape[1], key.shape[0], self.num_channels)
            if arr.shape != want or arr.dtype != self.dtype:
                raise TiffTileError(
                    f"{self._path(key.name)}: {arr.shape} {arr.dtype}, expected {want} {self.dtype}"
                )
            x0, y0 = key.start[0] - ox, key.start[1] - oy
            row[:, y0 : y0 + want[1], x0 : x0 + want[2]] = arr
        self._row = (k, row)
        return row

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Slices ``[z0, z1)`` (0-based within the volume) as ``[z, y, x, c]``."""
        cz = self.scale.chunk_size[2]
        out = np.empty((z1 - z0, self.shape[1], self.shape[0], self.num_channels), self.dtype)
        z = z0
        while z < z1:
            k = z // cz
            row = self._chunk_row(k)
            stop = min(z1, (k + 1) * cz)
            out[z - z0 : stop - z0] = row[z - k * cz : stop - k * cz]
            z = stop
        return out
