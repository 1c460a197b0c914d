"""What differs between an image build and a segmentation build: :class:`VolumeKind`.

A build asks its kind (:func:`kind_for`) for everything that depends on the volume type: how
the source is read (labels are checked and widened), which data types and codecs fit, the
default downsampler, the ``info`` members the kind adds (``mesh``, ``segment_properties``),
what ``--resume`` must also compare, and the slab observers that see scale 0 stream by
(meshes, voxel counts). The orchestration (:mod:`precomp_host.build.builder`) never branches on
the volume type itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from typing import TYPE_CHECKING, Any, ClassVar

from .chunk_codecs import ChunkCodec, make_codec
from .pyramid import DOWNSAMPLERS, Downsampler
from .segmentation import (
    LabelVolume,
    MeshSettings,
    ProcessMesher,
    SegmentationOptions,
    plan_meshes,
    plan_segmentation,
    run_mesh_task,
    write_mesh_metadata,
    write_segment_properties,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    import numpy as np

    from ..core.model import Dataset, Scale, VolumeType
    from .regions import Scratch
    from .sources import Volume
    from .writer import Writer

#: Data types an image volume may have (issue #2); the spec's other integer types are stored
#: as given too.
IMAGE_DTYPES = ("uint8", "uint16", "uint32", "float32", "int8", "int16", "int32")


class VolumeKind:
    """The image kind; :class:`SegmentationKind` overrides what labels change."""

    name: ClassVar[VolumeType] = "image"
    default_downsample: ClassVar[str] = "mean"
    #: Data types the source may have (None: any that :meth:`open` accepts).
    data_types: ClassVar[tuple[str, ...] | None] = IMAGE_DTYPES

    def open(self, volume: Volume) -> Volume:
        """The source as this kind stores it."""
        return volume

    def codec(
        self, encoding: str, options: Mapping[str, object], dtype: np.dtype[Any], channels: int
    ) -> ChunkCodec:
        """The chunk codec; ``ValueError`` (one line) when it cannot store this volume."""
        if self.data_types is not None and dtype.name not in self.data_types:
            raise ValueError(f"unsupported data type {dtype} for an {self.name} volume")
        codec = make_codec(encoding, **options)
        reason = codec.unsupported(dtype, channels, self.name)
        if reason:
            raise ValueError(reason)
        return codec

    def downsampler(self, name: str | None) -> Downsampler:
        return DOWNSAMPLERS[name or self.default_downsample]

    def plan(self, dataset: Dataset) -> Dataset:
        """``dataset`` with the ``info`` members this kind adds."""
        return dataset

    def state(self) -> dict[str, Any]:
        """Settings besides ``info`` that the output depends on (compared by ``--resume``)."""
        return {}

    #: Whether the pyramid tasks count voxels per label at scale 0 (for segment properties).
    count_voxels: ClassVar[bool] = False

    @contextlib.contextmanager
    def extra_tasks(
        self, volume: Volume, scale: Scale, writer: Writer, *, resume: bool, workers: int | None
    ) -> Iterator[list[Callable[[], int]]]:
        """The build's tasks besides the pyramid (each returns the bytes it stored, and
        pickles for a cluster), and the resources they need while they run.

        :param workers: processes this build may start for CPU work that holds the GIL; None
            when the tasks run on a cluster's worker processes already."""
        yield []

    def write_metadata(
        self, writer: Writer, scratch: Scratch, scale: Scale, *, resume: bool, workers: int
    ) -> None:
        """This kind's files written after every task (manifests, segment properties)."""


class SegmentationKind(VolumeKind):
    """Labels: widened and checked, mode pyramid, voxel counts and (optionally) meshes."""

    name: ClassVar[VolumeType] = "segmentation"
    default_downsample: ClassVar[str] = "mode"
    data_types: ClassVar[tuple[str, ...] | None] = None  # LabelVolume widens or refuses

    def __init__(self, options: SegmentationOptions) -> None:
        self.options = options

    def open(self, volume: Volume) -> Volume:
        return LabelVolume(volume)

    def plan(self, dataset: Dataset) -> Dataset:
        return plan_segmentation(dataset, self.options)

    def state(self) -> dict[str, Any]:
        if not self.options.mesh:
            return {}
        # What a meshed region depends on besides its labels: a resumed build reuses regions.
        seg = self.options
        meshing = {"segments": seg.segments, "region_size": seg.region_size,
                   "simplification": dataclasses.asdict(seg.simplification),
                   "format": seg.mesh_format}  # fmt: skip
        return {"meshing": json.loads(json.dumps(meshing))}  # as read back from the state file

    count_voxels: ClassVar[bool] = True

    @contextlib.contextmanager
    def extra_tasks(
        self, volume: Volume, scale: Scale, writer: Writer, *, resume: bool, workers: int | None
    ) -> Iterator[list[Callable[[], int]]]:
        if not self.options.mesh:
            yield []
            return
        settings = MeshSettings(volume, scale, self.options, writer, resume)
        tasks = plan_meshes(scale, self.options)
        if workers is None:  # a cluster worker meshes in its own process
            yield [functools.partial(run_mesh_task, task, settings) for task in tasks]
            return
        mesher = ProcessMesher(workers)
        try:
            yield [functools.partial(run_mesh_task, task, settings, mesher) for task in tasks]
        finally:
            mesher.close()

    def write_metadata(
        self, writer: Writer, scratch: Scratch, scale: Scale, *, resume: bool, workers: int
    ) -> None:
        if self.options.mesh:
            write_mesh_metadata(writer, scale, self.options, resume=resume, workers=workers)
        write_segment_properties(self.options, writer, scratch)


def kind_for(volume_type: VolumeType, segmentation: SegmentationOptions) -> VolumeKind:
    """The kind of a build of ``volume_type`` (``segmentation`` used by segmentations only)."""
    return SegmentationKind(segmentation) if volume_type == "segmentation" else VolumeKind()
