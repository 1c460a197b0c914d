"""Annotation inputs as :class:`~precomp_host.build.annotations.AnnotationTable` s:
:func:`open_annotations`.

Two kinds of source:

* a **NeuroTrALE annotation tree** (a folder of ``<block>/<leaf>.json`` files, each a JSON list
  of ``{id, type, anntype, reviewed, visited, ...}``; the store of the NeuroTrALE service):
  points become the ``points`` collection (``POINT``); polygons become closed runs of ``LINE``
  segments and linestrings open runs, both in the ``lines`` collection, where every segment of
  one shape relates to the shape's id (relationship ``shape``), so selecting it in Neuroglancer
  shows the whole shape. ``anntype`` is an enum property, ``reviewed`` and ``visited`` are 0/1,
  ``length`` (linestrings) a float. The pinned spec has no polyline type, hence segments.
* a **plain table**, CSV or JSON (a list of objects, or ``{"annotations": [...]}``): columns
  ``x, y, z``; ``x2, y2, z2`` for a second point (a ``LINE`` unless ``kind`` says
  ``AXIS_ALIGNED_BOUNDING_BOX`` or ``ELLIPSOID``); ``id``; ``segment_id`` or ``segments``
  (``;``-separated) for the ``segment`` relationship; every other column a property: whole
  numbers ``int32``, other numbers ``float32``, ``true``/``false`` ``uint8``, text an enum.
  Parquet is not read: no Parquet library is a dependency, and pulling pyarrow in for it is not
  worth its size here.

Ids that are not non-negative integers are hashed (BLAKE2b, 63 bits) so that a rebuild after an
edit keeps every other annotation's id, and with it Neuroglancer's selection. Problems raise
:class:`AnnotationSourceError` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotation_writer import write_annotations
from .annotations import (
    ANNOTATION_TYPES,
    PROPERTY_ID,
    AnnotationError,
    AnnotationTable,
    AnnotationType,
    Property,
    Related,
)
from .sources import natural_key

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

AXES = ("x", "y", "z")
#: NeuroTrALE's ``anntype`` values (issue 15: neuron, glia for points and polygons; axon for
#: linestrings), in a fixed order so the enum values never change between builds.
NEUROTRALE_ANNTYPES = ("neuron", "glia", "axon")
TABLE_SUFFIXES = (".csv", ".json")


class AnnotationSourceError(ValueError):
    """The input cannot be read as annotations; the message names the file and the problem."""


@dataclass(frozen=True)
class Dimensions:
    """Voxel size and unit of the input coordinates, e.g. the image's scale-0 resolution in nm."""

    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: str = "nm"

    def to_info(self) -> dict[str, tuple[float, str]]:
        # Neuroglancer's units are SI base units with a scale (annotations.md: ``[scale, unit]``).
        factor = {"nm": 1e-9, "um": 1e-6, "mm": 1e-3, "m": 1.0}.get(self.unit)
        if factor is None:
            return {a: (r, self.unit) for a, r in zip(AXES, self.resolution, strict=True)}
        return {a: (r * factor, "m") for a, r in zip(AXES, self.resolution, strict=True)}


