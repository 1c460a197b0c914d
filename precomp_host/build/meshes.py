"""Legacy single-resolution precomputed meshes: one fragment per segment per region.

The central function is :func:`mesh_region`, which turns the labels of one region of a
segmentation into the spec's fragment files (neuroglancer ``src/datasource/precomputed/meshes.md``,
"Legacy single-resolution mesh format"): ``uint32le num_vertices``, ``float32le [x, y, z]``
vertices in nanometres in the global frame, then ``uint32le`` triangle indices. A segment's
manifest ``<id>:0`` lists its fragments, named ``<id>:0:<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` after
the region's core box, as igneous names them.

Regions tile the volume (:func:`iter_regions`); each is meshed from its core box plus one voxel
on its high sides (:func:`data_box`), so marching cubes in neighbouring regions share the
cell faces on the plane through the centres of the shared voxels and produce identical vertices
there: fragments meet without gaps, as igneous's ``MeshTask`` does with ``high_padding=1``. Faces
of a region on the volume's bounds are padded with background so that meshes close there.
Simplification must keep the open borders (the region cut planes) as they are, so simplified
fragments still meet exactly. zmesh's quadric simplifier does so by design. Its fast quadric
mesh reduction (fqmr, our default: about three times faster) has a ``preserve_border`` option,
but it flags border vertices unreliably: a vertex's flag ends as set by the highest-numbered
vertex among its neighbours, which says "border" only if that neighbour shares an open edge
with it. :func:`_simplify_fqmr` therefore gives every border vertex a guard triangle with two
new, highest-numbered vertices (removed afterwards), and checks the result for unchanged open
edges (:func:`same_open_edges`); should that ever fail, the segment's region is simplified
with the quadric simplifier instead (tested in ``tests/test_meshes.py``).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.model import Res3, Vec3, box_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

#: The ``mesh/info`` document of a legacy mesh directory (meshes.md).
MESH_INFO: dict[str, str] = {"@type": "neuroglancer_legacy_mesh"}

#: Default region edge: 256 voxels keep zmesh's working set around 64 MiB of uint32 labels.
REGION_SIZE: Vec3 = (256, 256, 256)


@dataclass(frozen=True)
class Simplification:
    """Mesh simplification settings; ``reduction_factor`` 0 disables it.

    ``algorithm``:

    - ``"fqmr"`` (default): zmesh's fast quadric mesh reduction (``zmesh.simplify_fqmr``),
      open borders kept (see the module docstring). Each pass collapses the edges whose
      quadric error is below a threshold ``alpha * (pass + K) ** aggressiveness`` that grows
      pass by pass; passes stop at ``faces / reduction_factor`` triangles or when the threshold
      reaches ``max_error`` squared (quadric errors are squared distances, in nm^2 as we
      simplify in nm), whichever comes first. Measured on a 256x256x64 region of
      ``benchmarks/build.py --case labels`` at 8x8x40 nm against igneous' defaults below:
      20 nm gives 10 % more triangles (106,928 vs 97,326), vertices within 3.3 nm of the
      unsimplified mesh's on average (2.2 nm), 16.5 nm at the 99th percentile (15.9 nm) and
      20.4 nm at most (20.4 nm), in half the CPU time (2.3 s vs 4.4 s).
    - ``"quadric"``: zmesh's quadric edge collapse (``Mesher.get``), the simplifier igneous'
      ``MeshTask`` runs, whose defaults are ``simplification_factor=100`` and
      ``max_simplification_error=40`` nm: ``Simplification(100, 40.0, "quadric")`` is
      igneous' setting.

    ``max_error`` is in nm, as igneous' is.
    """

    reduction_factor: int = 100
    max_error: float = 20.0
    algorithm: str = "fqmr"

    def __post_init__(self) -> None:
        if self.algorithm not in ("fqmr", "quadric"):
            raise ValueError(f"unknown mesh simplification {self.algorithm!r}")


NO_SIMPLIFICATION = Simplification(0, 0.0)

#: igneous' ``max_simplification_error`` default (nm), for the quadric fallback of fqmr.
QUADRIC_MAX_ERROR = 40.0

#: ``--mesh-simplification`` choices: ours, igneous' (its ``MeshTask`` defaults), none.
PRESETS: dict[str, Simplification] = {
    "fqmr": Simplification(),
    "quadric": Simplification(100, QUADRIC_MAX_ERROR, "quadric"),
    "none": NO_SIMPLIFICATION,
}

#: ``zmesh.simplify_fqmr``'s threshold schedule (its defaults).
_FQMR_ALPHA, _FQMR_K, _FQMR_AGGRESSIVENESS = 1e-9, 3, 7.0


def fqmr_passes(max_error: float) -> int:
    """Passes after which fqmr's threshold reaches ``max_error ** 2``."""
    passes = float(max_error**2 / _FQMR_ALPHA) ** (1 / _FQMR_AGGRESSIVENESS) - _FQMR_K
    return max(1, math.ceil(float(passes)))


