"""Neuroglancer's precomputed annotations, the arithmetic: :class:`AnnotationTable` and its
record encoding and spatial index (:func:`spatial_levels`).

One collection (one geometry type) is a folder that any static host serves (spec:
google/neuroglancer ``src/datasource/precomputed/annotations.md``); its files are written by
:func:`~precomp_host.build.annotation_writer.write_annotations`:

* ``info``: ``neuroglancer_annotations_v1`` with the typed property list, the relationships, the
  ``by_id`` index and the spatial levels (written last, like a volume's ``info``);
* ``by_id``: one annotation with its complete related-id lists per id (the "single annotation
  encoding");
* ``rel_<name>``: the annotations related to one object, for "show the annotations of the
  selected segment" (the "multiple annotation encoding");
* ``spatial<level>``: a multi-level spatial index built by the spec's sampling rule
  (:func:`spatial_levels`): level 0 is one cell; each finer level halves the longest cell sides,
  and each cell holds a uniform random sample of the annotations that intersect it and were not
  emitted by its parent, at the rate ``limit / maxCount(level)``, so no cell holds more than
  ``limit`` and a zoomed-out view shows the same density everywhere.

Bounds are computed from every annotation's geometry (a line from both end points, a box from
both corners, an ellipsoid from ``center +- radii``), not from one point of each, and a line is
placed only in the cells its segment crosses, not every cell of its bounding box. Everything is
columnar (numpy) so that a million points take seconds.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

AnnotationType = Literal["POINT", "LINE", "AXIS_ALIGNED_BOUNDING_BOX", "ELLIPSOID"]
ANNOTATION_TYPES: tuple[AnnotationType, ...] = (
    "POINT",
    "LINE",
    "AXIS_ALIGNED_BOUNDING_BOX",
    "ELLIPSOID",
)

#: Property type -> (numpy dtype, components). The spec orders the encoded values by size: 4-byte
#: types first, then 2-byte, then 1-byte (``rgb``/``rgba`` are 3 or 4 uint8).
PROPERTY_TYPES: dict[str, tuple[str, int]] = {
    "uint32": ("<u4", 1),
    "int32": ("<i4", 1),
    "float32": ("<f4", 1),
    "uint16": ("<u2", 1),
    "int16": ("<i2", 1),
    "uint8": ("u1", 1),
    "int8": ("i1", 1),
    "rgb": ("u1", 3),
    "rgba": ("u1", 4),
}
PROPERTY_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")

#: Default cap on annotations per spatial cell: about 100-200 KB per cell for points with a few
#: properties, one request each.
DEFAULT_LIMIT = 5000
#: Levels stop here even if a cell still holds more than ``limit`` (many annotations at one
#: position can never be separated by subdividing); the last level then holds all that remain.
MAX_LEVELS = 16


class AnnotationError(ValueError):
    """The annotations cannot be written as given; the message says which and why."""


@dataclass(frozen=True)
class Property:
    """One entry of the info's ``properties``: a typed value per annotation, maybe an enum."""

    id: str
    type: str
    description: str = ""
    enum_values: tuple[int | float, ...] | None = None
    enum_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if PROPERTY_ID.fullmatch(self.id) is None:
            raise AnnotationError(f"property id {self.id!r} must match {PROPERTY_ID.pattern}")
        if self.type not in PROPERTY_TYPES:
            raise AnnotationError(f"property {self.id!r}: unknown type {self.type!r}")
        if (self.enum_values is None) != (self.enum_labels is None):
            raise AnnotationError(f"property {self.id!r}: enum values and labels go together")
        if self.enum_values is not None and (
            self.type in ("rgb", "rgba") or len(self.enum_values) != len(self.enum_labels or ())
        ):
            raise AnnotationError(f"property {self.id!r}: enum on {self.type} or lengths differ")

    @property
    def dtype(self) -> np.dtype[Any]:
        code, n = PROPERTY_TYPES[self.type]
        return np.dtype((code, (n,))) if n > 1 else np.dtype(code)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.enum_values is not None:
            out["enum_values"] = list(self.enum_values)
            out["enum_labels"] = list(self.enum_labels or ())
        return out


