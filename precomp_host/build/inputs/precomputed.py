"""An existing precomputed dataset as a source: :class:`PrecomputedVolume` and :func:`carry_over`.

The tree may be a local folder or an ``http(s)://`` URL, flat (cloud-volume,
neuroglancer-scripts) or nested (ours), with each chunk stored plain, gz-only, br-only or with
siblings. A chunk is looked up under its flat name (volume.md) and then the nested one
(:func:`~precomp_host.core.layout.nested_url`), each plain and then with a ``.gz`` and a ``.br``
suffix; over HTTP a ``Content-Encoding`` answer is decoded too. A missing chunk is an error, not
zeros: a tree that lost files must not convert into one that silently holds black.

Scale 0 is read region by region through the scale's own chunk encoding (raw, jpeg, png,
compressed_segmentation) and rebuilt with our chunking, encoding and pyramid. Sharded scales are
refused. :func:`carry_over` then copies the legacy meshes and segment properties into the built
dataset, stored by our rules.
"""

from __future__ import annotations

import json
import logging
import math
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.encodings import BROTLI, GZIP, brotli_decompress, gzip_decompress
from ...core.layout import LAYOUTS, nested_url
from ...core.model import Dataset, InvalidInfoError, box_name
from ..boxes import assemble
from ..chunk_codecs import make_codec
from ..sources import SourceError
from ..writer import DatasetWriter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ...core.model import Scale, Vec3

log = logging.getLogger(__name__)

_DECODERS = {GZIP.name: gzip_decompress, BROTLI.name: brotli_decompress}
_SUFFIXES = ("", GZIP.suffix, BROTLI.suffix)
_GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952, 2.3.1


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        return gzip_decompress(data)
    except zlib.error as e:
        raise SourceError(f"{where}: starts like gzip but does not decompress ({e})") from None


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_precomputed(source: str) -> bool:
    """Whether ``source`` is a URL or a folder with an ``info`` file (a precomputed dataset)."""
    return is_url(source) or os.path.isfile(os.path.join(source, "info"))


