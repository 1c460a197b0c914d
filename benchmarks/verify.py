"""Checking a tool's output before its time is reported: :class:`Verification`.

A peer that fails quietly (writes nothing, a wrong layout, zeros) must not look fast. The
checker reads the output as a viewer would, independently of the tool that wrote it: ``info``
through the core model; every chunk of every scale must exist under the nested or the flat
layout (``precomp_host.core.layout``), plain or with a content-encoding suffix
(``precomp_host.core.encodings``); sampled chunks are decoded as ``raw`` and must have the scale's
clipped chunk shape; sampled scale-0 chunks must equal the generated volume exactly, and the
lower scales must not be blank where the volume has tissue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from precomp_host.core.encodings import BY_SUFFIX
from precomp_host.core.layout import FLAT, NESTED
from precomp_host.core.model import ChunkKey, Dataset, InvalidInfoError, Scale, Vec3

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

    from .volume import Volume

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Verification:
    """Outcome of :func:`verify`; ``ok`` only when ``problems`` is empty."""

    scales: int = 0
    top_chunks: int = 0
    layout: str = "?"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def open_dataset(
    root: Path, result: Verification, shape: Vec3, data_type: str, top_size: int | None
) -> Dataset | None:
    """``root/info`` when it describes a pyramid of ``shape`` / ``data_type`` down to at most
    ``top_size`` voxels an axis (None: scale 0 only); else None, with ``result``'s problems
    saying why. Fills ``result.scales`` and ``result.top_chunks``."""
    try:
        dataset = Dataset.from_json(json.loads((root / "info").read_text()))
    except (OSError, ValueError, InvalidInfoError) as e:
        result.problems.append(f"info unreadable: {e}")
        return None
    result.scales = len(dataset.scales)
    result.top_chunks = dataset.scales[-1].num_chunks()
    base = dataset.scales[0]
    if base.size != shape or dataset.data_type != data_type:
        result.problems.append(f"scale 0 is {base.size} {dataset.data_type}, not {shape}")
        return None
    top = dataset.scales[-1].size
    if top_size is not None and max(top) > top_size:
        result.problems.append(f"coarsest scale is {top} voxels, more than {top_size} per axis")
    return dataset


def read_decoded(base: Path) -> bytes | None:
    """``base`` or its encoded sibling, decoded; None if neither exists."""
    for suffix in ("", *BY_SUFFIX):
        path = base.with_name(base.name + suffix)
        if path.is_file():
            data = path.read_bytes()
            return BY_SUFFIX[suffix].decompress(data) if suffix else data
    return None


def find_chunk(root: Path, key: ChunkKey) -> tuple[Path, str, str] | None:
    """(file, layout name, suffix) of ``key``'s chunk, whichever way the tool stored it."""
    for layout in (NESTED, FLAT):
        base = root / layout.path_for(key)
        for suffix in ("", *BY_SUFFIX):
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return path, layout.name, suffix
    return None


def _decode(
    path: Path, suffix: str, key: ChunkKey, dtype: np.dtype[np.generic], channels: int
) -> NDArray[np.generic]:
    data = path.read_bytes()
    if suffix:
        data = BY_SUFFIX[suffix].decompress(data)
    x, y, z = key.shape
    expected = x * y * z * channels * dtype.itemsize
    if len(data) != expected and data[:2] == _GZIP_MAGIC:
        # Some writers store gzip bytes under the plain name and rely on object metadata.
        data = BY_SUFFIX[".gz"].decompress(data)
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes decoded, expected {expected}")
    # raw encoding: little-endian [x, y, z, channel] in Fortran order (spec volume.md).
    arr = np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape((channels, z, y, x))
    return arr.transpose(3, 2, 1, 0)


