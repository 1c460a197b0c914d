"""Zarr (v2 and v3), OME-Zarr multiscales and N5: :func:`open_zarr` and :func:`open_n5`.

Zarr is read with zarr-python (``zarr.open`` reads both format versions); N5 with tensorstore's
``n5`` driver, as zarr-python 3 dropped its N5 store. A group is resolved to one array:

* ``--dataset PATH`` names the array inside the store;
* otherwise an OME-Zarr image group (NGFF ``multiscales``, v0.1 to v0.5) gives its first
  (full-resolution) level, with axis names, units and coordinate transformations;
* otherwise an N5 group with an ``s0`` array (BigDataViewer, Paintera) gives ``s0``.

Metadata read: OME-Zarr ``axes`` (space axes with their ``unit``; ``channel`` and ``time``
types), the level's ``scale`` and ``translation`` composed with the multiscale's own transform;
N5 ``pixelResolution`` (``{"unit", "dimensions"}``) or ``resolution`` with ``units`` (the
attributes Neuroglancer's N5 source reads), and ``offset`` (in voxels) where present. A plain
Zarr array's axes come from xarray's ``_ARRAY_DIMENSIONS`` or Zarr v3 ``dimension_names``,
else C order ``ZYX``, ``CZYX``, ``TCZYX`` (the order OME-Zarr prescribes).
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from ..sources import SourceError
from .base import AxesVolume, offset_in_voxels, require, to_nm

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
N5_SUFFIXES = (".n5",)

#: Axis names as OME-Zarr, xarray and N5 spell them -> our letters.
_LETTERS = {"x": "X", "y": "Y", "z": "Z", "c": "C", "channel": "C", "t": "T", "time": "T"}
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}


def _letters(names: list[str], where: str) -> str:
    """Our axis letters for a list of names; unknown names get digits (they must be size 1)."""
    out = ""
    for i, name in enumerate(names):
        out += _LETTERS.get(str(name).lower(), str(i % 10))
    if len(set(out)) != len(out):
        raise SourceError(f"{where}: axis names {names} repeat an axis")
    return out


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The NGFF ``multiscales`` list: top-level up to v0.4, under ``ome`` from v0.5."""
    ome = attrs.get("ome")
    found = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    return found if isinstance(found, list) and found else None


def _transform(transforms: list[dict[str, Any]] | None, n: int) -> tuple[list[float], list[float]]:
    scale, translation = [1.0] * n, [0.0] * n
    for t in transforms or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = [float(v) for v in t["scale"]]
        elif t.get("type") == "translation" and "translation" in t:
            translation = [float(v) for v in t["translation"]]
    return scale, translation


def _ome_level(
    multiscale: dict[str, Any], level: int, ndim: int, where: str
) -> tuple[str, str, dict[str, str], list[float], list[float]]:
    """(array path, axis letters, letter -> unit, scale, translation) of one OME level."""
    datasets = multiscale["datasets"]  # the level exists: _ome_array checked it
    raw_axes = multiscale.get("axes", ["t", "c", "z", "y", "x"][-ndim:])  # v0.1/0.2: implied
    names = [a["name"] if isinstance(a, dict) else a for a in raw_axes]
    letters = ""
    units: dict[str, str] = {}
    for i, axis in enumerate(raw_axes):
        letter = _letters([names[i]], where)
        if isinstance(axis, dict):
            kind = axis.get("type")
            letter = {"channel": "C", "time": "T"}.get(str(kind), letter)
            if kind == "space" and "unit" in axis:
                units[letter] = str(axis["unit"])
        letters += letter if letter not in "0123456789" else str(i)
    ds = datasets[level]
    ds_scale, ds_shift = _transform(ds.get("coordinateTransformations"), len(letters))
    g_scale, g_shift = _transform(multiscale.get("coordinateTransformations"), len(letters))
    # The multiscale's transform applies after the level's (NGFF 0.4 "multiscales").
    scale = [a * b for a, b in zip(ds_scale, g_scale, strict=True)]
    shift = [a * g + b for a, g, b in zip(ds_shift, g_scale, g_shift, strict=True)]
    return str(ds["path"]), letters, units, scale, shift


