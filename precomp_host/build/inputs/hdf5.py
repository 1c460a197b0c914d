"""HDF5 (``--dataset /path``) and Imaris ``.ims`` via h5py: :func:`open_hdf5`, :func:`open_imaris`.

An HDF5 dataset is read by h5py slicing, which reads only the chunks a region touches. Its
voxel size comes from the conventions in use: ``element_size_um`` (Fiji's HDF5 plugin and
ilastik, z, y, x in micrometres) or CREMI's ``resolution`` and ``offset`` (z, y, x in nm). Axes
are ilastik's ``axistags`` where present, else ``ZYX`` for 3D (C order of a stack).

An Imaris file is HDF5 with a fixed layout: ``/DataSet/ResolutionLevel r/TimePoint t/Channel c/
Data`` (z, y, x; padded up to whole chunks), and ``/DataSetInfo/Image`` holding the real size
(``X``, ``Y``, ``Z``), the physical extent (``ExtMin0..2``, ``ExtMax0..2``) and its ``Unit``, all
stored as arrays of one-character byte strings. Channels become the volume's channels, or one
of them with ``channel``; a resolution level is chosen with ``level``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from ..sources import SourceError
from .base import AxesVolume, choose_timepoint, offset_in_voxels, require, to_nm

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
IMARIS_SUFFIXES = (".ims",)


def _open_file(path: str) -> Any:
    h5py = require("h5py", "hdf5", "HDF5")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise SourceError(f"{path}: not a readable HDF5 file ({e})") from None


def _datasets(f: Any) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append("/" + name) if hasattr(obj, "shape") else None)
    return found


def open_hdf5(path: str, *, dataset: str | None = None, timepoint: int | None = None) -> AxesVolume:
    """Open the HDF5 dataset ``dataset`` (required when the file holds more than one)."""
    f = _open_file(path)
    if dataset is None:
        if "DataSet/ResolutionLevel 0" in f:
            f.close()
            return open_imaris(path, timepoint=timepoint)
        names = _datasets(f)
        if len(names) != 1:
            f.close()
            listed = ", ".join(names[:10]) if names else "none"
            raise SourceError(f"{path}: choose a dataset with --dataset (datasets: {listed})")
        dataset = names[0]
    where = f"{path}:{dataset}"
    if dataset not in f:
        f.close()
        raise SourceError(f"{where}: no such dataset in the file")
    node = f[dataset]
    if not hasattr(node, "shape"):
        inside = _datasets(node)[:10]
        f.close()
        listed = ", ".join(dataset.rstrip("/") + n for n in inside) if inside else "none"
        raise SourceError(f"{where}: is a group, not a dataset (datasets in it: {listed})")
    attrs = dict(node.attrs)
    letters = _axistags(attrs.get("axistags"), where) or {3: "ZYX", 2: "YX"}.get(node.ndim)
    if letters is None:
        f.close()
        raise SourceError(f"{where}: {node.ndim} dimensions without axistags; cannot tell the axes")
    resolution, offset = _hdf5_grid(attrs, where)
    return AxesVolume(
        node, letters, where=where, timepoint=timepoint, resolution=resolution, voxel_offset=offset
    )


def _axistags(raw: Any, where: str) -> str | None:
    """Axis letters from ilastik/vigra's ``axistags`` JSON attribute."""
    if raw is None:
        return None
    try:
        keys = [str(a["key"]).upper() for a in json.loads(raw)["axes"]]
    except (ValueError, KeyError, TypeError):
        log.warning("%s: unreadable axistags attribute; assuming z, y, x", where)
        return None
    return "".join(keys)


def _zyx(value: Any) -> tuple[float, float, float] | None:
    arr = np.asarray(value, dtype=np.float64).ravel()
    return (float(arr[2]), float(arr[1]), float(arr[0])) if arr.size == 3 else None


