"""What the input formats share: :class:`AxesVolume`, a region-readable labelled array.

A format module opens its file, finds the array, names its axes with letters (``X Y Z`` space,
``C`` channels, ``T`` time; anything else must be fixed to one index) and hands it here with the
metadata it read (voxel size in nm, voxel offset). :meth:`AxesVolume.read_region` slices only the
box it is asked for, so a chunked array (Zarr, N5, HDF5) reads only the chunks the box touches:
never a whole plane unless the box is one (issue #13's region tasks).
"""

from __future__ import annotations

import importlib
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..sources import SourceError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from ...core.model import Res3, Vec3

    #: Reads ``array[index]`` as a numpy array (tensorstore needs ``.read().result()``).
    Reader = Callable[[Any, tuple[Any, ...]], np.ndarray]

log = logging.getLogger(__name__)

#: Length units as the formats spell them -> nanometres. OME-Zarr uses UDUNITS-2 names
#: (ngff spec, "axes metadata"); N5 and Imaris use abbreviations (``um``, ``µm``); NIfTI's
#: ``xyzt_units`` as nibabel names them (``mm``, ``micron``, ``meter``).
UNITS_NM: dict[str, float] = {
    "angstrom": 0.1,
    "picometer": 1e-3,
    "nanometer": 1.0,
    "micrometer": 1e3,
    "micron": 1e3,
    "millimeter": 1e6,
    "centimeter": 1e7,
    "meter": 1e9,
    "pm": 1e-3,
    "nm": 1.0,
    "um": 1e3,
    "µm": 1e3,  # MICRO SIGN
    "μm": 1e3,  # GREEK SMALL LETTER MU: both are written by real files
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
}


def to_nm(value: float, unit: str, where: str) -> float:
    """``value`` in ``unit`` as nanometres; :class:`SourceError` for a unit we do not know."""
    try:
        return float(value) * UNITS_NM[unit.strip().lower() if unit != "µm" else unit]
    except KeyError:
        raise SourceError(f"{where}: unknown length unit {unit!r}") from None


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional library, or fail with the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(
            f"reading {what} needs the {module} package: pip install 'precomp-host[{extra}]'"
        ) from None


def offset_in_voxels(origin: float, voxel: float, where: str, axis: str) -> int:
    """A physical origin as a whole number of voxels (precomputed offsets are integers)."""
    n = origin / voxel
    if not math.isclose(n, round(n), abs_tol=1e-3):
        # volume.md's voxel_offset is an integer: a sub-voxel origin cannot be stored.
        log.warning(
            "%s: %s origin %g is not a whole number of voxels (%g); rounded to %d",
            where, axis, origin, voxel, round(n),
        )  # fmt: skip
    return round(n)


def choose_timepoint(where: str, count: int, timepoint: int | None) -> int:
    """The time point to read of ``count``: required when there is more than one."""
    if timepoint is None and count > 1:
        raise SourceError(
            f"{where}: {count} time points: choose one with --timepoint 0..{count - 1}"
        )
    t = timepoint or 0
    if not 0 <= t < count:
        raise SourceError(f"{where}: time point {t} is outside 0..{count - 1}")
    return t


def _numpy_read(array: Any, index: tuple[Any, ...]) -> np.ndarray:
    return np.asarray(array[index])


class AxesVolume:
    """A :class:`~precomp_host.build.sources.Volume` over an array-like with lettered axes.

    :param array: anything sliced with a tuple of slices and ints (numpy, zarr, h5py, a
        nibabel array proxy, a tensorstore store with ``reader``).
    :param axes: one letter per dimension of ``array``: ``X``, ``Y`` (required), ``Z``, ``C``;
        any other letter (``T`` aside) must have size 1.
    :param timepoint: the index along ``T`` (``--timepoint``); needed when ``T`` has more than one.
    :param flipped: letters whose order is reversed (a NIfTI axis whose affine is negative).
    :param resolution: voxel size in nm (x, y, z) read from the file, or None.
    :param voxel_offset: position of the first voxel, in voxels, read from the file.
    """

    def __init__(
        self,
        array: Any,
        axes: str,
        *,
        where: str,
        timepoint: int | None = None,
        flipped: str = "",
        resolution: Res3 | None = None,
        voxel_offset: Vec3 = (0, 0, 0),
        reader: Reader = _numpy_read,
    ) -> None:
        shape = tuple(int(n) for n in array.shape)
        if len(axes) != len(shape) or len(set(axes)) != len(axes):
            raise SourceError(f"{where}: axes {axes!r} do not name the {len(shape)} dimensions")
        if not {"X", "Y"} <= set(axes):
            raise SourceError(f"{where}: no x and y axes among {axes!r}")
        fixed: dict[str, int] = {}
        if "T" in axes:
            fixed["T"] = choose_timepoint(where, shape[axes.index("T")], timepoint)
        for letter, n in zip(axes, shape, strict=True):
            if letter in "XYZC" or letter in fixed:
                continue
            if n != 1:
                raise SourceError(f"{where}: axis {letter!r} has {n} entries; cannot pick one")
            fixed[letter] = 0
        self.array, self.axes, self.where = array, axes, where
        self.fixed, self.flipped, self._read = fixed, flipped, reader
        self.sizes = dict(zip(axes, shape, strict=True))
        self.shape: tuple[int, int, int] = (
            self.sizes["X"], self.sizes["Y"], self.sizes.get("Z", 1),
        )  # fmt: skip
        # tensorstore spells it ``dtype.numpy_dtype``; the others are numpy dtypes already.
        self.dtype: np.dtype[Any] = np.dtype(getattr(array.dtype, "numpy_dtype", array.dtype))
        self.num_channels = self.sizes.get("C", 1) if "C" not in fixed else 1
        self.resolution = resolution
        self.voxel_offset = voxel_offset

    def read_region(self, start: Vec3, stop: Vec3) -> np.ndarray:
        """Voxels ``start`` to ``stop`` (x, y, z, from 0) as ``[z, y, x, c]``."""
        box = {"X": (start[0], stop[0]), "Y": (start[1], stop[1]), "Z": (start[2], stop[2])}
        index: list[Any] = []
        kept = ""
        for letter in self.axes:
            if letter in self.fixed:
                index.append(self.fixed[letter])
                continue
            kept += letter
            if letter not in box:
                index.append(slice(None))
                continue
            lo, hi = box[letter]
            if letter in self.flipped:
                n = self.sizes[letter]
                lo, hi = n - hi, n - lo
            index.append(slice(lo, hi))
        data = self._read(self.array, tuple(index))
        flips = tuple(kept.index(a) for a in self.flipped if a in kept)
        if flips:
            data = np.flip(data, flips)
        if "Z" not in kept:
            data, kept = data[np.newaxis], "Z" + kept
        if "C" not in kept:
            data, kept = data[..., np.newaxis], kept + "C"
        return np.ascontiguousarray(np.transpose(data, [kept.index(a) for a in "ZYXC"]))

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Whole slices ``z0`` to ``z1`` (the slab interface the builder streams today)."""
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))