def _grid(
    letters: str, units: dict[str, str], scale: list[float], shift: list[float], where: str
) -> tuple[tuple[float, float, float] | None, tuple[int, int, int]]:
    """Voxel size in nm and offset in voxels (x, y, z) from per-axis physical transforms."""
    spatial = [a for a in "XYZ" if a in letters]
    if any(a not in units for a in spatial):
        log.info("%s: no length unit on every space axis; the voxel size is not known", where)
        return None, (0, 0, 0)
    res = [1.0, 1.0, 1.0]
    off = [0, 0, 0]
    for k, a in enumerate("XYZ"):
        if a not in letters:
            continue
        i = letters.index(a)
        res[k] = to_nm(scale[i], units[a], where)
        off[k] = offset_in_voxels(shift[i], scale[i], where, a.lower())
    return (res[0], res[1], res[2]), (off[0], off[1], off[2])


def open_zarr(
    path: str, *, dataset: str | None = None, timepoint: int | None = None, level: int = 0
) -> AxesVolume:
    """Open a Zarr v2/v3 store (an array, or a group with ``dataset`` or OME multiscales)."""
    zarr = require("zarr", "zarr", "Zarr")
    try:
        root = zarr.open(store=path, mode="r")
    except Exception as e:  # zarr raises FileNotFoundError, NodeNotFoundError, ValueError...
        raise SourceError(f"{path}: not a readable Zarr store ({type(e).__name__}: {e})") from None
    node, where = root, path
    parent_attrs: dict[str, Any] = {}
    if dataset:
        where = f"{path}:{dataset.strip('/')}"
        if not isinstance(root, zarr.Group) or dataset.strip("/") not in root:
            raise SourceError(f"{where}: no such array in the Zarr store{_listing(root, zarr)}")
        parent_attrs = dict(root.attrs)
        node = root[dataset.strip("/")]
    if isinstance(node, zarr.Group):
        multiscales = _multiscales(dict(node.attrs))
        if multiscales is None:
            raise SourceError(
                f"{where}: a Zarr group, not an array:"
                f" name one with --dataset{_listing(node, zarr)}"
            )
        array = _ome_array(node, multiscales[0], level, where)
        return _ome_volume(array, multiscales[0], level, where, timepoint)
    multiscales = _multiscales(parent_attrs)
    if multiscales and dataset is not None:
        paths = [str(d.get("path")) for d in multiscales[0].get("datasets", [])]
        if dataset.strip("/") in paths:
            return _ome_volume(
                node, multiscales[0], paths.index(dataset.strip("/")), where, timepoint
            )
    return _plain_volume(node, where, timepoint)


def _listing(group: Any, zarr: Any) -> str:
    if not isinstance(group, zarr.Group):
        return ""
    names = sorted(name for name, _ in group.arrays())
    return f" (arrays here: {', '.join(names)})" if names else " (it holds no array)"


def _ome_array(group: Any, multiscale: dict[str, Any], level: int, where: str) -> Any:
    datasets = multiscale.get("datasets") or []
    if not 0 <= level < len(datasets):
        raise SourceError(f"{where}: the multiscale has {len(datasets)} levels, not {level + 1}")
    name = str(datasets[level].get("path"))
    try:
        return group[name]
    except KeyError:
        raise SourceError(f"{where}: multiscale level {name!r} is missing from the store") from None


def _ome_volume(
    array: Any, multiscale: dict[str, Any], level: int, where: str, timepoint: int | None
) -> AxesVolume:
    _, letters, units, scale, shift = _ome_level(multiscale, level, array.ndim, where)
    if level > 0:
        # NGFF translations place voxel centres; precomputed places every scale's corner at
        # voxel_offset * resolution. Level 0's centre is taken as its corner (as for NIfTI),
        # so a lower level's corner is placed by the same rule to keep the levels aligned.
        _, _, _, base, _ = _ome_level(multiscale, 0, array.ndim, where)
        shift = [t - s / 2 + b / 2 for t, s, b in zip(shift, scale, base, strict=True)]
    if len(letters) != array.ndim:
        raise SourceError(
            f"{where}: {len(letters)} axes in the metadata, {array.ndim} in the array"
        )
    resolution, offset = _grid(letters, units, scale, shift, where)
    return _volume(array, letters, where, timepoint, resolution, offset)


def open_ome_levels(
    path: str, *, dataset: str | None = None, timepoint: int | None = None
) -> list[AxesVolume]:
    """Every level of an OME-Zarr multiscale image, full size first (``--use-source-pyramid``)."""
    zarr = require("zarr", "zarr", "Zarr")
    first = open_zarr(path, dataset=dataset, timepoint=timepoint)
    group = zarr.open(store=path, mode="r")
    if dataset:
        group = group[dataset.strip("/")]
    multiscales = _multiscales(dict(group.attrs)) if isinstance(group, zarr.Group) else None
    if multiscales is None:
        raise SourceError(f"{path}: --use-source-pyramid needs an OME-Zarr multiscale image group")
    levels = [first]
    for level in range(1, len(multiscales[0].get("datasets") or [])):
        levels.append(open_zarr(path, dataset=dataset, timepoint=timepoint, level=level))
    return levels


