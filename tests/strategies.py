"""Hypothesis strategies for the core model: :func:`scales`, :func:`chunk_keys`, and more.

Scales have odd sizes (so edge chunks are clipped), non-zero voxel offsets and chunk sizes that
do not divide the size; datasets carry members the model does not know, at the top level and in
each scale, which must survive a round trip (tensorstore's ``extra_attributes``).

Strategy factories are cached: composites draw from them many times per example, and building
a recursive strategy anew each time dominated the run time.
"""

from __future__ import annotations

import string
from functools import cache
from typing import Any

from hypothesis import strategies as st

from precomp_host.core.model import DATA_TYPES, ChunkKey, Scale, Vec3
from precomp_host.core.sharding import DATA_ENCODINGS, HASHES, ShardingSpec

#: Characters of scale keys: what real keys use (``8_8_40``, ``s0``, ``4.5_4.5_40``) plus a few
#: punctuation marks. No ``/`` (a key is one path segment) and no control characters.
SCALE_KEY_ALPHABET = string.ascii_letters + string.digits + "_-.:"

#: Members of ``info`` and of a scale that the model reads; unknown members are anything else.
DATASET_MEMBERS = frozenset(
    {"type", "data_type", "num_channels", "scales", "mesh", "segment_properties", "@type"}
)
SCALE_MEMBERS = frozenset(
    {"key", "size", "resolution", "chunk_sizes", "voxel_offset", "encoding", "sharding"}
)


@cache
def scale_keys() -> st.SearchStrategy[str]:
    return st.text(SCALE_KEY_ALPHABET, min_size=1, max_size=12)


@cache
def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN: it is not JSON and is never equal to itself)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=4,
    )


@cache
def extra_members(known: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text(min_size=1, max_size=10).filter(lambda k: k not in known)
    return st.dictionaries(names, json_values(), max_size=2)


@cache
def vec3s(min_value: int, max_value: int) -> st.SearchStrategy[Vec3]:
    one = st.integers(min_value, max_value)
    return st.tuples(one, one, one)


@cache
def resolutions() -> st.SearchStrategy[tuple[float, float, float]]:
    one = st.integers(1, 4000) | st.floats(0.01, 4000.0, allow_nan=False)
    return st.tuples(one, one, one)


@st.composite
def scales(draw: st.DrawFn, max_grid: int = 4, max_chunk: int = 40) -> Scale:
    """A scale of at most ``max_grid`` chunks per axis, the last one usually clipped.

    The size is drawn per axis as ``(n - 1) * chunk + rest`` with ``1 <= rest <= chunk``, so
    every grid shape from 1 to ``max_grid`` occurs, with and without a clipped edge.
    """
    chunk = draw(vec3s(1, max_chunk))
    grid = draw(vec3s(1, max_grid))
    rest = tuple(draw(st.integers(1, c)) for c in chunk)
    size = tuple((n - 1) * c + r for n, c, r in zip(grid, chunk, rest, strict=True))
    # Mostly non-zero offsets, including negative ones and ones that are not multiples of the
    # chunk size.
    offset = draw(vec3s(-500, 500))
    return Scale(
        key=draw(scale_keys()),
        size=(size[0], size[1], size[2]),
        resolution=draw(resolutions()),
        chunk_size=chunk,
        voxel_offset=offset,
    )


@st.composite
def chunk_keys(draw: st.DrawFn, scale: Scale | None = None) -> ChunkKey:
    """A chunk of ``scale`` (drawn when not given)."""
    s = scale if scale is not None else draw(scales())
    gx, gy, gz = s.grid_shape()
    grid = (
        draw(st.integers(0, gx - 1)),
        draw(st.integers(0, gy - 1)),
        draw(st.integers(0, gz - 1)),
    )
    return s.chunk_key(grid)


@st.composite
def any_chunk_keys(draw: st.DrawFn) -> ChunkKey:
    """Any non-empty box, negative coordinates included (a negative voxel_offset)."""
    start = draw(vec3s(-(10**9), 10**9))
    shape = draw(vec3s(1, 10**4))
    stop = (start[0] + shape[0], start[1] + shape[1], start[2] + shape[2])
    return ChunkKey(draw(scale_keys()), start, stop)


@st.composite
def sharding_specs(draw: st.DrawFn) -> ShardingSpec:
    """Any valid spec, at the limits tensorstore enforces (minishard + shard bits <= 64)."""
    minishard_bits = draw(st.integers(0, 60))
    return ShardingSpec(
        preshift_bits=draw(st.integers(0, 64)),
        minishard_bits=minishard_bits,
        shard_bits=draw(st.integers(0, 64 - minishard_bits)),
        hash=draw(st.sampled_from(HASHES)),
        minishard_index_encoding=draw(st.sampled_from(DATA_ENCODINGS)),
        data_encoding=draw(st.sampled_from(DATA_ENCODINGS)),
    )


@st.composite
def scale_jsons(draw: st.DrawFn, key: str) -> dict[str, Any]:
    """One canonical ``scales`` entry (as ``Scale.to_json`` writes it), unknown members included.

    Sharded scales have a single chunk size (volume.md)."""
    sharding = draw(st.none() | sharding_specs())
    others = [] if sharding else draw(st.lists(vec3s(1, 512), max_size=2))
    return {
        "key": key,
        "size": list(draw(vec3s(1, 10**6))),
        "resolution": list(draw(resolutions())),
        "chunk_sizes": [list(draw(vec3s(1, 512))), *(list(c) for c in others)],
        "voxel_offset": list(draw(vec3s(-(10**6), 10**6))),
        "encoding": draw(st.sampled_from(["raw", "jpeg", "png", "compressed_segmentation"])),
        **({"sharding": sharding.to_json()} if sharding else {}),
        **draw(extra_members(SCALE_MEMBERS)),
    }


@st.composite
def dataset_jsons(draw: st.DrawFn) -> dict[str, Any]:
    """A canonical ``info`` document: every member ``Dataset.to_json`` writes, plus unknown ones."""
    keys = draw(st.lists(scale_keys(), min_size=1, max_size=3, unique=True))
    d: dict[str, Any] = {}
    if draw(st.booleans()):
        d["@type"] = "neuroglancer_multiscale_volume"
    d["type"] = draw(st.sampled_from(["image", "segmentation"]))
    d["data_type"] = draw(st.sampled_from(DATA_TYPES))
    d["num_channels"] = draw(st.integers(1, 4))
    d["scales"] = [draw(scale_jsons(k)) for k in keys]
    for name in ("mesh", "segment_properties"):
        if draw(st.booleans()):
            d[name] = draw(st.text(min_size=1, max_size=10))
    d.update(draw(extra_members(DATASET_MEMBERS)))
    return d
