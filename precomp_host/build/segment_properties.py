"""Segment properties: names, tags and voxel counts that Neuroglancer lists segments by.

The central function is :func:`properties_info`, which builds the ``segment_properties/info``
document (neuroglancer ``src/datasource/precomputed/segment_properties.md``, inline properties)
from the rows of a ``--names`` CSV (:func:`read_names_csv`) and the voxel counts of the volume
(:class:`VoxelCounter`). :func:`validate` checks a document against the spec's rules.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Folder name of the properties, as the ``segment_properties`` key of ``info`` names it.
SEGMENT_PROPERTIES_DIR = "segment_properties"

_TYPE = "neuroglancer_segment_properties"
_UINT64_MAX = 2**64 - 1
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")
#: spec: at most one property each of these types.
_UNIQUE_TYPES = ("label", "description", "tags")
_NUMBER_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32")
#: Tag separators in the CSV's third column; the spec forbids spaces inside a tag.
_TAG_SPLIT = re.compile(r"[\s;,]+")
_PIECE = 1 << 22


class NamesError(ValueError):
    """A ``--names`` CSV that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class SegmentRow:
    """One line of a ``--names`` CSV: ``id,name[,tags]``."""

    id: int
    name: str
    tags: tuple[str, ...] = ()


def read_names_csv(path: str | Path) -> list[SegmentRow]:
    """Rows of ``id,name[,tags]``; a header row ``id,...`` and blank or ``#`` lines are skipped.

    Tags are separated by spaces, ``;`` or ``,`` inside the (quoted) third column; a leading
    ``#`` is dropped (the spec's tags carry none).
    """
    path = Path(path)
    rows: list[SegmentRow] = []
    seen: dict[int, int] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise NamesError(f"{path}: cannot read names: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise NamesError(f"{path}: not UTF-8 text ({e.reason})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            record = next(csv.reader([line]))
        except csv.Error as e:
            raise NamesError(f"{path}:{lineno}: {e}") from None
        record = [v.strip() for v in record]
        if not rows and record and record[0].lower() == "id":
            continue  # header
        if len(record) not in (2, 3):
            raise NamesError(
                f"{path}:{lineno}: expected id,name[,tags], got {len(record)} fields"
                " (quote a name or tags that contain commas)"
            )
        raw_id, name = record[0], record[1]
        if not _DECIMAL.match(raw_id) or int(raw_id) > _UINT64_MAX:
            raise NamesError(f"{path}:{lineno}: segment id must be a uint64 number, got {raw_id!r}")
        seg = int(raw_id)
        if seg == 0:
            raise NamesError(f"{path}:{lineno}: segment id 0 is the background and has no name")
        if seg in seen:
            raise NamesError(f"{path}:{lineno}: segment id {seg} already named on line {seen[seg]}")
        if not name:
            raise NamesError(f"{path}:{lineno}: segment {seg} has an empty name")
        tags: tuple[str, ...] = ()
        if len(record) == 3 and record[2]:
            tags = tuple(t.lstrip("#") for t in _TAG_SPLIT.split(record[2]) if t.lstrip("#"))
        seen[seg] = lineno
        rows.append(SegmentRow(seg, name, tags))
    return rows


@dataclass
class VoxelCounter:
    """Voxel counts per label, accumulated slab by slab (background 0 included)."""

    counts: dict[int, int] = field(default_factory=dict)

    def add(self, labels: np.ndarray) -> None:
        flat = labels.reshape(-1)
        # Pieces of 4 Mi voxels bound the temporaries (bincount's intp copy, unique's sort) to
        # 32 MiB whatever the slab size.
        for at in range(0, flat.size, _PIECE):
            self._add_piece(flat[at : at + _PIECE])

    def _add_piece(self, flat: np.ndarray) -> None:
        top = int(flat.max())
        # bincount is ~10x faster than np.unique's sort when the labels are dense enough.
        if top <= 4 * flat.size + 1024:
            binc = np.bincount(flat.astype(np.intp, copy=False), minlength=1)
            ids = np.flatnonzero(binc)
            values, counts = ids, binc[ids]
        else:
            values, counts = np.unique(flat, return_counts=True)
        for v, n in zip(values.tolist(), counts.tolist(), strict=True):
            self.counts[v] = self.counts.get(v, 0) + n


def properties_info(
    rows: Iterable[SegmentRow] = (),
    voxel_counts: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """The ``segment_properties/info`` document.

    Ids are every named segment and every non-zero label counted in the volume, in increasing
    order. Properties: ``label`` (the name; empty for unnamed labels) when there are names,
    ``tags`` when any row has tags, and ``voxels`` (a ``number``) when counts are given.

    >>> properties_info([SegmentRow(3, "axon", ("glia",))], {0: 10, 3: 5})["inline"]["ids"]
    ['3']
    """
    named = {r.id: r for r in rows}
    counts = {k: v for k, v in (voxel_counts or {}).items() if k != 0}
    ids = sorted(set(named) | set(counts))
    properties: list[dict[str, Any]] = []
    if named:
        properties.append(
            {
                "id": "label",
                "type": "label",
                "values": [named[i].name if i in named else "" for i in ids],
            }
        )
    # Neuroglancer matches tags case-insensitively: one entry per tag, first spelling wins.
    spelling: dict[str, str] = {}
    for r in sorted(named.values(), key=lambda r: r.id):
        for t in r.tags:
            spelling.setdefault(t.lower(), t)
    all_tags = [spelling[k] for k in sorted(spelling)]
    if all_tags:
        position = {t.lower(): n for n, t in enumerate(all_tags)}
        index = {t: position[t.lower()] for r in named.values() for t in r.tags}
        properties.append(
            {
                "id": "tags",
                "type": "tags",
                "tags": all_tags,
                "values": [
                    sorted({index[t] for t in named[i].tags}) if i in named else [] for i in ids
                ],
            }
        )
    if voxel_counts is not None:
        values = [counts.get(i, 0) for i in ids]
        # The spec's widest integer type is uint32; larger counts go as float32.
        data_type = "uint32" if max(values, default=0) < 2**32 else "float32"
        properties.append(
            {
                "id": "voxels",
                "type": "number",
                "description": "number of voxels at the finest scale",
                "data_type": data_type,
                "values": values,
            }
        )
    doc = {"@type": _TYPE, "inline": {"ids": [str(i) for i in ids], "properties": properties}}
    validate(doc)
    return doc


def validate(doc: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` with the first way ``doc`` breaks segment_properties.md."""
    if doc.get("@type") != _TYPE:
        raise ValueError(f"@type must be {_TYPE!r}")
    inline = doc.get("inline")
    if inline is None:
        return
    ids = inline.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and _DECIMAL.match(i) for i in ids):
        raise ValueError("inline.ids must be a list of base-10 strings")
    if any(int(i) > _UINT64_MAX for i in ids):
        raise ValueError("inline.ids must be uint64 values")
    if len(set(ids)) != len(ids):
        raise ValueError("inline.ids must be unique")
    properties = inline.get("properties")
    if not isinstance(properties, list):
        raise ValueError("inline.properties must be a list")
    seen_ids: set[str] = set()
    for prop in properties:
        pid, ptype, values = prop.get("id"), prop.get("type"), prop.get("values")
        if not isinstance(pid, str) or pid in seen_ids:
            raise ValueError(f"property id must be a unique string, got {pid!r}")
        seen_ids.add(pid)
        if ptype in _UNIQUE_TYPES and sum(p.get("type") == ptype for p in properties) > 1:
            raise ValueError(f"at most one property may have type {ptype!r}")
        if not isinstance(values, list) or len(values) != len(ids):
            raise ValueError(f"property {pid}: values must have one entry per id")
        if ("tags" in prop) != (ptype == "tags") or (
            "tag_descriptions" in prop and ptype != "tags"
        ):
            raise ValueError(f"property {pid}: tags only (and always) on the tags property")
        if ptype in ("label", "description", "string"):
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"property {pid}: values must be strings")
        elif ptype == "tags":
            tags = prop["tags"]
            if "description" in prop:
                raise ValueError(f"property {pid}: a tags property has no description")
            if not all(
                isinstance(t, str) and t and not t.startswith("#") and " " not in t for t in tags
            ):
                raise ValueError(f"property {pid}: tags must be non-empty, no '#', no spaces")
            for v in values:
                if (
                    not isinstance(v, list)
                    or v != sorted(set(v))
                    or not all(isinstance(i, int) and 0 <= i < len(tags) for i in v)
                ):
                    raise ValueError(f"property {pid}: tag values must be increasing tag indices")
        elif ptype == "number":
            if prop.get("data_type") not in _NUMBER_TYPES:
                raise ValueError(f"property {pid}: number needs a data_type in {_NUMBER_TYPES}")
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            ):
                raise ValueError(f"property {pid}: values must be numbers")
        else:
            raise ValueError(f"property {pid}: unknown type {ptype!r}")