class TreeReader:
    """Reads files of a precomputed tree by relative path, whatever their storage."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _get_stored(self, rel: str) -> bytes | None:
        """The bytes of ``rel`` as stored (a sibling's bytes still compressed), or None."""
        if is_url(self.root):
            request = urllib.request.Request(
                f"{self.root}/{rel}", headers={"Accept-Encoding": "gzip, br"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    body: bytes = answer.read()
                    coding = (answer.headers.get("Content-Encoding") or "").strip().lower()
            except urllib.error.HTTPError as e:
                if e.code in (403, 404):  # object stores answer 403 for a missing key
                    return None
                raise SourceError(f"{self.root}/{rel}: HTTP {e.code} {e.reason}") from None
            except OSError as e:
                raise SourceError(f"{self.root}/{rel}: cannot fetch ({e})") from None
            if coding in _DECODERS:
                body = _DECODERS[coding](body)
            return body
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def get(self, rel: str, *, nested: bool = False) -> bytes | None:
        """The decoded bytes of ``rel`` (or of its nested path), from any stored variant."""
        names = [rel, nested_url(rel)] if nested else [rel]
        for name in dict.fromkeys(names):
            for suffix in _SUFFIXES:
                data = self._get_stored(name + suffix)
                if data is None:
                    continue
                if suffix == GZIP.suffix:
                    return gzip_decompress(data)
                if suffix == BROTLI.suffix:
                    return brotli_decompress(data)
                return data
        return None

    def get_json(self, rel: str) -> Any:
        data = self.get(rel)
        if data is None:
            raise SourceError(f"{self.root}/{rel}: not found")
        try:
            return json.loads(data)
        except ValueError as e:
            raise SourceError(f"{self.root}/{rel}: not JSON ({e})") from None

    def walk(self, rel: str) -> Iterator[str]:
        """Relative paths of the files under ``rel`` (local trees only: HTTP cannot list)."""
        top = os.path.join(self.root, rel)
        for folder, _, files in os.walk(top):
            for name in sorted(files):
                yield os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")


class PrecomputedVolume:
    """Scale ``scale_index`` of a precomputed tree, read chunk by chunk as a source volume."""

    def __init__(self, source: str, scale_index: int = 0) -> None:
        self.tree = TreeReader(source)
        self.where = source
        try:
            self.info = Dataset.from_json(self.tree.get_json("info"))
        except InvalidInfoError as e:
            raise SourceError(f"{source}/info: {e}") from None
        if not 0 <= scale_index < len(self.info.scales):
            raise SourceError(f"{source}: no scale {scale_index} (it has {len(self.info.scales)})")
        scale = self.info.scales[scale_index]
        if "sharding" in scale.extra:
            raise SourceError(
                f"{source}: scale {scale.key} is sharded; not readable as a source yet"
            )
        options: dict[str, Any] = {}
        if scale.encoding == "compressed_segmentation":
            options["block_size"] = scale.extra.get("compressed_segmentation_block_size", (8, 8, 8))
        try:
            self.codec = make_codec(scale.encoding, **options)
        except ValueError as e:
            raise SourceError(f"{source}: {e}") from None
        self.scale: Scale = scale
        self.shape: tuple[int, int, int] = scale.size
        self.dtype: np.dtype[Any] = np.dtype(self.info.data_type)
        self.num_channels = self.info.num_channels
        self.resolution = scale.resolution
        self.voxel_offset = scale.voxel_offset
        self.volume_type = self.info.type

    def _chunk(self, start: Vec3, stop: Vec3) -> np.ndarray:
        rel = f"{self.scale.key}/{box_name(start, stop)}"
        data = self.tree.get(rel, nested=True)
        if data is None:
            raise SourceError(f"{self.where}/{rel}: chunk missing (no plain, .gz or .br file)")
        shape = (stop[2] - start[2], stop[1] - start[1], stop[0] - start[0], self.num_channels)
        raw_size = math.prod(shape) * self.dtype.itemsize
        if data[:2] == _GZIP_MAGIC and not (self.codec.name == "raw" and len(data) == raw_size):
            # neuroglancer-scripts stores gzip bytes under the plain name (served with a
            # Content-Encoding header); no jpeg, png or compressed_segmentation chunk starts
            # with gzip's magic, and a raw chunk that does has its exact size.
            data = _gunzip(data, f"{self.where}/{rel}")
        try:
            return self.codec.decode(data, shape, self.dtype)
        except ValueError as e:
            raise SourceError(f"{self.where}/{rel}: cannot decode ({e})") from None

    def read_region(self, start: Vec3, stop: Vec3) -> np.ndarray:
        """Voxels ``start`` to ``stop`` (x, y, z, from 0) as ``[z, y, x, c]``, chunk by chunk."""
        off = self.scale.voxel_offset
        lo = (off[0] + start[0], off[1] + start[1], off[2] + start[2])
        hi = (off[0] + stop[0], off[1] + stop[1], off[2] + stop[2])
        return assemble(self.scale, lo, hi, lambda key: self._chunk(key.start, key.stop))

    def read(self, z0: int, z1: int) -> np.ndarray:
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))


#: Files of a multi-resolution mesh are read with Range: stored plain (writer.py's rule).
_RANGE_READ_MESH = "neuroglancer_multilod_draco"


def carry_over(
    source: PrecomputedVolume,
    out: str | os.PathLike[str],
    *,
    layout: str = "nested",
    compress: tuple[str, ...] = ("gzip", "br"),
) -> list[str]:
    """Copy the source's meshes and segment properties into the built dataset ``out``.

    Files are re-stored by our rules (``.gz``/``.br`` siblings, JSON plain) and ``info`` is
    rewritten to point at them; returns what was carried (``["mesh", ...]``). Over HTTP the
    mesh folder cannot be listed, so only segment properties are carried (logged).
    """
    root = Path(out)
    info = json.loads((root / "info").read_text())
    writer = DatasetWriter(root, LAYOUTS[layout], compress=compress)
    carried: list[str] = []
    writer.begin()
    try:
        for member in ("mesh", "segment_properties"):
            name = getattr(source.info, member)
            if name is None:
                continue
            if is_url(source.where) and member == "mesh":
                log.warning("%s: meshes cannot be listed over HTTP; not carried over", source.where)
                continue
            _copy_folder(source.tree, name.strip("/"), member, writer)
            info[member] = member
            carried.append(member)
        if carried:
            writer.put_json("info", info)
    finally:
        writer.abort()
    return carried


def _copy_folder(tree: TreeReader, src: str, dst: str, writer: DatasetWriter) -> None:
    doc = tree.get(f"{src}/info")
    plain = doc is not None and json.loads(doc).get("@type") == _RANGE_READ_MESH
    if is_url(tree.root):  # segment properties: one document
        writer.put_json(f"{dst}/info", tree.get_json(f"{src}/info"))
        return
    seen: set[str] = set()
    for rel in tree.walk(src):
        base = rel
        for suffix in (GZIP.suffix, BROTLI.suffix):
            base = base.removesuffix(suffix)
        if base in seen:
            continue
        seen.add(base)
        data = tree.get(base)
        if data is None:
            continue
        target = dst + base[len(src) :]
        if data[:2] == _GZIP_MAGIC:  # neuroglancer-scripts: gzip bytes under the plain name
            data = _gunzip(data, f"{tree.root}/{base}")
        if base.endswith("/info"):
            writer.put_json(target, json.loads(data))
        else:
            writer.put(target, data, precompress=not plain)
