"""Sharded multi-resolution meshes from the region fragments: :func:`write_mesh_shards`.

With ``--mesh multires`` the region tasks mesh exactly as for legacy meshes
(:func:`~precomp_host.build.meshes.mesh_region`), but keep each region's fragments in one
scratch file beside its journal record instead of one ``mesh/`` file per segment and region.
Once every region is meshed, each segment's fragments are merged
(:func:`~precomp_host.build.meshes.merge_fragments`: fragments of neighbouring regions share
their border vertices bitwise, so the merge is watertight) and turned into a multi-resolution
mesh (:func:`~precomp_host.build.multires.multires_mesh`) in the mesh worker processes.

Memory: a shard is streamed to disk by :func:`~precomp_host.build.shards.write_shard`, which
reads one segment at a time; :class:`MeshStream` computes the segments a bounded window ahead
of that order, so a build holds a few segments' meshes, never a shard's or a volume's.
Determinism: a segment's fragments are merged in region order, and its mesh is a pure function
of them and the settings, so the shard bytes do not depend on ``--workers``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .meshes import merge_fragments
from .multires import (
    Manifest,
    MultiresMesh,
    MultiresSettings,
    Octree,
    choose_mesh_sharding,
    multires_mesh,
    write_sharded,
)
from .shards import shard_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from concurrent.futures import Future

    from ..core.sharding import ShardingSpec
    from .writer import DatasetWriter

    #: A fragment in a region's scratch file: (path relative to the dataset, offset, size).
    FragmentRef = tuple[str, int, int]

log = logging.getLogger(__name__)


def segment_multires(
    root: str, refs: Sequence[FragmentRef], settings: MultiresSettings
) -> MultiresMesh | None:
    """One segment's multi-resolution mesh from its region fragments (a worker task)."""
    fragments = []
    for rel, offset, size in refs:
        with open(os.path.join(root, rel), "rb") as f:
            f.seek(offset)
            fragments.append(f.read(size))
    vertices, faces = merge_fragments(fragments)
    return multires_mesh(vertices, faces, settings)


def empty_mesh(settings: MultiresSettings) -> MultiresMesh:
    """A manifest with one LOD and no node: a segment whose triangles all quantized away
    (meshes.md allows LODs without fragments; readers draw nothing)."""
    octree = Octree((0, 0, 0), settings.min_chunk, 1)
    return MultiresMesh(Manifest(octree, (1.0,), (np.zeros((0, 3), np.uint32),), ((),)), b"")


class MeshStream(Mapping[int, MultiresMesh]):
    """A shard's meshes by segment id, computed ``window`` segments ahead of ``order``.

    ``order`` is the order the shard writer asks in; a segment asked out of that order is
    still answered (computed then), only without the head start. The last answer is kept,
    since the writer asks for a segment's fragment data and then for its manifest.

    :param submit: starts one segment's computation (in a worker process).
    """

    def __init__(
        self,
        order: Sequence[int],
        submit: Callable[[int], Future[MultiresMesh | None]],
        settings: MultiresSettings,
        window: int,
    ) -> None:
        self._order, self._ids = list(order), frozenset(order)
        self._submit, self._settings, self._window = submit, settings, max(1, window)
        self._next = 0
        self._pending: dict[int, Future[MultiresMesh | None]] = {}
        self._last: tuple[int, MultiresMesh] | None = None

    def __getitem__(self, segment: int) -> MultiresMesh:
        if self._last is not None and self._last[0] == segment:
            return self._last[1]
        if segment not in self._ids:
            raise KeyError(segment)
        self._fill()
        future = self._pending.pop(segment, None) or self._submit(segment)
        self._last = None  # drop the previous mesh before waiting for the next
        mesh = future.result() or empty_mesh(self._settings)
        self._last = (segment, mesh)
        self._fill()
        return mesh

    def __contains__(self, segment: object) -> bool:
        return segment in self._ids

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def _fill(self) -> None:
        while len(self._pending) < self._window and self._next < len(self._order):
            segment = self._order[self._next]
            self._next += 1
            self._pending[segment] = self._submit(segment)

    def cancel(self) -> None:
        """Cancel what was started ahead (after a failure)."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()


def write_mesh_shards(
    writer: DatasetWriter,
    mesh_dir: str,
    sources: Mapping[int, Sequence[FragmentRef]],
    settings: MultiresSettings,
    submit: Callable[[MultiresSettings, Sequence[FragmentRef]], Future[MultiresMesh | None]],
    *,
    window: int,
    resume: bool = False,
) -> ShardingSpec:
    """Write every shard of ``mesh_dir`` from the segments' fragments; returns the sharding.

    :param sources: segment id -> its fragments, in region order.
    :param submit: runs :func:`segment_multires` for a segment's fragments (in a process).
    :param window: segments computed ahead of the one being written.
    :param resume: keep a shard file already on disk (shards are renamed into place whole).
    """
    spec = choose_mesh_sharding(len(sources))
    by_shard: dict[int, list[int]] = defaultdict(list)
    minishard: dict[int, int] = {}
    for segment in sorted(sources):
        shard, minishard[segment] = spec.locate(segment)
        by_shard[shard].append(segment)
    for shard, segments in sorted(by_shard.items()):
        if resume and writer.is_complete(shard_path(mesh_dir, spec, shard)):
            continue
        # write_shard writes minishard by minishard, ids ascending within each.
        order = sorted(segments, key=lambda s: (minishard[s], s))
        stream = MeshStream(order, lambda s: submit(settings, sources[s]), settings, window)
        try:
            size = write_sharded(writer, mesh_dir, spec, shard, stream)
        finally:
            stream.cancel()
        log.info("mesh shard %d: %d segments, %d bytes", shard, len(segments), size)
    return spec
