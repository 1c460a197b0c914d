"""Legacy meshes: fragments parse per the spec, lie on their segment, close, and meet at borders."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
import pytest

from precomp_host.build.meshes import (
    MESH_INFO,
    NO_SIMPLIFICATION,
    Simplification,
    data_box,
    encode_fragment,
    fqmr_passes,
    fragment_name,
    iter_regions,
    manifest_bytes,
    manifest_name,
    merge_fragments,
    mesh_region,
    parse_fragment,
    same_open_edges,
)

pytest.importorskip("zmesh")

Vec3 = tuple[int, int, int]
OFFSET: Vec3 = (5, 7, 3)
RES = (4.0, 6.0, 40.0)
REGION: Vec3 = (16, 16, 12)


def make_labels() -> np.ndarray:
    """[z, y, x] labels: a ball across many region borders, a slab on the volume's faces, a dot.

    The shape leaves one-voxel-thick last regions along x and z (38 = 5 + 2 * 16 + 1, and
    28 = 3 + 2 * 12 + 1), whose data box equals the one before's overlap voxel.
    """
    z, y, x = np.mgrid[0:25, 0:38, 0:33]
    labels = np.zeros((25, 38, 33), np.uint64)
    labels[((x - 20) / 13.0) ** 2 + ((y - 18) / 11.0) ** 2 + ((z - 13) / 10.0) ** 2 < 1] = 7
    labels[:, 30:, 25:] = 2**40 + 3  # touches the low/high z and high x/y faces
    labels[20, 5, 5] = 11  # one voxel
    return labels


def build_meshes(
    labels: np.ndarray, simplification: Simplification
) -> tuple[dict[str, bytes], dict[int, list[str]]]:
    z, y, x = labels.shape
    start = OFFSET
    stop = (OFFSET[0] + x, OFFSET[1] + y, OFFSET[2] + z)
    files: dict[str, bytes] = {}
    names: dict[int, list[str]] = defaultdict(list)
    for core in iter_regions(start, stop, REGION):
        a, b = data_box(*core, stop)
        block = labels[
            a[2] - start[2] : b[2] - start[2],
            a[1] - start[1] : b[1] - start[1],
            a[0] - start[0] : b[0] - start[0],
        ]
        frags = mesh_region(
            block,
            a,
            RES,
            volume_box=(start, stop),
            core_stop=core[1],
            simplification=simplification,
        )
        for seg, data in frags.items():
            name = fragment_name(seg, *core)
            files[name] = data
            names[seg].append(name)
    for seg, frag_names in names.items():
        files[manifest_name(seg)] = manifest_bytes(frag_names)
    return files, names


SIMPLIFICATIONS = [NO_SIMPLIFICATION, Simplification(), Simplification(100, 40.0, "quadric")]


@pytest.fixture(scope="module", params=SIMPLIFICATIONS, ids=["plain", "fqmr", "quadric"])
def meshed(request: pytest.FixtureRequest) -> tuple[np.ndarray, dict[str, bytes]]:
    labels = make_labels()
    files, _ = build_meshes(labels, request.param)
    return labels, files


def fragments_of(files: dict[str, bytes], seg: int) -> list[bytes]:
    manifest = json.loads(files[manifest_name(seg)])
    return [files[name] for name in manifest["fragments"]]


def test_every_segment_has_a_manifest_of_parsable_fragments(
    meshed: tuple[np.ndarray, dict[str, bytes]],
) -> None:
    labels, files = meshed
    segments = sorted(int(s) for s in np.unique(labels) if s)
    manifests = sorted(int(k.split(":")[0]) for k in files if re.fullmatch(r"\d+:0", k))
    assert manifests == segments
    for seg in segments:
        manifest = json.loads(files[manifest_name(seg)])
        assert set(manifest) == {"fragments"}
        assert manifest["fragments"]
        for name in manifest["fragments"]:
            assert re.fullmatch(rf"{seg}:0:\d+-\d+_\d+-\d+_\d+-\d+", name)
            v, f = parse_fragment(files[name])
            assert len(v)
            assert len(f)


def test_vertices_lie_in_the_segment_bounding_box(
    meshed: tuple[np.ndarray, dict[str, bytes]],
) -> None:
    labels, files = meshed
    res = np.array(RES)
    for seg in (int(s) for s in np.unique(labels) if s):
        zyx = np.argwhere(labels == seg)
        lo = (zyx.min(axis=0)[::-1] + OFFSET) * res  # corner of the first voxel
        hi = (zyx.max(axis=0)[::-1] + 1 + OFFSET) * res  # far corner of the last voxel
        verts = np.concatenate([parse_fragment(d)[0] for d in fragments_of(files, seg)])
        assert (verts >= lo - res).all(), seg
        assert (verts <= hi + res).all(), seg
        # Not just inside: the mesh spans the object to within a voxel.
        assert (verts.min(axis=0) <= lo + res).all()
        assert (verts.max(axis=0) >= hi - res).all()


def test_union_of_fragments_is_closed(meshed: tuple[np.ndarray, dict[str, bytes]]) -> None:
    labels, files = meshed
    for seg in (int(s) for s in np.unique(labels) if s):
        _, faces = merge_fragments(fragments_of(files, seg))
        edges = np.sort(
            np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1
        )
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 2).all(), (seg, np.bincount(counts))


def test_fragments_share_vertices_on_region_borders(
    meshed: tuple[np.ndarray, dict[str, bytes]],
) -> None:
    labels, files = meshed
    seg = 7  # the ball crosses borders along every axis
    by_core: dict[tuple[Vec3, Vec3], np.ndarray] = {}
    for name in json.loads(files[manifest_name(seg)])["fragments"]:
        bounds = [int(v) for v in re.findall(r"\d+", name.split(":", 2)[2])]
        core = ((bounds[0], bounds[2], bounds[4]), (bounds[1], bounds[3], bounds[5]))
        by_core[core] = parse_fragment(files[name])[0]
    pairs = 0
    for (a0, a1), va in by_core.items():
        for axis in range(3):
            b0 = list(a0)
            b0[axis] = a1[axis]
            nb = next((v for (c0, _), v in by_core.items() if list(c0) == b0), None)
            if nb is None:
                continue
            # The shared plane goes through the centres of the first voxels of the next region.
            plane = np.float32((a1[axis] + 0.5) * RES[axis])
            on_a = {tuple(p) for p in va[va[:, axis] == plane].tolist()}
            on_b = {tuple(p) for p in nb[nb[:, axis] == plane].tolist()}
            assert on_a
            assert on_a == on_b
            pairs += 1
    assert pairs >= 3


def test_segments_filter_and_background() -> None:
    labels = make_labels()
    z, y, x = labels.shape
    got = mesh_region(labels, OFFSET, RES, segments=[11, 0, 99])
    assert set(got) == {11}
    v, f = parse_fragment(got[11])
    # One voxel at (5, 5, 20): a closed surface around [5, 6) * res on each axis.
    corner = (np.array([5, 5, 20]) + OFFSET) * np.array(RES)
    assert (v >= corner).all()
    assert (v <= corner + RES).all()
    assert set(mesh_region(labels, OFFSET, RES)) == {7, 11, 2**40 + 3}


def test_fragment_format_and_errors() -> None:
    v = np.array([[0, 0, 0], [1.5, 0, 0], [0, 2, 0]], np.float32)
    f = np.array([[0, 1, 2]], np.uint32)
    data = encode_fragment(v, f)
    assert data[:4] == b"\x03\x00\x00\x00"
    assert len(data) == 4 + 36 + 12
    v2, f2 = parse_fragment(data)
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(f2, f)
    with pytest.raises(ValueError, match="does not fit"):
        parse_fragment(data[:-1])
    with pytest.raises(ValueError, match="past its vertices"):
        parse_fragment(encode_fragment(v, np.array([[0, 1, 3]], np.uint32)))
    assert json.loads(manifest_bytes(["1:0:b", "1:0:a"])) == {"fragments": ["1:0:a", "1:0:b"]}
    assert MESH_INFO == {"@type": "neuroglancer_legacy_mesh"}
    with pytest.raises(TypeError, match="unsigned"):
        mesh_region(np.zeros((2, 2, 2), np.float32), (0, 0, 0), RES)


def test_regions_tile_the_volume() -> None:
    regions = list(iter_regions((5, 7, 3), (50, 45, 33), REGION))
    total = sum(np.prod(np.subtract(b, a)) for a, b in regions)
    assert total == 45 * 38 * 30
    assert regions[0] == ((5, 7, 3), (21, 23, 15))
    assert data_box((5, 7, 3), (21, 23, 15), (50, 45, 33)) == ((5, 7, 3), (22, 24, 16))
    assert data_box((37, 39, 27), (50, 45, 33), (50, 45, 33))[1] == (50, 45, 33)


def test_simplifiers_reduce_and_keep_open_edges() -> None:
    """Both simplifiers reduce a region's mesh and leave its open edges (the cut) unchanged."""
    full = make_labels()
    z, y, x = full.shape
    box = (OFFSET, (OFFSET[0] + x, OFFSET[1] + y, OFFSET[2] + z))
    # The ball's region up to x = 15 plus its overlap voxel: open on the cut.
    labels, core_stop = full[:, :, :16], (OFFSET[0] + 15, OFFSET[1] + y, OFFSET[2] + z)

    def mesh(simplification: Simplification) -> tuple[np.ndarray, np.ndarray]:
        frags = mesh_region(
            labels, OFFSET, RES, volume_box=box, core_stop=core_stop, simplification=simplification
        )
        return parse_fragment(frags[7])

    before = mesh(NO_SIMPLIFICATION)
    assert (before[0][:, 0] == np.float32((OFFSET[0] + 15.5) * RES[0])).sum() > 20
    for simplification in SIMPLIFICATIONS[1:]:
        after = mesh(simplification)
        assert len(after[1]) < len(before[1]) / 2, simplification
        assert same_open_edges(before, after), simplification
    # A changed cut is noticed.
    moved = before[0].copy()
    moved[before[0][:, 0] == before[0][:, 0].max(), 0] += 1
    assert not same_open_edges(before, (moved, before[1]))


def test_simplification_settings() -> None:
    # The fqmr threshold alpha * (passes + K) ** 7 reaches max_error ** 2 (nm^2).
    passes = fqmr_passes(20.0)
    assert 1e-9 * (passes + 3) ** 7 >= 400 > 1e-9 * (passes + 2) ** 7
    with pytest.raises(ValueError, match="unknown mesh simplification"):
        Simplification(algorithm="nope")