def stable_id(value: Any) -> int:
    """A uint64 id for ``value``: itself if a non-negative integer, else a 63-bit hash."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) < 2**64:
        return int(value)
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# -- NeuroTrALE -------------------------------------------------------------------------------


def _neurotrale_files(root: Path) -> list[Path]:
    # Hidden folders are the store's version history (``.annotation-history``), not annotations.
    files = [
        p
        for p in root.rglob("*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def _coords(value: Any, where: str) -> list[float]:
    if not (isinstance(value, list) and len(value) == 3):
        raise AnnotationSourceError(f"{where}: a position must be [x, y, z]")
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise AnnotationSourceError(f"{where}: a position must hold numbers") from None
    if not all(math.isfinite(v) for v in out):
        raise AnnotationSourceError(f"{where}: a position must be finite")
    return out


def read_neurotrale(
    root: str | Path, dims: Dimensions | None = None, *, keep_empty: bool = False
) -> dict[str, AnnotationTable]:
    """The ``points`` and ``lines`` collections of a NeuroTrALE annotation tree (either is
    missing when the tree holds none of that kind, unless ``keep_empty``: a live layer must
    stay a layer when its last annotation is deleted)."""
    root = Path(root)
    dims = dims or Dimensions()
    points: list[list[float]] = []
    point_ids: list[int] = []
    point_props: list[tuple[int, int, int]] = []
    segments: list[list[float]] = []
    segment_ids: list[int] = []
    segment_shape: list[int] = []
    segment_props: list[tuple[int, int, int, float]] = []
    enum = {name: i for i, name in enumerate(NEUROTRALE_ANNTYPES)}
    for path in _neurotrale_files(root):
        where = str(path)
        try:
            items = json.loads(path.read_bytes())
        except ValueError as e:
            raise AnnotationSourceError(f"{where}: not JSON ({e})") from None
        if not isinstance(items, list):
            raise AnnotationSourceError(f"{where}: not a JSON list of annotations")
        for n, item in enumerate(items):
            here = f"{where}[{n}]"
            if not isinstance(item, dict) or "id" not in item:
                raise AnnotationSourceError(f"{here}: not an annotation with an id")
            kind = item.get("type")
            anntype = enum.get(str(item.get("anntype")))
            if anntype is None:
                raise AnnotationSourceError(f"{here}: anntype {item.get('anntype')!r} unknown")
            flags = (int(bool(item.get("reviewed"))), int(bool(item.get("visited"))))
            if kind == "point":
                points.append(_coords(item.get("point"), here))
                point_ids.append(stable_id(item["id"]))
                point_props.append((anntype, *flags))
            elif kind in ("polygon", "linestring"):
                raw = item.get("points")
                if not isinstance(raw, list) or len(raw) < 2:
                    raise AnnotationSourceError(f"{here}: a {kind} needs two points or more")
                run = [_coords(p, here) for p in raw]
                if kind == "polygon" and run[0] != run[-1]:
                    run.append(run[0])  # closed: the last point joins the first
                shape = stable_id(item["id"])
                length = float(item.get("length") or 0.0)
                for i, (a, b) in enumerate(zip(run, run[1:], strict=False)):
                    segments.append(a + b)
                    segment_ids.append(stable_id(f"{item['id']}:{i}"))
                    segment_shape.append(shape)
                    segment_props.append((anntype, *flags, length))
            else:
                raise AnnotationSourceError(f"{here}: unknown type {kind!r}")
    anntype_prop = Property(
        "anntype",
        "uint8",
        enum_values=tuple(range(len(NEUROTRALE_ANNTYPES))),
        enum_labels=NEUROTRALE_ANNTYPES,
    )
    flag_props = (Property("reviewed", "uint8"), Property("visited", "uint8"))
    info_dims = dims.to_info()
    tables: dict[str, AnnotationTable] = {}
    try:
        if points or keep_empty:
            pp = np.asarray(point_props, dtype=np.uint8).reshape(-1, 3)
            tables["points"] = AnnotationTable(
                "POINT",
                np.asarray(points).reshape(-1, 3),
                np.asarray(point_ids, dtype=np.uint64),
                info_dims,
                [(anntype_prop, pp[:, 0]), (flag_props[0], pp[:, 1]), (flag_props[1], pp[:, 2])],
            )
        if segments or keep_empty:
            sp = np.asarray(segment_props, dtype=np.float64).reshape(-1, 4)
            tables["lines"] = AnnotationTable(
                "LINE",
                np.asarray(segments).reshape(-1, 6),
                np.asarray(segment_ids, dtype=np.uint64),
                info_dims,
                [
                    (Property("length", "float32"), sp[:, 3]),
                    (anntype_prop, sp[:, 0]),
                    (flag_props[0], sp[:, 1]),
                    (flag_props[1], sp[:, 2]),
                ],
                {"shape": Related.one_each(np.asarray(segment_shape, dtype=np.uint64))},
            )
    except AnnotationError as e:
        raise AnnotationSourceError(f"{root}: {e}") from None
    return tables


# -- tables -----------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [{k.strip(): v for k, v in row.items() if k} for row in csv.DictReader(f)]
    try:
        data = json.loads(path.read_bytes())
    except ValueError as e:
        raise AnnotationSourceError(f"{path}: not JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("annotations")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise AnnotationSourceError(f"{path}: a JSON table is a list of objects")
    return data


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _infer_property(name: str, values: Sequence[Any], where: str) -> tuple[Property, np.ndarray]:
    pid = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if PROPERTY_ID.fullmatch(pid) is None:
        pid = "p_" + pid
    texts = [str(v).strip().lower() if v is not None else "" for v in values]
    if all(t in ("true", "false", "1", "0") for t in texts) and any(
        t in ("true", "false") for t in texts
    ):
        return Property(pid, "uint8"), np.asarray([t in ("true", "1") for t in texts], np.uint8)
    numbers = [_as_number(v) for v in values]
    if all(x is not None for x in numbers):
        arr = np.asarray(numbers, dtype=np.float64)
        whole = bool(np.all(arr == np.round(arr))) and bool(np.all(np.abs(arr) < 2**31))
        return (
            (Property(pid, "int32"), arr.astype(np.int32))
            if whole
            else (
                Property(pid, "float32"),
                arr,
            )
        )
    labels = sorted({str(v) for v in values if v is not None})
    if len(labels) > 65536:
        raise AnnotationSourceError(f"{where}: column {name!r} has too many distinct texts")
    index = {label: i for i, label in enumerate(labels)}
    codes = np.asarray([index.get(str(v), 0) if v is not None else 0 for v in values])
    kind = "uint8" if len(labels) <= 256 else "uint16"
    prop = Property(pid, kind, enum_values=tuple(range(len(labels))), enum_labels=tuple(labels))
    return prop, codes


def _segment_lists(rows: Sequence[dict[str, Any]]) -> list[list[int]]:
    out: list[list[int]] = []
    for row in rows:
        raw = row.get("segments", row.get("segment_id"))
        if raw is None or raw == "":
            out.append([])
        elif isinstance(raw, list):
            out.append([int(v) for v in raw])
        else:
            out.append([int(float(v)) for v in str(raw).split(";") if v.strip()])
    return out


def read_table(
    path: str | Path, dims: Dimensions | None = None, kind: AnnotationType | None = None
) -> AnnotationTable:
    """One collection from a CSV or JSON table (columns as in the module docstring)."""
    path = Path(path)
    dims = dims or Dimensions()
    rows = _read_rows(path)
    if not rows:
        raise AnnotationSourceError(f"{path}: no annotations")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    second = [f"{a}2" for a in AXES]
    has_second = all(c in columns for c in second)
    kind = kind or ("LINE" if has_second else "POINT")
    if kind not in ANNOTATION_TYPES:
        raise AnnotationSourceError(f"{path}: unknown annotation type {kind!r}")
    geometry_cols = list(AXES) + (second if kind != "POINT" else [])
    missing = [c for c in geometry_cols if c not in columns]
    if missing:
        raise AnnotationSourceError(f"{path}: no column {missing[0]!r}")
    try:
        geometry = np.asarray(
            [[float(row[c]) for c in geometry_cols] for row in rows], dtype=np.float64
        )
    except (TypeError, ValueError, KeyError):
        raise AnnotationSourceError(f"{path}: a coordinate is missing or not a number") from None
    ids = (
        [stable_id(row.get("id")) for row in rows]
        if "id" in columns
        else list(range(1, len(rows) + 1))
    )
    reserved = {*geometry_cols, *second, "id", "segment_id", "segments"}
    properties = [
        _infer_property(c, [row.get(c) for row in rows], str(path))
        for c in columns
        if c not in reserved
    ]
    relationships: dict[str, Related] = {}
    if "segment_id" in columns or "segments" in columns:
        try:
            relationships["segment"] = Related.from_lists(_segment_lists(rows))
        except ValueError:
            raise AnnotationSourceError(f"{path}: a segment id is not a whole number") from None
    try:
        return AnnotationTable(
            kind,
            geometry,
            np.asarray(ids, dtype=np.uint64),
            dims.to_info(),
            properties,
            relationships,
        )
    except AnnotationError as e:
        raise AnnotationSourceError(f"{path}: {e}") from None


def open_annotations(
    source: str | Path,
    dims: Dimensions | None = None,
    kind: AnnotationType | None = None,
) -> dict[str, AnnotationTable]:
    """The collections in ``source``: ``{"": table}`` for a table file, else the NeuroTrALE
    tree's ``points`` and ``lines``."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise AnnotationSourceError(f"{path}: not a .csv or .json table (Parquet is not read)")
        return {"": read_table(path, dims, kind)}
    if not path.is_dir():
        raise AnnotationSourceError(f"{path}: no such file or folder")
    tables = read_neurotrale(path, dims)
    if not tables:
        raise AnnotationSourceError(f"{path}: no annotations in any .json file")
    return tables


def write_store_layers(
    store: str | os.PathLike[str], dataset: str | os.PathLike[str], out: str | os.PathLike[str]
) -> list[str]:
    """A dataset's NeuroTrALE store as the ``points`` and ``lines`` collections in ``out``
    (both, empty ones included), in the dataset's scale-0 voxel size: the store's coordinates
    are voxels (issue #15). Returns the collection names; ``out`` must not exist.

    Built for the dev server's live layers, rebuilt on each change: sharded (a few files
    instead of one per annotation; measured, an edit of a 10,000-point store took 13.5 s
    unsharded and 1.1 s sharded, 400 points 0.48 s and 0.12 s) and without compressed siblings,
    which loopback does not need.
    """
    from ..core.datasets import read_dataset

    resolution = read_dataset(dataset).scales[0].resolution
    tables = read_neurotrale(Path(store), Dimensions(resolution, "nm"), keep_empty=True)
    return list(write_annotations(tables, out, compress=(), sharded=True))
