"""``precomp-host build`` and ``precomp-host sample``: arguments to :class:`BuildOptions`, then
:func:`~precomp_host.build.builder.build_dataset` with a :class:`~.progress.ProgressView`.

The choices offered come from the registries' names (:mod:`precomp_host.build.names`,
:data:`~precomp_host.core.layout.LAYOUTS`), which import no numpy: ``--help`` stays light.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core.layout import LAYOUTS, NESTED
from ..core.model import VOLUME_TYPES
from .options import CommandError, non_negative_int, positive_float, positive_int, vec3
from .progress import ProgressView

if TYPE_CHECKING:
    from ..build.builder import BuildOptions
    from ..build.segmentation import SegmentationOptions


def _compress_list(text: str) -> tuple[str, ...]:
    from ..core.encodings import ENCODINGS

    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    for n in names:
        if n not in ENCODINGS:
            known = ", ".join(ENCODINGS)
            raise argparse.ArgumentTypeError(f"unknown compression {n!r} (use {known} or none)")
    return names


def _byte_size(text: str) -> int:
    from ..core.shard_grid import parse_byte_size

    try:
        return parse_byte_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: ``--shard-size``'s default: large enough that a terabyte volume is a few hundred files,
#: small enough for a filesystem or object store to copy one in seconds (issue 13's example).
DEFAULT_SHARD_SIZE = "2GB"


def _shard_size(args: argparse.Namespace) -> int | None:
    """``--sharded``'s target shard size in bytes; None without it (bad combinations fail)."""
    from ..core.shard_grid import parse_byte_size

    if not args.sharded:
        if args.shard_size is not None:
            raise CommandError("--shard-size applies to --sharded; add --sharded")
        return None
    if args.layout is not None:
        raise CommandError(
            "--layout names chunk files; --sharded names shard files by shard number (drop one)"
        )
    size: int = args.shard_size or parse_byte_size(DEFAULT_SHARD_SIZE)
    return size


