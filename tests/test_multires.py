"""Tests for :mod:`precomp_host.build.multires`: multi-resolution meshes, read back independently.

Three readers check what we write: a manifest reader written here from meshes.md's text (it
shares nothing with the writer but DracoPy's decoder), cloud-volume (``test-peers`` extra;
skipped without it) for unsharded and sharded meshes, and the property tests of the arithmetic
(octree plan, quantization, Z-curve order, neuroglancer's octant partition).
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import DracoPy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from precomp_host.build.meshes import mesh_region, parse_fragment
from precomp_host.build.multires import (
    MultiresMesh,
    MultiresSettings,
    add_missing_parents,
    choose_mesh_sharding,
    clamp_to_octants,
    cut_on_grid,
    multires_mesh,
    partition_point,
    plan_octree,
    quantize,
    segments_of_shard,
    write_sharded,
    write_unsharded,
    zorder_key,
)
from precomp_host.build.shards import write_shard
from precomp_host.build.writer import DatasetWriter
from precomp_host.core.layout import LAYOUTS
from precomp_host.core.model import MULTILOD_MESH_TYPE
from precomp_host.core.sharding import (
    ShardingSpec,
    parse_minishard_index,
    parse_shard_index,
    read_shard,
)

if TYPE_CHECKING:
    from pathlib import Path

RESOLUTION = (4.0, 4.0, 10.0)
# Small cells so that the test volume's segments get 2 to 4 LODs.
SETTINGS = MultiresSettings(RESOLUTION, min_chunk=(8, 8, 8))


# --- a label volume and its meshes ------------------------------------------------------------


def _labels() -> np.ndarray:
    """[z, y, x] labels: an ellipsoid, a box on the volume's edge, a ring, a single voxel."""
    z, y, x = np.mgrid[:24, :48, :56]
    labels = np.zeros((24, 48, 56), np.uint32)
    labels[((x - 24) / 18) ** 2 + ((y - 22) / 16) ** 2 + ((z - 11) / 9) ** 2 < 1] = 3
    labels[0:6, 30:48, 40:56] = 17  # touches three faces of the volume
    ring = (np.hypot(x - 44, y - 10) < 8) & (np.hypot(x - 44, y - 10) > 4) & (abs(z - 18) < 3)
    labels[ring & (labels == 0)] = 250
    labels[20, 40, 10] = 3_000_000_007  # a large id, one voxel
    return labels


@functools.cache
def _segment_meshes() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each segment's mesh, vertices in nm, by the legacy mesher (one region: the volume)."""
    fragments = mesh_region(_labels(), (0, 0, 0), RESOLUTION)
    return {s: parse_fragment(b) for s, b in fragments.items()}


def _bbox_nm(segment: int) -> tuple[np.ndarray, np.ndarray]:
    """The segment's voxel box in nm: voxel i spans [i, i + 1) * resolution."""
    zyx = np.argwhere(_labels() == segment)
    res = np.array(RESOLUTION)
    return zyx.min(axis=0)[::-1] * res, (zyx.max(axis=0)[::-1] + 1) * res


@functools.cache
def _multires() -> dict[int, MultiresMesh]:
    out = {}
    for s, (v, f) in _segment_meshes().items():
        mesh = multires_mesh(v, f, SETTINGS)
        assert mesh is not None
        out[s] = mesh
    return out


# --- an independent reader, from meshes.md's text ---------------------------------------------


@dataclass
class ReadManifest:
    chunk_shape: np.ndarray
    grid_origin: np.ndarray
    lod_scales: list[float]
    vertex_offsets: np.ndarray
    positions: list[np.ndarray]  # per LOD, [n, 3]
    sizes: list[list[int]]


def read_manifest(data: bytes) -> ReadManifest:
    chunk_shape = np.array(struct.unpack_from("<3f", data, 0))
    grid_origin = np.array(struct.unpack_from("<3f", data, 12))
    (num_lods,) = struct.unpack_from("<I", data, 24)
    at = 28
    lod_scales = list(struct.unpack_from(f"<{num_lods}f", data, at))
    at += 4 * num_lods
    vertex_offsets = np.array(struct.unpack_from(f"<{3 * num_lods}f", data, at)).reshape(-1, 3)
    at += 12 * num_lods
    counts = struct.unpack_from(f"<{num_lods}I", data, at)
    at += 4 * num_lods
    positions, sizes = [], []
    for n in counts:
        xyz = np.array(struct.unpack_from(f"<{3 * n}I", data, at), np.int64).reshape(3, n)
        at += 12 * n
        positions.append(xyz.T)
        sizes.append(list(struct.unpack_from(f"<{n}I", data, at)))
        at += 4 * n
    assert at == len(data), "manifest has trailing bytes"
    return ReadManifest(chunk_shape, grid_origin, lod_scales, vertex_offsets, positions, sizes)


