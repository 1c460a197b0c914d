"""Tests of :mod:`precomp_host.build.pyramid` against slow, obviously correct references.

The references loop over the downsampled voxels in Python: block ``b`` along an axis with
factor ``f`` covers the absolute voxels ``[b * f, (b + 1) * f)`` (blocks aligned to voxel 0),
clipped to the voxels that exist in the input block ``[origin, origin + n)``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from precomp_host.build.pyramid import DOWNSAMPLERS, downsample_mean, downsample_stride

Vec3 = tuple[int, int, int]
INT_DTYPES = ["uint8", "uint16", "uint32", "int8", "int16", "int32"]


def _blocks(n: int, origin: int, f: int) -> list[range]:
    """Indices (relative to the input) of each aligned block's existing voxels along one axis."""
    out = []
    for b in range(origin // f, math.ceil((origin + n) / f)):
        lo, hi = max(b * f, origin), min((b + 1) * f, origin + n)
        out.append(range(lo - origin, hi - origin))
    return out


def _reference_mean(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    z, y, x, c = arr.shape
    bx = _blocks(x, origin[0], factors[0])
    by = _blocks(y, origin[1], factors[1])
    bz = _blocks(z, origin[2], factors[2])
    out = np.zeros((len(bz), len(by), len(bx), c), arr.dtype)
    for k, rz in enumerate(bz):
        for j, ry in enumerate(by):
            for i, rx in enumerate(bx):
                for ch in range(c):
                    values = [arr[zz, yy, xx, ch].item() for zz in rz for yy in ry for xx in rx]
                    if arr.dtype.kind == "f":
                        # Exact sum (math.fsum), one correctly rounded division, then float32.
                        out[k, j, i, ch] = math.fsum(values) / len(values)
                    else:
                        # Round half up: floor(mean + 1/2), in exact rationals.
                        mean = Fraction(sum(values), len(values))
                        out[k, j, i, ch] = math.floor(mean + Fraction(1, 2))
    return out


def _reference_stride(arr: np.ndarray, factors: Vec3, origin: Vec3) -> np.ndarray:
    z, y, x, c = arr.shape
    bx = _blocks(x, origin[0], factors[0])
    by = _blocks(y, origin[1], factors[1])
    bz = _blocks(z, origin[2], factors[2])
    out = np.zeros((len(bz), len(by), len(bx), c), arr.dtype)
    for k, rz in enumerate(bz):
        for j, ry in enumerate(by):
            for i, rx in enumerate(bx):
                out[k, j, i] = arr[rz[0], ry[0], rx[0]]
    return out


shapes = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.integers(1, 3))
factors_12 = st.tuples(st.sampled_from([1, 2]), st.sampled_from([1, 2]), st.sampled_from([1, 2]))
origins = st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 7))


@st.composite
def int_blocks(draw: st.DrawFn) -> np.ndarray:
    arr: np.ndarray = draw(hnp.arrays(np.dtype(draw(st.sampled_from(INT_DTYPES))), shapes))
    return arr


@st.composite
def float_blocks(draw: st.DrawFn) -> np.ndarray:
    # Multiples of 1/8 in [-1024, 1024]: sums of a few are exact in float64 in any order, so
    # the module's float64 accumulation and the reference agree bit for bit.
    eighths = draw(hnp.arrays(np.int32, draw(shapes), elements=st.integers(-8192, 8192)))
    out: np.ndarray = (eighths / 8).astype(np.float32)
    return out


def _expected_shape(shape: tuple[int, ...], factors: Vec3, origin: Vec3) -> tuple[int, ...]:
    z, y, x, c = shape
    n = [
        math.ceil((o + size) / f) - o // f
        for size, o, f in ((x, origin[0], factors[0]), (y, origin[1], factors[1]),
                           (z, origin[2], factors[2]))
    ]  # fmt: skip
    return (n[2], n[1], n[0], c)


@settings(max_examples=200, deadline=None)
@given(arr=int_blocks(), factors=factors_12, origin=origins)
def test_mean_of_integers_matches_reference(arr: np.ndarray, factors: Vec3, origin: Vec3) -> None:
    got = downsample_mean(arr, factors, origin)
    assert got.shape == _expected_shape(arr.shape, factors, origin)
    assert got.dtype == arr.dtype
    np.testing.assert_array_equal(got, _reference_mean(arr, factors, origin))


@settings(max_examples=100, deadline=None)
@given(arr=float_blocks(), factors=factors_12, origin=origins)
def test_mean_of_float32_matches_reference(arr: np.ndarray, factors: Vec3, origin: Vec3) -> None:
    got = downsample_mean(arr, factors, origin)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _reference_mean(arr, factors, origin))


@settings(max_examples=50, deadline=None)
@given(
    arr=hnp.arrays(
        np.float32,
        shapes,
        elements=st.floats(-(2.0**100), 2.0**100, width=32, allow_subnormal=False),
    ),
    factors=factors_12,
    origin=origins,
)
def test_mean_of_any_float32_is_close_to_reference(
    arr: np.ndarray, factors: Vec3, origin: Vec3
) -> None:
    got = downsample_mean(arr, factors, origin)
    ref = _reference_mean(arr, factors, origin)
    # Summation order may differ from fsum by float64 rounding; scale the tolerance by the
    # magnitude of the block's values (cancellation), not of the result.
    scale = float(np.max(np.abs(arr))) if arr.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12 * scale)