def _add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        nargs="+",
        default=[64],
        metavar="N",
        help="chunk size: one number for a cube or three for x y z (default 64)",
    )
    p.add_argument(
        "--scales",
        type=positive_int,
        default=None,
        metavar="N",
        help="number of scales (default: down to where the volume fits one chunk)",
    )
    p.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default=None,
        help="chunk files as key/x0-x1/y0-y1/z0-z1 (nested, default) or flat; not with"
        " --sharded, whose shard files are named by shard number",
    )
    p.add_argument(
        "--sharded",
        action="store_true",
        help="store each scale's chunks in shard files (neuroglancer_uint64_sharded_v1), read"
        " with HTTP Range: a few files per scale instead of one per chunk",
    )
    p.add_argument(
        "--shard-size",
        type=_byte_size,
        default=None,
        metavar="SIZE",
        help="largest shard file with --sharded, e.g. 2GB (default), 512MiB",
    )
    p.add_argument(
        "--compress",
        type=_compress_list,
        default=None,  # BuildOptions' default: every content coding
        metavar="LIST",
        help="precompressed siblings to store: gzip,br (default), gzip, br or none",
    )
    p.add_argument(
        "--keep-identity",
        action="store_true",
        help="also store the uncompressed file beside its .gz",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="encoding threads (default: all cores)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted build into OUT, skipping finished chunks and mesh regions",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the dataset already in OUT")
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the region tasks on a Dask cluster: a scheduler (tcp://host:8786) or local:N"
        " (N worker processes); needs the 'cluster' extra",
    )
    p.add_argument(
        "--scratch",
        default=None,
        metavar="DIR",
        help="OUT in a bucket: folder for the build's scratch store (default: a temporary one);"
        " with a remote --cluster, a folder every worker mounts",
    )
    p.add_argument(
        "--endpoint-url",
        default=None,
        metavar="URL",
        help="OUT=s3://...: an S3-compatible endpoint (MinIO, Ceph; default: AWS, or botocore's"
        " AWS_ENDPOINT_URL)",
    )


def _add_segmentation_arguments(p: argparse.ArgumentParser) -> None:
    from ..build.names import LABEL_DOWNSAMPLER_NAMES, MESH_FORMAT_NAMES, PRESET_NAMES

    g = p.add_argument_group("segmentation (--type segmentation)")
    g.add_argument(
        "--block-size",
        type=positive_int,
        nargs="+",
        default=[8],
        metavar="N",
        help="compressed_segmentation block size: 1 or 3 numbers (default 8)",
    )
    g.add_argument(
        "--downsample",
        choices=LABEL_DOWNSAMPLER_NAMES,
        default=None,
        help="label pyramid: most frequent label per block (mode, default) or first voxel",
    )
    g.add_argument(
        "--sparse", action="store_true", help="mode ignores background 0 unless a block is all 0"
    )
    g.add_argument(
        "--mesh",
        nargs="?",
        const="legacy",
        default=None,
        choices=MESH_FORMAT_NAMES,
        help="mesh every segment: legacy (default) or multires (sharded multi-resolution Draco"
        " meshes; needs the 'multires' extra)",
    )
    g.add_argument(
        "--segments", nargs="+", default=None, metavar="ID", help="mesh only these segment ids"
    )
    g.add_argument(
        "--mesh-simplification",
        choices=PRESET_NAMES,
        default=None,
        help="fqmr (default, fast), quadric (igneous' simplifier and defaults) or none",
    )
    g.add_argument(
        "--names", default=None, metavar="CSV", help="segment names: a CSV of id,name[,tags]"
    )


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    from ..build.names import CODEC_NAMES

    p.add_argument(
        "source",
        metavar="SRC",
        help="folder of 2D TIFF slices, a glob, a multi-page/OME TIFF, a .npy, a .nii(.gz),"
        " a .zarr or .n5 folder, an .h5 or .ims file, or a precomputed dataset (folder or URL)",
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to write")
    p.add_argument(
        "--resolution",
        type=positive_float,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="voxel size in nanometres (default: the file's, where it has one)",
    )
    p.add_argument(
        "--type",
        dest="volume_type",
        choices=VOLUME_TYPES,
        default=None,
        help=f"default: a precomputed source's own type, else {VOLUME_TYPES[0]}",
    )
    p.add_argument(
        "--encoding",
        default=None,
        choices=CODEC_NAMES,
        help="chunk encoding (default raw for images, compressed_segmentation for"
        " segmentations; jpeg and png need uint8 with 1 or 3 channels)",
    )
    p.add_argument("--jpeg-quality", type=positive_int, default=95, metavar="Q")
    _add_segmentation_arguments(p)
    p.add_argument(
        "--voxel-offset",
        type=int,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="position of the first voxel (default: the file's origin, else 0 0 0)",
    )
    p.add_argument(
        "--npy-axes",
        default=None,
        metavar="AXES",
        help="axes of a .npy array, e.g. ZYX (default), XYZ, ZYXC",
    )
    _add_input_arguments(p)
    _add_output_arguments(p)


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("containers (HDF5, Zarr, N5, NIfTI, Imaris)")
    g.add_argument("--dataset", metavar="PATH", help="the array inside an HDF5, Zarr or N5 file")
    g.add_argument(
        "--timepoint", type=non_negative_int, metavar="T", help="the time point of a 4D volume"
    )
    g.add_argument(
        "--channel", type=non_negative_int, metavar="C", help="one channel of an Imaris file"
    )
    g.add_argument(
        "--use-source-pyramid",
        action="store_true",
        help="OME-Zarr: store the file's own levels as the scales instead of downsampling",
    )


def _open_input(args: argparse.Namespace) -> list[Any]:
    """The source volume (every level with --use-source-pyramid); sets the grid on ``args``."""
    from ..build.inputs import open_source, resolve_grid
    from ..build.inputs.zarr import open_ome_levels
    from ..build.sources import SourceError

    levels: list[Any]
    try:
        if args.use_source_pyramid:
            levels = open_ome_levels(args.source, dataset=args.dataset, timepoint=args.timepoint)
        else:
            levels = [
                open_source(
                    args.source,
                    dataset=args.dataset,
                    timepoint=args.timepoint,
                    channel=args.channel,
                    npy_axes=args.npy_axes,
                )
            ]
        args.resolution, args.voxel_offset = resolve_grid(
            levels[0],
            tuple(args.resolution) if args.resolution is not None else None,
            tuple(args.voxel_offset) if args.voxel_offset is not None else None,
            args.source,
        )
    except SourceError as e:
        raise CommandError(str(e)) from None
    if args.volume_type is None:
        args.volume_type = getattr(levels[0], "volume_type", VOLUME_TYPES[0])
    return levels


class _KindOptions(NamedTuple):
    """The members of BuildOptions that ``--type`` decides."""

    encoding: str
    codec_options: dict[str, object]
    downsample: str | None
    segmentation: SegmentationOptions


def _kind_options(args: argparse.Namespace) -> _KindOptions:
    """The BuildOptions members that depend on ``--type`` (segmentation flags on an image are
    an error)."""
    from ..build.meshes import PRESETS
    from ..build.segment_properties import NamesError, read_names_csv
    from ..build.segmentation import SegmentationOptions, parse_segments

    seg_only = [
        flag
        for flag, used in (
            ("--downsample", args.downsample),
            ("--sparse", args.sparse),
            ("--mesh", args.mesh),
            ("--segments", args.segments),
            ("--mesh-simplification", args.mesh_simplification),
            ("--names", args.names),
        )
        if used
    ]
    if args.volume_type != "segmentation":
        if seg_only:
            raise CommandError(f"{seg_only[0]} needs --type segmentation")
        encoding = args.encoding or "raw"
        quality = {"quality": args.jpeg_quality} if encoding == "jpeg" else {}
        return _KindOptions(encoding, quality, None, SegmentationOptions())
    if args.sparse and args.downsample == "stride":
        raise CommandError("--sparse applies to mode downsampling, not stride")
    try:
        segments = parse_segments(args.segments) if args.segments is not None else None
        names = tuple(read_names_csv(args.names)) if args.names else ()
    except (ValueError, NamesError) as e:
        raise CommandError(str(e)) from None
    if segments is not None and not args.mesh:
        raise CommandError("--segments selects what --mesh meshes; add --mesh")
    if args.mesh_simplification is not None and not args.mesh:
        raise CommandError("--mesh-simplification applies to --mesh; add --mesh")
    if args.mesh == "multires":
        _require_multires()
    encoding = args.encoding or "compressed_segmentation"
    codec_options: dict[str, object] = {}
    if encoding == "compressed_segmentation":
        codec_options["block_size"] = vec3(args.block_size, "--block-size")
    elif encoding == "jpeg":
        codec_options["quality"] = args.jpeg_quality
    return _KindOptions(
        encoding,
        codec_options,
        "mode_sparse" if args.sparse else args.downsample or "mode",
        SegmentationOptions(
            mesh=args.mesh is not None,
            mesh_format=args.mesh or "legacy",
            segments=segments,
            names=names,
            simplification=PRESETS[args.mesh_simplification or "fqmr"],
        ),
    )


def _require_multires() -> None:
    """Draco (fragments) and mmh3 (the shards' hash) are the ``multires`` extra's: say so
    before anything is written, not after every region is meshed."""
    import importlib.util

    missing = [m for m in ("DracoPy", "mmh3") if importlib.util.find_spec(m) is None]
    if missing:
        raise CommandError(
            f"--mesh multires needs {' and '.join(missing)}: pip install 'precomp-host[multires]'"
        )


def _build_options(args: argparse.Namespace) -> BuildOptions:
    from ..build.builder import BuildOptions

    kind = _kind_options(args)
    shard_size = _shard_size(args)
    res, offset = args.resolution, args.voxel_offset
    return BuildOptions(
        resolution=(res[0], res[1], res[2]),
        volume_type=args.volume_type,
        chunk_size=vec3(args.chunk_size, "--chunk-size"),
        max_scales=args.scales,
        encoding=kind.encoding,
        codec_options=kind.codec_options,
        layout=args.layout or NESTED.name,
        compress=BuildOptions.compress if args.compress is None else args.compress,
        keep_identity=args.keep_identity,
        voxel_offset=(offset[0], offset[1], offset[2]),
        downsample=kind.downsample,
        segmentation=kind.segmentation,
        workers=args.workers,
        resume=args.resume,
        overwrite=args.overwrite,
        npy_axes=args.npy_axes,
        shard_size=shard_size,
        endpoint_url=args.endpoint_url,
        cluster=args.cluster,
        scratch=args.scratch,
    )


def _print_shard_plan(source: Any, options: BuildOptions) -> None:
    """Shards per scale and chunks per shard, before the build starts (issue 13)."""
    from ..build.builder import BuildError, plan_build
    from ..core.shard_grid import ShardPlan

    try:
        dataset = plan_build(source, options)
    except BuildError as e:
        raise CommandError(str(e)) from None
    print(f"Sharded: shard files of at most {options.shard_size:,} bytes")
    for scale in dataset.scales:
        plan = ShardPlan.for_scale(scale)
        assert plan is not None  # the build shards every scale with box-shaped shards
        x, y, z = plan.shard_shape
        print(
            f"  scale {scale.key}: {plan.num_shards} shards, up to {plan.chunks_per_shard}"
            f" chunks per shard ({x} x {y} x {z}), {plan.num_chunks} chunks"
        )


def _run_build(source: Any, out: str, options: BuildOptions, label: str, quiet: bool) -> None:
    from ..build.builder import BuildError, build_dataset

    view = None if quiet else ProgressView(sys.stderr, label)
    plan = None if quiet else _print_plan
    try:
        build_dataset(source, out, options, progress=view, plan=plan)
    except BuildError as e:
        raise CommandError(str(e)) from None


def _print_plan(line: str) -> None:
    print(f"Plan: {line}", flush=True)


def run_build(args: argparse.Namespace) -> int:
    from ..build.objectwriter import is_store_url

    levels = _open_input(args)
    options = _build_options(args)
    label = os.path.basename(args.out.rstrip("/"))
    to_store = is_store_url(args.out)
    if to_store and len(levels) > 1:
        raise CommandError(f"{args.out}: --use-source-pyramid writes to a folder, not a bucket")
    if options.shard_size is not None and len(levels) == 1 and not args.quiet:
        _print_shard_plan(levels[0], options)
    if len(levels) > 1:
        from ..build.builder import BuildError
        from ..build.inputs.source_pyramid import build_source_pyramid

        view = None if args.quiet else ProgressView(sys.stderr, label)
        try:
            build_source_pyramid(levels, args.out, options, view)
        except BuildError as e:
            raise CommandError(str(e)) from None
    else:
        _run_build(levels[0], args.out, options, label, args.quiet)
    if not to_store:  # a bucket gets the volume; its meshes stay where they are
        _carry_over(levels[0], args)
    if not args.quiet and to_store:
        print(f"Wrote {args.out}.")
    elif not args.quiet:
        print(f"Wrote {args.out}. View it with: precomp-host serve {args.out}")
    return 0


def _carry_over(volume: Any, args: argparse.Namespace) -> None:
    """A precomputed source's meshes and segment properties, unless this build made its own."""
    from ..build.inputs.precomputed import PrecomputedVolume, carry_over

    if isinstance(volume, PrecomputedVolume) and not args.mesh:
        compress = {"compress": args.compress} if args.compress is not None else {}
        carried = carry_over(volume, args.out, layout=args.layout or NESTED.name, **compress)
        if carried and not args.quiet:
            print(f"Carried over from {args.source}: {', '.join(carried)}")


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "out",
        metavar="OUT",
        nargs="?",
        default="sample-data",
        help="folder for the sample datasets (default ./sample-data)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier sample")


def run_sample(args: argparse.Namespace) -> int:
    from ..build.builder import BuildOptions
    from ..build.sample import SAMPLE_RESOLUTION, sample_image, sample_labels, sample_labels_options
    from ..build.sources import volume_from_array

    image_out = os.path.join(args.out, "image")
    options = BuildOptions(resolution=SAMPLE_RESOLUTION, overwrite=args.overwrite)
    _run_build(volume_from_array(sample_image()), image_out, options, "image", args.quiet)
    print(f"Sample dataset written to {image_out}")
    labels_out = os.path.join(args.out, "labels")
    _run_build(
        volume_from_array(sample_labels()),
        labels_out,
        sample_labels_options(args.overwrite),
        "labels",
        args.quiet,
    )
    print(f"Sample segmentation (meshes, names) written to {labels_out}")
    print(f"View it in Neuroglancer with:  precomp-host serve {args.out} --open")
    return 0