def _zorder_less(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Z-curve order by the most significant differing bit (the comparison neuroglancer's
    ``zorder3LessThan`` makes), x the least significant axis."""
    best = 2  # at equal bits, z is the most significant (x the least)
    for axis in (1, 0):
        da, db = a[best] ^ b[best], a[axis] ^ b[axis]
        if da < db and da < (da ^ db):  # axis' highest differing bit is higher
            best = axis
    return a[best] < b[best]


def _octant_masks(q: np.ndarray, bits: int) -> np.ndarray:
    """neuroglancer_draco.cc's per-vertex mask of the child octants a vertex may belong to."""
    p = (((1 << 32) - 1) >> (32 - bits)) // 2 + 1
    mask = np.full(len(q), 0xFF, np.int64)
    for axis, (low, high) in enumerate(
        ((0b01010101, 0b10101010), (0b00110011, 0b11001100), (0b00001111, 0b11110000))
    ):
        mask = np.where(q[:, axis] < p, mask & low, mask)
        mask = np.where(q[:, axis] > p, mask & high, mask)
    return mask


def check_multires(
    manifest_bytes: bytes, data: bytes, segment: int, bits: int = 16
) -> list[np.ndarray]:
    """Check one segment against meshes.md; its vertices in nm per LOD."""
    m = read_manifest(manifest_bytes)
    assert sum(map(sum, m.sizes)) == len(data)
    assert m.lod_scales == [2.0**lod for lod in range(len(m.lod_scales))]
    assert not m.vertex_offsets.any()
    top = len(m.positions) - 1
    assert m.positions[top].tolist() == [[0, 0, 0]], "the coarsest LOD is one node"
    res = np.array(RESOLUTION)
    low, high = _bbox_nm(segment)
    out, at = [], 0
    for lod, (positions, sizes) in enumerate(zip(m.positions, m.sizes, strict=True)):
        keys = [tuple(p) for p in positions.tolist()]
        assert all(_zorder_less(a, b) for a, b in zip(keys, keys[1:], strict=False)), (
            f"LOD {lod} order"
        )
        if lod < top:
            parents = {tuple(p) for p in m.positions[lod + 1].tolist()}
            assert {(x >> 1, y >> 1, z >> 1) for x, y, z in keys} <= parents
        cell = m.chunk_shape * 2**lod
        vertices = []
        for position, size in zip(positions, sizes, strict=True):
            fragment, at = data[at : at + size], at + size
            if not size:
                assert lod > 0, "empty LOD 0 fragments are useless"
                continue
            decoded = DracoPy.decode(fragment)
            q = np.asarray(decoded.points)
            assert q.dtype == np.uint32
            assert q.max() < 2**bits
            if lod:  # meshes.md: no triangle crosses the 2x2x2 grid
                assert (
                    np.bitwise_and.reduce(_octant_masks(q, bits)[decoded.faces], axis=1) != 0
                ).all()
            stored = m.grid_origin + cell * (position + q / (2**bits - 1))
            vertices.append(stored * res)  # the info's transform
        nm = np.concatenate(vertices)
        assert (nm >= low - res).all(), f"LOD {lod} leaves the box"
        assert (nm <= high + res).all(), f"LOD {lod} leaves the box"
        out.append(nm)
    return out


def _area(vertices: np.ndarray, faces: np.ndarray) -> float:
    t = vertices[faces].astype(np.float64)
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


# --- one segment ------------------------------------------------------------------------------


def test_every_segment_follows_the_spec() -> None:
    meshes = _multires()
    assert set(meshes) == {3, 17, 250, 3_000_000_007}
    lods = {s: len(check_multires(m.manifest.to_bytes(), m.data, s)) for s, m in meshes.items()}
    assert lods[3] >= 3
    assert lods[3_000_000_007] == 1


def test_lod0_keeps_the_surface() -> None:
    # 16-bit quantization of cells a few voxels wide moves vertices by far less than a voxel:
    # LOD 0's area stays within 1 % of the mesh it came from.
    for s, mesh in _multires().items():
        m = read_manifest(mesh.manifest.to_bytes())
        at, area = 0, 0.0
        cell = m.chunk_shape
        for position, size in zip(m.positions[0], m.sizes[0], strict=True):
            d = DracoPy.decode(mesh.data[at : at + size])
            at += size
            v = (m.grid_origin + cell * (position + np.asarray(d.points) / 65535)) * RESOLUTION
            area += _area(v, d.faces)
        assert area == pytest.approx(_area(*_segment_meshes()[s]), rel=0.01)


def test_coarser_lods_have_fewer_triangles() -> None:
    mesh = _multires()[3]
    m = read_manifest(mesh.manifest.to_bytes())
    at, faces = 0, []
    for sizes in m.sizes:
        n = 0
        for size in sizes:
            if size:
                n += len(DracoPy.decode(mesh.data[at : at + size]).faces)
            at += size
        faces.append(n)
    assert faces == sorted(faces, reverse=True)
    assert faces[-1] < faces[0] / 4


def test_empty_mesh_gives_none() -> None:
    assert multires_mesh(np.zeros((0, 3)), np.zeros((0, 3), np.uint32), SETTINGS) is None


def test_info() -> None:
    spec = choose_mesh_sharding(10)
    info = SETTINGS.info(spec)
    assert info["@type"] == MULTILOD_MESH_TYPE == "neuroglancer_multilod_draco"
    assert info["vertex_quantization_bits"] == 16
    assert info["lod_scale_multiplier"] == 1.0
    assert info["transform"] == [4.0, 0, 0, 0, 0, 4.0, 0, 0, 0, 0, 10.0, 0]
    assert ShardingSpec.from_json(info["sharding"]) == spec
    assert "sharding" not in SETTINGS.info()
    with pytest.raises(ValueError, match="10 or 16"):
        MultiresSettings(RESOLUTION, vertex_quantization_bits=12)


# --- the arithmetic ----------------------------------------------------------------------------

_settings = st.builds(
    MultiresSettings,
    resolution=st.just(RESOLUTION),
    min_chunk=st.tuples(*[st.integers(1, 256)] * 3),
    max_lods=st.integers(1, 10),
)
_coord = st.floats(-1e5, 1e5, allow_nan=False)


@given(_settings, st.tuples(_coord, _coord, _coord), st.tuples(*[st.floats(0, 5e4)] * 3))
def test_octree_covers_the_mesh_with_one_top_node(
    s: MultiresSettings, low: tuple[float, float, float], extent: tuple[float, float, float]
) -> None:
    high = [a + e for a, e in zip(low, extent, strict=True)]
    tree = plan_octree(low, high, s)
    assert 1 <= tree.num_lods <= s.max_lods
    top = np.array(tree.chunk_shape) * 2 ** (tree.num_lods - 1)
    assert (np.array(tree.grid_origin) <= low).all()
    assert (np.array(tree.grid_origin) + top >= high).all()
    assert all(c >= m for c, m in zip(tree.chunk_shape, s.min_chunk, strict=True))
    if tree.num_lods < s.max_lods:  # no larger cells than min_chunk needs, and no spare LOD
        assert tree.chunk_shape == s.min_chunk or tree.num_lods == 1
    if tree.num_lods > 1:
        below = np.array(s.min_chunk) * 2 ** (tree.num_lods - 2)
        assert (np.array(tree.grid_origin) + below < high).any() or tree.num_lods == s.max_lods


@given(
    st.sampled_from([10, 16]),
    st.tuples(*[st.integers(-1000, 1000)] * 3),
    st.tuples(*[st.integers(1, 4096)] * 3),
    st.lists(st.tuples(*[st.floats(0, 1)] * 3), min_size=1, max_size=20),
)
def test_quantization_round_trips_within_half_a_step(
    bits: int, origin: tuple[int, ...], size: tuple[int, ...], rel: list[tuple[float, ...]]
) -> None:
    o, n = np.array(origin, np.float64), np.array(size, np.float64)
    v = o + n * np.array(rel)
    q = quantize(v, o, n, bits)
    assert q.dtype == np.uint32
    assert q.max() < 2**bits
    step = n / (2**bits - 1)
    back = o + n * (q / (2**bits - 1))  # meshes.md's formula, vertex_offsets zero
    assert (abs(back - v) <= step / 2 * (1 + 1e-9)).all()
    # the node's middle is neuroglancer's partition point, exactly
    assert (quantize(o + n / 2, o, n, bits) == partition_point(bits)).all()


@given(st.lists(st.tuples(*[st.integers(0, 2**10 - 1)] * 3), min_size=2, max_size=30, unique=True))
def test_zorder_key_sorts_as_neuroglancer_compares(nodes: list[tuple[int, int, int]]) -> None:
    ordered = sorted(nodes, key=lambda n: zorder_key(*n))
    assert all(_zorder_less(a, b) for a, b in zip(ordered, ordered[1:], strict=False))


@given(st.sampled_from([10, 16]), st.data())
def test_clamped_triangles_stay_in_one_octant(bits: int, data: st.DataObject) -> None:
    top, p = 2**bits - 1, partition_point(bits)
    near = st.integers(0, top) | st.integers(max(0, p - 2), min(top, p + 2))
    corners = np.array(
        data.draw(st.lists(st.tuples(*[st.tuples(near, near, near)] * 3), min_size=1, max_size=20)),
        np.int64,
    )
    out = clamp_to_octants(corners.astype(np.uint32), bits).astype(np.int64)
    masks = _octant_masks(out.reshape(-1, 3), bits).reshape(-1, 3)
    assert (np.bitwise_and.reduce(masks, axis=1) != 0).all()
    # a triangle already inside one octant is left alone
    inside = (
        np.bitwise_and.reduce(_octant_masks(corners.reshape(-1, 3), bits).reshape(-1, 3), axis=1)
        != 0
    )
    assert (out[inside] == corners[inside]).all()


_node = st.tuples(*[st.integers(0, 15)] * 3)


@given(st.lists(st.dictionaries(_node, st.binary(max_size=3), max_size=12), min_size=1, max_size=5))
def test_every_node_gets_its_parent(levels: list[dict[tuple[int, int, int], bytes]]) -> None:
    nodes = [dict(level) for level in levels]
    add_missing_parents(nodes)
    for lod in range(len(nodes) - 1):
        assert {(x >> 1, y >> 1, z >> 1) for x, y, z in nodes[lod]} <= set(nodes[lod + 1])
    for before, after in zip(levels, nodes, strict=True):
        assert {k: after[k] for k in before} == before  # fragments kept
        assert not any(after[k] for k in set(after) - set(before))  # added ones are empty


_tri = st.tuples(*[st.tuples(*[st.floats(0, 64, allow_nan=False)] * 3)] * 3)


@settings(deadline=None)  # a long thin triangle cut into hundreds: time is not the property
@given(st.lists(_tri, min_size=1, max_size=12), st.tuples(*[st.integers(1, 16)] * 3))
def test_cut_pieces_stay_in_one_cell_and_keep_the_surface(
    tris: list[Any], cell: tuple[int, int, int]
) -> None:
    t = np.array(tris, np.float64)
    size = np.array(cell, np.float64)
    pieces = cut_on_grid(t, size)
    for key, group in pieces.items():
        low = np.array(key) * size
        assert (group >= low - 1e-9 * 64).all()
        assert (group <= low + size + 1e-9 * 64).all()
    cut_area = sum(
        _area(g.reshape(-1, 3), np.arange(g.size // 3).reshape(-1, 3)) for g in pieces.values()
    )
    assert cut_area == pytest.approx(
        _area(t.reshape(-1, 3), np.arange(t.size // 3).reshape(-1, 3)), rel=1e-6, abs=1e-6
    )

    # winding is kept: the summed (vector) area of the pieces is the triangles'
    def vector_area(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]).sum(axis=0) / 2
        return out

    total = sum((vector_area(g) for g in pieces.values()), np.zeros(3))
    np.testing.assert_allclose(total, vector_area(t), rtol=1e-6, atol=1e-6)


# --- storage -----------------------------------------------------------------------------------


def _writer(root: Path) -> DatasetWriter:
    w = DatasetWriter(root, LAYOUTS["flat"])
    w.begin()
    return w


def _volume_info(root: Path, mesh_info: dict[str, Any]) -> None:
    """A segmentation ``info`` naming the mesh directory (what cloud-volume opens)."""
    labels = _labels()
    (root / "info").write_text(
        json.dumps(
            {
                "type": "segmentation",
                "data_type": "uint32",
                "num_channels": 1,
                "mesh": "mesh",
                "scales": [
                    {
                        "key": "4_4_10",
                        "size": list(labels.shape[::-1]),
                        "resolution": list(RESOLUTION),
                        "voxel_offset": [0, 0, 0],
                        "chunk_sizes": [[64, 64, 64]],
                        "encoding": "raw",
                    }
                ],
            }
        )
    )
    (root / "mesh").mkdir(exist_ok=True)
    (root / "mesh" / "info").write_text(json.dumps(mesh_info))


def test_unsharded_files_are_plain_and_follow_the_spec(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    for s, mesh in _multires().items():
        write_unsharded(w, "mesh", s, mesh)
    names = sorted(p.name for p in (tmp_path / "mesh").iterdir())
    assert names == sorted([str(s) for s in _multires()] + [f"{s}.index" for s in _multires()])
    for s in _multires():
        check_multires(
            (tmp_path / f"mesh/{s}.index").read_bytes(), (tmp_path / f"mesh/{s}").read_bytes(), s
        )


def test_sharded_shard_holds_fragments_before_manifests(tmp_path: Path) -> None:
    meshes = _multires()
    spec = ShardingSpec(0, 1, 1, "murmurhash3_x86_128", "gzip", "raw")
    w = _writer(tmp_path)
    for shard in range(spec.num_shards):
        owned = {s: meshes[s] for s in segments_of_shard(spec, shard, meshes)}
        if owned:
            write_sharded(w, "mesh", spec, shard, owned)
    seen = set()
    for path in sorted((tmp_path / "mesh").glob("*.shard")):
        data = path.read_bytes()
        for s, manifest in read_shard(spec, data).items():
            seen.add(s)
            # the fragment data ends where the manifest starts (meshes.md)
            start = next(
                e.start
                for a, b in parse_shard_index(spec, data)
                if a != b
                for e in parse_minishard_index(spec, data[a:b])
                if e.chunk_id == s
            )
            size = sum(map(sum, read_manifest(manifest).sizes))
            check_multires(manifest, data[start - size : start], s)
    assert seen == set(meshes)


def test_write_shard_puts_preceding_bytes_outside_the_entry(tmp_path: Path) -> None:
    spec = ShardingSpec(0, 1, 0)
    chunks = {1: b"one", 2: b"two!", 5: b"five"}
    before = {1: b"AAAA", 5: b"B" * 7}
    write_shard(_writer(tmp_path), "m", spec, 0, chunks, preceding=before)
    data = (tmp_path / "m" / spec.shard_name(0)).read_bytes()
    assert read_shard(spec, data) == chunks
    for a, b in parse_shard_index(spec, data):
        for e in parse_minishard_index(spec, data[a:b]):
            pre = before.get(e.chunk_id, b"")
            assert data[e.start - len(pre) : e.start] == pre


def test_sharded_mesh_data_must_be_raw(tmp_path: Path) -> None:
    spec = ShardingSpec(0, 0, 0, "murmurhash3_x86_128", "gzip", "gzip")
    with pytest.raises(ValueError, match="raw"):
        write_sharded(_writer(tmp_path), "mesh", spec, 0, _multires())


@pytest.mark.parametrize(("segments", "shards"), [(1, 1), (4096, 1), (4097, 2), (10**6, 256)])
def test_mesh_sharding_spreads_segments(segments: int, shards: int) -> None:
    spec = choose_mesh_sharding(segments)
    assert spec.num_shards == shards
    assert spec.hash == "murmurhash3_x86_128"
    assert segments / (spec.num_shards * spec.num_minishards) <= 32


# --- cloud-volume reads them ------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
def test_cloudvolume_reads_every_segment_and_lod(tmp_path: Path, sharded: bool) -> None:
    cloudvolume = pytest.importorskip("cloudvolume")
    meshes = _multires()
    w = _writer(tmp_path)
    spec = choose_mesh_sharding(len(meshes), segments_per_shard=2) if sharded else None
    if spec is None:
        for s, mesh in meshes.items():
            write_unsharded(w, "mesh", s, mesh)
    else:
        assert spec.num_shards > 1
        for shard in range(spec.num_shards):
            owned = {s: meshes[s] for s in segments_of_shard(spec, shard, meshes)}
            if owned:
                write_sharded(w, "mesh", spec, shard, owned)
    _volume_info(tmp_path, SETTINGS.info(spec))
    cv = cloudvolume.CloudVolume(f"file://{tmp_path}", progress=False)
    res = np.array(RESOLUTION)
    for s, mesh in meshes.items():
        for lod in range(mesh.manifest.octree.num_lods):
            got = cv.mesh.get(s, lod=lod)[s]
            assert len(got.faces) > 0, (s, lod)
            low, high = _bbox_nm(s)
            assert (got.vertices >= low - res).all()
            assert (got.vertices <= high + res).all()
