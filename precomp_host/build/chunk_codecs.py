"""Chunk encodings of the precomputed format (a scale's ``encoding``): array <-> bytes.

The central class is :class:`ChunkCodec`; :data:`CODECS` maps the spec's names to them and
:func:`make_codec` builds one with its options. Arrays here are in our in-memory order
``[z, y, x, channel]`` (C order), which is byte for byte the spec's ``[x, y, z, channel]`` in
Fortran order (volume.md, "raw chunk encoding"). Not to be confused with HTTP content encodings
(``encodings``).
"""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

Options = dict[str, Any]


@dataclass(frozen=True)
class ChunkCodec:
    """One chunk ``encoding``: how a ``[z, y, x, c]`` array becomes the bytes of a chunk file."""

    name: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes, tuple[int, int, int, int], np.dtype[Any]], np.ndarray]
    #: Returns why this codec cannot store (dtype, channels, volume type), or None when it can.
    unsupported: Callable[[np.dtype[Any], int, str], str | None]
    #: Extra members of the scale's ``info`` entry (e.g. ``jpeg_quality``).
    scale_info: Options = field(default_factory=dict)
    #: Whether gzip shrinks its chunks: a sharded scale then gzips each chunk's data
    #: (sharded.md ``data_encoding``). JPEG and PNG are compressed already.
    gzips: bool = True