def _middle(scale: Scale) -> ChunkKey:
    g = scale.grid_shape()
    return scale.chunk_key((g[0] // 2, g[1] // 2, g[2] // 2))


def _samples(scale: Scale) -> list[ChunkKey]:
    """First, middle and last chunk of a scale (the middle one lies in the tissue)."""
    g = scale.grid_shape()
    return sorted(
        {
            scale.chunk_key((0, 0, 0)),
            _middle(scale),
            scale.chunk_key((g[0] - 1, g[1] - 1, g[2] - 1)),
        }
    )


def _footprint(base: Scale, scale: Scale, key: ChunkKey) -> tuple[Vec3, Vec3, list[int]]:
    """The scale-0 box ``key`` of ``scale`` was downsampled from, and the factors."""
    f = [round(r / b) for r, b in zip(scale.resolution, base.resolution, strict=True)]
    a = [v * k for v, k in zip(key.start, f, strict=True)]
    b = [min(v * k, e) for v, k, e in zip(key.stop, f, base.stop, strict=True)]
    return (a[0], a[1], a[2]), (b[0], b[1], b[2]), f


def _is_blank(volume: Volume, base: Scale, scale: Scale, key: ChunkKey) -> bool:
    start, stop, _ = _footprint(base, scale, key)
    return volume.is_blank(start, stop)


def _mean_error(
    chunk: NDArray[np.generic], key: ChunkKey, base: Scale, scale: Scale, volume: Volume
) -> float | None:
    """Largest deviation of a scale-1 chunk from the mean of its scale-0 blocks (or None)."""
    start, stop, f = _footprint(base, scale, key)
    if any((b - a) != n * k for a, b, n, k in zip(start, stop, key.shape, f, strict=True)):
        return None  # a clipped edge block; the middle chunk of a real volume has none
    region = volume.region(start, stop)
    x, y, z = key.shape
    blocks = region.reshape(x, f[0], y, f[1], z, f[2]).mean(axis=(1, 3, 5))
    return float(np.abs(blocks - chunk.astype(np.float64)).max())


def _sample_problems(
    chunk: np.ndarray, key: ChunkKey, index: int, base: Scale, scale: Scale, volume: Volume
) -> list[str]:
    """What is wrong with sampled chunk ``key`` of scale ``index``: scale 0 must equal the
    volume, the middle chunk of any other scale must not be all zero, and scale 1's must be the
    block mean of scale 0 (within 1: tools round the mean differently, floor or nearest)."""
    if index == 0:
        if not np.array_equal(chunk[..., 0], volume.region(key.start, key.stop)):
            return [f"scale 0 chunk {key.name} differs from the volume"]
    elif key == _middle(scale) and not chunk.any():
        return [f"scale {scale.key} chunk {key.name} is all zero"]
    elif index == 1 and key == _middle(scale):
        error = _mean_error(chunk[..., 0], key, base, scale, volume)
        if error is not None and error > 1.0:
            return [f"scale {scale.key} chunk {key.name} is off the block mean by {error:.1f}"]
    return []


def verify(root: Path, volume: Volume, *, top_size: int | None) -> Verification:
    """Check the dataset at ``root`` against ``volume``.

    :param top_size: the tool claims a full pyramid whose coarsest scale has at most this many
        voxels along each axis; None when it writes scale 0 only.
    """
    result = Verification()
    dataset = open_dataset(root, result, volume.shape, "uint8", top_size)
    if dataset is None:
        return result
    base = dataset.scales[0]
    dtype = np.dtype(dataset.data_type)
    layouts: set[str] = set()
    for index, scale in enumerate(dataset.scales):
        if scale.encoding != "raw":
            result.problems.append(f"scale {scale.key}: encoding {scale.encoding} not checked")
            continue
        # A missing chunk reads as the fill value, 0 (tensorstore skips writing such chunks;
        # Neuroglancer renders a 404 chunk as empty), so it is fine only where the volume is 0.
        missing = [k for k in scale.iter_chunk_keys() if find_chunk(root, k) is None]
        wrong = [k.name for k in missing if not _is_blank(volume, base, scale, k)]
        if wrong:
            result.problems.append(
                f"scale {scale.key}: {len(wrong)} of {scale.num_chunks()} chunks missing where "
                f"the volume is not blank, e.g. {wrong[0]}"
            )
            continue
        for key in _samples(scale):
            found = find_chunk(root, key)
            if found is None:
                continue
            path, layout, suffix = found
            layouts.add(layout)
            try:
                chunk = _decode(path, suffix, key, dtype, dataset.num_channels)
            except ValueError as e:
                result.problems.append(str(e))
                continue
            result.problems += _sample_problems(chunk, key, index, base, scale, volume)
    result.layout = "+".join(sorted(layouts)) or "?"
    return result


def _expected_shards(scale: Scale) -> set[str]:
    """The shard files a sharded scale must have: the shards its chunk ids hash to."""
    from itertools import product

    from precomp_host.core.sharding import compressed_morton_code

    spec = scale.sharding
    assert spec is not None
    grid = scale.grid_shape()
    return {
        spec.shard_name(spec.locate(compressed_morton_code(g, grid))[0])
        for g in product(*map(range, grid))
    }


def verify_sharded(root: Path, volume: Volume, *, top_size: int | None) -> Verification:
    """Check a sharded dataset at ``root`` against ``volume``: every scale sharded, each with
    all its shard files and nothing else beside them (tensorstore would read a missing shard
    as zeros), then the sampled chunks read by tensorstore and checked as :func:`verify` does."""
    import tensorstore as ts

    result = Verification(layout="sharded")
    dataset = open_dataset(root, result, volume.shape, "uint8", top_size)
    if dataset is None:
        return result
    base = dataset.scales[0]
    for index, scale in enumerate(dataset.scales):
        if scale.sharding is None:
            result.problems.append(f"scale {scale.key} is not sharded")
            continue
        stored = (
            {p.name for p in (root / scale.key).iterdir()} if (root / scale.key).is_dir() else set()
        )
        expected = _expected_shards(scale)
        if stored != expected:
            result.problems.append(
                f"scale {scale.key}: shard files {sorted(stored)[:3]}..., "
                f"expected {len(expected)} like {sorted(expected)[:3]}"
            )
            continue
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "file", "path": f"{root}/"},
                "scale_index": index,
            },
            read=True,
        ).result()
        for key in _samples(scale):
            box = tuple(slice(a, b) for a, b in zip(key.start, key.stop, strict=True))
            chunk = np.asarray(store[box].read().result())
            result.problems += _sample_problems(chunk, key, index, base, scale, volume)
    return result
