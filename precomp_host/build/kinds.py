"""What differs between an image build and a segmentation build: :class:`VolumeKind`.

A build asks its kind (:func:`kind_for`) for everything that depends on the volume type: how
the source is read (labels are checked and widened), which data types and codecs fit, the
default downsampler, the ``info`` members the kind adds (``mesh``, ``segment_properties``),
what ``--resume`` must also compare, and the slab observers that see scale 0 stream by
(meshes, voxel counts). The orchestration (:mod:`precomp_host.build.builder`) never branches on
the volume type itself.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .chunk_codecs import ChunkCodec, make_codec
from .pyramid import DOWNSAMPLERS, Downsampler
from .segmentation import (
    LabelVolume,
    MeshObserver,
    SegmentationOptions,
    VoxelCountObserver,
    plan_segmentation,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np

    from ..core.model import Dataset, Scale, VolumeType
    from .sources import Volume
    from .streaming import SlabObserver
    from .writer import Writer

#: Data types an image volume may have (issue #2); the spec's other integer types are stored
#: as given too.
IMAGE_DTYPES = ("uint8", "uint16", "uint32", "float32", "int8", "int16", "int32")


@dataclass(frozen=True)
class SlabContext:
    """What a slab observer may use: scale 0, the writer and the build's workers."""

    scale: Scale
    writer: Writer
    #: Runs a task (returning bytes written) on the build's chunk pool.
    submit: Callable[[Callable[[], int]], None]
    workers: int
    #: Reads slice ``z`` (from 0) of the volume as ``[1, y, x, c]``.
    read_slice: Callable[[int], np.ndarray]
    resume: bool


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

    def observers(self, context: SlabContext) -> list[SlabObserver]:
        return []


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
                   "simplification": dataclasses.asdict(seg.simplification)}  # fmt: skip
        return {"meshing": json.loads(json.dumps(meshing))}  # as read back from the state file

    def observers(self, context: SlabContext) -> list[SlabObserver]:
        found: list[SlabObserver] = [VoxelCountObserver(self.options, context.writer)]
        if self.options.mesh:
            found.insert(
                0,
                MeshObserver(
                    context.scale,
                    self.options,
                    context.writer,
                    context.submit,
                    context.workers,
                    read_slice=context.read_slice,
                    resume=context.resume,
                ),
            )
        return found


def kind_for(volume_type: VolumeType, segmentation: SegmentationOptions) -> VolumeKind:
    """The kind of a build of ``volume_type`` (``segmentation`` used by segmentations only)."""
    return SegmentationKind(segmentation) if volume_type == "segmentation" else VolumeKind()
