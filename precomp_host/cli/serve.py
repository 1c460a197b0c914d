"""``precomp-host serve``: arguments to :func:`precomp_host.host.devserver.serve`, or with
``--workers N`` to :func:`precomp_host.host.production.serve_workers`."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from .options import CommandError, non_negative_int, port

if TYPE_CHECKING:
    import argparse

#: NeuroTrALE's service reads its root from this variable; ours does too (issue #15).
ROOT_ENV = "PRECOMPUTED_PATH"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "root",
        metavar="ROOT",
        nargs="?",
        default=os.environ.get(ROOT_ENV),
        help=f"a dataset, or a folder of datasets (default ${ROOT_ENV})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--open", action="store_true", help="open the index page in a browser")
    p.add_argument(
        "--poll",
        action="store_true",
        help="poll for changes (network mounts, Docker) instead of OS events",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        help="production: N worker processes (gunicorn), no live reload (default 0: dev server)",
    )
    p.add_argument(
        "--write-token-file",
        metavar="FILE",
        help="allow annotation writes with 'Authorization: Bearer <token in FILE>' "
        "(or $PRECOMP_HOST_WRITE_TOKEN)",
    )
    p.add_argument(
        "--allow-writes-from",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="allow annotation writes without credentials from pages on ORIGIN (repeatable; "
        "for the NeuroTrALE viewer, which sends none)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from ..host.write_policy import WritePolicy

    if args.root is None or not os.path.isdir(args.root):
        raise CommandError(f"{args.root or f'ROOT (or ${ROOT_ENV})'}: no such folder")
    try:
        # An address this machine cannot listen on is one line here, not a traceback later.
        socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as e:
        raise CommandError(f"--host {args.host}: not an address to listen on ({e})") from None
    try:
        policy = WritePolicy.from_options(args.write_token_file, args.allow_writes_from)
    except (OSError, ValueError) as e:
        raise CommandError(str(e)) from None

    def ready(url: str) -> None:
        print(f"Serving {args.root} at {url} (Ctrl+C to stop)", flush=True)
        print(policy.describe(), flush=True)

    if args.workers:
        from ..host.production import serve_workers

        serve_workers(args.root, args.host, args.port, args.workers, policy, ready=ready)
        return 0
    from ..build.annotation_sources import write_store_layers
    from ..host.devserver import serve

    serve(
        args.root,
        args.host,
        args.port,
        args.open,
        args.poll,
        ready=ready,
        policy=policy,
        annotation_builder=write_store_layers,
    )
    return 0
