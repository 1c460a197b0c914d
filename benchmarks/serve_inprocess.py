"""Microseconds a request in-process, ours against whitenoise: :func:`main`.

``python benchmarks/serve_inprocess.py [--requests 10000] [--rounds 7]`` (from the repository
root) builds the trees of ``benchmarks/serve.py`` and calls each WSGI application directly with
a prebuilt environ, the way gunicorn calls it: no sockets, so what is left is the Python cost of
one request (resolution, headers, opening the file for ``wsgi.file_wrapper``). That cost is what
separates the two under ``wrk``, where both share the same gunicorn; this runs in seconds and
is steady enough to compare two versions of ``serve()`` on a busy machine.

Both get the same environ (``Accept-Encoding: gzip, deflate``, as in ``serve.py``) and a
``wsgi.file_wrapper`` that, like gunicorn's, only holds the file; a wrapped file is not read
(gunicorn's ``socket.sendfile`` does that, uncounted here), while ours reads a small file
itself (``READ_LIMIT``), so the small-chunk figure charges us for work whitenoise leaves to
the server. Their batches take turns and the fastest counts.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from wsgiref.types import WSGIApplication, WSGIEnvironment

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.serve import ACCEPT, LARGE, SMALL, make_trees, whitenoise_app  # noqa: E402
from precomp_host.host.middleware import make_app  # noqa: E402


class FileWrapper:
    """gunicorn's ``wsgi.file_wrapper`` keeps the file for ``sendfile``; close() closes it."""

    def __init__(self, file: object, block_size: int = 8192) -> None:
        self.file = file

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        raise StopIteration

    def close(self) -> None:
        self.file.close()  # type: ignore[attr-defined]


def environ(path: str) -> WSGIEnvironment:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT_ENCODING": ACCEPT,
        "HTTP_USER_AGENT": "wrk",
        "wsgi.url_scheme": "http",
        "wsgi.file_wrapper": FileWrapper,
    }


def batch_us(app: WSGIApplication, path: str, requests: int) -> float:
    """The mean microseconds of ``requests`` GETs of ``path``, one after another."""
    statuses: set[str] = set()

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None, /
    ) -> Callable[[bytes], object]:
        statuses.add(status)
        return write

    def write(data: bytes) -> None:
        raise AssertionError("the apps return their body")

    gc.collect()
    start = time.perf_counter()
    for _ in range(requests):
        body = app(environ(path), start_response)  # gunicorn builds one per request
        if hasattr(body, "close"):
            body.close()
    took = time.perf_counter() - start
    if statuses != {"200 OK"}:
        raise RuntimeError(f"{path}: not all 200: {statuses}")
    return took / requests * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10000, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=7, help="batches per app and URL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="precomp-micro-") as tmp:
        nested, flat = make_trees(Path(tmp))
        apps: dict[str, WSGIApplication] = {
            "precomp_host": make_app(nested),
            "whitenoise": whitenoise_app(str(flat)),
        }
        urls = {"small": SMALL, "large": LARGE}
        # Batches of every app take turns, so other load on a shared machine hits all alike;
        # it only ever slows a batch down, so the fastest batch is the cost.
        best = {(a, u): math.inf for a in apps for u in urls}
        for _ in range(args.rounds):
            for (name, url), us in best.items():
                best[name, url] = min(us, batch_us(apps[name], urls[url], args.requests))
    print("| app | small chunk us/request | 256 KiB chunk us/request |")
    print("|---|---|---|")
    for name in apps:
        print(f"| {name} | {best[name, 'small']:.2f} | {best[name, 'large']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
