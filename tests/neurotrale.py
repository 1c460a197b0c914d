"""Test data in NeuroTrALE's shapes: an annotation tree and a TIFF-tile dataset.

:func:`make_annotation_tree` writes a dataset folder with ``annotations/block_info.csv``, block
folders named NeuroTrALE's way, a ``fibers.json`` (axons) and ``z-NNNN.json`` slices (neurons
and glia) per block. :func:`write_tiff_tiles` writes a volume as ``precomputed-tif`` does: an
``info`` and one 3D TIFF (z, y, x) per chunk.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

if TYPE_CHECKING:
    from pathlib import Path

#: Block size of the tree (block_info.csv), and the blocks made (points naming them).
BLOCK_SIZE = (512, 512, 100)
BLOCKS = ("x100y100z10", "x600y100z10")
SLICES = ("z-0001", "z-0002")


def point(ann_id: str, xyz: tuple[int, int, int] = (1, 2, 3)) -> dict[str, Any]:
    return {
        "id": ann_id,
        "type": "point",
        "anntype": "neuron",
        "point": list(xyz),
        "reviewed": False,
        "visited": False,
    }


def polygon(ann_id: str) -> dict[str, Any]:
    return {
        "id": ann_id,
        "type": "polygon",
        "anntype": "glia",
        "points": [[0, 0, 1], [4, 0, 1], [4, 4, 1]],
        "reviewed": True,
        "visited": False,
    }


def axon(ann_id: str, n: int = 3) -> dict[str, Any]:
    return {
        "id": ann_id,
        "type": "linestring",
        "anntype": "axon",
        "points": [[i, i * 2, 5] for i in range(n)],
        "length": float(n - 1) * 2.236,
        "reviewed": False,
        "visited": True,
    }


def folder_of(block: str) -> str:
    """The block folder for ``block`` under :data:`BLOCK_SIZE` (NeuroTrALE's rule, by hand)."""
    x, y = (int(v) for v in block[1:].split("z")[0].split("y"))
    return f"x{x // BLOCK_SIZE[0] + 1:04d}_y{y // BLOCK_SIZE[1] + 1:04d}"


def make_annotation_tree(root: Path, dataset: str = "brain") -> dict[str, list[dict[str, Any]]]:
    """Write the tree; returns each file's list by URL path (``/brain/annotations/...``)."""
    ann = root / dataset / "annotations"
    ann.mkdir(parents=True)
    (ann / "block_info.csv").write_text(",".join(map(str, BLOCK_SIZE)) + "\n")
    files: dict[str, list[dict[str, Any]]] = {}
    for b, block in enumerate(BLOCKS):
        folder = ann / folder_of(block)
        folder.mkdir()
        content = {"fibers": [axon(f"b{b}-axon{i}") for i in range(5)]}
        for s, name in enumerate(SLICES):
            content[name] = [point(f"b{b}-s{s}-p{i}") for i in range(4)] + [polygon(f"b{b}-s{s}-g")]
        for leaf, items in content.items():
            (folder / f"{leaf}.json").write_text(json.dumps(items, indent=1))
            files[f"/{dataset}/annotations/{block}/{leaf}.json"] = items
    return files


def disk_path(root: Path, url: str) -> Path:
    """The file a ``/{dataset}/annotations/{block}/{leaf}.json`` URL of the tree names."""
    dataset, _, block, leaf = url.strip("/").rsplit("/", 3)
    return root / dataset / "annotations" / folder_of(block) / leaf


def tiff_volume(shape_zyx: tuple[int, int, int] = (33, 45, 70), seed: int = 1) -> np.ndarray:
    """A uint16 volume, every voxel distinct enough to catch any transposition."""
    z, y, x = np.indices(shape_zyx, dtype=np.uint32)
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 16, size=shape_zyx, dtype=np.uint32)
    out: np.ndarray = ((x * 7 + y * 131 + z * 1031 + noise) % 65521 + 1).astype(np.uint16)
    return out


def write_tiff_tiles(
    folder: Path,
    volume: np.ndarray,
    chunk: tuple[int, int, int] = (32, 32, 16),
    resolution: tuple[float, float, float] = (1800.0, 1800.0, 2000.0),
) -> dict[str, Any]:
    """Write ``volume`` ([z, y, x]) as a one-scale TIFF-tile dataset; returns the info."""
    nz, ny, nx = volume.shape
    key = "1_1_1"
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": str(volume.dtype),
        "num_channels": 1,
        "scales": [
            {
                "key": key,
                "size": [nx, ny, nz],
                "resolution": list(resolution),
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [list(chunk)],
                "encoding": "raw",
            }
        ],
    }
    (folder / key).mkdir(parents=True)
    (folder / "info").write_text(json.dumps(info))
    for z0 in range(0, nz, chunk[2]):
        for y0 in range(0, ny, chunk[1]):
            for x0 in range(0, nx, chunk[0]):
                z1, y1, x1 = min(z0 + chunk[2], nz), min(y0 + chunk[1], ny), min(x0 + chunk[0], nx)
                name = f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}.tiff"
                # minisblack: a chunk 3 or 4 deep must not be taken for RGB planes
                tifffile.imwrite(
                    folder / key / name, volume[z0:z1, y0:y1, x0:x1], photometric="minisblack"
                )
    return info