@dataclass(frozen=True)
class Related:
    """The related object ids of every annotation for one relationship, as CSR arrays.

    Annotation ``i`` relates to ``values[offsets[i]:offsets[i + 1]]``.
    """

    offsets: np.ndarray  # int64, length n + 1
    values: np.ndarray  # uint64

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> Related:
        counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.uint64)
        return cls(offsets, values)

    @classmethod
    def one_each(cls, ids: np.ndarray) -> Related:
        """One related id per annotation; 0 means none (segment 0 is background)."""
        ids = np.asarray(ids, dtype=np.uint64)
        has = ids != 0
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(has, out=offsets[1:])
        return cls(offsets, ids[has])

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class AnnotationTable:
    """A collection of annotations of one type, column by column.

    :param type: the geometry type, one of :data:`ANNOTATION_TYPES`.
    :param geometry: ``(n, rank)`` for points, ``(n, 2 * rank)`` otherwise (the two end points, the
        two corners, or the center and the radii), in the units of ``dimensions``.
    :param ids: unique uint64 annotation ids.
    :param dimensions: name -> (scale, unit), as in the info (e.g. ``{"x": (4e-9, "m"), ...}``).
    :param properties: each :class:`Property` with its values (``(n,)``, or ``(n, 3|4)`` for
        colours), already encoded (enum labels as their values).
    :param relationships: name -> :class:`Related`.
    """

    type: AnnotationType
    geometry: np.ndarray
    ids: np.ndarray
    dimensions: dict[str, tuple[float, str]]
    properties: list[tuple[Property, np.ndarray]] = field(default_factory=list)
    relationships: dict[str, Related] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rank = len(self.dimensions)
        self.geometry = np.asarray(self.geometry, dtype=np.float64)
        self.ids = np.asarray(self.ids, dtype=np.uint64)
        n = len(self.ids)
        width = rank if self.type == "POINT" else 2 * rank
        if self.type not in ANNOTATION_TYPES:
            raise AnnotationError(f"unknown annotation type {self.type!r}")
        if self.geometry.shape != (n, width):
            raise AnnotationError(
                f"{self.type} geometry must be (n, {width}); got {self.geometry.shape}"
            )
        if not np.isfinite(self.geometry).all():
            raise AnnotationError("geometry holds NaN or infinite coordinates")
        if len(np.unique(self.ids)) != n:
            raise AnnotationError("annotation ids are not unique")
        for prop, values in self.properties:
            if len(values) != n:
                raise AnnotationError(f"property {prop.id!r}: {len(values)} values for {n}")
        for name, rel in self.relationships.items():
            if len(rel.offsets) != n + 1:
                raise AnnotationError(f"relationship {name!r}: not one list per annotation")

    @property
    def rank(self) -> int:
        return len(self.dimensions)

    def __len__(self) -> int:
        return len(self.ids)

    def extents(self) -> tuple[np.ndarray, np.ndarray]:
        """Each annotation's axis-aligned bounding box, ``(lo, hi)``, both ``(n, rank)``."""
        r = self.rank
        g = self.geometry
        if self.type == "POINT":
            return g, g
        a, b = g[:, :r], g[:, r:]
        if self.type == "ELLIPSOID":
            radii = np.abs(b)
            return a - radii, a + radii
        return np.minimum(a, b), np.maximum(a, b)


def record_dtype(table: AnnotationTable) -> np.dtype[Any]:
    """The fixed-size part of one encoded annotation: geometry, properties by size, padding."""
    width = table.geometry.shape[1]
    fields: list[tuple[str, Any]] = [("geometry", np.dtype(("<f4", (width,))))]
    # Stable sort by element size, largest first: the spec's order (annotations.md, "Single
    # annotation encoding"), within a size the order of the info.
    ordered = sorted(
        enumerate(table.properties),
        key=lambda ip: -np.dtype(PROPERTY_TYPES[ip[1][0].type][0]).itemsize,
    )
    for i, (prop, _) in ordered:
        fields.append((f"p{i}", prop.dtype))
    size = np.dtype(fields).itemsize
    if size % 4:
        fields.append(("pad", np.dtype(("u1", (4 - size % 4,)))))
    return np.dtype(fields)


def encode_records(table: AnnotationTable) -> np.ndarray:
    """Every annotation's fixed-size encoding, as one structured array (``tobytes`` per row)."""
    records = np.zeros(len(table), dtype=record_dtype(table))
    records["geometry"] = table.geometry
    for i, (_prop, values) in enumerate(table.properties):
        records[f"p{i}"] = values
    return records


def encode_list(records: np.ndarray, ids: np.ndarray) -> bytes:
    """The "multiple annotation encoding": count, the records, then the ids (all little endian)."""
    return b"".join(
        (
            np.uint64(len(ids)).astype("<u8").tobytes(),
            records.tobytes(),
            np.asarray(ids, dtype="<u8").tobytes(),
        )
    )


# -- the spatial index ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpatialLevel:
    """One level of the spatial index: its grid and, per non-empty cell, the annotations in it."""

    grid_shape: tuple[int, ...]
    chunk_size: tuple[float, ...]
    limit: int
    cells: dict[tuple[int, ...], np.ndarray]  # cell -> annotation row numbers, in random order


def bounds_of(table: AnnotationTable) -> tuple[np.ndarray, np.ndarray]:
    """The info's ``lower_bound`` and exclusive ``upper_bound``: integers around every geometry."""
    if len(table) == 0:
        zeros = np.zeros(table.rank)
        return zeros, zeros + 1
    lo, hi = table.extents()
    lower = np.floor(lo.min(axis=0))
    # Exclusive: a point at the largest coordinate must lie below the upper bound.
    upper = np.floor(hi.max(axis=0)) + 1
    return lower, upper


