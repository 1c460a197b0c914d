"""The ``precomp-host`` command: ``build``, ``sample`` (and ``serve``, ``deploy``).

The only module that prints, configures logging or draws progress. Each command turns its
arguments into keyword arguments and imports its module lazily, so ``--help`` stays fast.
Errors in the input end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..build.builder import BuildOptions
    from ..core.progress import Progress

log = logging.getLogger("precomp_host")
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


# -- progress --------------------------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _fmt_time(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class ProgressView:
    """Draws progress (a build's chunks, an upload's objects): a bar with rate and ETA on a
    terminal, else periodic log lines."""

    def __init__(
        self, stream: TextIO, label: str, *, tty: bool | None = None, unit: str = "chunks"
    ) -> None:
        self.stream, self.label, self.unit = stream, label, unit
        self.tty = stream.isatty() if tty is None else tty
        self._last_draw = 0.0
        self._last_logged_tenth = -1
        self._last_log = time.monotonic()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        finished = p.done >= p.total
        frac = p.done / p.total if p.total else 1.0
        rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
        eta = (p.total - p.done) / rate if rate > 0 else 0.0
        if self.tty:
            if not finished and now - self._last_draw < 0.1:  # ~10 Hz
                return
            self._last_draw = now
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            line = (
                f"\r{self.label} [{bar}] {p.done}/{p.total} {self.unit} {frac:4.0%} "
                f"{rate:,.0f}/s {_fmt_bytes(p.bytes_written)} "
                f"{'in ' + _fmt_time(p.elapsed) if finished else 'ETA ' + _fmt_time(eta)}"
            )
            self.stream.write(line + ("\n" if finished else ""))
            self.stream.flush()
            return
        tenth = int(frac * 10)
        if finished or tenth > self._last_logged_tenth or now - self._last_log > 30:
            if tenth == self._last_logged_tenth and not finished and now - self._last_log <= 30:
                return
            self._last_logged_tenth, self._last_log = tenth, now
            log.info(
                "%s: %d/%d %s (%.0f%%), %.0f %s/s, %s written, %s %s",
                self.label,
                p.done,
                p.total,
                self.unit,
                frac * 100,
                rate,
                self.unit,
                _fmt_bytes(p.bytes_written),
                "done in" if finished else "ETA",
                _fmt_time(p.elapsed if finished else eta),
            )


# -- argument types --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    # float() accepts "inf" and "nan"; neither is a voxel size (nor valid JSON in info).
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _compress_list(text: str) -> tuple[str, ...]:
    from ..core.encodings import ENCODINGS

    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    for n in names:
        if n not in ENCODINGS:
            raise argparse.ArgumentTypeError(f"unknown compression {n!r} (use gzip, br or none)")
    return names


# -- commands --------------------------------------------------------------------------------


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunk-size",
        type=_positive_int,
        nargs="+",
        default=[64],
        metavar="N",
        help="chunk size: one number for a cube or three for x y z (default 64)",
    )
    p.add_argument(
        "--scales",
        type=_positive_int,
        default=None,
        metavar="N",
        help="number of scales (default: down to where the volume fits one chunk)",
    )
    p.add_argument(
        "--layout",
        choices=("nested", "flat"),
        default="nested",
        help="chunk files as key/x0-x1/y0-y1/z0-z1 (nested, default) or flat",
    )
    p.add_argument(
        "--compress",
        type=_compress_list,
        default=("gzip", "br"),
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
        type=_positive_int,
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


def _add_segmentation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("segmentation (--type segmentation)")
    g.add_argument(
        "--block-size",
        type=_positive_int,
        nargs="+",
        default=[8],
        metavar="N",
        help="compressed_segmentation block size: 1 or 3 numbers (default 8)",
    )
    g.add_argument(
        "--downsample",
        choices=("mode", "stride"),
        default=None,
        help="label pyramid: most frequent label per block (mode, default) or first voxel",
    )
    g.add_argument(
        "--sparse", action="store_true", help="mode ignores background 0 unless a block is all 0"
    )
    g.add_argument("--mesh", action="store_true", help="write legacy meshes of every segment")
    g.add_argument(
        "--segments", nargs="+", default=None, metavar="ID", help="mesh only these segment ids"
    )
    g.add_argument(
        "--mesh-simplification",
        choices=("fqmr", "quadric", "none"),
        default=None,
        help="fqmr (default, fast), quadric (igneous' simplifier and defaults) or none",
    )
    g.add_argument(
        "--names", default=None, metavar="CSV", help="segment names: a CSV of id,name[,tags]"
    )


def _segmentation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """BuildOptions members for ``--type segmentation`` (an error if used on an image)."""
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
        return {"encoding": args.encoding or "raw"}
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
    encoding = args.encoding or "compressed_segmentation"
    block = _chunk_size(args.block_size, "--block-size")
    return {
        "encoding": encoding,
        "codec_options": {"block_size": block} if encoding == "compressed_segmentation" else {},
        "downsample": "mode_sparse" if args.sparse else args.downsample or "mode",
        "segmentation": SegmentationOptions(
            mesh=args.mesh,
            segments=segments,
            names=names,
            simplification=PRESETS[args.mesh_simplification or "fqmr"],
        ),
    }


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line errors of the rest of the command (issue #2: bad input
    gets one clear line and exit code 2); argparse would print the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="precomp-host",
        description="Build, serve and deploy Neuroglancer precomputed volumes.",
    )
    # Shared options go on every command (mkdocs' common_options), after the command name.
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only errors")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser(
        "build", parents=[common], help="TIFF stack / OME-TIFF / .npy -> precomputed dataset"
    )
    b.add_argument(
        "source",
        metavar="SRC",
        help="folder of 2D TIFF slices, a glob, a multi-page/OME TIFF, or a .npy",
    )
    b.add_argument("out", metavar="OUT", help="dataset folder to write")
    b.add_argument(
        "--resolution",
        type=_positive_float,
        nargs=3,
        required=True,
        metavar=("X", "Y", "Z"),
        help="voxel size in nanometres",
    )
    b.add_argument("--type", dest="volume_type", choices=("image", "segmentation"), default="image")
    b.add_argument(
        "--encoding",
        default=None,
        choices=("raw", "jpeg", "png", "compressed_segmentation"),
        help="chunk encoding (default raw for images, compressed_segmentation for"
        " segmentations; jpeg and png need uint8 with 1 or 3 channels)",
    )
    b.add_argument("--jpeg-quality", type=_positive_int, default=95, metavar="Q")
    _add_segmentation_options(b)
    b.add_argument(
        "--voxel-offset",
        type=int,
        nargs=3,
        default=[0, 0, 0],
        metavar=("X", "Y", "Z"),
        help="position of the first voxel (default 0 0 0)",
    )
    b.add_argument(
        "--npy-axes",
        default=None,
        metavar="AXES",
        help="axes of a .npy array, e.g. ZYX (default), XYZ, ZYXC",
    )
    _add_build_options(b)
    b.set_defaults(handler=_cmd_build)

    s = sub.add_parser(
        "sample", parents=[common], help="build the embedded sample dataset(s) and say how to view"
    )
    s.add_argument(
        "out",
        metavar="OUT",
        nargs="?",
        default="sample-data",
        help="folder for the sample datasets (default ./sample-data)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an earlier sample")
    s.set_defaults(handler=_cmd_sample)

    v = sub.add_parser(
        "serve", parents=[common], help="serve a folder of datasets locally, with live reload"
    )
    v.add_argument("root", metavar="ROOT", help="a dataset, or a folder of datasets")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=_non_negative_int, default=8000, help="port (default 8000)")
    v.add_argument("--open", action="store_true", help="open the index page in a browser")
    v.add_argument(
        "--poll",
        action="store_true",
        help="poll for changes (network mounts, Docker) instead of OS events",
    )
    v.set_defaults(handler=_cmd_serve)

    d = sub.add_parser(
        "deploy",
        parents=[common],
        help="server configs, or an object-store upload, for a folder of datasets",
    )
    d.add_argument("target", choices=("nginx", "apache", "s3", "gcs"))
    d.add_argument("root", metavar="ROOT", help="a dataset or a folder of datasets")
    d.add_argument(
        "--url-prefix",
        default="/data",
        metavar="PATH",
        help="URL path ROOT is served at (s3/gcs: key prefix; default /data)",
    )
    d.add_argument(
        "--out",
        default="deploy-out",
        metavar="DIR",
        help="folder for the generated files (default ./deploy-out)",
    )
    d.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="nginx/apache: a complete server block / <VirtualHost> (else a snippet to include)",
    )
    d.add_argument(
        "--brotli",
        action="store_true",
        help="nginx: also send .br siblings to clients that accept br",
    )
    d.add_argument(
        "--cache-control", default=None, metavar="VALUE", help="Cache-Control of deployed files"
    )
    d.add_argument(
        "--bucket",
        metavar="NAME",
        help="s3: upload there (and name it in the policy); gcs: named in the commands",
    )
    d.add_argument("--endpoint-url", help="s3: an S3-compatible endpoint")
    d.add_argument("--public", action="store_true", help="s3: also set a public-read policy")
    d.add_argument("--no-index", action="store_true", help="do not write ROOT/index.html")
    d.set_defaults(handler=_cmd_deploy)
    return parser


def _chunk_size(values: Sequence[int], flag: str = "--chunk-size") -> tuple[int, int, int]:
    if len(values) == 1:
        return (values[0], values[0], values[0])
    if len(values) == 3:
        return (values[0], values[1], values[2])
    raise CommandError(f"{flag} takes 1 or 3 numbers")


def _build_options(args: argparse.Namespace, **kw: Any) -> BuildOptions:
    from ..build.builder import BuildOptions

    return BuildOptions(
        resolution=tuple(args.resolution),
        chunk_size=_chunk_size(args.chunk_size),
        max_scales=args.scales,
        layout=args.layout,
        compress=args.compress,
        keep_identity=args.keep_identity,
        workers=args.workers,
        resume=args.resume,
        overwrite=args.overwrite,
        **kw,
    )


def _run_build(source: Any, out: str, options: BuildOptions, label: str, quiet: bool) -> None:
    from ..build.builder import BuildError, build_dataset

    view = None if quiet else ProgressView(sys.stderr, label)
    try:
        build_dataset(source, out, options, progress=view)
    except BuildError as e:
        raise CommandError(str(e)) from None


def _cmd_build(args: argparse.Namespace) -> int:
    kwargs = _segmentation_kwargs(args)
    if kwargs["encoding"] == "jpeg":
        kwargs["codec_options"] = {"quality": args.jpeg_quality}
    options = _build_options(
        args,
        volume_type=args.volume_type,
        voxel_offset=tuple(args.voxel_offset),
        npy_axes=args.npy_axes,
        **kwargs,
    )
    _run_build(args.source, args.out, options, os.path.basename(args.out.rstrip("/")), args.quiet)
    if not args.quiet:
        print(f"Wrote {args.out}. View it with: precomp-host serve {args.out}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
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


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..host.devserver import serve

    if not os.path.isdir(args.root):
        raise CommandError(f"{args.root}: no such folder")

    def ready(url: str) -> None:
        print(f"Serving {args.root} at {url} (Ctrl+C to stop)", flush=True)

    serve(args.root, args.host, args.port, args.open, args.poll, ready=ready)
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from ..core import headers
    from ..deploy import site as deploy
    from ..deploy import survey

    if not os.path.isdir(args.root):
        raise CommandError(f"{args.root}: no such folder")
    # What the target will do with the tree, said before anything is written.
    refused = survey.refused_options(args.target, vars(args))
    if refused:
        raise CommandError(refused[0])
    if args.target in ("nginx", "apache"):
        site = deploy.Site.make(args.root, args.url_prefix)
        for finding in survey.findings(args.target, deploy.survey_site(site), brotli=args.brotli):
            if finding.error:
                raise CommandError(finding.message)
            if not args.quiet:
                print(finding.message)
    cache_control = args.cache_control or headers.DEPLOY_CACHE_CONTROL
    try:
        paths = deploy.write_files(
            args.target,
            args.root,
            args.out,
            args.url_prefix,
            args.listen,
            args.brotli,
            cache_control=cache_control,
            bucket=args.bucket or "BUCKET",
            index=not args.no_index,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    log.debug("deploy %s wrote %d files", args.target, len(paths))
    steps = deploy.next_steps(
        args.target, args.out, args.root, args.url_prefix, args.listen, args.brotli
    )
    if steps:
        print("Next:\n" + "\n".join(f"  {step}" for step in steps))
    if args.target == "s3" and args.bucket:
        try:
            from ..deploy.objectstores import s3_client, upload_s3
        except ImportError:
            raise CommandError("S3 upload needs boto3: pip install 'precomp-host[s3]'") from None
        report = upload_s3(
            args.root,
            args.bucket,
            args.url_prefix.strip("/"),
            client=s3_client(args.endpoint_url),
            cache_control=cache_control,
            public_policy=args.public,
            progress=None if args.quiet else ProgressView(sys.stderr, "upload", unit="objects"),
        )
        print(
            f"uploaded {report.uploaded} objects ({_fmt_bytes(report.bytes_sent)}), "
            f"{report.skipped} already there"
        )
    return 0


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as e:
        print(f"precomp-host: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("precomp-host: interrupted", file=sys.stderr)
        return 130
