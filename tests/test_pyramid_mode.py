"""Mode (and sparse mode) downsampling of labels against a slow, obviously correct reference."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.build.plan import downsampled_box
from precomp_host.build.pyramid import DOWNSAMPLERS, downsample_mode, downsample_mode_sparse

Vec3 = tuple[int, int, int]


def reference_mode(arr: np.ndarray, factors: Vec3, origin: Vec3, *, sparse: bool) -> np.ndarray:
    """One Counter per output voxel over the existing voxels of its block aligned to voxel 0."""
    z, y, x, c = arr.shape
    stop = (origin[0] + x, origin[1] + y, origin[2] + z)
    (a0, a1, a2), (b0, b1, b2) = downsampled_box(origin, stop, factors)
    out = np.zeros((b2 - a2, b1 - a1, b0 - a0, c), arr.dtype)
    for i, j, k, ch in itertools.product(range(a0, b0), range(a1, b1), range(a2, b2), range(c)):
        lo = [max(g * f, o) - o for g, f, o in zip((i, j, k), factors, origin, strict=True)]
        hi = [
            min((g + 1) * f, e) - o
            for g, f, o, e in zip((i, j, k), factors, origin, stop, strict=True)
        ]
        block = arr[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0], ch].ravel().tolist()
        counts = Counter(block)
        if sparse and any(v != 0 for v in block):
            del counts[0]
        best = max(counts.values())
        out[k - a2, j - a1, i - a0, ch] = min(v for v, n in counts.items() if n == best)
    return out


@st.composite
def label_volumes(draw: st.DrawFn) -> tuple[np.ndarray, Vec3, Vec3]:
    bits = draw(st.sampled_from([32, 64]))
    dtype = np.dtype(f"uint{bits}")
    shape = tuple(draw(st.integers(1, 7)) for _ in range(3))
    channels = draw(st.sampled_from([1, 1, 1, 2]))
    # Few distinct labels make ties and repeated labels common; include 0 and the dtype's
    # maximum (the value invalid entries are sorted as).
    top = 2**bits - 1
    palette = draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 2**31, top]), min_size=1, max_size=4))
    idx = draw(
        st.lists(
            st.integers(0, len(palette) - 1),
            min_size=int(np.prod(shape)) * channels,
            max_size=int(np.prod(shape)) * channels,
        )
    )
    arr = np.array([palette[i] for i in idx], dtype=dtype).reshape(*shape, channels)
    origin = tuple(draw(st.integers(0, 5)) for _ in range(3))
    factors = tuple(draw(st.sampled_from([1, 2, 2, 3])) for _ in range(3))
    return arr, (origin[0], origin[1], origin[2]), (factors[0], factors[1], factors[2])


@given(label_volumes(), st.booleans())
def test_mode_matches_reference(case: tuple[np.ndarray, Vec3, Vec3], sparse: bool) -> None:
    arr, origin, factors = case
    fn = downsample_mode_sparse if sparse else downsample_mode
    got = fn(arr, factors, origin)
    want = reference_mode(arr, factors, origin, sparse=sparse)
    assert got.dtype == arr.dtype
    np.testing.assert_array_equal(got, want)


def test_ties_go_to_the_smallest_label() -> None:
    arr = np.array([5, 3, 3, 5, 9, 9, 9, 5], np.uint64).reshape(2, 2, 2, 1)
    assert downsample_mode(arr, (2, 2, 2), (0, 0, 0)).item() == 5  # 5 and 9 both x3
    arr = np.array([4, 4, 2, 2, 0, 0, 0, 0], np.uint64).reshape(2, 2, 2, 1)
    assert downsample_mode(arr, (2, 2, 2), (0, 0, 0)).item() == 0
    assert downsample_mode_sparse(arr, (2, 2, 2), (0, 0, 0)).item() == 2
    zeros = np.zeros((2, 2, 2, 1), np.uint64)
    assert downsample_mode_sparse(zeros, (2, 2, 2), (0, 0, 0)).item() == 0


def test_partial_blocks_vote_with_existing_voxels_only() -> None:
    # x = 1..4 with factor 2: blocks {1}, {2,3}, {4}; the lone voxels decide their block.
    arr = np.array([7, 1, 2, 8], np.uint32).reshape(1, 1, 4, 1)
    got = downsample_mode(arr, (2, 1, 1), (1, 0, 0))
    assert got.ravel().tolist() == [7, 1, 8]


def test_registered_and_rejects_floats() -> None:
    assert DOWNSAMPLERS["mode"] is downsample_mode
    assert DOWNSAMPLERS["mode_sparse"] is downsample_mode_sparse
    with pytest.raises(TypeError, match="integer labels"):
        downsample_mode(np.zeros((2, 2, 2, 1), np.float32), (2, 2, 2), (0, 0, 0))


def test_large_labels_are_not_truncated() -> None:
    big = np.uint64(2**63 + 12345)
    arr = np.full((2, 2, 2, 1), big, np.uint64)
    arr[0, 0, 0, 0] = 1
    assert downsample_mode(arr, (2, 2, 2), (0, 0, 0)).item() == int(big)


def test_large_input_is_cut_in_pieces_at_block_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    import precomp_host.build.pyramid as pyramid

    rng = np.random.default_rng(5)
    arr = rng.integers(0, 4, size=(23, 5, 6, 1)).astype(np.uint32)
    monkeypatch.setattr(pyramid, "_MODE_PIECE", 5 * 6 * 3)  # pieces of a few slices
    for origin in ((1, 2, 3), (1, 2, 4)):
        want = reference_mode(arr, (2, 2, 2), origin, sparse=False)
        np.testing.assert_array_equal(downsample_mode(arr, (2, 2, 2), origin), want)
