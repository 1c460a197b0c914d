"""The ``precomp-host`` command: :data:`COMMANDS` and :func:`main`.

The only package that prints, configures logging or draws progress. Each command lives in its
own module (``build``, ``serve``, ``deploy``, ``check``, ``annotations``) as an
``add_*_arguments`` function beside the handler that turns the arguments into keyword arguments
and imports its wing lazily, so that ``--help`` imports neither numpy nor watchdog. Shared
options come from parent parsers (:mod:`.options`). Errors in the input end with one line on
stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .annotations import add_annotations_arguments, run_annotations
from .build import add_build_arguments, add_sample_arguments, run_build, run_sample
from .check import add_check_arguments, run_check
from .deploy import add_deploy_arguments, run_deploy
from .options import EXIT_BAD_INPUT, CommandError, Parser, common_options
from .serve import add_serve_arguments, run_serve

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its arguments and its handler (returns the exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "build": Command(
        "TIFF, .npy, NIfTI, (OME-)Zarr, N5, HDF5, Imaris or precomputed -> precomputed",
        add_build_arguments,
        run_build,
    ),
    "sample": Command(
        "build the embedded sample dataset(s) and say how to view", add_sample_arguments, run_sample
    ),
    "serve": Command(
        "serve a folder of datasets locally, with live reload", add_serve_arguments, run_serve
    ),
    "deploy": Command(
        "server configs, or an object-store upload, for a folder of datasets",
        add_deploy_arguments,
        run_deploy,
    ),
    "check": Command(
        "check a hosted dataset as the viewers read it: what is wrong and how to fix it",
        add_check_arguments,
        run_check,
    ),
    "annotations": Command(
        "annotations in Neuroglancer's precomputed format (build)",
        add_annotations_arguments,
        run_annotations,
    ),
}


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="precomp-host",
        description="Build, serve and deploy Neuroglancer precomputed volumes.",
    )
    common = common_options()
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    # Our INFO lines are for the user; other libraries' (botocore's "Found credentials in
    # environment variables") are not, except with -v.
    root_level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=root_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("precomp_host").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    _configure_logging(args)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as e:
        print(f"precomp-host: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("precomp-host: interrupted", file=sys.stderr)
        return 130
