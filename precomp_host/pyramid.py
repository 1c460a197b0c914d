"""Downsampling one scale to the next: mean for images, mode or stride for labels.

Every function takes a block ``arr`` in ``[z, y, x, c]`` order, the factors ``(fx, fy, fz)``
and the block's ``origin`` ``(x, y, z)`` in absolute voxel coordinates of its scale, and returns
the block covering :func:`precomp_host.plan.downsampled_box` of it. Downsampling blocks are
aligned to voxel 0, so a block that starts or ends off a multiple of the factor has partial
blocks at its borders; these average (or vote over) the voxels that exist, never padding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Vec3 = tuple[int, int, int]
Downsampler = Callable[[np.ndarray, Vec3, Vec3], np.ndarray]


def _block_counts(n: int, origin: int, f: int) -> np.ndarray:
    """How many voxels of ``[origin, origin + n)`` fall in each aligned block of size f."""
    first = origin // f
    last = -(-(origin + n) // f)
    starts = np.maximum(np.arange(first, last) * f, origin)
    stops = np.minimum(np.arange(first + 1, last + 1) * f, origin + n)
    return (stops - starts).astype(np.int64)


def _pad_to_blocks(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    """``arr`` padded (with zeros) so that each axis starts and ends on a block boundary."""
    pads = []
    for axis, (f, o) in zip((2, 1, 0), zip(factors, origin, strict=True), strict=True):
        n = arr.shape[axis]
        before = o % f
        after = -(o + n) % f
        pads.append((axis, before, after))
    if all(b == 0 and a == 0 for _, b, a in pads):
        return arr
    width = [(0, 0)] * arr.ndim
    for axis, b, a in pads:
        width[axis] = (b, a)
    return np.pad(arr, width)


def _accumulator(dtype: np.dtype[Any], block: int) -> np.dtype[Any]:
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype.itemsize == 1 and block <= 256:
        return np.dtype(np.uint16 if dtype.kind == "u" else np.int16)
    return np.dtype(np.uint64 if dtype.kind == "u" else np.int64)


def _sum_blocks(arr: np.ndarray, axis: int, f: int, acc: np.dtype[Any]) -> np.ndarray:
    """Sums of consecutive groups of ``f`` along ``axis`` (length a multiple of f).

    Strided adds, one per block position: several times faster than a reduction over a
    reshaped axis, which numpy runs with a small inner loop.
    """
    if f == 1:
        return arr
    index: list[slice] = [slice(None)] * arr.ndim

    def part(k: int) -> np.ndarray:
        index[axis] = slice(k, None, f)
        return arr[tuple(index)]

    out: np.ndarray = np.add(part(0), part(1), dtype=acc)
    for k in range(2, f):
        out += part(k)
    return out


def downsample_mean(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    """Mean over each block; integers round half up (``(sum + n // 2) // n``)."""
    fx, fy, fz = factors
    if factors == (1, 1, 1):
        return arr
    z, y, x, _ = arr.shape
    acc = _accumulator(arr.dtype, fx * fy * fz)
    sums = _pad_to_blocks(arr, factors, origin)
    for axis, f in ((2, fx), (1, fy), (0, fz)):
        sums = _sum_blocks(sums, axis, f, acc)
    counts = (
        _block_counts(z, origin[2], fz)[:, None, None, None]
        * _block_counts(y, origin[1], fy)[None, :, None, None]
        * _block_counts(x, origin[0], fx)[None, None, :, None]
    )
    out: np.ndarray
    if arr.dtype.kind == "f":
        out = (sums / counts).astype(arr.dtype)
    elif np.all(counts == fx * fy * fz) and (fx * fy * fz) & (fx * fy * fz - 1) == 0:
        # Whole blocks of a power-of-two size: the rounding division is a shift.
        n = fx * fy * fz
        out = ((sums + n // 2) >> (n.bit_length() - 1)).astype(arr.dtype)
    else:
        counts = counts.astype(acc)
        out = ((sums + counts // 2) // counts).astype(arr.dtype)
    return out


def downsample_stride(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    """The first voxel of each block that exists (``--downsample stride`` for labels)."""
    fx, fy, fz = factors
    # The first existing voxel of block b is max(b*f, origin): index 0, then every
    # block start after it.
    sl = tuple(
        np.concatenate(([0], np.arange(-o % f or f, n, f))) if n else np.arange(0)
        for n, o, f in (
            (arr.shape[0], origin[2], fz),
            (arr.shape[1], origin[1], fy),
            (arr.shape[2], origin[0], fx),
        )
    )
    out: np.ndarray = arr[np.ix_(sl[0], sl[1], sl[2])]
    return out


#: Name -> downsampler; images use "mean", segmentations "mode" (or "stride").
DOWNSAMPLERS: dict[str, Downsampler] = {
    "mean": downsample_mean,
    "stride": downsample_stride,
}
