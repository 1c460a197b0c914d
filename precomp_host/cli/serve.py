"""``precomp-host serve``: arguments to :func:`precomp_host.host.devserver.serve`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .options import CommandError, add_root_argument, non_negative_int

if TYPE_CHECKING:
    import argparse


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    add_root_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=non_negative_int, default=8000, help="port (default 8000)")
    p.add_argument("--open", action="store_true", help="open the index page in a browser")
    p.add_argument(
        "--poll",
        action="store_true",
        help="poll for changes (network mounts, Docker) instead of OS events",
    )


def run_serve(args: argparse.Namespace) -> int:
    from ..host.devserver import serve

    if not os.path.isdir(args.root):
        raise CommandError(f"{args.root}: no such folder")

    def ready(url: str) -> None:
        print(f"Serving {args.root} at {url} (Ctrl+C to stop)", flush=True)

    serve(args.root, args.host, args.port, args.open, args.poll, ready=ready)
    return 0