@settings(max_examples=30, deadline=None)
@given(arr=int_blocks(), factors=st.sampled_from([(4, 4, 4), (3, 3, 1), (8, 1, 2)]), origin=origins)
def test_mean_with_larger_factors(arr: np.ndarray, factors: Vec3, origin: Vec3) -> None:
    np.testing.assert_array_equal(
        downsample_mean(arr, factors, origin), _reference_mean(arr, factors, origin)
    )


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([0, 1], "uint8", 1),  # 0.5 rounds up
        ([1, 2], "uint8", 2),  # 1.5 rounds up
        ([2, 3], "uint16", 3),  # 2.5 rounds up (not to even)
        ([254, 255], "uint8", 255),  # no overflow at the top of the range
        ([2**32 - 2, 2**32 - 1], "uint32", 2**32 - 1),
        ([65535, 65535], "uint16", 65535),
        ([-1, 0], "int16", 0),  # -0.5 rounds up, towards +inf
        ([-3, -2], "int8", -2),  # -2.5 -> -2
        ([-128, -128], "int8", -128),
        ([0, 0], "float32", 0.0),
        ([1, 2], "float32", 1.5),  # floats are not rounded
    ],
)
def test_mean_rounds_half_up(values: list[int], dtype: str, expected: float) -> None:
    arr = np.array(values, dtype).reshape(1, 1, 2, 1)
    got = downsample_mean(arr, (2, 1, 1), (0, 0, 0))
    assert got.shape == (1, 1, 1, 1)
    assert got.item() == expected


def test_mean_rounds_quarters_to_nearest() -> None:
    # Means 0.25 -> 0, 0.75 -> 1, 2.75 -> 3 over 2x2 blocks.
    arr = np.array([[[0, 0, 0, 1, 2, 3], [0, 1, 1, 1, 3, 3]]], np.uint8)[..., np.newaxis]
    got = downsample_mean(arr, (2, 2, 1), (0, 0, 0))
    assert got[0, 0, :, 0].tolist() == [0, 1, 3]


def test_mean_of_a_full_uint8_block_of_255_does_not_overflow() -> None:
    # 8x8x4 = 256 voxels: the largest block a 16-bit accumulator must hold.
    arr = np.full((4, 8, 8, 1), 255, np.uint8)
    assert downsample_mean(arr, (8, 8, 4), (0, 0, 0)).item() == 255
    arr = np.full((8, 8, 8, 1), 255, np.uint8)  # 512 voxels: a wider accumulator
    assert downsample_mean(arr, (8, 8, 8), (0, 0, 0)).item() == 255


def test_partial_border_blocks_average_only_existing_voxels() -> None:
    # x from 1 to 5 with factor 2: blocks {1}, {2, 3}, {4} -> 10, 25, 50 (no zero padding).
    arr = np.array([10, 20, 30, 50], np.uint16).reshape(1, 1, 4, 1)
    got = downsample_mean(arr, (2, 1, 1), (1, 0, 0))
    assert got[0, 0, :, 0].tolist() == [10, 25, 50]


@settings(deadline=None)  # timing on a shared 2-core CI box is not the property
@given(
    value=st.integers(0, 255),
    shape=shapes,
    factors=factors_12,
    origin=origins,
)
def test_mean_of_constant_is_constant(
    value: int, shape: tuple[int, int, int, int], factors: Vec3, origin: Vec3
) -> None:
    arr = np.full(shape, value, np.uint8)
    got = downsample_mean(arr, factors, origin)
    assert got.shape == _expected_shape(shape, factors, origin)
    assert (got == value).all()


@settings(max_examples=100, deadline=None)
@given(arr=int_blocks(), factors=factors_12, origin=origins)
def test_stride_picks_first_existing_voxel(arr: np.ndarray, factors: Vec3, origin: Vec3) -> None:
    got = downsample_stride(arr, factors, origin)
    assert got.shape == _expected_shape(arr.shape, factors, origin)
    np.testing.assert_array_equal(got, _reference_stride(arr, factors, origin))


@settings(max_examples=30, deadline=None)
@given(arr=int_blocks(), factors=st.sampled_from([(4, 4, 4), (3, 1, 2)]), origin=origins)
def test_stride_with_larger_factors(arr: np.ndarray, factors: Vec3, origin: Vec3) -> None:
    np.testing.assert_array_equal(
        downsample_stride(arr, factors, origin), _reference_stride(arr, factors, origin)
    )


def test_stride_by_hand() -> None:
    # x from 3 to 8 with factor 2: blocks {3}, {4, 5}, {6, 7} -> first voxels 3, 4, 6.
    arr = np.arange(3, 8, dtype=np.uint32).reshape(1, 1, 5, 1)
    assert downsample_stride(arr, (2, 1, 1), (3, 0, 0))[0, 0, :, 0].tolist() == [3, 4, 6]


def test_downsamplers_registry() -> None:
    downsamplers: dict[str, Any] = dict(DOWNSAMPLERS)
    assert downsamplers["mean"] is downsample_mean
    assert downsamplers["stride"] is downsample_stride
