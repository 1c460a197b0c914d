"""``precomp-host check URL``: arguments to :func:`precomp_host.check.doctor.check`, and its
report as lines (grouped: errors, then warnings) or as JSON (``--json``, for CI).

Exit code 0 only when the contract's client tier passes (no finding of severity ``error``),
1 otherwise, 2 for a URL that is no http(s) URL.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from typing import TYPE_CHECKING

from .options import CommandError, positive_int
from .progress import ProgressView

if TYPE_CHECKING:
    import argparse

    from ..check.findings import Report

#: Exit code when the client tier fails.
EXIT_FINDINGS = 1


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", metavar="URL", help="a dataset's URL, or a site root listing datasets")
    p.add_argument(
        "--origin",
        default=None,
        help="the viewer's origin, sent as Origin (default https://neuroglancer-demo.appspot.com)",
    )
    p.add_argument("--full", action="store_true", help="read and decode every chunk")
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once (default 8)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _url(text: str, what: str) -> str:
    bare = text.removeprefix("precomputed://")
    parts = urllib.parse.urlsplit(bare)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f"{what} {text!r}: not an http(s) URL")
    return bare


def run_check(args: argparse.Namespace) -> int:
    from ..check.doctor import DEFAULT_ORIGIN, check

    url = _url(args.url, "URL")
    origin = _url(args.origin, "--origin") if args.origin else DEFAULT_ORIGIN
    view = (
        ProgressView(sys.stderr, "check", unit="checks", moved="read")
        if args.full and not args.json
        else None
    )
    report = check(url, origin=origin, full=args.full, concurrency=args.concurrency, progress=view)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    return 0 if report.ok else EXIT_FINDINGS


def print_report(report: Report) -> None:
    print(f"{report.url}: {report.server_label or 'unknown server'}")
    for ds in report.datasets:
        print(f"  dataset {ds}")
    for f in report.findings:
        print(f.line(report.server))
    verdict = "OK: the viewers can read it" if report.ok else "FAILED"
    print(
        f"{verdict} ({report.requests} requests, {report.chunks_decoded} chunks decoded, "
        f"{report.elapsed:.1f} s)"
    )