def iter_regions(
    start: Vec3, stop: Vec3, region_size: Vec3 = REGION_SIZE
) -> Iterator[tuple[Vec3, Vec3]]:
    """Core boxes ``[a, b)`` tiling ``[start, stop)`` by ``region_size``, x fastest."""
    axes = [
        [(a, min(a + r, e)) for a in range(s, e, r)]
        for s, e, r in zip(start, stop, region_size, strict=True)
    ]
    for (z0, z1), (y0, y1), (x0, x1) in itertools.product(axes[2], axes[1], axes[0]):
        yield (x0, y0, z0), (x1, y1, z1)


def data_box(core_start: Vec3, core_stop: Vec3, volume_stop: Vec3) -> tuple[Vec3, Vec3]:
    """The labels a region needs: its core plus one voxel on each high side inside the volume."""
    stop = tuple(min(b + 1, e) for b, e in zip(core_stop, volume_stop, strict=True))
    return core_start, (stop[0], stop[1], stop[2])


def fragment_name(segment: int, core_start: Vec3, core_stop: Vec3) -> str:
    return f"{segment}:0:{box_name(core_start, core_stop)}"


def manifest_name(segment: int) -> str:
    return f"{segment}:0"


def manifest_bytes(fragment_names: Iterable[str]) -> bytes:
    """The ``<id>:0`` manifest: ``{"fragments": [...]}`` (names relative to the mesh folder)."""
    return json.dumps({"fragments": sorted(fragment_names)}, separators=(",", ":")).encode()


def encode_fragment(vertices_nm: np.ndarray, faces: np.ndarray) -> bytes:
    """A fragment file: ``uint32le n``, ``n`` ``float32le`` x,y,z, then ``uint32le`` triangles."""
    n = np.array([len(vertices_nm)], "<u4")
    return (
        n.tobytes()
        + np.ascontiguousarray(vertices_nm, "<f4").tobytes()
        + np.ascontiguousarray(faces, "<u4").tobytes()
    )


def parse_fragment(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices [n, 3] float32, triangles [m, 3] uint32)``; ``ValueError`` if malformed."""
    if len(data) < 4:
        raise ValueError("mesh fragment shorter than its 4-byte vertex count")
    n = int(np.frombuffer(data[:4], "<u4")[0])
    end = 4 + 12 * n
    if len(data) < end or (len(data) - end) % 12:
        raise ValueError(f"mesh fragment of {len(data)} bytes does not fit {n} vertices")
    vertices = np.frombuffer(data[4:end], "<f4").reshape(n, 3)
    faces = np.frombuffer(data[end:], "<u4").reshape(-1, 3)
    if faces.size and int(faces.max()) >= n:
        raise ValueError("mesh fragment has a triangle index past its vertices")
    return vertices, faces


def _open_edge_keys(faces: np.ndarray, n: int) -> np.ndarray:
    """``i * n + j`` (``i < j``) of the edges ``(i, j)`` that only one triangle has."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    edges.sort(axis=1)
    keys, counts = np.unique(edges[:, 0] * n + edges[:, 1], return_counts=True)
    out: np.ndarray = keys[counts == 1]
    return out


