"""Tiny precomputed datasets written by hand, so the harness is proven independently of our
generator; the central class is :class:`Handmade`.

Both are flat-layout (no server rewrite needed) ``raw`` volumes with an obvious pattern: an image
(uint8 checkerboard, never black) and a segmentation (uint32, two box-shaped segments) with legacy
meshes (spec meshes.md: manifest ``mesh/<id>:0`` listing fragments; a fragment is
``uint32 n``, ``n`` float32 xyz vertices, then uint32 triangle indices). ``gzip=True`` stores only
``.gz`` siblings, the generator's default, so the server must send ``Content-Encoding: gzip``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from precomp_host.core.encodings import GZIP
from precomp_host.core.layout import FLAT
from precomp_host.core.model import Dataset

if TYPE_CHECKING:
    from pathlib import Path

SHAPE = (64, 64, 16)
CHUNK = (32, 32, 8)
SEGMENTS = (1, 2)


@dataclass(frozen=True)
class Handmade:
    """A dataset folder written by this module."""

    path: Path
    kind: str  # "image" or "segmentation"
    shape: tuple[int, int, int]
    num_chunks: int
    segments: tuple[int, ...] = ()


def _write(path: Path, data: bytes, gzip: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzip:
        path.with_name(path.name + GZIP.suffix).write_bytes(GZIP.compress(data))
    else:
        path.write_bytes(data)


def _info(kind: str, data_type: str, **extra: object) -> Dataset:
    return Dataset.from_json(
        {
            "@type": "neuroglancer_multiscale_volume",
            "type": kind,
            "data_type": data_type,
            "num_channels": 1,
            "scales": [
                {
                    "key": "1_1_1",
                    "size": list(SHAPE),
                    "resolution": [1, 1, 1],
                    "chunk_sizes": [list(CHUNK)],
                    "voxel_offset": [0, 0, 0],
                    "encoding": "raw",
                }
            ],
            **extra,
        }
    )


def _write_volume(root: Path, dataset: Dataset, volume: np.ndarray, gzip: bool) -> int:
    # raw encoding: the chunk's voxels, x fastest (Fortran order), little-endian (volume.md).
    scale = dataset.scales[0]
    n = 0
    for key in scale.iter_chunk_keys():
        box = tuple(slice(a, b) for a, b in zip(key.start, key.stop, strict=True))
        data = np.asfortranarray(volume[box]).tobytes(order="F")
        _write(root / FLAT.path_for(key), data, gzip)
        n += 1
    (root / "info").write_text(json.dumps(dataset.to_json()))
    return n


def write_image(root: Path, *, gzip: bool = False, flip: bool = False) -> Handmade:
    """A uint8 checkerboard of 8-voxel squares at 60 and 230: every voxel is visibly lit.

    ``flip`` swaps the two values, so every voxel changes (the live-reload check).
    """
    x, y, z = np.indices(SHAPE)
    dark, light = (230, 60) if flip else (60, 230)
    volume = np.where((x // 8 + y // 8 + z // 8) % 2 == 0, dark, light).astype("<u1")
    n = _write_volume(root, _info("image", "uint8"), volume, gzip)
    return Handmade(root, "image", SHAPE, n)


def _box_mesh(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> bytes:
    corners = np.array(
        [[(hi if (i >> a) & 1 else lo)[a] for a in range(3)] for i in range(8)], dtype="<f4"
    )
    # Two triangles per face of the box, corners indexed by their (x, y, z) bits.
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = np.array([t for a, b, c, d in faces for t in ((a, b, c), (a, c, d))], dtype="<u4")
    return np.array([8], dtype="<u4").tobytes() + corners.tobytes() + tris.tobytes()


def write_segmentation(root: Path, *, gzip: bool = False) -> Handmade:
    """Two box segments (ids 1 and 2) on background 0, each with a one-fragment legacy mesh."""
    volume = np.zeros(SHAPE, dtype="<u4")
    boxes = {1: ((4, 4, 0), (28, 60, 16)), 2: ((36, 4, 0), (60, 60, 16))}
    for seg, (lo, hi) in boxes.items():
        volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = seg
    n = _write_volume(root, _info("segmentation", "uint32", mesh="mesh"), volume, gzip)
    mesh = root / "mesh"
    mesh.mkdir()
    (mesh / "info").write_text(json.dumps({"@type": "neuroglancer_legacy_mesh"}))
    for seg, (lo, hi) in boxes.items():
        (mesh / f"{seg}:0").write_text(json.dumps({"fragments": [f"{seg}:0:box"]}))
        fl = (float(lo[0]), float(lo[1]), float(lo[2]))
        fh = (float(hi[0]), float(hi[1]), float(hi[2]))
        _write(mesh / f"{seg}:0:box", _box_mesh(fl, fh), gzip)
    return Handmade(root, "segmentation", SHAPE, n, SEGMENTS)
