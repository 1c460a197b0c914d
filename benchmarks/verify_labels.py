"""Checking a segmentation build before its time is reported: :func:`verify_labels`.

Like :mod:`benchmarks.verify`, read as a viewer would and independently of the tool: ``info``
through the core model; every chunk of every scale present (nested or flat, plain or with an
encoding suffix); sampled scale-0 chunks decoded from ``compressed_segmentation`` (the C++
package) equal the generated labels exactly; in the middle chunk of scale 1 each voxel's
label has the maximal count in its block (a mode, whatever the tie rule); the coarser scales'
middle chunks are not all background. Meshes: ``mesh/info`` exists, and for a sample of
segments the ``<id>:0`` manifest lists fragments that parse as legacy meshes (meshes.md) whose
vertices lie in the segment's possible box, in nm, within one voxel. The sampled meshes' vertex
and triangle totals are reported, so the degree of simplification can be compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import compressed_segmentation as cseg
import numpy as np

from precomp_host.core.encodings import BY_SUFFIX

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


def _check_meshes(
    root: Path, labels: LabelVolume, res: NDArray[np.float64], v: LabelVerification
) -> None:
    if read_decoded(root / "mesh" / "info") is None:
        v.problems.append("mesh/info missing")
        return
    ids = labels.segment_ids()
    picks = ids[np.linspace(0, len(ids) - 1, MESH_SAMPLES).astype(int)]
    for segment in (int(s) for s in picks):
        manifest = read_decoded(root / "mesh" / f"{segment}:0")
        if manifest is None:
            v.problems.append(f"mesh manifest {segment}:0 missing")
            continue
        names = json.loads(manifest)["fragments"]
        lo, hi = labels.bounds(segment)
        lo_nm = (np.array(lo) - 1) * res
        hi_nm = (np.array(hi) + 1) * res
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