def _open_edges(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``[n, 2, 3]`` end points of the edges that only one triangle has."""
    n = len(vertices)
    keys = _open_edge_keys(faces, n)
    out: np.ndarray = np.stack([vertices[keys // n], vertices[keys % n]], axis=1)
    return out


def _same_edges(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``[n, 2, 3]`` edge lists hold the same edges, in any order and direction."""
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    # One id per distinct point of both lists, then each edge as a sorted pair of ids.
    _, ids = np.unique(np.concatenate([a, b]).reshape(-1, 3), axis=0, return_inverse=True)
    pairs = np.sort(ids.reshape(-1, 2), axis=1)
    keys = pairs[:, 0] * (len(ids) + 1) + pairs[:, 1]
    return bool(np.array_equal(np.sort(keys[: len(a)]), np.sort(keys[len(a) :])))


def same_open_edges(
    before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray]
) -> bool:
    """Whether two meshes ``(vertices, faces)`` have the same open edges, by coordinates."""
    return _same_edges(_open_edges(*before), _open_edges(*after))


#: x coordinate (nm) of the guard vertices: far below any real vertex (region-relative, >= 0).
_GUARD_X = np.float32(-1e6)


def _simplify_fqmr(
    vertices: np.ndarray, faces: np.ndarray, factor: int, passes: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """fqmr of one mesh with its open edges kept; None if they were not kept."""
    import zmesh

    n, m = len(vertices), len(faces)
    single = _open_edge_keys(faces, n)
    open_before = np.stack([vertices[single // n], vertices[single % n]], axis=1)
    border = np.unique(np.concatenate([single // n, single % n]))
    k = len(border)
    # Guard triangle of border vertex b: (b, n + i, n + k + i). The guards are the
    # highest-numbered vertices and share one edge with b, so fqmr flags b as border.
    guards = np.zeros((2 * k, 3), np.float32)
    guards[:, 0] = _GUARD_X
    guards[k:, 1] = 1000.0
    extra = np.stack([border, n + np.arange(k), n + k + np.arange(k)], axis=1)
    result = zmesh.simplify_fqmr(
        zmesh.Mesh(
            np.concatenate([vertices, guards]),
            np.concatenate([faces, extra.astype(faces.dtype)]),
            None,
        ),
        # At least a tetrahedron's 4 faces: a one-voxel segment keeps a mesh.
        max(4, m // factor) + k,
        max_iterations=passes,
        alpha=_FQMR_ALPHA,
        K=_FQMR_K,
        aggressiveness=_FQMR_AGGRESSIVENESS,
        preserve_border=True,
    )
    v, f = result.vertices, result.faces
    guard = v[:, 0] == _GUARD_X
    if guard.any():
        f = f[~guard[f].any(axis=1)]
        remap = (np.cumsum(~guard) - 1).astype(np.uint32)
        v, f = v[~guard], remap[f]
    if not _same_edges(open_before, _open_edges(v, f)):
        return None
    return v, f


def mesh_region(
    labels_zyx: np.ndarray,
    origin_xyz: Vec3,
    resolution: Res3,
    segments: Iterable[int] | None = None,
    *,
    volume_box: tuple[Vec3, Vec3] | None = None,
    core_stop: Vec3 | None = None,
    simplification: Simplification = Simplification(),
) -> dict[int, bytes]:
    """Fragment bytes per non-zero segment for the labels of one region's :func:`data_box`.

    :param labels_zyx: ``[z, y, x]`` (or ``[z, y, x, 1]``) unsigned labels of the data box.
    :param origin_xyz: absolute voxel coordinates (``voxel_offset`` included) of its first voxel.
    :param resolution: nm per voxel; vertices are ``corner coordinates * resolution``.
    :param segments: mesh only these ids (0 is never meshed).
    :param volume_box: ``(start, stop)`` of the whole volume; faces of the region lying on it
        are padded with background so meshes close there. ``None``: the region is the volume.
    :param core_stop: end of the region's core (default: the end of the labels). A high face
        is closed only where the core ends on the volume's end: a core ending one voxel short
        has a data box reaching the end too, but the next region meshes that last voxel.

    Vertices: zmesh with ``voxel_centered`` puts voxel ``i`` at ``[i, i+1)``, the frame
    neuroglancer draws voxels in (voxel ``i`` of a scale spans ``[i, i+1) * resolution`` nm)
    and the one igneous writes (``voxel_centered=True`` plus ``offset * resolution``). We mesh
    in nm relative to the region (so simplification errors are physical distances, as in
    igneous) and add the region's origin in float64 at the end: a border vertex, which the
    simplifiers never move, is a small multiple of half the resolution, exact in float32, so
    both regions that share it compute the same global coordinate and round it alike.
    """
    import zmesh

    labels = labels_zyx[..., 0] if labels_zyx.ndim == 4 else labels_zyx
    if labels.dtype.kind != "u":
        raise TypeError(f"meshing needs unsigned labels, got {labels.dtype}")
    xyz, low = _closed_labels(labels, origin_xyz, volume_box, core_stop)
    if segments is not None:
        wanted = np.array(sorted({int(s) for s in segments} - {0}), dtype=labels.dtype)
        xyz = np.where(np.isin(xyz, wanted), xyz, 0)
    mesher = zmesh.Mesher(resolution)
    mesher.mesh(np.asfortranarray(xyz))
    res = np.array(resolution, np.float64)
    shift = (np.array(origin_xyz, np.float64) - np.array(low, np.float64)) * res
    out: dict[int, bytes] = {}
    for segment in sorted(int(i) for i in mesher.ids()):
        if segment == 0:
            continue
        vertices, faces = _segment_mesh(mesher, segment, simplification)
        mesher.erase(segment)
        if len(faces) == 0:
            continue
        out[segment] = encode_fragment(vertices.astype(np.float64) + shift, faces)
    mesher.clear()
    return out


def _closed_labels(
    labels: np.ndarray,
    origin_xyz: Vec3,
    volume_box: tuple[Vec3, Vec3] | None,
    core_stop: Vec3 | None,
) -> tuple[np.ndarray, list[int]]:
    """``[x, y, z]`` labels with one voxel of background before a low face and after a high
    face on the volume's bounds (so meshes close there), and the low padding per axis."""
    z, y, x = labels.shape
    shape = (x, y, z)
    start, stop = volume_box or (
        origin_xyz,
        tuple(o + n for o, n in zip(origin_xyz, shape, strict=True)),
    )
    low = [int(o == s) for o, s in zip(origin_xyz, start, strict=True)]
    ends = core_stop or tuple(o + n for o, n in zip(origin_xyz, shape, strict=True))
    high = [int(c == e) for c, e in zip(ends, stop, strict=True)]
    xyz = labels.T  # Fortran-ordered [x, y, z] view: zmesh's axis 0 is x
    if any(low) or any(high):
        padded = np.zeros(
            tuple(n + a + b for n, a, b in zip(shape, low, high, strict=True)),
            labels.dtype,
            order="F",
        )
        padded[low[0] : low[0] + x, low[1] : low[1] + y, low[2] : low[2] + z] = xyz
        xyz = padded
    return xyz, low


def _segment_mesh(
    mesher: Any, segment: int, simplification: Simplification
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (nm, region frame) and faces of ``segment``, simplified as asked."""
    factor = simplification.reduction_factor
    quadric = factor > 0 and simplification.algorithm == "quadric"
    passes = fqmr_passes(simplification.max_error) if factor and not quadric else 0
    mesh = mesher.get(
        segment,
        normals=False,
        reduction_factor=factor if quadric else 0,
        max_error=simplification.max_error if quadric else None,
        voxel_centered=True,
    )
    vertices, faces = mesh.vertices, mesh.faces
    if passes and len(faces):
        simplified = _simplify_fqmr(vertices, faces, factor, passes)
        if simplified is not None:
            return simplified
        mesh = mesher.get(
            segment,
            normals=False,
            reduction_factor=factor,
            max_error=QUADRIC_MAX_ERROR,
            voxel_centered=True,
        )
        vertices, faces = mesh.vertices, mesh.faces
    return vertices, faces


def merge_fragments(fragments: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The union of fragments with identical vertices merged (for tests and checks)."""
    verts, faces, base = [], [], 0
    for data in fragments:
        v, f = parse_fragment(data)
        verts.append(v)
        faces.append(f.astype(np.int64) + base)
        base += len(v)
    if not verts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    allv = np.concatenate(verts)
    uniq, inverse = np.unique(allv, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)[np.concatenate(faces)]
