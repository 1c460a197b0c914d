"""Tests of :mod:`precomp_host.build.chunk_codecs`: byte order, image layout, round trips.

The byte order is checked against expressions written from the spec (volume.md, "raw chunk
encoding": little-endian ``[x, y, z, channel]`` in Fortran order), not against the module.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from precomp_host.build.chunk_codecs import RAW, make_codec

RAW_DTYPES = ["uint8", "uint16", "uint32", "uint64", "float32"]

# [z, y, x, c] chunk shapes: small, with odd sizes, 1-3 channels.
zyxc_shapes = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 7), st.integers(1, 3))


@st.composite
def raw_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(RAW_DTYPES)))
    arr: np.ndarray = draw(hnp.arrays(dtype, zyxc_shapes))
    return arr


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical (NaN payloads and -0.0 included), same shape and dtype."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


# -- raw -------------------------------------------------------------------------------------


@settings(deadline=None)  # timing on a shared 2-core CI box is not the property
@given(raw_arrays())
def test_raw_round_trip(arr: np.ndarray) -> None:
    data = RAW.encode(arr)
    assert len(data) == arr.size * arr.dtype.itemsize
    back = RAW.decode(data, arr.shape, arr.dtype)
    assert _same_bits(back, arr)


@settings(deadline=None)  # timing on a shared 2-core CI box is not the property
@given(raw_arrays())
def test_raw_bytes_are_little_endian_fortran_xyzc(arr: np.ndarray) -> None:
    # The spec's array is indexed [x, y, z, c] and stored in Fortran order, little-endian.
    xyzc = np.transpose(arr, (2, 1, 0, 3))
    expected = xyzc.astype(arr.dtype.newbyteorder("<")).tobytes(order="F")
    assert RAW.encode(arr) == expected


def test_raw_voxel_offsets_by_hand() -> None:
    # Byte offset of voxel (x, y, z, c) = (((c * Z + z) * Y + y) * X + x) * itemsize.
    z_n, y_n, x_n, c_n = 2, 3, 4, 2
    arr = np.zeros((z_n, y_n, x_n, c_n), np.uint16)
    for z in range(z_n):
        for y in range(y_n):
            for x in range(x_n):
                for c in range(c_n):
                    arr[z, y, x, c] = 1000 * c + 100 * z + 10 * y + x
    data = RAW.encode(arr)
    for z in range(z_n):
        for y in range(y_n):
            for x in range(x_n):
                for c in range(c_n):
                    offset = (((c * z_n + z) * y_n + y) * x_n + x) * 2
                    value = int.from_bytes(data[offset : offset + 2], "little")
                    assert value == 1000 * c + 100 * z + 10 * y + x


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64", "float32"])
def test_raw_big_endian_input_is_written_little_endian(dtype: str) -> None:
    native = np.arange(2 * 3 * 4, dtype=dtype).reshape(2, 3, 4, 1)
    big = native.astype(np.dtype(dtype).newbyteorder(">"))
    assert (
        RAW.encode(big) == RAW.encode(native) == native.astype(f"<{native.dtype.str[1:]}").tobytes()
    )


def test_raw_decode_of_wrong_length_fails() -> None:
    with pytest.raises(ValueError, match="values"):
        RAW.decode(b"\0" * 7, (2, 2, 2, 1), np.dtype(np.uint8))


@pytest.mark.parametrize("dtype", [*RAW_DTYPES, "int8", "int16", "int32", "float64"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_raw_stores_any_dtype_and_channels(dtype: str, channels: int) -> None:
    assert RAW.unsupported(np.dtype(dtype), channels, "image") is None


# -- jpeg and png ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jpeg", "png"])
@pytest.mark.parametrize("dtype", ["uint16", "uint32", "float32", "int8", "uint64"])
def test_image_codecs_reject_non_uint8(name: str, dtype: str) -> None:
    reason = make_codec(name).unsupported(np.dtype(dtype), 1, "image")
    assert reason is not None
    assert name in reason
    assert "uint8" in reason


@pytest.mark.parametrize("name", ["jpeg", "png"])
@pytest.mark.parametrize("channels", [2, 4, 5])
def test_image_codecs_reject_2_or_4_channels(name: str, channels: int) -> None:
    reason = make_codec(name).unsupported(np.dtype(np.uint8), channels, "image")
    assert reason is not None
    assert str(channels) in reason


@pytest.mark.parametrize("name", ["jpeg", "png"])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_codecs_accept_uint8_1_or_3_channels(name: str, channels: int) -> None:
    assert make_codec(name).unsupported(np.dtype(np.uint8), channels, "image") is None


uint8_images = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 7), st.sampled_from([1, 3])),
)


@settings(deadline=None)  # timing on a shared 2-core CI box is not the property
@given(uint8_images)
def test_png_round_trip_is_exact(arr: np.ndarray) -> None:
    codec = make_codec("png")
    back = codec.decode(codec.encode(arr), arr.shape, arr.dtype)
    assert _same_bits(back, arr)


@settings(deadline=None)  # timing on a shared 2-core CI box is not the property
@given(uint8_images)
def test_png_is_one_image_x_wide_and_y_times_z_high(arr: np.ndarray) -> None:
    # volume.md: a png/jpeg chunk is a single image of width x and height y * z, z slowest.
    z, y, x, c = arr.shape
    with Image.open(io.BytesIO(make_codec("png").encode(arr))) as im:
        assert im.format == "PNG"
        assert im.size == (x, y * z)
        assert im.mode == ("L" if c == 1 else "RGB")
        pixels = np.asarray(im)
    assert np.array_equal(pixels.reshape(z * y, x, c), arr.reshape(z * y, x, c))


def _smooth(shape: tuple[int, int, int, int]) -> np.ndarray:
    z, y, x, c = shape
    zz, yy, xx, cc = np.meshgrid(
        np.arange(z), np.arange(y), np.arange(x), np.arange(c), indexing="ij"
    )
    value = 128 + 60 * np.sin(xx / 9.0 + cc) * np.cos(yy / 11.0) + 40 * np.sin(zz / 7.0 + cc)
    out: np.ndarray = np.clip(np.round(value), 0, 255).astype(np.uint8)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quality_95_psnr_at_least_40_db(channels: int) -> None:
    codec = make_codec("jpeg", quality=95)
    arr = _smooth((16, 64, 64, channels))
    data = codec.encode(arr)
    assert data[:2] == b"\xff\xd8"  # a JPEG SOI marker
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (64, 64 * 16)
    back = codec.decode(data, arr.shape, arr.dtype)
    assert back.shape == arr.shape
    assert back.dtype == np.uint8
    assert _psnr(back, arr) >= 40


def test_jpeg_quality_is_in_scale_info_and_matters() -> None:
    arr = _smooth((4, 64, 64, 1))
    low, high = make_codec("jpeg", quality=20), make_codec("jpeg", quality=95)
    assert high.scale_info == {"jpeg_quality": 95}
    assert low.scale_info == {"jpeg_quality": 20}
    assert len(low.encode(arr)) < len(high.encode(arr))
    assert make_codec("jpeg").scale_info == {"jpeg_quality": 95}  # the default


# -- all codecs ------------------------------------------------------------------------------


CODEC_CASES: list[tuple[str, dict[str, Any], type[np.integer[Any]]]] = [
    ("raw", {}, np.uint16),
    ("png", {}, np.uint8),
    ("jpeg", {"quality": 90}, np.uint8),
]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=zyxc_shapes.filter(lambda s: s[3] != 2))
def test_encoding_is_deterministic(seed: int, shape: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(seed)
    for name, options, dtype in CODEC_CASES:
        arr = rng.integers(0, 255, shape, dtype=dtype, endpoint=True)
        # A fresh codec and a copy of the data in another memory layout: the same bytes.
        first = make_codec(name, **options).encode(arr)
        second = make_codec(name, **options).encode(np.asfortranarray(arr.copy()))
        assert first == make_codec(name, **options).encode(arr) == second


@pytest.mark.parametrize("quality", [0, -5, 101, 1000])
def test_jpeg_quality_out_of_range(quality: int) -> None:
    with pytest.raises(ValueError, match="quality"):
        make_codec("jpeg", quality=quality)


@pytest.mark.parametrize("quality", [1, 100])
def test_jpeg_quality_limits_are_accepted(quality: int) -> None:
    assert make_codec("jpeg", quality=quality).scale_info == {"jpeg_quality": quality}


def test_make_codec_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown chunk encoding"):
        make_codec("compressed_segmentation_v9")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "jpeg",
            {"qualty": 90},
            "unknown option 'qualty' for the jpeg encoding (it takes quality)",
        ),
        ("raw", {"quality": 90}, "unknown option 'quality' for the raw encoding (it takes none)"),
        ("png", {"block_size": 8}, "unknown option 'block_size' for the png encoding"),
        ("compressed_segmentation", {"blocksize": 8}, "(it takes block_size)"),
    ],
)
def test_make_codec_rejects_unknown_options(
    name: str, options: dict[str, object], message: str
) -> None:
    # A misspelled option used to be swallowed by the factories' ``**_``.
    with pytest.raises(ValueError, match=re.escape(message)):
        make_codec(name, **options)
