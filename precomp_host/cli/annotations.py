"""``precomp-host annotations build``: :func:`add_annotations_arguments` and
:func:`run_annotations`.

A NeuroTrALE annotation tree or a CSV/JSON table becomes annotation layers in Neuroglancer's
precomputed format (:mod:`precomp_host.build.annotations`, imported when the command runs).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .options import CommandError, common_options, positive_float, positive_int
from .progress import fmt_bytes

if TYPE_CHECKING:
    import argparse


def add_annotations_arguments(p: argparse.ArgumentParser) -> None:
    # A sub-subcommand, so that "annotations" can later gain "serve"/"check" beside "build".
    ab = p.add_subparsers(dest="action", required=True).add_parser(
        "build",
        parents=[common_options()],
        help="NeuroTrALE tree / CSV / JSON -> annotation layer(s)",
    )
    ab.add_argument(
        "source",
        metavar="SRC",
        help="a NeuroTrALE annotation folder (-> OUT/points, OUT/lines), or a .csv/.json table",
    )
    ab.add_argument("out", metavar="OUT", help="folder to write")
    ab.add_argument(
        "--resolution",
        type=positive_float,
        nargs=3,
        default=[1.0, 1.0, 1.0],
        metavar=("X", "Y", "Z"),
        help="size of one coordinate unit, e.g. the image's voxel size (default 1 1 1)",
    )
    ab.add_argument("--unit", default="nm", choices=("nm", "um", "mm", "m"))
    ab.add_argument(
        "--type",
        dest="kind",
        choices=("LINE", "AXIS_ALIGNED_BOUNDING_BOX", "ELLIPSOID"),
        help="tables with x2,y2,z2: what the second point means (default LINE)",
    )
    ab.add_argument(
        "--limit", type=positive_int, default=None, help="most annotations per spatial cell"
    )
    ab.add_argument(
        "--overwrite", action="store_true", help="replace earlier annotation layers of OUT"
    )
    # Opt-in, not above a size: a sharded layer needs Range requests from every server and
    # client on the way, which a user turning it on knows to check.
    ab.add_argument(
        "--sharded",
        action="store_true",
        help="write each index as a few .shard files instead of a file per annotation/cell",
    )


def run_annotations(args: argparse.Namespace) -> int:
    from ..build.annotation_sources import AnnotationSourceError, Dimensions, open_annotations
    from ..build.annotation_writer import write_annotations
    from ..build.annotations import DEFAULT_LIMIT, AnnotationError

    try:
        tables = open_annotations(
            args.source, Dimensions(tuple(args.resolution), args.unit), args.kind
        )
        written = write_annotations(
            tables,
            args.out,
            limit=args.limit or DEFAULT_LIMIT,
            overwrite=args.overwrite,
            sharded=args.sharded,
        )
    except (AnnotationSourceError, AnnotationError, OSError) as e:
        raise CommandError(str(e)) from None
    if not args.quiet:
        for name, summary in written.items():
            where = os.path.join(args.out, name) if name else args.out
            print(
                f"Wrote {where}: {summary.count} annotations, {summary.levels} spatial levels,"
                f" {summary.files} files ({fmt_bytes(summary.bytes)})"
            )
    return 0