def _le(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return dtype.newbyteorder("<")


def _raw_encode(arr: np.ndarray) -> bytes:
    # [z, y, x, c] in C order puts x fastest; the spec stores channel slowest, so move c first.
    return np.ascontiguousarray(np.moveaxis(arr, 3, 0), dtype=_le(arr.dtype)).tobytes()


def _raw_decode(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype[Any]) -> np.ndarray:
    z, y, x, c = shape
    flat = np.frombuffer(data, dtype=_le(dtype))
    if flat.size != z * y * x * c:
        raise ValueError(f"raw chunk has {flat.size} values, expected {z * y * x * c}")
    return np.moveaxis(flat.reshape(c, z, y, x), 0, 3).astype(dtype, copy=False)


def _raw_unsupported(dtype: np.dtype[Any], channels: int, volume_type: str) -> str | None:
    return None


def _image_unsupported(name: str) -> Callable[[np.dtype[Any], int, str], str | None]:
    def check(dtype: np.dtype[Any], channels: int, volume_type: str) -> str | None:
        if dtype != np.uint8:
            return f"{name} encoding needs uint8 data, got {dtype}"
        if channels not in (1, 3):
            return f"{name} encoding needs 1 or 3 channels, got {channels}"
        return None

    return check


def _as_image(arr: np.ndarray) -> Any:
    from PIL import Image

    # volume.md: a jpeg/png chunk is one image of width x and height y*z (z slowest).
    z, y, x, c = arr.shape
    plane = np.ascontiguousarray(arr.reshape(z * y, x, c))
    return Image.fromarray(plane[:, :, 0] if c == 1 else plane, "L" if c == 1 else "RGB")


def _from_image(data: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
    from PIL import Image

    z, y, x, c = shape
    with Image.open(io.BytesIO(data)) as im:
        plane = np.asarray(im.convert("L" if c == 1 else "RGB"))
    return plane.reshape(z, y, x, c)


def _jpeg_codec(quality: int) -> ChunkCodec:
    # libjpeg's scale; Pillow silently clamps anything else, and info would record it.
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be 1 to 100, got {quality}")

    def encode(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        # Baseline, no subsampling of chroma: neuroglancer decodes with its own libjpeg-turbo
        # build, and 4:4:4 keeps RGB edges sharp at the same quality.
        _as_image(arr).save(buf, "JPEG", quality=quality, subsampling=0, optimize=False)
        return buf.getvalue()

    return ChunkCodec(
        "jpeg",
        encode,
        lambda data, shape, dtype: _from_image(data, shape),
        _image_unsupported("jpeg"),
        {"jpeg_quality": quality},
        gzips=False,
    )


def _png_codec() -> ChunkCodec:
    def encode(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        # compress_level 6 without optimize is deterministic and fast; the chunk is usually
        # gzip-free afterwards since PNG is already deflated (is_effective says no).
        _as_image(arr).save(buf, "PNG", compress_level=6, optimize=False)
        return buf.getvalue()

    return ChunkCodec(
        "png",
        encode,
        lambda data, shape, dtype: _from_image(data, shape),
        _image_unsupported("png"),
        gzips=False,
    )


def _cseg_unsupported(dtype: np.dtype[Any], channels: int, volume_type: str) -> str | None:
    # volume.md: compressed_segmentation is for uint32 and uint64 data.
    if dtype not in (np.uint32, np.uint64):
        return f"compressed_segmentation encoding needs uint32 or uint64 data, got {dtype}"
    return None


def _cseg_codec(block_size: tuple[int, int, int]) -> ChunkCodec:
    import compressed_segmentation as cseg

    # The binding (2.3) takes &data[0,0,0,0] with strides derived from ``order`` and leaves
    # the channel stride unset, so it is only right for one contiguous channel at a time. We
    # encode each channel alone and write the multi-channel header ourselves (volume.md,
    # "compressed_segmentation chunk encoding": num_channels uint32le offsets, in 32-bit words
    # from the start of the chunk, to each channel's compressed data).
    def encode(arr: np.ndarray) -> bytes:
        reason = _cseg_unsupported(arr.dtype, arr.shape[3], "segmentation")
        if reason:
            raise ValueError(reason)
        channels = arr.shape[3]
        parts = []
        for ch in range(channels):
            # [z, y, x] C-contiguous is [x, y, z] Fortran-contiguous: what order="F" assumes.
            zyx = np.ascontiguousarray(arr[:, :, :, ch], dtype=_le(arr.dtype))
            data: bytes = cseg.compress(zyx.T[:, :, :, None], block_size=block_size, order="F")
            parts.append(data[4:])  # drop the one-channel header (a single offset, 1)
        offsets, at = [], channels
        for part in parts:
            offsets.append(at)
            at += len(part) // 4
        return np.array(offsets, "<u4").tobytes() + b"".join(parts)

    def decode(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype[Any]) -> np.ndarray:
        z, y, x, c = shape
        if len(data) % 4 or len(data) < 4 * c:
            raise ValueError(f"compressed_segmentation chunk of {len(data)} bytes is truncated")
        words = np.frombuffer(data, "<u4")
        offsets = [*words[:c].tolist(), len(words)]
        out = np.empty(shape, dtype)
        for ch in range(c):
            start, stop = offsets[ch], offsets[ch + 1]
            if not c <= start <= stop <= len(words):
                raise ValueError(f"compressed_segmentation channel offset {start} out of range")
            one = np.uint32(1).tobytes() + data[4 * start : 4 * stop]
            xyz = cseg.decompress(one, (x, y, z), np.dtype(dtype), block_size=block_size, order="F")
            out[:, :, :, ch] = np.asarray(xyz).T
        return out

    return ChunkCodec(
        "compressed_segmentation",
        encode,
        decode,
        _cseg_unsupported,
        {"compressed_segmentation_block_size": list(block_size)},
    )


def _block_size(value: Any) -> tuple[int, int, int]:
    if isinstance(value, int):
        value = (value, value, value)
    b = tuple(int(v) for v in value)
    if len(b) != 3 or any(v <= 0 for v in b):
        raise ValueError(f"compressed_segmentation block size must be 3 positive integers: {value}")
    return (b[0], b[1], b[2])


RAW = ChunkCodec("raw", _raw_encode, _raw_decode, _raw_unsupported)


def _raw_factory() -> ChunkCodec:
    return RAW


def _jpeg_factory(quality: int = 95) -> ChunkCodec:
    return _jpeg_codec(int(quality))


def _cseg_factory(block_size: int | tuple[int, int, int] = (8, 8, 8)) -> ChunkCodec:
    return _cseg_codec(_block_size(block_size))


#: Factories by the spec's encoding name; each takes exactly the codec options it understands.
CODECS: dict[str, Callable[..., ChunkCodec]] = {
    "raw": _raw_factory,
    "jpeg": _jpeg_factory,
    "png": _png_codec,
    "compressed_segmentation": _cseg_factory,
}


def make_codec(name: str, **options: Any) -> ChunkCodec:
    """The codec for ``encoding`` ``name``; ``ValueError`` for names we cannot write and for
    options the codec does not take (a misspelled option must not be silently ignored)."""
    try:
        factory = CODECS[name]
    except KeyError:
        raise ValueError(
            f"unknown chunk encoding {name!r} (choose from {', '.join(CODECS)})"
        ) from None
    known = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        raise ValueError(f"unknown option {unknown[0]!r} for the {name} encoding ({takes})")
    return factory(**options)
