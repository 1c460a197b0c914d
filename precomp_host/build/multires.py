"""Multi-resolution meshes (``neuroglancer_multilod_draco``): :func:`multires_mesh`.

The format is neuroglancer's ``src/datasource/precomputed/meshes.md`` ("Multi-resolution mesh
format"). A segment's mesh is stored as levels of detail (LODs); LOD ``l`` is cut into the
nodes of an octree whose cells are ``chunk_shape * 2**l`` in "stored model" space, each node
one Draco-encoded fragment with integer vertex positions quantized to the node's box. A binary
manifest (:class:`Manifest`, ``<segment>.index``) lists every LOD's scale, its nodes in Z-curve
order and the byte size of each fragment; the fragments are concatenated, LOD 0 first, into one
data file (``<segment>``) read with Range, or stored in a shard just before the manifest.

Choices, and why:

- *Stored model space is voxels* and ``transform`` scales by the resolution, as igneous writes
  it: octree cells and ``lod_scales`` are then in voxels (``lod_scales[l] = 2**l``: LOD 0 is as
  fine as the voxels, each coarser LOD twice as coarse).
- *One octree per segment* (:func:`plan_octree`): its origin is the segment's lowest voxel
  corner, its LOD 0 cell at least ``min_chunk`` voxels, and it has enough LODs (up to
  ``max_lods``) for the coarsest to be one node covering the whole segment.
- *LODs by quadric simplification*, each from the previous one, in nm so that the error bound
  is physical: zmesh's fast quadric mesh reduction (``simplify_fqmr``, the legacy meshes'
  default, as igneous's multires task uses pyfqmr), whose passes are bounded. zmesh's other
  simplifier (``Mesher.simplify``) never returned on a 14-triangle box (measured), and a
  build must not hang on one odd segment.
  Vertices are then clamped to the LOD 0 mesh's box: a quadric optimum may lie a little outside
  a convex corner, and a coarse LOD must not reach past the segment.
- *Cutting into cells* (:func:`cut_on_grid`) splits triangles on the grid planes. For
  ``lod > 0`` neuroglancer splits each fragment into its 8 children's octants when it draws
  part of a node and part of its children (``neuroglancer_draco.cc``: a vertex below the
  partition point ``2**(bits-1)`` is low, above it high, equal both), and meshes.md requires
  that no triangle crosses those octants. So LOD ``l > 0`` is cut on its children's grid, and
  each quantized coordinate is clamped to its triangle's side of the partition point (a cut
  vertex can round to either side of it by float noise).
- *Every node's parent exists*: neuroglancer reaches a node only from its parent at the next
  LOD, so a parent the coarser mesh does not touch is stored as an empty fragment (size 0, as
  meshes.md's readers allow).
- *Draco positions are uint32*: DracoPy then stores an integer attribute, which neuroglancer
  reads as is (it skips Draco's dequantization; meshes.md: "The built-in Draco attribute
  quantization is not supported").

Over 400 lines: the octree plan, the grid cutter, quantization and the two storage forms follow
the one spec section (meshes.md, multi-resolution) and share its arithmetic; the cutter is the
part to move out if it grows.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.model import MULTILOD_MESH_TYPE
from ..core.sharding import ShardingSpec
from .meshes import fqmr_passes
from .shards import write_shard

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from .writer import Writer

Vec3 = tuple[int, int, int]
Res3 = tuple[float, float, float]

#: meshes.md: "Must be 10 or 16".
QUANTIZATION_BITS = (10, 16)


@dataclass(frozen=True)
class MultiresSettings:
    """How segment meshes become multi-resolution meshes.

    >>> settings = MultiresSettings(resolution=(8.0, 8.0, 40.0))
    >>> mesh = multires_mesh(vertices_nm, faces, settings)

    :param resolution: nm per voxel: the unit of stored model space (``transform``).
    :param min_chunk: smallest LOD 0 octree cell, in voxels (igneous's ``min_chunk_size``).
    :param max_lods: at most this many LODs; a larger segment gets larger cells instead.
    :param vertex_quantization_bits: 10 or 16; a vertex is off by at most half a step of
        ``cell / (2**bits - 1)``, so 16 (igneous's default) keeps even coarse LODs sub-voxel.
    :param reduction_per_lod: triangles of LOD ``l`` per triangle of LOD ``l + 1``: a node
        covers 8 times the volume but about 4 times the surface of a child, so 4 keeps the
        triangles per node, hence per request, roughly constant.
    :param draco_compression_level: 0-10; 7 is a good size/time balance for small fragments.
    """

    resolution: Res3
    min_chunk: Vec3 = (64, 64, 64)
    max_lods: int = 8
    vertex_quantization_bits: int = 16
    reduction_per_lod: int = 4
    draco_compression_level: int = 7

    def __post_init__(self) -> None:
        if self.vertex_quantization_bits not in QUANTIZATION_BITS:
            raise ValueError(f"vertex_quantization_bits must be 10 or 16, got {self}")
        if self.max_lods < 1 or min(self.min_chunk) < 1 or min(self.resolution) <= 0:
            raise ValueError(f"max_lods, min_chunk and resolution must be positive: {self}")

    def info(self, sharding: ShardingSpec | None = None) -> dict[str, Any]:
        """The mesh directory's ``info`` (meshes.md, "Multi-resolution mesh info")."""
        rx, ry, rz = self.resolution
        out: dict[str, Any] = {
            "@type": MULTILOD_MESH_TYPE,
            "vertex_quantization_bits": self.vertex_quantization_bits,
            # 4x3 row-major, stored model (voxels) -> model (nm)
            "transform": [rx, 0, 0, 0, 0, ry, 0, 0, 0, 0, rz, 0],
            "lod_scale_multiplier": 1.0,
        }
        if sharding is not None:
            out["sharding"] = sharding.to_json()
        return out


# -- the octree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Octree:
    """A segment's octree: ``grid_origin`` and ``chunk_shape`` (LOD 0 cell) in voxels."""

    grid_origin: Vec3
    chunk_shape: Vec3
    num_lods: int

    def cell(self, lod: int) -> np.ndarray:
        return np.array(self.chunk_shape, np.float64) * (1 << lod)


def plan_octree(low: Sequence[float], high: Sequence[float], settings: MultiresSettings) -> Octree:
    """The octree of a mesh whose vertices lie in ``[low, high]`` (voxels): the coarsest LOD is
    one node holding them all, with as few LODs as ``min_chunk`` allows."""
    origin = tuple(math.floor(v) for v in low)
    extent = [max(1, math.ceil(h) - o) for h, o in zip(high, origin, strict=True)]
    ratio = max(e / c for e, c in zip(extent, settings.min_chunk, strict=True))
    num_lods = min(settings.max_lods, 1 + max(0, math.ceil(math.log2(ratio))))
    top = 1 << (num_lods - 1)
    chunk = tuple(max(c, -(-e // top)) for e, c in zip(extent, settings.min_chunk, strict=True))
    return Octree((origin[0], origin[1], origin[2]), (chunk[0], chunk[1], chunk[2]), num_lods)


def zorder_key(x: int, y: int, z: int) -> int:
    """Position on the Z-curve: bits interleaved, x least significant (meshes.md's order)."""
    key = 0
    for bit in range(max(x.bit_length(), y.bit_length(), z.bit_length())):
        key |= ((x >> bit) & 1) << (3 * bit)
        key |= ((y >> bit) & 1) << (3 * bit + 1)
        key |= ((z >> bit) & 1) << (3 * bit + 2)
    return key


def quantize(
    vertices: np.ndarray, node_origin: np.ndarray, node_size: np.ndarray, bits: int
) -> np.ndarray:
    """uint32 positions in ``[0, 2**bits)`` of ``vertices`` in the node's box (meshes.md's
    formula inverted, rounded to nearest); vertices outside the box are clamped to it."""
    top = (1 << bits) - 1
    scaled = (np.asarray(vertices, np.float64) - node_origin) / node_size * top
    out: np.ndarray = np.clip(np.floor(scaled + 0.5), 0, top).astype(np.uint32)
    return out


def partition_point(bits: int) -> int:
    """The quantized coordinate splitting a node into children (``neuroglancer_draco.cc``)."""
    return 1 << (bits - 1)


def clamp_to_octants(corners: np.ndarray, bits: int) -> np.ndarray:
    """Quantized triangle corners ``[n, 3, 3]``, each triangle kept on its side of each
    partition plane.

    A triangle's side per axis is that of its centroid; its corners' coordinates are clamped
    to ``<= p`` (low side) or ``>= p`` (high side). Cut vertices lie on the plane up to float32
    noise, so this moves them by at most a rounding step; a vertex shared by triangles on both
    sides lies on the plane and quantizes to ``p``, so it is not moved at all.
    """
    p = partition_point(bits)
    out = corners.astype(np.int64)
    high = out.sum(axis=1) >= 3 * p  # centroid side, per triangle and axis
    out = np.where(high[:, None, :], np.maximum(out, p), np.minimum(out, p))
    return out.astype(np.uint32)


# -- one segment --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A segment's ``<segment>.index`` (meshes.md, "Multi-resolution mesh manifest").

    :param positions: per LOD, ``[n, 3]`` node positions in Z-curve order.
    :param sizes: per LOD, the byte size of each node's fragment (0: an empty node).
    """

    octree: Octree
    lod_scales: tuple[float, ...]
    positions: tuple[np.ndarray, ...]
    sizes: tuple[tuple[int, ...], ...]

    def to_bytes(self) -> bytes:
        n = self.octree.num_lods
        parts = [
            struct.pack("<3f", *self.octree.chunk_shape),
            struct.pack("<3f", *self.octree.grid_origin),
            struct.pack("<I", n),
            struct.pack(f"<{n}f", *self.lod_scales),
            bytes(12 * n),  # vertex_offsets: all zero, positions are relative to each node
            struct.pack(f"<{n}I", *(len(s) for s in self.sizes)),
        ]
        for positions, sizes in zip(self.positions, self.sizes, strict=True):
            # [3, n] C order: all x, then all y, then all z
            parts.append(np.ascontiguousarray(positions.T, dtype="<u4").tobytes())
            parts.append(struct.pack(f"<{len(sizes)}I", *sizes))
        return b"".join(parts)


@dataclass(frozen=True)
class MultiresMesh:
    """One segment's manifest and its fragment data (every fragment, LOD 0 first)."""

    manifest: Manifest
    data: bytes = field(repr=False)


def build_lods(
    vertices_nm: np.ndarray, faces: np.ndarray, num_lods: int, settings: MultiresSettings
) -> list[tuple[np.ndarray, np.ndarray]]:
    """LOD 0 (the mesh itself) and ``num_lods - 1`` coarser meshes, vertices in nm."""
    import zmesh

    vertices = np.asarray(vertices_nm, np.float64)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    # Simplified relative to the segment: vertices are float32 in the simplifier.
    mesh = zmesh.Mesh((vertices - low).astype(np.float32), faces.astype(np.uint32), None)
    lods = [(vertices, np.asarray(faces))]
    for lod in range(1, num_lods):
        if len(mesh.faces) > 4:  # a tetrahedron is as coarse as a closed mesh gets
            simpler = zmesh.simplify_fqmr(
                mesh,
                max(4, len(mesh.faces) // settings.reduction_per_lod),
                # LOD l stands for voxels 2**l times larger (lod_scales): allow errors of
                # that order, in nm along the coarsest axis.
                max_iterations=fqmr_passes((1 << lod) * max(settings.resolution)),
            )
            # Guard against a degenerate result (no triangles, or non-finite vertices)
            # on meshes of a few triangles: such a LOD stays as the previous one.
            if len(simpler.faces) and np.isfinite(simpler.vertices).all():
                mesh = simpler
        v = np.clip(mesh.vertices.astype(np.float64) + low, low, high)
        lods.append((v, mesh.faces))
    return lods


def _intersect(u: np.ndarray, v: np.ndarray, axis: int, plane: np.ndarray) -> np.ndarray:
    """Where edges ``u-v`` (``[n, 3]``) meet the planes, computed from the low end: the two
    triangles sharing an edge get bitwise the same point, so cut meshes stay watertight."""
    swap = (u[:, axis] > v[:, axis])[:, None]
    lo, hi = np.where(swap, v, u), np.where(swap, u, v)
    t = (plane - lo[:, axis]) / (hi[:, axis] - lo[:, axis])
    out: np.ndarray = lo + t[:, None] * (hi - lo)
    out[:, axis] = plane
    return out


def _split(tris: np.ndarray, axis: int, plane: np.ndarray) -> np.ndarray:
    """Triangles ``[n, 3, 3]`` that cross their plane, each cut into 2 or 3 on either side of
    it, in the same winding order."""
    side = np.sign(tris[:, :, axis] - plane[:, None])
    # Rotate each triangle so that its odd vertex comes first: the one on the plane if any,
    # else the one alone on its side.
    on = side == 0
    alone = side != np.roll(side, -1, axis=1)
    alone &= side != np.roll(side, 1, axis=1)
    first = np.where(on.any(axis=1), on.argmax(axis=1), alone.argmax(axis=1))
    rot = tris[np.arange(len(tris))[:, None], (first[:, None] + np.arange(3)) % 3]
    a, b, c = rot[:, 0], rot[:, 1], rot[:, 2]
    pieces = []
    touching = on.any(axis=1)
    if touching.any():  # a on the plane, b and c on either side: cut b-c
        m = touching
        p = _intersect(b[m], c[m], axis, plane[m])
        pieces += [np.stack([a[m], b[m], p], 1), np.stack([a[m], p, c[m]], 1)]
    if (~touching).any():  # a alone on its side: cut a-b and a-c
        m = ~touching
        p = _intersect(a[m], b[m], axis, plane[m])
        q = _intersect(a[m], c[m], axis, plane[m])
        pieces += [
            np.stack([a[m], p, q], 1),
            np.stack([p, b[m], c[m]], 1),
            np.stack([p, c[m], q], 1),
        ]
    return np.concatenate(pieces)


def cut_on_grid(tris: np.ndarray, cell: np.ndarray) -> dict[Vec3, np.ndarray]:
    """Triangles ``[n, 3, 3]`` cut on the grid of ``cell`` from 0, grouped by grid cell: no
    piece crosses a grid plane, and together they are the same surface.

    zmesh's ``chunk_mesh`` does this too, but left triangles that cross several planes uncut
    (measured: a piece of cell x=1 reaching x=4.6 with 8-voxel cells).
    """
    tris = np.asarray(tris, np.float64)
    for axis in range(3):
        done = []
        while len(tris):
            low, high = tris[:, :, axis].min(axis=1), tris[:, :, axis].max(axis=1)
            # the first plane above each triangle's lowest point
            plane = (np.floor(low / cell[axis]) + 1) * cell[axis]
            crossing = plane < high
            done.append(tris[~crossing])
            tris = _split(tris[crossing], axis, plane[crossing]) if crossing.any() else tris[:0]
        tris = np.concatenate(done)
    keys = np.floor(tris.mean(axis=1) / cell).astype(np.int64)
    out: dict[Vec3, np.ndarray] = {}
    order = np.lexsort(keys.T[::-1])
    keys, tris = keys[order], tris[order]
    bounds = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    for k, group in zip(np.split(keys, bounds), np.split(tris, bounds), strict=True):
        if len(group):
            out[(int(k[0, 0]), int(k[0, 1]), int(k[0, 2]))] = group
    return out


def _encode(corners: np.ndarray, level: int) -> bytes:
    """Draco bytes of triangles given by quantized corner positions ``[n, 3, 3]``; shared
    vertices are merged and triangles that quantized to a line or point are dropped."""
    import DracoPy

    # One uint64 key per position (3 x 16 bits): np.unique on rows sorts structured values,
    # 30x slower (measured: 1.8 s of a 5.3 s segment).
    flat = corners.reshape(-1, 3).astype(np.uint64)
    keys, index = np.unique(
        (flat[:, 0] << 32) | (flat[:, 1] << 16) | flat[:, 2], return_inverse=True
    )
    unique = np.stack([keys >> 32, (keys >> 16) & 0xFFFF, keys & 0xFFFF], axis=1)
    tri = index.reshape(-1, 3)
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
    if not len(tri):
        return b""
    # uint32 points: DracoPy stores an integer attribute, without Draco's own quantization.
    return bytes(
        DracoPy.encode(unique.astype(np.uint32), tri.astype(np.uint32), compression_level=level)
    )


def add_missing_parents(nodes: list[dict[Vec3, bytes]]) -> None:
    """Give every node its parent one LOD up, as an empty fragment where the coarser mesh has
    none: neuroglancer reaches a node only through its parent (``computeOctreeChildOffsets``)."""
    for lod in range(len(nodes) - 1):
        for x, y, z in nodes[lod]:
            nodes[lod + 1].setdefault((x >> 1, y >> 1, z >> 1), b"")


def multires_mesh(
    vertices_nm: np.ndarray, faces: np.ndarray, settings: MultiresSettings
) -> MultiresMesh | None:
    """The multi-resolution mesh of one segment's mesh (``None`` for an empty mesh).

    :param vertices_nm: ``[n, 3]`` vertices in nm in the volume's frame (as zmesh gives them
        with ``voxel_centered``, the legacy fragments' frame).
    :param faces: ``[m, 3]`` vertex indices of its triangles.
    """
    if len(faces) == 0:
        return None
    res = np.array(settings.resolution, np.float64)
    bits = settings.vertex_quantization_bits
    voxels = np.asarray(vertices_nm, np.float64) / res
    octree = plan_octree(voxels.min(axis=0), voxels.max(axis=0), settings)
    origin = np.array(octree.grid_origin, np.float64)

    nodes: list[dict[Vec3, bytes]] = []
    for lod, (v, f) in enumerate(build_lods(vertices_nm, faces, octree.num_lods, settings)):
        size = octree.cell(lod)
        # LOD 0 is cut on its own grid; a coarser LOD on its children's (the octants).
        cut = octree.cell(lod - 1) if lod else size
        per_node: dict[Vec3, list[np.ndarray]] = {}
        for key, piece in sorted(cut_on_grid((v / res - origin)[f], cut).items()):
            node = (key[0] >> 1, key[1] >> 1, key[2] >> 1) if lod else key
            per_node.setdefault(node, []).append(piece)
        encoded = {}
        for node, pieces in per_node.items():
            node_origin = np.array(node, np.float64) * size
            corners = quantize(np.concatenate(pieces), node_origin, size, bits)
            if lod:
                corners = clamp_to_octants(corners, bits)
            encoded[node] = _encode(corners, settings.draco_compression_level)
        nodes.append(encoded)

    nodes[0] = {k: b for k, b in nodes[0].items() if b}
    if not nodes[0]:
        return None
    add_missing_parents(nodes)

    positions: list[np.ndarray] = []
    sizes: list[tuple[int, ...]] = []
    data: list[bytes] = []
    for level in nodes:
        order = sorted(level, key=lambda k: zorder_key(*k))
        positions.append(np.array(order, np.uint32).reshape(-1, 3))
        sizes.append(tuple(len(level[k]) for k in order))
        data.extend(level[k] for k in order)
    manifest = Manifest(
        octree,
        tuple(float(1 << lod) for lod in range(octree.num_lods)),
        tuple(positions),
        tuple(sizes),
    )
    return MultiresMesh(manifest, b"".join(data))


# -- storage ------------------------------------------------------------------------------------


def manifest_path(mesh_dir: str, segment: int) -> str:
    return f"{mesh_dir}/{segment}.index"


def fragment_data_path(mesh_dir: str, segment: int) -> str:
    return f"{mesh_dir}/{segment}"


def write_unsharded(writer: Writer, mesh_dir: str, segment: int, mesh: MultiresMesh) -> int:
    """Write ``<segment>.index`` and ``<segment>`` (plain: read with Range); bytes stored."""
    written = writer.put(fragment_data_path(mesh_dir, segment), mesh.data, precompress=False)
    # The manifest is a few hundred bytes read whole: plain too, one file fewer per segment.
    return written + writer.put(
        manifest_path(mesh_dir, segment), mesh.manifest.to_bytes(), precompress=False
    )


def choose_mesh_sharding(num_segments: int, segments_per_shard: int = 4096) -> ShardingSpec:
    """A murmurhash sharding for ``num_segments`` meshes, about ``segments_per_shard`` a shard.

    Hashed ids spread segments evenly over shards and minishards (sharded.md); about 32
    segments a minishard keeps each minishard index under 1 KiB (24 bytes a segment).
    Manifests are stored raw: Draco fragments do not compress, and a gzip-encoded manifest
    would make readers fetch and inflate a second range before any fragment.
    """
    shards = max(1, -(-num_segments // segments_per_shard))
    per_shard = -(-num_segments // shards)
    return ShardingSpec(
        preshift_bits=0,
        minishard_bits=max(0, math.ceil(math.log2(max(1, per_shard / 32)))),
        shard_bits=math.ceil(math.log2(shards)),
        hash="murmurhash3_x86_128",
        minishard_index_encoding="gzip",
        data_encoding="raw",
    )


def segments_of_shard(spec: ShardingSpec, shard: int, segments: Iterable[int]) -> list[int]:
    """The segments whose meshes shard ``shard`` holds (the task that writes it owns them)."""
    return sorted(s for s in segments if spec.locate(s)[0] == shard)


class _MeshParts(Mapping[int, bytes]):
    """One part (manifests or fragment data) of a mapping of meshes, read lazily: the shard
    writer then holds one segment's mesh at a time when ``meshes`` computes them on demand."""

    def __init__(self, meshes: Mapping[int, MultiresMesh], manifests: bool) -> None:
        self.meshes, self.manifests = meshes, manifests

    def __getitem__(self, segment: int) -> bytes:
        mesh = self.meshes[segment]
        return mesh.manifest.to_bytes() if self.manifests else mesh.data

    def __contains__(self, segment: object) -> bool:
        return segment in self.meshes

    def __iter__(self) -> Iterator[int]:
        return iter(self.meshes)

    def __len__(self) -> int:
        return len(self.meshes)


def write_sharded(
    writer: Writer,
    mesh_dir: str,
    spec: ShardingSpec,
    shard: int,
    meshes: Mapping[int, MultiresMesh],
) -> int:
    """Write shard ``shard`` of the mesh directory: each segment's fragment data immediately
    followed by its manifest, which the segment id indexes (meshes.md); returns its size.

    ``meshes`` is read one segment at a time (its data, then its manifest), so a mapping that
    computes meshes on demand keeps one in memory (:class:`~.mesh_shards.MeshStream`).
    """
    if spec.data_encoding != "raw":
        raise ValueError("multi-resolution mesh shards need data_encoding 'raw'")
    return write_shard(
        writer,
        mesh_dir,
        spec,
        shard,
        _MeshParts(meshes, manifests=True),
        preceding=_MeshParts(meshes, manifests=False),
    )
