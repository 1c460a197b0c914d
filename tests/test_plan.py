"""Tests for :mod:`precomp_host.build.plan`: which scales a dataset gets, how big."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.build.plan import downsample_factors, downsampled_box, plan_dataset
from precomp_host.core.model import Dataset, Vec3
from tests.strategies import resolutions, vec3s

if TYPE_CHECKING:
    from pathlib import Path


def _plan(
    size: Vec3,
    resolution: tuple[float, float, float],
    chunk_size: Vec3 = (64, 64, 64),
    voxel_offset: Vec3 = (0, 0, 0),
    max_scales: int | None = None,
) -> tuple[Dataset, tuple[Vec3, ...]]:
    return plan_dataset(
        volume_type="image",
        data_type="uint8",
        num_channels=1,
        size=size,
        resolution=resolution,
        chunk_size=chunk_size,
        voxel_offset=voxel_offset,
        max_scales=max_scales,
    )


def test_anisotropic_volume_gets_2x2x1_until_near_isotropic() -> None:
    ds, factors = _plan((4096, 4096, 1024), (8, 8, 40))
    assert factors[:4] == ((2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2))
    assert [s.key for s in ds.scales[:5]] == [
        "8_8_40",
        "16_16_40",
        "32_32_40",
        "64_64_80",
        "128_128_160",
    ]
    assert ds.scales[1].size == (2048, 2048, 1024)
    assert ds.scales[3].size == (512, 512, 512)


def test_isotropic_volume_gets_2x2x2() -> None:
    ds, factors = _plan((256, 256, 256), (4, 4, 4))
    assert factors == ((2, 2, 2), (2, 2, 2))
    assert [s.size for s in ds.scales] == [(256, 256, 256), (128, 128, 128), (64, 64, 64)]
    assert ds.extra == {"@type": "neuroglancer_multiscale_volume"}


def test_axis_that_fits_one_chunk_is_not_halved() -> None:
    ds, factors = _plan((1000, 1000, 20), (10, 10, 10))
    assert all(f[2] == 1 for f in factors)
    assert ds.scales[-1].size[2] == 20
    assert ds.scales[-1].chunk_size == (ds.scales[-1].size[0], ds.scales[-1].size[1], 20)


def test_single_chunk_volume_has_one_scale() -> None:
    ds, factors = _plan((64, 30, 1), (8, 8, 40))
    assert factors == ()
    assert len(ds.scales) == 1
    assert ds.scales[0].chunk_size == (64, 30, 1)  # clipped to the volume


def test_voxel_offset_propagates_floor_and_ceil() -> None:
    ds, factors = _plan((200, 100, 10), (8, 8, 40), voxel_offset=(3, 10, 5))
    assert factors[0] == (2, 2, 1)
    s1 = ds.scales[1]
    # [3, 203) -> [1, 102): voxel 1 covers [2, 4), of which only 3 exists.
    assert (s1.voxel_offset, s1.stop) == ((1, 5, 5), (102, 55, 15))
    assert s1.size == (101, 50, 10)


def test_downsampled_box_examples() -> None:
    assert downsampled_box((3, 0, 5), (10, 7, 9), (2, 2, 1)) == ((1, 0, 5), (5, 4, 9))
    assert downsampled_box((0, 0, 0), (64, 64, 64), (2, 2, 2)) == ((0, 0, 0), (32, 32, 32))
    assert downsampled_box((1, 1, 1), (2, 2, 2), (2, 2, 2)) == ((0, 0, 0), (1, 1, 1))


@given(vec3s(0, 10**6), vec3s(1, 10**4), st.sampled_from([(2, 2, 1), (2, 2, 2), (1, 2, 1)]))
def test_downsampled_box_covers_exactly_the_blocks_touched(
    start: Vec3, shape: Vec3, f: Vec3
) -> None:
    stop = (start[0] + shape[0], start[1] + shape[1], start[2] + shape[2])
    a, b = downsampled_box(start, stop, f)
    for lo, hi, na, nb, k in zip(start, stop, a, b, f, strict=True):
        # The first block holds voxel lo, the last holds voxel hi - 1; blocks align to voxel 0.
        assert na * k <= lo < (na + 1) * k
        assert (nb - 1) * k <= hi - 1 < nb * k


@given(
    vec3s(1, 3000),
    resolutions(),
    vec3s(1, 128),
    vec3s(0, 1000),
)
def test_pyramid_properties(
    size: Vec3, resolution: tuple[float, float, float], chunk: Vec3, offset: Vec3
) -> None:
    ds, factors = _plan(size, resolution, chunk, offset)
    scales = ds.scales
    assert len(factors) == len(scales) - 1
    assert (scales[0].size, scales[0].voxel_offset, scales[0].resolution) == (
        size,
        offset,
        resolution,
    )
    # Ends exactly when the volume fits in one chunk.
    assert scales[-1].num_chunks() == 1
    assert all(c >= n for c, n in zip(chunk, scales[-1].size, strict=True))
    assert all(s.num_chunks() > 1 for s in scales[:-1])
    for prev, f, s in zip(scales[:-1], factors, scales[1:], strict=True):
        assert f != (1, 1, 1)
        assert set(f) <= {1, 2}
        assert (s.voxel_offset, s.stop) == downsampled_box(prev.voxel_offset, prev.stop, f)
        assert s.resolution == tuple(r * k for r, k in zip(prev.resolution, f, strict=True))
        # Only axes that did not fit in a chunk are halved.
        assert all(k == 1 or n > c for k, n, c in zip(f, prev.size, chunk, strict=True))
    for s in scales:
        assert s.chunk_size == tuple(min(c, n) for c, n in zip(chunk, s.size, strict=True))
    # The plan is a valid info: unique keys, positive sizes; it survives the round trip.
    assert Dataset.from_json(ds.to_json()) == ds


@given(vec3s(1, 3000), resolutions(), st.integers(1, 4))
def test_max_scales_honoured(size: Vec3, resolution: tuple[float, float, float], n: int) -> None:
    full, full_factors = _plan(size, resolution, (16, 16, 16))
    ds, factors = _plan(size, resolution, (16, 16, 16), max_scales=n)
    assert len(ds.scales) == min(n, len(full.scales))
    assert ds.scales == full.scales[: len(ds.scales)]
    assert factors == full_factors[: len(ds.scales) - 1]


def test_near_isotropy_rule() -> None:
    # A coarser axis is halved with the finest once it is within sqrt(2) of it.
    assert downsample_factors((8, 8, 40), (1000,) * 3, (64,) * 3) == (2, 2, 1)
    assert downsample_factors((32, 32, 40), (1000,) * 3, (64,) * 3) == (2, 2, 2)
    assert downsample_factors((10, 10, 10 * math.sqrt(2)), (1000,) * 3, (64,) * 3) == (2, 2, 2)
    assert downsample_factors((10, 10, 14.2), (1000,) * 3, (64,) * 3) == (2, 2, 1)
    # The finest axis that still needs splitting sets the reference.
    assert downsample_factors((8, 8, 40), (64, 64, 1000), (64,) * 3) == (1, 1, 2)
    assert downsample_factors((8, 8, 40), (64, 64, 64), (64,) * 3) == (1, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": (0, 8, 40)}, "resolution"),
        ({"resolution": (8, -8, 40)}, "resolution"),
        ({"chunk_size": (64, 0, 64)}, "chunk size"),
        ({"chunk_size": (-1, 64, 64)}, "chunk size"),
        ({"size": (64, 0, 64)}, "size"),
        ({"max_scales": 0}, "scales"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"size": (100, 100, 100), "resolution": (8, 8, 40)} | kwargs
    with pytest.raises(ValueError, match=match):
        _plan(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offset", "size", "accepted"),
    [
        (2**62 - 2, 1, True),
        (2**62 - 2, 2, False),
        (2**62, 1, False),
        (-(2**62 - 2), 1, True),
        (-(2**62 - 1), 1, False),
    ],
)
def test_voxel_boxes_stay_in_the_range_tensorstore_reads(
    tmp_path: Path, offset: int, size: int, accepted: bool
) -> None:
    ts = pytest.importorskip("tensorstore")
    kw: dict[str, Any] = {"volume_type": "image", "data_type": "uint8", "num_channels": 1,
                              "size": (size, 1, 1), "resolution": (1.0, 1.0, 1.0),
                              "voxel_offset": (offset, 0, 0)}  # fmt: skip
    if not accepted:
        with pytest.raises(ValueError, match="index range readers accept on x"):
            plan_dataset(**kw)
        return
    dataset, _ = plan_dataset(**kw)
    (tmp_path / "info").write_text(json.dumps(dataset.to_json()))
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}"}
    ).result()
    assert store.domain[0].inclusive_min == offset


def test_a_resolution_that_overflows_when_downsampled_is_refused() -> None:
    with pytest.raises(ValueError, match="overflows at scale 1"):
        plan_dataset(volume_type="image", data_type="uint8", num_channels=1,
                     size=(128, 128, 128), resolution=(1e308, 1e308, 1e308),
                     chunk_size=(64, 64, 64))  # fmt: skip