def _split_factors(chunk: np.ndarray) -> np.ndarray:
    """Halve the sides at least half as long as the longest (spec: "whichever results in a more
    spatially isotropic chunk")."""
    return np.where(chunk >= chunk.max() / 2, 2, 1).astype(np.int64)


def _segment_crosses_boxes(
    a: np.ndarray, b: np.ndarray, box_lo: np.ndarray, box_hi: np.ndarray
) -> np.ndarray:
    """Whether each segment ``a``-``b`` meets its closed box (Liang-Barsky clipping)."""
    d = b - a
    t0 = np.zeros(len(a))
    t1 = np.ones(len(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(a.shape[1]):
            dk = d[:, k]
            flat = dk == 0
            ta = (box_lo[:, k] - a[:, k]) / dk
            tb = (box_hi[:, k] - a[:, k]) / dk
            enter = np.where(flat, -np.inf, np.minimum(ta, tb))
            leave = np.where(flat, np.inf, np.maximum(ta, tb))
            outside = flat & ((a[:, k] < box_lo[:, k]) | (a[:, k] > box_hi[:, k]))
            t0 = np.maximum(t0, enter)
            t1 = np.minimum(t1, leave)
            t1[outside] = -1.0
    return t0 <= t1


def spatial_levels(
    table: AnnotationTable,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    limit: int = DEFAULT_LIMIT,
    seed: int = 0,
) -> list[SpatialLevel]:
    """The spatial index, coarse to fine, by the spec's rule (annotations.md, "Spatial index").

    ``remaining(0, cell)`` is everything; at each level ``maxCount`` is the largest remaining
    count of any cell, and each cell emits a uniform random sample at the rate
    ``min(1, limit / maxCount)``: its quota is ``count * rate`` rounded up or down at random
    (so the expected sample is exact and no cell exceeds ``limit``). What a cell did not emit
    goes to those of its child cells that the annotation intersects.
    """
    if limit < 1:
        raise AnnotationError("the spatial index limit must be at least 1")
    rng = np.random.default_rng(seed)
    r = table.rank
    lo_a, hi_a = table.extents()
    is_line = table.type == "LINE"
    chunk = (upper - lower).astype(np.float64)
    grid = np.ones(r, dtype=np.int64)
    rows = np.arange(len(table), dtype=np.int64)  # (annotation row, cell) pairs still to place
    cells = np.zeros((len(table), r), dtype=np.int64)
    levels: list[SpatialLevel] = []
    while len(rows):
        last = len(levels) == MAX_LEVELS - 1
        # Shuffle, then a stable sort by cell: each cell's annotations in random order.
        order = rng.permutation(len(rows))
        rows, cells = rows[order], cells[order]
        key = np.asarray(np.ravel_multi_index(tuple(cells.T), tuple(grid)), dtype=np.int64)
        by_cell = np.argsort(key, kind="stable")
        rows, cells, key = rows[by_cell], cells[by_cell], key[by_cell]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        counts = np.diff(np.r_[starts, len(key)])
        max_count = int(counts.max())
        rate = 1.0 if last else min(1.0, limit / max_count)
        quota = np.floor(counts * rate + rng.random(len(counts))).astype(np.int64)
        quota = np.minimum(quota, counts)
        rank_in_cell = np.arange(len(key)) - np.repeat(starts, counts)
        emitted = rank_in_cell < np.repeat(quota, counts)
        level_cells: dict[tuple[int, ...], np.ndarray] = {}
        for s, q in zip(starts.tolist(), quota.tolist(), strict=True):
            if q:
                level_cells[tuple(cells[s].tolist())] = rows[s : s + q]
        levels.append(
            SpatialLevel(
                tuple(grid.tolist()),
                tuple(chunk.tolist()),
                max_count if last else min(limit, max_count),
                level_cells,
            )
        )
        rows, cells = rows[~emitted], cells[~emitted]
        if not len(rows):
            break
        factors = _split_factors(chunk)
        chunk = chunk / factors
        grid = grid * factors
        kept_rows: list[np.ndarray] = []
        kept_cells: list[np.ndarray] = []
        for offset in itertools.product(*(range(f) for f in factors.tolist())):
            child = cells * factors + np.asarray(offset, dtype=np.int64)
            box_lo = lower + child * chunk
            box_hi = box_lo + chunk
            # Half-open in the annotation's favour: [lo, hi) puts a point on a boundary in one
            # cell only, and an extent touching a cell's lower face in that cell.
            inside = ((hi_a[rows] >= box_lo) & (lo_a[rows] < box_hi)).all(axis=1)
            if is_line and inside.any():
                g = table.geometry[rows[inside]]
                inside[inside] = _segment_crosses_boxes(
                    g[:, :r], g[:, r:], box_lo[inside], box_hi[inside]
                )
            kept_rows.append(rows[inside])
            kept_cells.append(child[inside])
        rows = np.concatenate(kept_rows)
        cells = np.concatenate(kept_cells)
    return levels
