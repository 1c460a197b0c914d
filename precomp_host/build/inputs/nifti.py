"""NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``) through nibabel: :func:`open_nifti`.

How the affine becomes Neuroglancer's axes (the README says the same for users): the precomputed
format has one voxel grid with a positive voxel size per axis and an integer ``voxel_offset``,
and Neuroglancer shows its x, y, z as the file's world axes (NIfTI's RAS+: x to the right,
y to the front, z up). So when the affine's 3x3 part is a scaled signed permutation (every
scanner orientation: RAS, LPS, LIA, ...), each voxel axis is mapped to the world axis it runs
along, axes that run backwards are read reversed, the voxel size is the absolute scale and the
offset is the world position of the lowest corner divided by it. World coordinates are then
preserved exactly, up to rounding the origin to whole voxels (volume.md's ``voxel_offset`` is
an integer) and NIfTI's voxel-centre versus precomputed's voxel-corner convention (half a voxel).
A rotation or shear cannot be expressed: it is reported (a warning naming the largest
off-axis term), and the volume is stored in voxel order with the column lengths as voxel size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..sources import SourceError
from .base import AxesVolume, offset_in_voxels, require, to_nm

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: Relative size below which an off-axis affine term counts as zero (float32 headers).
_OFF_AXIS = 1e-6


class _Scaled:
    """nibabel's array proxy, read with the header's scl_slope and scl_inter applied.

    nibabel applies the scaling itself and returns float64 for a scaled image; precomputed has
    no float64, so a scaled image is stored as float32 (the scaled values of every integer type
    NIfTI allows fit float32's range).
    """

    def __init__(self, proxy: Any, dtype: np.dtype[Any]) -> None:
        self.proxy, self.shape, self.dtype = proxy, tuple(proxy.shape), dtype

    def __getitem__(self, index: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.proxy[index]).astype(self.dtype, copy=False)


def _is_scaled(proxy: Any) -> bool:
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    return not (slope == 1.0 and inter == 0.0)


def open_nifti(path: str, *, timepoint: int | None = None) -> AxesVolume:
    """Open a NIfTI image; 4D images need ``timepoint`` (the index of the volume to build)."""
    nib = require("nibabel", "nifti", "NIfTI")
    try:
        img = nib.load(path)
        shape = tuple(int(n) for n in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        space_unit = img.header.get_xyzt_units()[0]
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise SourceError(f"{path}: not a readable NIfTI image ({e})") from None
    if len(shape) < 3:
        raise SourceError(f"{path}: NIfTI image has {len(shape)} dimensions, 3 or 4 expected")
    # NIfTI dimensions 4 and 5 are time and (with a vector intent) components: channels.
    axes = "".join(["ijk", "T", "C"][: len(shape) - 2]) if len(shape) <= 5 else ""
    if not axes:
        raise SourceError(f"{path}: NIfTI image has {len(shape)} dimensions, at most 5 expected")
    # NIFTI_UNITS_UNKNOWN is read as millimetres, as nibabel, FSL and neuroglancer-scripts do.
    unit = "mm" if space_unit in (None, "unknown") else space_unit
    if unit not in ("mm", "micron", "meter"):
        raise SourceError(f"{path}: spatial unit {unit!r} is not a length")
    letters, flipped, size_nm, offset = _orient(affine[:3, :3], affine[:3, 3], shape[:3], path)
    resolution = tuple(to_nm(s, unit, path) for s in size_nm)
    proxy = img.dataobj
    array = _Scaled(proxy, np.dtype(np.float32)) if _is_scaled(proxy) else proxy
    return AxesVolume(
        array,
        letters + axes[3:],
        where=path,
        timepoint=timepoint,
        flipped=flipped,
        resolution=(resolution[0], resolution[1], resolution[2]),
        voxel_offset=offset,
    )


def _orient(
    m: np.ndarray, t: np.ndarray, shape: tuple[int, ...], where: str
) -> tuple[str, str, tuple[float, float, float], tuple[int, int, int]]:
    """Axis letters of the voxel axes, the flipped ones, voxel size and offset (x, y, z)."""
    columns = np.abs(m)
    world = [int(np.argmax(columns[:, i])) for i in range(3)]
    off_axis = columns.copy()
    for i, w in enumerate(world):
        off_axis[w, i] = 0.0
    scale = float(columns.max()) or 1.0
    if sorted(world) != [0, 1, 2] or off_axis.max() > _OFF_AXIS * scale:
        log.warning(
            "%s: the affine rotates or shears the voxel grid (off-axis term %.3g); precomputed "
            "cannot store that, so the volume keeps its voxel order and the rotation is dropped",
            where, off_axis.max(),
        )  # fmt: skip
        lengths = np.linalg.norm(m, axis=0)
        size = (float(lengths[0]), float(lengths[1]), float(lengths[2]))
        # No axis mapping is right here: keep the voxel order and translate by the origin.
        off = tuple(offset_in_voxels(float(t[i]), size[i], where, "xyz"[i]) for i in range(3))
        return "XYZ", "", size, (off[0], off[1], off[2])
    letters, flipped = "", ""
    steps = [0.0, 0.0, 0.0]
    low = [0.0, 0.0, 0.0]
    for i, w in enumerate(world):
        step = float(m[w, i])
        letters += "XYZ"[w]
        steps[w] = abs(step)
        # The lowest world coordinate along w: voxel 0, or the last voxel if the axis runs back.
        low[w] = float(t[w]) + min(0.0, step * (shape[i] - 1))
        if step < 0:
            flipped += "XYZ"[w]
    offset = tuple(offset_in_voxels(low[w], steps[w], where, "xyz"[w]) for w in range(3))
    return letters, flipped, (steps[0], steps[1], steps[2]), (offset[0], offset[1], offset[2])
