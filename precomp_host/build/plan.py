"""The multi-scale plan of a new dataset: which scales, of what size, downsampled how.

:func:`plan_dataset` is the only place that computes per-scale sizes. Downsampling blocks are
aligned to the global voxel grid (voxel 0, not ``voxel_offset``), so that a voxel of scale
``s+1`` covers exactly the voxels ``[f*i, f*(i+1))`` of scale ``s`` in every scale's own
coordinates; a volume whose offset is not a multiple of the factor gets a partial first block.
This is the convention tensorstore's downsample driver and neuroglancer-scripts follow, and it
keeps each scale's ``voxel_offset * resolution`` on the same physical grid.
"""

from __future__ import annotations

import dataclasses
import math

from ..core.model import Dataset, Res3, Scale, Vec3, VolumeType, scale_key_for
from ..core.shard_grid import choose_sharding

#: Halve an axis when that brings its resolution closer to the finest axis' in log scale,
#: i.e. when its resolution is at most sqrt(2) times the finest. 8x8x40 nm gets 2x2x1 until
#: x and y reach 32 nm, then 2x2x2.
_ISOTROPY_LIMIT = math.sqrt(2)

#: The largest voxel index readers accept: tensorstore's ``kMaxFiniteIndex`` (2**62 - 2,
#: ``index_space/index.h``); it refuses an ``info`` with a voxel outside ``[-MAX_INDEX,
#: MAX_INDEX]`` (checked against tensorstore 0.1: offset 2**62 - 2 of size 1 opens, 2**62 - 1
#: does not).
MAX_INDEX = 2**62 - 2


def downsample_factors(resolution: Res3, size: Vec3, chunk_size: Vec3) -> Vec3:
    """Factors (1 or 2 per axis) from one scale to the next; (1, 1, 1) means stop.

    An axis that already fits in one chunk is not halved: it would cost detail and save no
    chunk.
    """
    splittable = [r for r, n, c in zip(resolution, size, chunk_size, strict=True) if n > c]
    if not splittable:
        return (1, 1, 1)
    finest = min(splittable)
    f = tuple(
        2 if n > c and r <= finest * _ISOTROPY_LIMIT else 1
        for r, n, c in zip(resolution, size, chunk_size, strict=True)
    )
    return (f[0], f[1], f[2])


def downsampled_box(start: Vec3, stop: Vec3, factors: Vec3) -> tuple[Vec3, Vec3]:
    """The voxel box ``[start, stop)`` one scale down (blocks aligned to voxel 0)."""
    a = tuple(s // f for s, f in zip(start, factors, strict=True))
    b = tuple(-(-e // f) for e, f in zip(stop, factors, strict=True))
    return (a[0], a[1], a[2]), (b[0], b[1], b[2])


def _check_inputs(
    size: Vec3, resolution: Res3, chunk_size: Vec3, voxel_offset: Vec3, max_scales: int | None
) -> None:
    if any(r <= 0 for r in resolution):
        raise ValueError(f"resolution must be positive, got {resolution}")
    if any(c <= 0 for c in chunk_size):
        raise ValueError(f"chunk size must be positive, got {chunk_size}")
    if any(n <= 0 for n in size):
        raise ValueError(f"volume size must be positive, got {size}")
    if max_scales is not None and max_scales < 1:
        raise ValueError(f"number of scales must be at least 1, got {max_scales}")
    if not all(math.isfinite(r) for r in resolution):
        raise ValueError(f"resolution must be finite, got {resolution}")
    for axis, o, n in zip("xyz", voxel_offset, size, strict=True):
        if o < -MAX_INDEX or o + n - 1 > MAX_INDEX:
            raise ValueError(
                f"voxel offset {o} with size {n} leaves the index range readers accept on {axis} "
                f"(voxels must lie in -(2**62 - 2) .. 2**62 - 2)"
            )


def plan_dataset(
    *,
    volume_type: VolumeType,
    data_type: str,
    num_channels: int,
    size: Vec3,
    resolution: Res3,
    chunk_size: Vec3 = (64, 64, 64),
    voxel_offset: Vec3 = (0, 0, 0),
    encoding: str = "raw",
    max_scales: int | None = None,
    scale_extra: dict[str, object] | None = None,
) -> tuple[Dataset, tuple[Vec3, ...]]:
    """The ``Dataset`` to write and the factors between consecutive scales.

    Scales are added until the volume fits in one chunk (or ``max_scales``). Each scale's chunk
    size is clipped to its size, so thin volumes get thin chunks rather than mostly empty ones.
    """
    _check_inputs(size, resolution, chunk_size, voxel_offset, max_scales)
    scales: list[Scale] = []
    factors: list[Vec3] = []
    start, stop, res = (
        voxel_offset,
        tuple(o + n for o, n in zip(voxel_offset, size, strict=True)),
        resolution,
    )
    while True:
        n = (stop[0] - start[0], stop[1] - start[1], stop[2] - start[2])
        chunk = (min(chunk_size[0], n[0]), min(chunk_size[1], n[1]), min(chunk_size[2], n[2]))
        scales.append(
            Scale(
                key=scale_key_for(res),
                size=n,
                resolution=res,
                chunk_size=chunk,
                voxel_offset=start,
                encoding=encoding,
                extra=dict(scale_extra or {}),
            )
        )
        f = downsample_factors(res, n, chunk_size)
        if f == (1, 1, 1) or (max_scales is not None and len(scales) >= max_scales):
            break
        factors.append(f)
        start, stop = downsampled_box(start, (stop[0], stop[1], stop[2]), f)
        res = (res[0] * f[0], res[1] * f[1], res[2] * f[2])
        if not all(math.isfinite(r) for r in res):  # 1e308 nm doubled is inf: not JSON
            raise ValueError(f"resolution {resolution} overflows at scale {len(scales)}")
    dataset = Dataset(
        type=volume_type,
        data_type=data_type,
        num_channels=num_channels,
        scales=tuple(scales),
        extra={"@type": "neuroglancer_multiscale_volume"},
    )
    return dataset, tuple(factors)


def plan_sharding(
    dataset: Dataset, target_bytes: int, *, voxel_bytes: int, gzip_data: bool
) -> Dataset:
    """``dataset`` with every scale sharded for shards of at most ``target_bytes``.

    A chunk counts at its uncompressed size, so a shard stays under the target whatever the
    codec achieves. Chunk ids are compressed Morton codes and the hash is the identity, as
    volume.md and sharded.md describe for volumes: a shard is then a box of the chunk grid.
    Minishard indices are always gzip-encoded; chunk data too unless its codec compresses it
    already (``gzip_data``).

    :param voxel_bytes: bytes of one voxel, every channel.
    :raises ValueError: a grid too large for 64-bit chunk ids.
    """
    scales = []
    for scale in dataset.scales:
        plan = choose_sharding(
            scale.grid_shape(),
            math.prod(scale.chunk_size) * voxel_bytes,
            target_bytes,
            data_encoding="gzip" if gzip_data else "raw",
        )
        scales.append(dataclasses.replace(scale, sharding=plan.spec))
    return dataclasses.replace(dataset, scales=tuple(scales))
