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

from ..core.model import Vec3

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
    cz, cy, cx = (
        _block_counts(z, origin[2], fz),
        _block_counts(y, origin[1], fy),
        _block_counts(x, origin[0], fx),
    )
    n = fx * fy * fz
    whole = bool((cz == fz).all() and (cy == fy).all() and (cx == fx).all())
    out: np.ndarray
    if whole and arr.dtype.kind != "f" and n & (n - 1) == 0:
        # Whole blocks of a power-of-two size (the common case): the rounding division is a
        # shift, and no array of counts is needed.
        # ``sums`` is a fresh array (at least one factor is 2 or more): work in place.
        sums += n // 2
        sums >>= n.bit_length() - 1
        out = sums.astype(arr.dtype)
    else:
        counts = cz[:, None, None, None] * cy[None, :, None, None] * cx[None, None, :, None]
        if arr.dtype.kind == "f":
            out = (sums / counts).astype(arr.dtype)
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


def _valid_along(n: int, origin: int, f: int) -> np.ndarray:
    """``[d, b]``: whether offset ``d`` of aligned block ``b`` lies in ``[origin, origin + n)``."""
    first = origin // f
    nblocks = -(-(origin + n) // f) - first
    pos = (np.arange(nblocks)[None, :] + first) * f + np.arange(f)[:, None]
    valid: np.ndarray = (pos >= origin) & (pos < origin + n)
    return valid


def _mode_of_columns(values: np.ndarray, valid: np.ndarray | None, sparse: bool) -> np.ndarray:
    """The mode of each column of ``values`` (``[block position, block]``) over ``valid`` rows.

    Sorting each column puts equal labels next to each other; one pass down the rows then
    tracks the length of the current run and keeps a run only when it is strictly longer than
    the best so far, so among equally frequent labels the first in sorted order, the smallest,
    wins. Invalid entries (outside the volume in a partial block) are set to the dtype's
    maximum so that they sort last, and are excluded by position: column ``b`` has its
    ``n_valid[b]`` valid values first.
    """
    b = values.shape[0]
    if valid is None:
        n_valid = None
        s = np.sort(values, axis=0)
    else:
        n_valid = valid.sum(axis=0)
        s = np.sort(np.where(valid, values, np.iinfo(values.dtype).max), axis=0)
    run = np.ones(s.shape[1], np.int64)
    best_count = np.where(s[0] != 0, run, 0) if sparse else run.copy()
    # All-zero columns under sparse keep s[0], which is then 0.
    best = s[0].copy()
    for j in range(1, b):
        same = s[j] == s[j - 1]
        run = np.where(same, run + 1, 1)
        count = run
        if n_valid is not None:
            count = np.where(j < n_valid, count, 0)
        if sparse:
            count = np.where(s[j] != 0, count, 0)
        better = count > best_count
        best_count = np.where(better, count, best_count)
        best = np.where(better, s[j], best)
    out: np.ndarray = best
    return out


#: Voxels per piece of a mode downsampling: bounds its temporaries (a gathered copy of the
#: piece, masks) to ~64 MiB for uint64 labels whatever the slab size.
_MODE_PIECE = 1 << 23


def _downsample_mode(arr: np.ndarray, factors: Vec3, origin: Vec3, *, sparse: bool) -> np.ndarray:
    if arr.dtype.kind not in "ui":
        raise TypeError(f"mode downsampling needs integer labels, got {arr.dtype}")
    fz = factors[2]
    if factors == (1, 1, 1):
        return arr
    # Blocks are independent: cut z at absolute block boundaries into pieces of bounded size.
    plane = max(1, arr.shape[1] * arr.shape[2] * arr.shape[3])
    depth = max(fz, _MODE_PIECE // plane // fz * fz)
    if arr.shape[0] <= depth:
        return _mode_piece(arr, factors, origin, sparse=sparse)
    first = depth + (-(origin[2] + depth)) % fz  # the first block boundary at or after depth
    cuts = [0, *range(first, arr.shape[0], depth)]
    pieces = [
        _mode_piece(arr[a:b], factors, (origin[0], origin[1], origin[2] + a), sparse=sparse)
        for a, b in zip(cuts, [*cuts[1:], arr.shape[0]], strict=True)
        if b > a
    ]
    return np.concatenate(pieces)


def _mode_piece(arr: np.ndarray, factors: Vec3, origin: Vec3, *, sparse: bool) -> np.ndarray:
    fx, fy, fz = factors
    # Pad partial border blocks by repeating their edge voxels: a block is then uniform
    # exactly when its existing voxels are, which settles most blocks of a segmentation
    # (labels are large regions) with one comparison pass and no sort.
    widths = [
        (o % f, -(o + n) % f)
        for n, o, f in zip(
            arr.shape[:3], (origin[2], origin[1], origin[0]), (fz, fy, fx), strict=True
        )
    ]
    partial = any(w != (0, 0) for w in widths)
    padded = np.pad(arr, [*widths, (0, 0)], mode="edge") if partial else arr
    c = arr.shape[3]
    pz, py, px = padded.shape[0] // fz, padded.shape[1] // fy, padded.shape[2] // fx
    nb = fx * fy * fz
    # [block position (dz, dy, dx), block (bz, by, bx, c)]: one column per output voxel.
    cols = (
        padded.reshape(pz, fz, py, fy, px, fx, c)
        .transpose(1, 3, 5, 0, 2, 4, 6)
        .reshape(nb, pz * py * px * c)
    )
    out = cols[0].copy()
    uniform = np.ones(cols.shape[1], bool)
    for j in range(1, nb):
        uniform &= cols[j] == cols[0]
    if not partial:
        mixed = np.flatnonzero(~uniform)
        if mixed.size:
            out[mixed] = _mode_of_columns(cols[:, mixed], None, sparse)
    else:
        # Only blocks on the slab's faces can be partial; the mask is built for those alone.
        vz = _valid_along(arr.shape[0], origin[2], fz)
        vy = _valid_along(arr.shape[1], origin[1], fy)
        vx = _valid_along(arr.shape[2], origin[0], fx)
        full = (
            np.all(vz, axis=0)[:, None, None, None]
            & np.all(vy, axis=0)[None, :, None, None]
            & np.all(vx, axis=0)[None, None, :, None]
        )
        full = np.broadcast_to(full, (pz, py, px, c)).ravel()
        mixed = np.flatnonzero(~uniform & full)
        if mixed.size:
            out[mixed] = _mode_of_columns(cols[:, mixed], None, sparse)
        edge = np.flatnonzero(~uniform & ~full)
        if edge.size:
            bz, by, bx, _ = np.unravel_index(edge, (pz, py, px, c))
            valid = (
                vz[:, bz][:, None, None, :]
                & vy[:, by][None, :, None, :]
                & vx[:, bx][None, None, :, :]
            ).reshape(nb, edge.size)
            out[edge] = _mode_of_columns(cols[:, edge], valid, sparse)
    result: np.ndarray = out.reshape(pz, py, px, c)
    return result


def downsample_mode(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    """The most frequent label of each block; ties go to the smallest label.

    Background 0 counts like any other label. Only the voxels that exist vote in a partial
    border block. Vectorised over blocks: a comparison pass finds uniform blocks, the others
    are sorted along a block-position axis and run-length counted (see ``_mode_of_columns``).
    """
    return _downsample_mode(arr, factors, origin, sparse=False)


def downsample_mode_sparse(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    """Like :func:`downsample_mode`, but 0 (background) wins only a block that is all 0.

    This keeps thin labelled structures (neurites, membranes) from vanishing into the
    background at coarse scales (``--sparse``); ties among non-zero labels go to the smallest.
    """
    return _downsample_mode(arr, factors, origin, sparse=True)


#: Name -> downsampler; images use "mean", segmentations "mode" (or "stride").
DOWNSAMPLERS: dict[str, Downsampler] = {
    "mean": downsample_mean,
    "stride": downsample_stride,
    "mode": downsample_mode,
    "mode_sparse": downsample_mode_sparse,
}
