"""Checking a segmentation build before its time is reported: :func:`verify_labels`.

Like :mod:`benchmarks.verify`, read as a viewer would and independently of the tool: ``info``
through the core model; every chunk of every scale present (nested or flat, plain or with an
encoding suffix); sampled scale-0 chunks decoded from ``compressed_segmentation`` (the C++
package) equal the generated labels exactly; in the middle chunk of scale 1 each voxel's
label has the maximal count in its block (a mode, whatever the tie rule); the coarser scales'
middle chunks are not all background. Meshes: ``mesh/info`` exists, and for a sample of
segments the ``<id>:0`` manifest lists fragments that parse as legacy meshes (meshes.md) whose
vertices lie in the segment's possible box, in nm, within one voxel. Multi-resolution meshes
(``neuroglancer_multilod_draco``, sharded) likewise: the segment's manifest found through the
shard and minishard indices, parsed from meshes.md's layout, and its LOD 0 fragments (the
bytes just before the manifest) Draco-decoded and dequantized to nm. The sampled meshes' vertex
and triangle totals are reported (LOD 0 for multi-resolution meshes), so the degree of
simplification can be compared.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import compressed_segmentation as cseg
import numpy as np

from precomp_host.core.encodings import BY_SUFFIX
from precomp_host.core.model import MULTILOD_MESH_TYPE
from precomp_host.core.sharding import ShardingSpec, parse_minishard_index, parse_shard_index

from .verify import Verification, find_chunk, open_dataset, read_decoded

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

    from precomp_host.core.model import ChunkKey, Scale

    from .labels import LabelVolume

#: Segments whose meshes are checked.
MESH_SAMPLES = 24


@dataclass
class LabelVerification(Verification):
    """:class:`Verification` plus mesh totals over the sampled segments."""

    segments: int = 0
    vertices: int = 0
    triangles: int = 0
    fragments: int = 0
    mesh_problems: list[str] = field(default_factory=list)


def _decode(root: Path, scale: Scale, key: ChunkKey) -> NDArray[np.uint32] | None:
    found = find_chunk(root, key)
    if found is None:
        return None
    path, _, suffix = found
    data = path.read_bytes()
    if suffix:
        data = BY_SUFFIX[suffix].decompress(data)
    block = scale.extra.get("compressed_segmentation_block_size", [8, 8, 8])
    arr = cseg.decompress(data, key.shape, np.uint32, block_size=tuple(block), order="F")
    out: NDArray[np.uint32] = np.asarray(arr).reshape(key.shape, order="F")
    return out


def _middle(scale: Scale) -> ChunkKey:
    g = scale.grid_shape()
    return scale.chunk_key((g[0] // 2, g[1] // 2, g[2] // 2))


def _is_mode(chunk: NDArray[np.uint32], region: NDArray[np.uint32], f: list[int]) -> bool:
    """Whether each voxel of ``chunk`` has the maximal count in its block of ``region``."""
    x, y, z = chunk.shape
    blocks = (
        region.reshape(x, f[0], y, f[1], z, f[2]).transpose(1, 3, 5, 0, 2, 4).reshape(-1, x, y, z)
    )
    counts = (blocks == chunk[None]).sum(axis=0)
    best = np.max([(blocks == b[None]).sum(axis=0) for b in blocks], axis=0)
    return bool(np.all(counts == best))


def _segment_box(
    labels: LabelVolume, segment: int, res: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Where ``segment``'s vertices may lie, nm: its possible box plus one voxel."""
    lo, hi = labels.bounds(segment)
    return (np.array(lo) - 1) * res, (np.array(hi) + 1) * res


def _lod0_vertices(
    shard: bytes, spec: ShardingSpec, segment: int, mesh_info: dict[str, Any]
) -> list[tuple[NDArray[np.float64], int]] | None:
    """``(vertices nm, triangles)`` of each LOD 0 fragment of ``segment`` (meshes.md,
    multi-resolution format, sharded); None if the shard does not hold it."""
    import DracoPy

    start = end = None
    for a, b in parse_shard_index(spec, shard):
        for e in parse_minishard_index(spec, shard[a:b]) if a != b else []:
            if e.chunk_id == segment:
                start, end = e.start, e.stop
    if start is None or end is None:
        return None
    manifest = spec.decode_data(shard[start:end])
    chunk_shape = np.frombuffer(manifest[0:12], "<f4").astype(np.float64)
    grid_origin = np.frombuffer(manifest[12:24], "<f4").astype(np.float64)
    (num_lods,) = struct.unpack_from("<I", manifest, 24)
    at = 28 + 4 * num_lods
    vertex_offsets = np.frombuffer(manifest[at : at + 12 * num_lods], "<f4").reshape(-1, 3)
    at += 12 * num_lods
    counts = np.frombuffer(manifest[at : at + 4 * num_lods], "<u4")
    at += 4 * num_lods
    positions, sizes = [], []
    for n in counts:
        positions.append(np.frombuffer(manifest[at : at + 12 * n], "<u4").reshape(3, n).T)
        at += 12 * n
        sizes.append(np.frombuffer(manifest[at : at + 4 * n], "<u4"))
        at += 4 * n
    offset = start - int(sum(int(s.sum()) for s in sizes))
    top = float((1 << int(mesh_info["vertex_quantization_bits"])) - 1)
    transform = np.array(mesh_info["transform"], np.float64).reshape(3, 4)
    out = []
    for position, size in zip(positions[0], sizes[0], strict=True):
        data = shard[offset : offset + int(size)]
        offset += int(size)
        if not size:
            continue
        mesh = DracoPy.decode(data)
        q = np.asarray(mesh.points, np.float64).reshape(-1, 3)
        stored = grid_origin + vertex_offsets[0] + chunk_shape * (position + q / top)
        out.append((stored @ transform[:, :3].T + transform[:, 3], len(mesh.faces)))
    return out


