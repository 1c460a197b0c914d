"""The embedded sample: a small synthetic volume made in code, so nothing is downloaded.

:func:`sample_image` draws a few soft-edged spheres and a shell over a gentle gradient, with
some deterministic noise: structure that is easy to recognise in Neuroglancer at every scale,
and data that compresses like real microscopy rather than like zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .builder import BuildOptions

#: Shape of the sample in (x, y, z) and its voxel size in nm.
SAMPLE_SHAPE = (192, 160, 96)
SAMPLE_RESOLUTION = (8.0, 8.0, 16.0)

# (center x, y, z in voxels, radius in nm)
_BLOBS = ((50, 50, 30, 220.0), (130, 60, 50, 300.0), (90, 115, 60, 380.0), (150, 120, 20, 160.0))


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = SAMPLE_SHAPE
    rx, ry, rz = SAMPLE_RESOLUTION
    zz, yy, xx = np.meshgrid(
        np.arange(z) * rz, np.arange(y) * ry, np.arange(x) * rx, indexing="ij", sparse=True
    )
    return zz, yy, xx


def _distances() -> list[np.ndarray]:
    zz, yy, xx = _grid()
    rx, ry, rz = SAMPLE_RESOLUTION
    return [
        np.sqrt((xx - cx * rx) ** 2 + (yy - cy * ry) ** 2 + (zz - cz * rz) ** 2) / r
        for cx, cy, cz, r in _BLOBS
    ]


def sample_image() -> np.ndarray:
    """The sample image as uint8 ``[z, y, x]``."""
    zz, yy, xx = _grid()
    x, y, z = SAMPLE_SHAPE
    rx, ry, rz = SAMPLE_RESOLUTION
    background = 30 + 20 * (xx / (x * rx)) + 10 * (zz / (z * rz))
    img = np.broadcast_to(background, (z, y, x)).astype(np.float32)
    for i, d in enumerate(_distances()):
        level = 120 + 30 * i
        img = np.maximum(img, level / (1 + np.exp((d - 1) * 12)))
        img += 70 * np.exp(-(((d - 1.25) * 10) ** 2))  # a bright membrane-like shell
    rng = np.random.default_rng(20261122)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    out: np.ndarray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def sample_labels() -> np.ndarray:
    """Labels matching the image's spheres as uint32 ``[z, y, x]`` (0 is background)."""
    labels = np.zeros(SAMPLE_SHAPE[::-1], np.uint32)
    for i, d in enumerate(_distances()):
        labels[d <= 1] = i + 1
    return labels


#: Names of the sample's segments, for ``segment_properties``.
SAMPLE_NAMES = {1: "small sphere", 2: "medium sphere", 3: "large sphere", 4: "tiny sphere"}


def sample_labels_options(overwrite: bool = False) -> BuildOptions:
    """How the sample segmentation is built: compressed_segmentation, mode pyramid, meshes."""
    from .builder import BuildOptions
    from .segment_properties import SegmentRow
    from .segmentation import SegmentationOptions

    names = tuple(SegmentRow(i, n, ("sphere",)) for i, n in sorted(SAMPLE_NAMES.items()))
    return BuildOptions(
        resolution=SAMPLE_RESOLUTION,
        volume_type="segmentation",
        encoding="compressed_segmentation",
        downsample="mode",
        overwrite=overwrite,
        segmentation=SegmentationOptions(mesh=True, names=names),
    )
