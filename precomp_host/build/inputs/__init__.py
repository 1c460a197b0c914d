"""The inputs beside TIFF and ``.npy``: :func:`open_source` and :func:`resolve_grid`.

One module per format, each returning a volume with the slab interface of
:class:`~precomp_host.build.sources.Volume` plus ``read_region`` (an x/y/z box) and the grid
read from the file (``resolution`` in nm, or None where the file has none, and
``voxel_offset``):

* :mod:`.nifti`: ``.nii``, ``.nii.gz`` (nibabel; extra ``nifti``);
* :mod:`.zarr`: Zarr v2/v3 and OME-Zarr (zarr-python; extra ``zarr``), N5 (tensorstore; extra
  ``n5``);
* :mod:`.hdf5`: HDF5 datasets and Imaris ``.ims`` (h5py; extra ``hdf5``);
* :mod:`.precomputed`: an existing precomputed tree, local or over HTTP (no extra).

Each library is imported when its format is opened, so a missing one fails with the
``pip install`` line to run (:func:`.base.require`) and nothing else pays for it.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any

from ..sources import SourceError, open_volume

if TYPE_CHECKING:
    from ...core.model import Res3, Vec3
    from ..sources import Volume

log = logging.getLogger(__name__)


def _is_kind(src: str, suffixes: tuple[str, ...]) -> bool:
    return src.lower().rstrip("/").endswith(suffixes)


def open_source(
    source: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    timepoint: int | None = None,
    channel: int | None = None,
    npy_axes: str | None = None,
) -> Volume:
    """Open any input we read: the formats here by suffix (or an ``info`` file), else TIFF/.npy.

    :param dataset: the array inside a container (HDF5 path, Zarr or N5 array path).
    :param timepoint: the time point of a 4D (or 5D) volume.
    :param channel: one channel of an Imaris file (default: all channels).
    :raises SourceError: one line naming the file and the problem.
    """
    from . import hdf5, nifti, precomputed
    from . import zarr as zarr_input

    src = os.fspath(source)
    kind = _kind_of(src)
    if kind != "precomputed" and not os.path.exists(src) and not any(c in src for c in "*?["):
        raise SourceError(f"{src}: no such file or folder")
    given = {"--dataset": dataset, "--timepoint": timepoint, "--channel": channel}
    for flag, value in given.items():
        if value is not None and flag not in _OPTIONS[kind]:
            raise SourceError(f"{src}: {flag} does not apply to a {kind} source")
    if kind == "precomputed":
        return precomputed.PrecomputedVolume(src)
    if kind == "NIfTI":
        return nifti.open_nifti(src, timepoint=timepoint)
    if kind == "N5":
        return zarr_input.open_n5(src, dataset=dataset, timepoint=timepoint)
    if kind == "Zarr":
        return zarr_input.open_zarr(src, dataset=dataset, timepoint=timepoint)
    if kind == "Imaris":
        return hdf5.open_imaris(src, channel=channel, timepoint=timepoint)
    if kind == "HDF5":
        return hdf5.open_hdf5(src, dataset=dataset, timepoint=timepoint)
    return open_volume(src, npy_axes=npy_axes)


#: The container options each kind of source takes (the others are an error, not ignored).
_OPTIONS: dict[str, frozenset[str]] = {
    "precomputed": frozenset(),
    "NIfTI": frozenset({"--timepoint"}),
    "N5": frozenset({"--dataset", "--timepoint"}),
    "Zarr": frozenset({"--dataset", "--timepoint"}),
    "Imaris": frozenset({"--timepoint", "--channel"}),
    "HDF5": frozenset({"--dataset", "--timepoint"}),
    "TIFF or .npy": frozenset(),
}


def _kind_of(src: str) -> str:
    from . import hdf5, nifti, precomputed
    from . import zarr as zarr_input

    if precomputed.is_url(src) or (os.path.isdir(src) and precomputed.is_precomputed(src)):
        return "precomputed"
    if _is_kind(src, nifti.NIFTI_SUFFIXES):
        return "NIfTI"
    if _is_kind(src, zarr_input.N5_SUFFIXES) or os.path.isfile(
        os.path.join(src, "attributes.json")
    ):
        return "N5"
    if _is_kind(src, zarr_input.ZARR_SUFFIXES) or _has_zarr_metadata(src):
        return "Zarr"
    if _is_kind(src, hdf5.IMARIS_SUFFIXES):
        return "Imaris"
    if _is_kind(src, hdf5.HDF5_SUFFIXES):
        return "HDF5"
    return "TIFF or .npy"


def _has_zarr_metadata(src: str) -> bool:
    names = (".zarray", ".zgroup", "zarr.json")
    return os.path.isdir(src) and any(os.path.isfile(os.path.join(src, n)) for n in names)


def resolve_grid(
    volume: Any, resolution: Res3 | None, voxel_offset: Vec3 | None, where: str
) -> tuple[Res3, Vec3]:
    """The voxel size (nm) and offset to build with: the user's where given, else the file's.

    The user's ``--resolution`` wins over the file's, with one logged line when they disagree
    (a deliberate override and a typo look the same from here).
    """
    found: Res3 | None = getattr(volume, "resolution", None)
    if resolution is None:
        if found is None:
            raise SourceError(f"{where}: the file gives no voxel size; pass --resolution X Y Z")
        resolution = found
    elif found is not None and not all(
        math.isclose(a, b, rel_tol=1e-6) for a, b in zip(resolution, found, strict=True)
    ):
        log.warning(
            "%s: --resolution %s nm overrides the file's voxel size %s nm",
            where, _fmt(resolution), _fmt(found),
        )  # fmt: skip
    if voxel_offset is None:
        voxel_offset = getattr(volume, "voxel_offset", (0, 0, 0))
    return resolution, voxel_offset


def _fmt(v: Res3) -> str:
    return " ".join(f"{x:g}" for x in v)
