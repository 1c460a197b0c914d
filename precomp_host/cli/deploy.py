"""``precomp-host deploy``: arguments to :func:`precomp_host.deploy.site.write_files`, then
the next steps, and for ``s3 --bucket`` :func:`~precomp_host.deploy.objectstores.upload_s3`."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from .options import CommandError, add_root_argument, listen_address
from .progress import ProgressView, fmt_bytes

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("precomp_host")


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    from ..deploy.targets import TARGETS

    p.add_argument("target", choices=TARGETS)
    add_root_argument(p)
    p.add_argument(
        "--url-prefix",
        default="/data",
        metavar="PATH",
        help="URL path ROOT is served at (s3/gcs: key prefix; default /data)",
    )
    p.add_argument(
        "--out",
        default="deploy-out",
        metavar="DIR",
        help="folder for the generated files (default ./deploy-out)",
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=listen_address,
        help="nginx/apache: a complete server block / <VirtualHost> (else a snippet to include)",
    )
    p.add_argument(
        "--brotli",
        action="store_true",
        help="nginx: also send .br siblings to clients that accept br",
    )
    p.add_argument(
        "--cache-control", default=None, metavar="VALUE", help="Cache-Control of deployed files"
    )
    p.add_argument(
        "--bucket",
        metavar="NAME",
        help="s3 (required): upload there and name it in the policy; gcs (required): the "
        "bucket the upload script fills",
    )
    p.add_argument("--endpoint-url", help="s3: an S3-compatible endpoint")
    p.add_argument(
        "--public",
        action="store_true",
        help="s3/gcs: also make the bucket publicly readable (never done unless asked)",
    )
    p.add_argument("--no-index", action="store_true", help="do not write ROOT/index.html")


def run_deploy(args: argparse.Namespace) -> int:
    from ..core import headers
    from ..deploy import site as deploy
    from ..deploy import survey

    if not os.path.isdir(args.root):
        raise CommandError(f"{args.root}: no such folder")
    # What the target will do with the tree, said before anything is written.
    refused = survey.refused_options(args.target, vars(args))
    if refused:
        raise CommandError(refused[0])
    if args.target in ("s3", "gcs") and not args.bucket:
        raise CommandError(f"deploy {args.target} needs --bucket NAME (the bucket to fill)")
    client = _s3_client_for(args) if args.target == "s3" else None
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
            public=args.public,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    log.debug("deploy %s wrote %d files", args.target, len(paths))
    steps = deploy.next_steps(
        args.target, args.out, args.root, args.url_prefix, args.listen, args.brotli
    )
    if steps:
        print("Next:\n" + "\n".join(f"  {step}" for step in steps))
    if client is not None:
        _upload_s3(args, client, cache_control)
    return 0


def _s3_client_for(args: argparse.Namespace) -> Any:
    """A client that has reached the bucket, checked before any file is written."""
    from ..deploy.objectstores import StoreError, check_s3_bucket, s3_client

    try:
        import boto3  # noqa: F401  (the optional extra: its absence is one line)
    except ImportError:
        raise CommandError("deploy s3 needs boto3: pip install 'precomp-host[s3]'") from None
    try:
        client = s3_client(args.endpoint_url)
    except ValueError as e:  # botocore: "Invalid endpoint: ..."
        raise CommandError(f"--endpoint-url {args.endpoint_url}: {e}") from None
    try:
        check_s3_bucket(client, args.bucket)
    except StoreError as e:
        raise CommandError(str(e)) from None
    return client


def _upload_s3(args: argparse.Namespace, client: Any, cache_control: str) -> None:
    from ..deploy.objectstores import upload_s3

    report = upload_s3(
        args.root,
        args.bucket,
        args.url_prefix.strip("/"),
        client=client,
        cache_control=cache_control,
        public_policy=args.public,
        progress=None if args.quiet else ProgressView(sys.stderr, "upload", unit="objects"),
    )
    print(
        f"uploaded {report.uploaded} objects ({fmt_bytes(report.bytes_sent)}), "
        f"{report.skipped} already there"
    )
