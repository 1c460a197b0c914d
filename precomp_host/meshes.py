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
zmesh's quadric simplification keeps vertices on open borders (measured; tested in
``tests/test_meshes.py``), so simplified fragments still meet exactly.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

Vec3 = tuple[int, int, int]
Res3 = tuple[float, float, float]

#: The ``mesh/info`` document of a legacy mesh directory (meshes.md).
MESH_INFO: dict[str, str] = {"@type": "neuroglancer_legacy_mesh"}

#: Default region edge: 256 voxels keep zmesh's working set around 64 MiB of uint32 labels.
REGION_SIZE: Vec3 = (256, 256, 256)


@dataclass(frozen=True)
class Simplification:
    """zmesh quadric edge collapse settings; ``reduction_factor`` 0 disables it.

    ``max_error`` is in voxels (we mesh in voxel units, see ``mesh_region``), so the default
    bounds every vertex's displacement by one voxel along each axis, zmesh's own default.
    """

    reduction_factor: int = 100
    max_error: float = 1.0


NO_SIMPLIFICATION = Simplification(0, 0.0)


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
    bounds = "_".join(f"{a}-{b}" for a, b in zip(core_start, core_stop, strict=True))
    return f"{segment}:0:{bounds}"


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
    in voxel units and scale in float64 at the end, so a border vertex is computed from the same
    global voxel coordinate in both regions that share it and rounds to the same float32.
    """
    import zmesh

    labels = labels_zyx[..., 0] if labels_zyx.ndim == 4 else labels_zyx
    if labels.dtype.kind != "u":
        raise TypeError(f"meshing needs unsigned labels, got {labels.dtype}")
    z, y, x = labels.shape
    shape = (x, y, z)
    start, stop = volume_box or (
        origin_xyz,
        tuple(o + n for o, n in zip(origin_xyz, shape, strict=True)),
    )
    # One voxel of background before a low face and after a high face on the volume's bounds.
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
    if segments is not None:
        wanted = np.array(sorted({int(s) for s in segments} - {0}), dtype=labels.dtype)
        xyz = np.where(np.isin(xyz, wanted), xyz, 0)
    mesher = zmesh.Mesher((1, 1, 1))
    mesher.mesh(np.asfortranarray(xyz))
    shift = np.array(origin_xyz, np.float64) - np.array(low, np.float64)
    res = np.array(resolution, np.float64)
    out: dict[int, bytes] = {}
    for segment in sorted(int(i) for i in mesher.ids()):
        if segment == 0:
            continue
        mesh = mesher.get(
            segment,
            normals=False,
            reduction_factor=simplification.reduction_factor,
            max_error=simplification.max_error if simplification.reduction_factor else None,
            voxel_centered=True,
        )
        mesher.erase(segment)
        if len(mesh.faces) == 0:
            continue
        vertices = (mesh.vertices.astype(np.float64) + shift) * res
        out[segment] = encode_fragment(vertices, mesh.faces)
    mesher.clear()
    return out


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