def _plain_volume(array: Any, where: str, timepoint: int | None) -> AxesVolume:
    attrs = dict(array.attrs)
    names = attrs.get("_ARRAY_DIMENSIONS") or getattr(array.metadata, "dimension_names", None)
    if names and all(n is not None for n in names):
        letters = _letters(list(names), where)
    elif array.ndim in _DEFAULT_AXES:
        letters = _DEFAULT_AXES[array.ndim]
    else:
        raise SourceError(f"{where}: a {array.ndim}-dimensional array without axis names")
    return _volume(array, letters, where, timepoint, None, (0, 0, 0))


def _volume(
    array: Any,
    letters: str,
    where: str,
    timepoint: int | None,
    resolution: tuple[float, float, float] | None,
    offset: tuple[int, int, int],
    reader: Any = None,
) -> AxesVolume:
    extra = {"reader": reader} if reader is not None else {}
    return AxesVolume(
        array, letters, where=where, timepoint=timepoint, resolution=resolution,
        voxel_offset=offset, **extra,
    )  # fmt: skip


# -- N5 ------------------------------------------------------------------------------------


def _n5_attrs(folder: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, "attributes.json"), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _n5_read(store: Any, index: tuple[Any, ...]) -> np.ndarray:
    out: np.ndarray = store[index].read().result()
    return out


def open_n5(path: str, *, dataset: str | None = None, timepoint: int | None = None) -> AxesVolume:
    """Open an N5 array (``dataset`` inside the container, else the container or its ``s0``)."""
    ts = require("tensorstore", "n5", "N5")
    inner = (dataset or "").strip("/")
    where = f"{path}:{inner}" if inner else path
    attrs = _n5_attrs(os.path.join(path, inner))
    if attrs is None:
        raise SourceError(f"{where}: no N5 array or group here (no attributes.json)")
    if "dimensions" not in attrs:
        if not inner and (_n5_attrs(os.path.join(path, "s0")) or {}).get("dimensions"):
            return open_n5(path, dataset="s0", timepoint=timepoint)
        arrays = sorted(
            n for n in os.listdir(os.path.join(path, inner))
            if "dimensions" in (_n5_attrs(os.path.join(path, inner, n)) or {})
        )  # fmt: skip
        here = f" (arrays here: {', '.join(arrays)})" if arrays else " (it holds no array)"
        raise SourceError(f"{where}: an N5 group, not an array: name one with --dataset{here}")
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": path}, "path": inner}
    try:
        store = ts.open(spec, read=True).result()
    except Exception as e:  # tensorstore raises ValueError with its status text
        raise SourceError(f"{where}: not a readable N5 array ({e})") from None
    ndim = len(attrs["dimensions"])
    # N5 lists dimensions fastest first (x, y, z), and tensorstore keeps that order.
    names = attrs.get("axes")
    letters = _letters(list(names), where) if names else "XYZCT"[:ndim]
    resolution, offset = _n5_grid(attrs, letters, where)
    return _volume(store, letters, where, timepoint, resolution, offset, reader=_n5_read)


def _n5_grid(
    attrs: dict[str, Any], letters: str, where: str
) -> tuple[tuple[float, float, float] | None, tuple[int, int, int]]:
    pixel = attrs.get("pixelResolution")
    if isinstance(pixel, dict) and "dimensions" in pixel:
        sizes, units = list(pixel["dimensions"]), [str(pixel.get("unit", "nm"))] * len(letters)
    elif "resolution" in attrs:
        sizes = list(attrs["resolution"])
        # Neuroglancer's N5 source takes a missing "units" as nanometres.
        units = [str(u) for u in attrs.get("units", ["nm"] * len(sizes))]
    else:
        return None, (0, 0, 0)
    res = [1.0, 1.0, 1.0]
    for k, a in enumerate("XYZ"):
        if a in letters and letters.index(a) < len(sizes):
            i = letters.index(a)
            res[k] = to_nm(float(sizes[i]), units[i], where)
    raw = attrs.get("offset")
    off = (0, 0, 0)
    if isinstance(raw, list) and len(raw) >= 3:
        off = (int(raw[0]), int(raw[1]), int(raw[2]))
    return (res[0], res[1], res[2]), off
