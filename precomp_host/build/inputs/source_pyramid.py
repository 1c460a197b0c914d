"""``--use-source-pyramid``: the scales of a dataset taken from the source's own levels.

:func:`build_source_pyramid` builds each level of an OME-Zarr multiscale as one scale (with
``max_scales=1``, so nothing is downsampled again) and writes one ``info`` listing them all. A
level's voxel size is the file's, scaled by the user's ``--resolution`` override of level 0
where one was given, so the levels keep their ratios.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.layout import LAYOUTS
from ..builder import BuildError, build_dataset
from ..writer import DatasetWriter

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

    from ...core.model import Dataset
    from ...core.progress import Progress
    from ..builder import BuildOptions

_LEVEL_DIR = ".precomp-source-level"


def build_source_pyramid(
    levels: Sequence[Any],
    out: str | os.PathLike[str],
    options: BuildOptions,
    progress: Callable[[Progress], None] | None = None,
) -> Dataset:
    """Build ``levels`` (full resolution first, each with ``resolution`` and ``voxel_offset``
    from the file) into ``out``, one scale each; ``options`` holds level 0's grid."""
    out = Path(out)
    first = build_dataset(levels[0], out, dataclasses.replace(options, max_scales=1), progress)
    scales = [first.scales[0]]
    base = levels[0].resolution or options.resolution
    for i, level in enumerate(levels[1:], start=1):
        if level.resolution is None:
            raise BuildError(f"level {i} of the source has no voxel size")
        res = tuple(
            u * r / b for u, r, b in zip(options.resolution, level.resolution, base, strict=True)
        )
        part = out / f"{_LEVEL_DIR}-{i}"
        shutil.rmtree(part, ignore_errors=True)
        level_options = dataclasses.replace(
            options, resolution=res, voxel_offset=level.voxel_offset, max_scales=1,
            resume=False, overwrite=False,
        )  # fmt: skip
        try:
            built = build_dataset(level, part, level_options, progress)
            scale = built.scales[0]
            if any(s.key == scale.key for s in scales):
                raise BuildError(f"level {i} has the voxel size of an earlier level ({scale.key})")
            shutil.rmtree(out / scale.key, ignore_errors=True)
            (part / scale.key).rename(out / scale.key)
        finally:
            shutil.rmtree(part, ignore_errors=True)
        scales.append(scale)
    dataset = dataclasses.replace(first, scales=tuple(scales))
    writer = DatasetWriter(out, LAYOUTS[options.layout], compress=options.compress)
    writer.begin()
    writer.commit(dataset)  # info last: the scales it lists are all in place
    return dataset
