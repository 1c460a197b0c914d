"""The precomputed ``info`` file as typed values, and the chunk-grid arithmetic.

The central class is :class:`Dataset` (the whole ``info``), made of :class:`Scale` values, each of
which tiles its voxel box ``[voxel_offset, voxel_offset + size)`` with :class:`ChunkKey` boxes.
Members this module does not model are kept in ``extra`` and written back unchanged, as
tensorstore's ``extra_attributes`` are (neuroglancer ``src/datasource/precomputed/volume.md``).
A scale's ``sharding`` member is typed (:class:`~.sharding.ShardingSpec`). Standard library and
``core.sharding`` only: everything else in the package builds on this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .sharding import InvalidShardingError, ShardingSpec

Vec3 = tuple[int, int, int]
Res3 = tuple[float, float, float]
VolumeType = Literal["image", "segmentation"]
#: The ``type`` values of an ``info``, the default (``image``) first.
VOLUME_TYPES: tuple[VolumeType, ...] = get_args(VolumeType)

#: The file that makes a folder a dataset (and a mesh or segment-property folder one of its
#: parts); written last by the build, so its appearance means "complete".
INFO_NAME = "info"
#: ``@type`` of a mesh folder's ``info`` (neuroglancer ``src/datasource/precomputed/meshes.md``).
LEGACY_MESH_TYPE = "neuroglancer_legacy_mesh"
MULTILOD_MESH_TYPE = "neuroglancer_multilod_draco"

#: Data types the spec allows for ``data_type``.
DATA_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")

#: A voxel coordinate in a chunk name: negative where the scale's ``voxel_offset`` is (volume.md
#: allows any integer offset; Neuroglancer then asks for ``-64-0_...``).
_COORDINATE = r"-?\d+"
#: One axis of a chunk name, ``<begin>-<end>`` (PCRE and Python alike).
RANGE_PATTERN = rf"{_COORDINATE}-{_COORDINATE}"
# ASCII and fullmatch: Python's \d also accepts other scripts' digits and its $ matches before a
# trailing newline; neither names a chunk (PCRE in nginx/Apache reads \d as ASCII too).
_CHUNK_NAME = re.compile(
    "_".join([rf"({_COORDINATE})-({_COORDINATE})"] * 3),
    re.ASCII,
)


def box_name(start: Vec3, stop: Vec3) -> str:
    """``<x0>-<x1>_<y0>-<y1>_<z0>-<z1>``: the spec's name for the voxel box ``[start, stop)``
    (chunks; mesh fragments and meshed regions are named after their box the same way)."""
    return "_".join(f"{a}-{b}" for a, b in zip(start, stop, strict=True))


class InvalidInfoError(ValueError):
    """An ``info`` document, or a chunk name, that does not follow the spec."""


@dataclass(frozen=True, order=True)
class ChunkKey:
    """One chunk of one scale: the voxel box ``[start, stop)``, ``voxel_offset`` included.

    The spec names a chunk ``<xBegin>-<xEnd>_<yBegin>-<yEnd>_<zBegin>-<zEnd>`` in the scale's
    voxel coordinates, with the end clipped to the volume bounds.
    """

    scale: str
    start: Vec3
    stop: Vec3

    @property
    def name(self) -> str:
        return box_name(self.start, self.stop)

    @property
    def shape(self) -> Vec3:
        x, y, z = (b - a for a, b in zip(self.start, self.stop, strict=True))
        return (x, y, z)

    @classmethod
    def parse(cls, scale: str, name: str) -> ChunkKey:
        """Read a chunk name; ``InvalidInfoError`` when it is not ``a-b_c-d_e-f`` with a < b."""
        m = _CHUNK_NAME.fullmatch(name)
        if m is None:
            raise InvalidInfoError(f"not a chunk name: {name!r}")
        v = [int(g) for g in m.groups()]
        start, stop = (v[0], v[2], v[4]), (v[1], v[3], v[5])
        if any(a >= b for a, b in zip(start, stop, strict=True)):
            raise InvalidInfoError(f"empty chunk box: {name!r}")
        return cls(scale, start, stop)


def _vec3(value: Any, what: str, *, positive: bool = False) -> Vec3:
    if not isinstance(value, Sequence) or len(value) != 3:
        raise InvalidInfoError(f"{what} must be a list of 3 integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or (positive and v <= 0):
            kind = "positive integers" if positive else "integers"
            raise InvalidInfoError(f"{what} must be 3 {kind}, got {value!r}")
        out.append(v)
    return (out[0], out[1], out[2])


def _res3(value: Any, what: str) -> Res3:
    if not isinstance(value, Sequence) or len(value) != 3:
        raise InvalidInfoError(f"{what} must be a list of 3 numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise InvalidInfoError(f"{what} must be 3 positive numbers, got {value!r}")
        out.append(v)
    return (out[0], out[1], out[2])


def _json_number(v: float) -> float | int:
    # 8.0 is written as 8, so that re-encoding an info we read gives back the same document.
    return int(v) if float(v).is_integer() else v


def scale_key_for(resolution: Res3) -> str:
    """The conventional key of a scale: its resolution in nm, e.g. ``8_8_40``."""
    return "_".join(str(_json_number(r)) for r in resolution)


@dataclass(frozen=True)
class Scale:
    """One resolution level of a volume (one entry of ``info["scales"]``)."""

    key: str
    size: Vec3
    resolution: Res3
    chunk_size: Vec3
    voxel_offset: Vec3 = (0, 0, 0)
    encoding: str = "raw"
    #: Further ``chunk_sizes`` entries after the first, which is the one we write.
    other_chunk_sizes: tuple[Vec3, ...] = ()
    #: How chunks are stored: one file each (``None``) or in shard files (sharded.md).
    sharding: ShardingSpec | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_sharded(self) -> bool:
        return self.sharding is not None

    @property
    def stop(self) -> Vec3:
        o, s = self.voxel_offset, self.size
        return (o[0] + s[0], o[1] + s[1], o[2] + s[2])

    def grid_shape(self) -> Vec3:
        """Number of chunks along each axis; the last one of each axis may be clipped."""
        x, y, z = (math.ceil(s / c) for s, c in zip(self.size, self.chunk_size, strict=True))
        return (x, y, z)

    def num_chunks(self) -> int:
        return math.prod(self.grid_shape())

    def chunk_key(self, grid: Vec3) -> ChunkKey:
        """The chunk at grid position ``grid``: the grid starts at ``voxel_offset`` (spec)."""
        if any(not 0 <= g < n for g, n in zip(grid, self.grid_shape(), strict=True)):
            raise IndexError(f"grid position {grid} outside {self.grid_shape()}")
        start = tuple(
            o + g * c for o, g, c in zip(self.voxel_offset, grid, self.chunk_size, strict=True)
        )
        stop = tuple(
            min(a + c, e) for a, c, e in zip(start, self.chunk_size, self.stop, strict=True)
        )
        return ChunkKey(self.key, (start[0], start[1], start[2]), (stop[0], stop[1], stop[2]))

    def grid_index(self, key: ChunkKey) -> Vec3:
        """Grid position of ``key``; ``InvalidInfoError`` unless it is exactly one of our chunks.

        Strict like tensorstore's ``KeyFormatter::ParseKey``: a box that is not aligned to the
        grid or whose end is not the clipped chunk end names no chunk.
        """
        if key.scale != self.key:
            raise InvalidInfoError(f"chunk {key.name} belongs to scale {key.scale!r}")
        grid = []
        for a, o, c in zip(key.start, self.voxel_offset, self.chunk_size, strict=True):
            if a < o or (a - o) % c:
                raise InvalidInfoError(f"chunk {key.name} is not aligned to the chunk grid")
            grid.append((a - o) // c)
        g = (grid[0], grid[1], grid[2])
        if (
            any(n >= m for n, m in zip(g, self.grid_shape(), strict=True))
            or self.chunk_key(g) != key
        ):
            raise InvalidInfoError(f"chunk {key.name} is not a chunk of scale {self.key}")
        return g

    def iter_chunk_keys(self, z_rows: range | None = None) -> Iterator[ChunkKey]:
        """Every chunk, x fastest then y then z; ``z_rows`` limits the z grid rows."""
        gx, gy, gz = self.grid_shape()
        rows = z_rows if z_rows is not None else range(gz)
        return self.iter_chunk_keys_in((0, 0, rows.start), (gx, gy, rows.stop))

    def iter_chunk_keys_in(self, g0: Vec3, g1: Vec3) -> Iterator[ChunkKey]:
        """The chunks of the grid box ``[g0, g1)``, x fastest then y then z."""
        for k in range(g0[2], g1[2]):
            for j in range(g0[1], g1[1]):
                for i in range(g0[0], g1[0]):
                    yield self.chunk_key((i, j, k))

    def grid_box_of(self, start: Vec3, stop: Vec3) -> tuple[Vec3, Vec3]:
        """The grid box of the chunks that meet the voxel box ``[start, stop)`` (absolute)."""
        off, c = self.voxel_offset, self.chunk_size
        a = [(s - o) // n for s, o, n in zip(start, off, c, strict=True)]
        b = [-(-(e - o) // n) for e, o, n in zip(stop, off, c, strict=True)]
        return (a[0], a[1], a[2]), (b[0], b[1], b[2])

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Scale:
        if not isinstance(obj, Mapping):
            raise InvalidInfoError(f"a scale must be an object, got {obj!r}")
        try:
            key = obj["key"]
            sizes = obj["chunk_sizes"]
        except KeyError as e:
            raise InvalidInfoError(f"scale is missing {e.args[0]!r}") from None
        if not isinstance(key, str) or not key:
            raise InvalidInfoError(f"scale key must be a non-empty string, got {key!r}")
        if not isinstance(sizes, Sequence) or not sizes:
            raise InvalidInfoError(f"scale {key}: chunk_sizes must be a non-empty list")
        chunk_sizes = [_vec3(c, f"scale {key}: chunk_sizes", positive=True) for c in sizes]
        known = {"key", "size", "resolution", "chunk_sizes", "voxel_offset", "encoding", "sharding"}
        encoding = obj.get("encoding", "raw")
        if not isinstance(encoding, str):
            raise InvalidInfoError(f"scale {key}: encoding must be a string")
        sharding = None
        if obj.get("sharding") is not None:
            try:
                sharding = ShardingSpec.from_json(obj["sharding"])
            except InvalidShardingError as e:
                raise InvalidInfoError(f"scale {key}: {e}") from None
            if len(chunk_sizes) != 1:  # volume.md: a sharded scale has a single chunk size
                raise InvalidInfoError(f"scale {key}: a sharded scale has one chunk size")
        return cls(
            key=key,
            size=_vec3(obj.get("size"), f"scale {key}: size", positive=True),
            resolution=_res3(obj.get("resolution"), f"scale {key}: resolution"),
            chunk_size=chunk_sizes[0],
            voxel_offset=_vec3(obj.get("voxel_offset", [0, 0, 0]), f"scale {key}: voxel_offset"),
            encoding=encoding,
            other_chunk_sizes=tuple(chunk_sizes[1:]),
            sharding=sharding,
            extra={k: v for k, v in obj.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": list(self.size),
            "resolution": [_json_number(r) for r in self.resolution],
            "chunk_sizes": [list(self.chunk_size), *(list(c) for c in self.other_chunk_sizes)],
            "voxel_offset": list(self.voxel_offset),
            "encoding": self.encoding,
            **({"sharding": self.sharding.to_json()} if self.sharding is not None else {}),
            **self.extra,
        }


@dataclass(frozen=True)
class Dataset:
    """The ``info`` file of a precomputed volume."""

    type: VolumeType
    data_type: str
    num_channels: int
    scales: tuple[Scale, ...]
    mesh: str | None = None
    segment_properties: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def scale(self, key: str) -> Scale:
        for s in self.scales:
            if s.key == key:
                return s
        raise KeyError(key)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Dataset:
        """Parse a decoded ``info``; raises :class:`InvalidInfoError` with the first problem."""
        if not isinstance(obj, Mapping):
            raise InvalidInfoError("info must be a JSON object")
        vtype = obj.get("type")
        if vtype not in ("image", "segmentation"):
            raise InvalidInfoError(f"type must be 'image' or 'segmentation', got {vtype!r}")
        data_type = obj.get("data_type")
        if data_type not in DATA_TYPES:
            raise InvalidInfoError(f"unsupported data_type {data_type!r}")
        channels = obj.get("num_channels")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise InvalidInfoError(f"num_channels must be a positive integer, got {channels!r}")
        raw_scales = obj.get("scales")
        if not isinstance(raw_scales, Sequence) or not raw_scales:
            raise InvalidInfoError("scales must be a non-empty list")
        scales = tuple(Scale.from_json(s) for s in raw_scales)
        if len({s.key for s in scales}) != len(scales):
            raise InvalidInfoError("scale keys must be unique")
        optional = {}
        for name in ("mesh", "segment_properties"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidInfoError(f"{name} must be a string path, got {value!r}")
            optional[name] = value
        known = {"type", "data_type", "num_channels", "scales", "mesh", "segment_properties"}
        return cls(
            type=vtype,
            data_type=data_type,
            num_channels=channels,
            scales=scales,
            mesh=optional["mesh"],
            segment_properties=optional["segment_properties"],
            extra={k: v for k, v in obj.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "@type" in self.extra:  # conventionally first
            out["@type"] = self.extra["@type"]
        out.update(
            type=self.type,
            data_type=self.data_type,
            num_channels=self.num_channels,
            scales=[s.to_json() for s in self.scales],
        )
        if self.mesh is not None:
            out["mesh"] = self.mesh
        if self.segment_properties is not None:
            out["segment_properties"] = self.segment_properties
        out.update((k, v) for k, v in self.extra.items() if k != "@type")
        return out
