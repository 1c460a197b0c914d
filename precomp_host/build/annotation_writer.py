"""Annotation collections on disk, unsharded or sharded: :func:`write_annotations`.

Each :class:`~precomp_host.build.annotations.AnnotationTable` becomes a folder (annotations.md)
whose three kinds of index, ``spatial<level>``, ``rel_<name>`` and ``by_id``, each map a uint64
key to bytes: a cell's compressed Morton code (volume.md, "Compressed morton code") or its
``x_y_z`` file name, an object id, an annotation id. Unsharded, every key is a file; sharded
(``sharded=True``), every index is a set of ``<shard>.shard`` files (sharded.md) written whole by
:func:`~precomp_host.build.shards.write_shard`, and the index's ``sharding`` member in ``info``
says how keys map to shards (:func:`choose_index_sharding`). A million points unsharded are a
million ``by_id`` files, which many file systems, object stores and uploads handle badly; sharded
they are a few dozen files.

An existing collection is replaced by building beside it and swapping (the output is a sibling
folder until complete), so a server or a viewer never sees a mix of two builds.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.datasets import ANNOTATION_INFO_TYPE, is_annotation_layer
from ..core.layout import FLAT
from ..core.sharding import ShardingSpec, compressed_morton_code
from .annotations import (
    DEFAULT_LIMIT,
    AnnotationError,
    AnnotationTable,
    SpatialLevel,
    bounds_of,
    encode_list,
    encode_records,
    spatial_levels,
)
from .shards import write_shard
from .writer import DatasetWriter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from ..core.sharding import DataEncoding

#: Sharded indices: about this many keys per shard file (a 1,000,000-point ``by_id`` is 64
#: shards of ~40 bytes x 16,384 annotations, ~0.7 MB each)...
SHARD_KEYS = 1 << 14
#: ... and about this many per minishard, so that the minishard index a reader fetches before
#: each entry stays ~1.5 KB (24 bytes a key).
MINISHARD_KEYS = 1 << 6


@dataclass(frozen=True)
class AnnotationSummary:
    """What :func:`write_annotations` wrote."""

    count: int
    levels: int
    files: int
    bytes: int


@dataclass(frozen=True)
class Index:
    """One index of a collection: its key (folder), its ``(file name, uint64 key, bytes)``
    entries and how many; ``gzip``: worth compressing (siblings, or the shards' data)."""

    key: str
    entries: Iterator[tuple[str, int, bytes]]
    count: int
    gzip: bool
    #: ``by_id``: every key (row order) and the entries of chosen rows, so that a sharded
    #: index is built one shard at a time instead of all in memory.
    keys: np.ndarray | None = None
    rows: Callable[[Iterable[int]], Iterator[tuple[str, int, bytes]]] | None = None


def choose_index_sharding(count: int, *, gzip: bool = True) -> ShardingSpec:
    """The sharding of an index of ``count`` keys: ~:data:`SHARD_KEYS` keys per shard and
    ~:data:`MINISHARD_KEYS` per minishard.

    The identity hash (no ``mmh3`` needed, and vectorisable) spreads the keys we write evenly:
    annotation ids are consecutive or 63-bit hashes, object ids are segment ids, and a level's
    Morton codes fill ``[0, cells)``; their low bits pick the minishard and the next the shard.
    """
    shard_bits = max(0, (max(count, 1) - 1) // SHARD_KEYS).bit_length()
    per_shard = -(-max(count, 1) // (1 << shard_bits))
    minishard_bits = max(0, (per_shard - 1) // MINISHARD_KEYS).bit_length()
    encoding: DataEncoding = "gzip" if gzip else "raw"
    return ShardingSpec(
        preshift_bits=0,
        minishard_bits=minishard_bits,
        shard_bits=shard_bits,
        hash="identity",
        minishard_index_encoding="gzip",
        data_encoding=encoding,
    )


def _rel_key(name: str) -> str:
    return f"rel_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def _indices(
    table: AnnotationTable, records: np.ndarray, levels: Sequence[SpatialLevel]
) -> Iterator[Index]:
    """Every index of a collection, coarse spatial levels first, ``by_id`` last."""
    ids = table.ids

    def cells(level: SpatialLevel) -> Iterator[tuple[str, int, bytes]]:
        sharded_key = table.rank == 3
        for cell, rows in level.cells.items():
            code = compressed_morton_code(cell, level.grid_shape) if sharded_key else 0
            yield "_".join(map(str, cell)), code, encode_list(records[rows], ids[rows])

    for i, level in enumerate(levels):
        yield Index(f"spatial{i}", cells(level), len(level.cells), True)

    for name, rel in table.relationships.items():
        owner = np.repeat(np.arange(len(table), dtype=np.int64), rel.counts())
        order = np.argsort(rel.values, kind="stable")
        objects, owner = rel.values[order], owner[order]
        starts: list[int] = []
        if len(objects):
            starts = np.flatnonzero(np.r_[True, objects[1:] != objects[:-1]]).tolist()
        bounds = list(itertools.pairwise([*starts, len(objects)]))

        def related(
            objects: np.ndarray = objects, owner: np.ndarray = owner, bounds: Any = bounds
        ) -> Iterator[tuple[str, int, bytes]]:
            for s, e in bounds:
                rows = owner[s:e]
                obj = int(objects[s])
                yield str(obj), obj, encode_list(records[rows], ids[rows])

        yield Index(_rel_key(name), related(), len(bounds), True)

    # by_id: the record, then every relationship's full list. One annotation is tens of bytes,
    # too small for gzip's 18-byte frame to save the 5 % the writer asks of a sibling, or for
    # a shard's per-entry gzip to pay: stored plain.
    rel_parts = [(r.offsets, r.values.astype("<u8")) for r in table.relationships.values()]
    raw = records.tobytes()
    size = records.dtype.itemsize
    id_list = ids.tolist()

    def by_id(rows: Iterable[int]) -> Iterator[tuple[str, int, bytes]]:
        for row in rows:
            ann_id = id_list[row]
            parts = [raw[row * size : (row + 1) * size]]
            for offsets, values in rel_parts:
                s, e = int(offsets[row]), int(offsets[row + 1])
                parts.append(np.uint32(e - s).astype("<u4").tobytes())
                parts.append(values[s:e].tobytes())
            yield str(ann_id), ann_id, b"".join(parts)

    yield Index("by_id", by_id(range(len(ids))), len(ids), False, ids, by_id)


def _write_unsharded(writer: DatasetWriter, index: Index) -> tuple[int, int]:
    files = stored = 0
    # One thread: the time goes to open/rename in a few large folders, and threads only
    # contend for their locks (measured: 200,000 by_id files took 4x longer with 4 threads).
    for name, _key, data in index.entries:
        stored += writer.put(f"{index.key}/{name}", data, precompress=index.gzip)
        files += 1
    return files, stored


def _write_sharded(writer: DatasetWriter, index: Index, spec: ShardingSpec) -> tuple[int, int]:
    stored = 0
    if index.keys is not None and index.rows is not None and spec.hash == "identity":
        # by_id, the largest index: each shard's rows found at once (the identity hash is
        # bit arithmetic), its entries made, written, and dropped before the next shard's
        # (measured for 1,000,000 points: peak RSS 446 MB with every entry in memory first, 362 MB
        # so).
        hashed = index.keys.astype(np.uint64) >> np.uint64(spec.preshift_bits)
        owner = (hashed >> np.uint64(spec.minishard_bits)) & np.uint64(spec.num_shards - 1)
        order = np.argsort(owner, kind="stable")
        owners = owner[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]).tolist()
        written = 0
        for s, e in itertools.pairwise([*starts, len(order)] if len(order) else []):
            chunks = {key: data for _n, key, data in index.rows(order[s:e].tolist())}
            stored += write_shard(writer, index.key, spec, int(owners[s]), chunks)
            written += 1
        return written, stored
    # The other indices, a list per cell or per object: every shard in memory until the index
    # is complete (a shard is written whole; entries come in the index's order).
    shards: dict[int, dict[int, bytes]] = {}
    for _name, key, data in index.entries:
        shard, _minishard = spec.locate(key)
        shards.setdefault(shard, {})[key] = data
    written_shards = sorted(shards)
    for shard in written_shards:
        stored += write_shard(writer, index.key, spec, shard, shards.pop(shard))
    return len(written_shards), stored


def _write_collection(
    table: AnnotationTable,
    writer: DatasetWriter,
    *,
    limit: int,
    seed: int,
    sharded: bool,
    progress: Callable[[str, int], None] | None,
) -> AnnotationSummary:
    if sharded and table.rank != 3:
        raise AnnotationError("sharded spatial indices need 3 dimensions (compressed Morton codes)")
    records = encode_records(table)
    lower, upper = bounds_of(table)
    levels = spatial_levels(table, lower, upper, limit=limit, seed=seed)
    files = 0
    stored = 0
    specs: dict[str, dict[str, Any]] = {}
    for index in _indices(table, records, levels):
        if sharded:
            spec = choose_index_sharding(index.count, gzip=index.gzip)
            n, size = _write_sharded(writer, index, spec)
            specs[index.key] = spec.to_json()
        else:
            n, size = _write_unsharded(writer, index)
        files += n
        stored += size
        if progress is not None:
            progress(index.key, index.count)

    def located(key: str, **extra: Any) -> dict[str, Any]:
        return {"key": key, **extra, **({"sharding": specs[key]} if key in specs else {})}

    info = {
        "@type": ANNOTATION_INFO_TYPE,
        "dimensions": {k: [v[0], v[1]] for k, v in table.dimensions.items()},
        "lower_bound": lower.tolist(),
        "upper_bound": upper.tolist(),
        "annotation_type": table.type,
        "properties": [p.to_json() for p, _ in table.properties],
        "relationships": [located(_rel_key(n), id=n) for n in table.relationships],
        "by_id": located("by_id"),
        "spatial": [
            located(
                f"spatial{i}",
                grid_shape=list(level.grid_shape),
                chunk_size=list(level.chunk_size),
                limit=level.limit,
            )
            for i, level in enumerate(levels)
        ],
    }
    stored += writer.put_json("info", info)
    return AnnotationSummary(len(table), len(levels), files + 1, stored)


def _check_target(target: Path, names: Sequence[str], overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise AnnotationError(f"{target}: exists and is not a folder")
    if names == [""]:
        # One unnamed collection is the folder itself.
        if target.exists() and any(target.iterdir()):
            if not overwrite:
                raise AnnotationError(f"{target}: not empty (use --overwrite)")
            if not is_annotation_layer(target):
                raise AnnotationError(f"{target}: not empty and holds no annotations; kept")
        return
    for name in names:
        folder = target / name
        if folder.exists():
            if not overwrite:
                raise AnnotationError(f"{folder}: exists (use --overwrite)")
            if not is_annotation_layer(folder):
                raise AnnotationError(f"{folder}: exists and holds no annotations; kept")


def write_annotations(
    layers: Mapping[str, AnnotationTable],
    out: str | os.PathLike[str],
    *,
    limit: int = DEFAULT_LIMIT,
    compress: Sequence[str] = ("gzip", "br"),
    overwrite: bool = False,
    sharded: bool = False,
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, AnnotationSummary]:
    """Write each table as an annotation collection: at ``out`` for a single unnamed table
    (key ``""``), else at ``out/<name>``.

    Everything is built in a sibling folder of ``out``; then each collection is swapped in
    (two renames), so a server or a viewer never sees a mix of two builds: an annotation
    deleted since the last build disappears from every index of its collection at once.
    Beside named collections, ``out`` may hold anything else (a dataset's ``annotations``
    folder holds NeuroTrALE's JSON store too): only ``out/<name>`` is replaced, and only when
    ``overwrite`` is given and it is an annotation collection.

    :param sharded: write every index as shard files (sharded.md) instead of a file per key.
    """
    target = Path(out)
    names = list(layers)
    if "" in layers and len(layers) > 1:
        raise AnnotationError("an unnamed collection cannot sit beside named ones")
    _check_target(target, names, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    staging = target.with_name(f".{target.name}.new-{token}")
    summaries: dict[str, AnnotationSummary] = {}
    try:
        for name, table in layers.items():
            folder = staging / name if name else staging
            writer = DatasetWriter(folder, FLAT, compress=compress)
            folder.mkdir(parents=True, exist_ok=True)
            writer.begin()
            summaries[name] = _write_collection(
                table, writer, limit=limit, seed=seed, sharded=sharded, progress=progress
            )
            writer.abort()  # drops the (now empty) temporary folder
        if names == [""]:
            _swap(staging, target, token)
        else:
            target.mkdir(exist_ok=True)
            for name in names:
                _swap(staging / name, target / name, token)
            staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summaries


def _swap(new: Path, target: Path, token: str) -> None:
    """Put ``new`` where ``target`` is: the old one aside, the new in, the old removed."""
    old = target.with_name(f".{target.name}.old-{token}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
