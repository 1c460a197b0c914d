"""The compressed_segmentation chunk codec: round trips, and tensorstore reads what it writes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from precomp_host.build.chunk_codecs import CODECS, make_codec

if TYPE_CHECKING:
    from pathlib import Path

ts = pytest.importorskip("tensorstore")

Shape = tuple[int, int, int, int]


@st.composite
def label_chunks(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(["uint32", "uint64"]))
    shape = (*(draw(st.integers(1, 19)) for _ in range(3)), draw(st.integers(1, 3)))
    # A few labels, some huge, so blocks get 0-, 1-, 2- ... bit encodings.
    palette = draw(
        st.lists(
            st.integers(0, 2**32 - 1 if dtype == "uint32" else 2**64 - 1), min_size=1, max_size=40
        )
    )
    idx = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, len(palette) - 1)))
    arr: np.ndarray = np.array(palette, dtype=dtype)[idx]
    return arr


@given(label_chunks(), st.sampled_from([(8, 8, 8), (4, 4, 4), (2, 3, 5), (1, 1, 1)]))
@settings(max_examples=60)
def test_round_trip(arr: np.ndarray, block: tuple[int, int, int]) -> None:
    codec = make_codec("compressed_segmentation", block_size=block)
    data = codec.encode(arr)
    shape: Shape = (arr.shape[0], arr.shape[1], arr.shape[2], arr.shape[3])
    out = codec.decode(data, shape, arr.dtype)
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def test_non_contiguous_input_is_encoded_by_value() -> None:
    base = np.arange(2 * 9 * 10 * 11, dtype=np.uint32).reshape(2, 9, 10, 11)
    arr = np.moveaxis(base, 0, 3)[::-1, :, 1:]  # strided view, two channels
    codec = make_codec("compressed_segmentation")
    out = codec.decode(codec.encode(arr), arr.shape, arr.dtype)
    np.testing.assert_array_equal(out, arr)


def test_options_scale_info_and_unsupported() -> None:
    codec = make_codec("compressed_segmentation")
    assert codec.scale_info == {"compressed_segmentation_block_size": [8, 8, 8]}
    assert make_codec("compressed_segmentation", block_size=4).scale_info == {
        "compressed_segmentation_block_size": [4, 4, 4]
    }
    assert "compressed_segmentation" in CODECS
    assert codec.unsupported(np.dtype(np.uint64), 1, "segmentation") is None
    assert "uint32 or uint64" in (codec.unsupported(np.dtype(np.uint16), 1, "image") or "")
    with pytest.raises(ValueError, match="uint32 or uint64"):
        codec.encode(np.zeros((2, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="block size"):
        make_codec("compressed_segmentation", block_size=(8, 0, 8))


def test_truncated_chunk_is_an_error() -> None:
    codec = make_codec("compressed_segmentation")
    with pytest.raises(ValueError, match="truncated"):
        codec.decode(b"\x01\x00", (1, 1, 1, 1), np.dtype(np.uint32))


def _write_flat(
    root: Path,
    vol: np.ndarray,
    chunk: tuple[int, int, int],
    offset: tuple[int, int, int],
    block: tuple[int, int, int],
) -> None:
    """A one-scale precomputed dataset in the flat layout, written with our codec only."""
    z, y, x, c = vol.shape
    codec = make_codec("compressed_segmentation", block_size=block)
    scale = {
        "key": "s0",
        "size": [x, y, z],
        "resolution": [4, 4, 40],
        "chunk_sizes": [list(chunk)],
        "voxel_offset": list(offset),
        "encoding": "compressed_segmentation",
        **codec.scale_info,
    }
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": str(vol.dtype),
        "num_channels": c,
        "scales": [scale],
    }
    (root / "info").write_text(json.dumps(info))
    (root / "s0").mkdir()
    for z0 in range(0, z, chunk[2]):
        for y0 in range(0, y, chunk[1]):
            for x0 in range(0, x, chunk[0]):
                z1, y1, x1 = min(z0 + chunk[2], z), min(y0 + chunk[1], y), min(x0 + chunk[0], x)
                name = "_".join(
                    f"{a + o}-{b + o}"
                    for a, b, o in zip((x0, y0, z0), (x1, y1, z1), offset, strict=True)
                )
                (root / "s0" / name).write_bytes(codec.encode(vol[z0:z1, y0:y1, x0:x1]))


@pytest.mark.parametrize(
    ("dtype", "shape", "chunk", "offset", "block"),
    [
        ("uint32", (13, 30, 21, 1), (16, 16, 8), (0, 0, 0), (8, 8, 8)),
        ("uint64", (9, 17, 20, 2), (8, 8, 4), (3, 5, 7), (4, 2, 8)),
        ("uint64", (5, 6, 7, 1), (7, 6, 5), (100, 0, 2), (8, 8, 8)),
    ],
)
def test_tensorstore_reads_our_chunks(
    tmp_path: Path,
    dtype: str,
    shape: Shape,
    chunk: tuple[int, int, int],
    offset: tuple[int, int, int],
    block: tuple[int, int, int],
) -> None:
    rng = np.random.default_rng(7)
    # Large blocky labels plus some noise and values above 2**32 for uint64.
    coarse = rng.integers(0, 2**31, size=(*(-(-n // 4) for n in shape[:3]), shape[3]))
    vol = np.repeat(np.repeat(np.repeat(coarse, 4, 0), 4, 1), 4, 2)
    vol = vol[: shape[0], : shape[1], : shape[2]].astype(dtype)
    vol[rng.random(shape) < 0.05] = 2**33 + 5 if dtype == "uint64" else 77
    _write_flat(tmp_path, vol, chunk, offset, block)
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(tmp_path)}}
    ).result()
    got = np.asarray(store.read().result())  # [x, y, z, c]
    np.testing.assert_array_equal(got, vol.transpose(2, 1, 0, 3))