def _check_multires(
    root: Path, labels: LabelVolume, res: NDArray[np.float64], v: LabelVerification
) -> None:
    mesh_info = json.loads(read_decoded(root / "mesh" / "info") or b"{}")
    spec = ShardingSpec.from_json(mesh_info["sharding"])
    for segment in _sampled_segments(labels):
        shard_file = root / "mesh" / spec.shard_name(spec.locate(segment)[0])
        if not shard_file.is_file():
            v.problems.append(f"mesh shard {shard_file.name} missing")
            continue
        fragments = _lod0_vertices(shard_file.read_bytes(), spec, segment, mesh_info)
        if not fragments:
            v.problems.append(f"no multi-resolution mesh of segment {segment}")
            continue
        lo_nm, hi_nm = _segment_box(labels, segment, res)
        v.segments += 1
        for verts, triangles in fragments:
            if np.any(verts < lo_nm) or np.any(verts > hi_nm):
                v.problems.append(f"a mesh fragment lies outside segment {segment}'s box")
            v.fragments += 1
            v.vertices += len(verts)
            v.triangles += triangles


def _sampled_segments(labels: LabelVolume) -> list[int]:
    ids = labels.segment_ids()
    return [int(s) for s in ids[np.linspace(0, len(ids) - 1, MESH_SAMPLES).astype(int)]]


def _check_meshes(
    root: Path, labels: LabelVolume, res: NDArray[np.float64], v: LabelVerification
) -> None:
    info = read_decoded(root / "mesh" / "info")
    if info is None:
        v.problems.append("mesh/info missing")
        return
    if json.loads(info).get("@type") == MULTILOD_MESH_TYPE:
        _check_multires(root, labels, res, v)
        return
    for segment in _sampled_segments(labels):
        manifest = read_decoded(root / "mesh" / f"{segment}:0")
        if manifest is None:
            v.problems.append(f"mesh manifest {segment}:0 missing")
            continue
        names = json.loads(manifest)["fragments"]
        lo_nm, hi_nm = _segment_box(labels, segment, res)
        v.segments += 1
        for name in names:
            data = read_decoded(root / "mesh" / name)
            if data is None:
                v.problems.append(f"mesh fragment {name} missing")
                continue
            n = int(np.frombuffer(data[:4], "<u4")[0])
            verts = np.frombuffer(data[4 : 4 + 12 * n], "<f4").reshape(n, 3)
            faces = np.frombuffer(data[4 + 12 * n :], "<u4")
            if faces.size % 3 or (faces.size and int(faces.max()) >= n):
                v.problems.append(f"mesh fragment {name} is malformed")
                continue
            if n and (np.any(verts < lo_nm) or np.any(verts > hi_nm)):
                v.problems.append(f"mesh fragment {name} lies outside segment {segment}'s box")
            v.fragments += 1
            v.vertices += n
            v.triangles += faces.size // 3


def verify_labels(root: Path, labels: LabelVolume, *, top_size: int | None) -> LabelVerification:
    """Check the segmentation dataset at ``root`` against ``labels``."""
    v = LabelVerification()
    dataset = open_dataset(root, v, labels.shape, "uint32", top_size)
    if dataset is None:
        return v
    base = dataset.scales[0]
    for index, scale in enumerate(dataset.scales):
        if scale.encoding != "compressed_segmentation":
            v.problems.append(f"scale {scale.key}: encoding {scale.encoding}")
            continue
        missing = [k.name for k in scale.iter_chunk_keys() if find_chunk(root, k) is None]
        if missing:
            v.problems.append(
                f"scale {scale.key}: {len(missing)} chunks missing, e.g. {missing[0]}"
            )
            continue
        g = scale.grid_shape()
        keys = [_middle(scale)]
        if index == 0:
            keys += [scale.chunk_key((0, 0, 0)), scale.chunk_key((g[0] - 1, g[1] - 1, g[2] - 1))]
        for key in keys:
            chunk = _decode(root, scale, key)
            assert chunk is not None
            if index == 0:
                if not np.array_equal(chunk, labels.region(key.start, key.stop)):
                    v.problems.append(f"scale 0 chunk {key.name} differs from the labels")
            elif not chunk.any():
                v.problems.append(f"scale {scale.key} chunk {key.name} is all background")
            elif index == 1:
                f = [round(r / b) for r, b in zip(scale.resolution, base.resolution, strict=True)]
                a = [s * k for s, k in zip(key.start, f, strict=True)]
                b = [s * k for s, k in zip(key.stop, f, strict=True)]
                if any(e > n for e, n in zip(b, base.size, strict=True)):
                    continue  # a clipped block at the volume's end; the middle has none
                region = labels.region((a[0], a[1], a[2]), (b[0], b[1], b[2]))
                if not _is_mode(chunk, region, f):
                    v.problems.append(f"scale {scale.key} chunk {key.name} is not a block mode")
    if dataset.mesh is None:
        v.problems.append("info has no mesh key")
    else:
        _check_meshes(root, labels, np.array(base.resolution, np.float64), v)
    return v