def _hdf5_grid(
    attrs: dict[str, Any], where: str
) -> tuple[tuple[float, float, float] | None, tuple[int, int, int]]:
    if "element_size_um" in attrs:
        um = _zyx(attrs["element_size_um"])
        if um is not None:
            res = (to_nm(um[0], "um", where), to_nm(um[1], "um", where), to_nm(um[2], "um", where))
            return res, (0, 0, 0)
    if "resolution" in attrs:
        nm = _zyx(attrs["resolution"])
        if nm is not None:
            origin = _zyx(attrs["offset"]) if "offset" in attrs else None
            off = (0, 0, 0)
            if origin is not None:  # CREMI: the offset is physical (nm), z, y, x
                o = [offset_in_voxels(origin[i], nm[i], where, "xyz"[i]) for i in range(3)]
                off = (o[0], o[1], o[2])
            return nm, off
    return None, (0, 0, 0)


# -- Imaris ----------------------------------------------------------------------------------


def _ims_text(attrs: Any, name: str, where: str) -> str:
    """An Imaris attribute: an array of one-byte strings (``[b'5', b'1', b'2']``)."""
    if name not in attrs:
        raise SourceError(f"{where}: Imaris attribute {name!r} is missing")
    raw = attrs[name]
    if isinstance(raw, bytes | str):
        return raw.decode() if isinstance(raw, bytes) else raw
    return b"".join(bytes(v) for v in np.asarray(raw).ravel()).decode()


class _Channels:
    """Imaris channels (one HDF5 dataset each) as one ``[c, z, y, x]`` array, cropped."""

    def __init__(self, data: list[Any], zyx: tuple[int, int, int]) -> None:
        self.data = data
        self.shape = (len(data), *zyx)
        self.dtype = data[0].dtype
        self.ndim = 4

    def __getitem__(self, index: tuple[Any, ...]) -> np.ndarray:
        c, *rest = index
        picked = self.data[c] if isinstance(c, slice) else [self.data[c]]
        out = np.stack([np.asarray(d[tuple(rest)]) for d in picked])
        return out if isinstance(c, slice) else out[0]


def open_imaris(
    path: str, *, channel: int | None = None, timepoint: int | None = None, level: int = 0
) -> AxesVolume:
    """Open an Imaris ``.ims`` file: all channels, or ``channel``; ``level`` 0 is full size."""
    f = _open_file(path)
    where = path
    try:
        info = f["DataSetInfo/Image"].attrs
        size = [int(_ims_text(info, a, where)) for a in ("X", "Y", "Z")]
        lo = [float(_ims_text(info, f"ExtMin{i}", where)) for i in range(3)]
        hi = [float(_ims_text(info, f"ExtMax{i}", where)) for i in range(3)]
        unit = _ims_text(info, "Unit", where) if "Unit" in info else "um"
        level_group = f[f"DataSet/ResolutionLevel {level}"]
    except KeyError as e:
        f.close()
        raise SourceError(
            f"{where}: not an Imaris file, or no resolution level {level} ({e})"
        ) from None
    count = len([k for k in level_group if k.startswith("TimePoint ")])
    try:
        t = choose_timepoint(where, count, timepoint)
    except SourceError:
        f.close()
        raise
    tp = level_group[f"TimePoint {t}"]
    count = len([k for k in tp if k.startswith("Channel ")])
    if channel is not None and not 0 <= channel < count:
        f.close()
        raise SourceError(f"{where}: channel {channel} is outside 0..{count - 1}")
    picked = [channel] if channel is not None else list(range(count))
    data = [tp[f"Channel {c}/Data"] for c in picked]
    # Levels below 0 are downsampled: their real size is on the channel group (ImageSizeX...).
    ch_attrs = tp[f"Channel {picked[0]}"].attrs
    if "ImageSizeX" in ch_attrs:
        size = [int(_ims_text(ch_attrs, f"ImageSize{a}", where)) for a in "XYZ"]
    voxel = [(hi[i] - lo[i]) / size[i] for i in range(3)]
    res = tuple(to_nm(v, unit, where) for v in voxel)
    off = tuple(offset_in_voxels(lo[i], voxel[i], where, "xyz"[i]) for i in range(3))
    return AxesVolume(
        _Channels(data, (size[2], size[1], size[0])),
        "CZYX",
        where=where,
        resolution=(res[0], res[1], res[2]),
        voxel_offset=(off[0], off[1], off[2]),
    )
