"""TIFF-tile datasets served as precomputed chunks: :class:`TiffTileMiddleware`.

``precomputed-tif`` (the tool NeuroTrALE's service serves the output of) writes a dataset as an
``info`` file plus one 3D TIFF per chunk, ``{scale}/{x0-x1_y0-y1_z0-z1}.tiff``, its array in
z, y, x order. The array's C order (x fastest) is exactly the ``raw`` chunk encoding's byte order
(Neuroglancer precomputed ``volume.md``: x fastest, then y, z, channel), so a chunk is the TIFF's
pixels, little-endian, as bytes.

A chunk URL (``/{dataset}/{scale}/{chunk}``, or the same with ``.tiff`` as NeuroTrALE's viewer
sends it) with no stored file but a ``.tiff`` beside it is converted on request. The converted
bytes and their content codings (chosen by :func:`~precomp_host.core.encodings.choose`, like a
stored chunk's siblings) are kept in an LRU cache bounded in bytes, keyed by the TIFF's
identity (path, mtime, size): a rewritten TIFF is converted again. Every answer carries the CORS
headers of :mod:`precomp_host.core.headers`, an ``ETag`` per content coding and ``Vary``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from werkzeug.http import http_date, parse_etags, parse_range_header, quote_etag
from werkzeug.wsgi import get_path_info

from ..core.encodings import ENCODINGS, choose, is_effective
from ..core.headers import ALLOW_METHODS, cors_headers
from ..core.layout import CHUNK_NAME_PATTERN
from ..core.media_types import OCTET_STREAM
from .conditional import range_for_length

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .middleware import PrecomputedMiddleware

log = logging.getLogger(__name__)

#: Bytes of converted chunks (all codings) kept in memory per process; a 64^3 uint16 chunk is
#: 512 KiB, so the default holds a few hundred, a viewer's working set at one zoom level.
CACHE_BYTES = 256 * 1024 * 1024
TIFF_SUFFIX = ".tiff"
#: ``…/{scale}/{chunk}`` with an optional ``.tiff``: the URLs NeuroTrALE's viewer and
#: Neuroglancer send for a chunk of a TIFF-tile dataset.
_URL_RE = re.compile(r"^(?P<base>.+/)(?P<chunk>[^/]+?)(?:\.tiff)?$")
_CHUNK_RE = re.compile(CHUNK_NAME_PATTERN)
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def tiff_chunk_bytes(path: str | os.PathLike[str]) -> bytes:
    """The raw precomputed chunk stored as the 3D TIFF at ``path`` (z, y, x[, c] array)."""
    import numpy as np
    import tifffile

    arr = np.asarray(tifffile.imread(path))
    if arr.ndim == 2:  # a chunk one voxel deep is stored as a single page
        arr = arr[np.newaxis]
    if arr.ndim == 4:
        # z, y, x, c -> c, z, y, x: raw chunks put the channel slowest.
        arr = np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


@dataclass
class Converted:
    """A converted chunk: identity bytes and the codings worth sending."""

    tag: str  # the TIFF's identity: mtime and size, hex
    mtime: float
    data: dict[str | None, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.data.values())


class TiffTileMiddleware:
    """Serve TIFF-tile chunks of the datasets a precomputed middleware serves.

    It sits where the middleware sends the URLs it has no file for (its ``app``), so a stored
    chunk (a dataset converted with ``precomp-host build`` beside its TIFFs) is served from disk
    and a regular chunk costs nothing more; a URL ending in ``.tiff``, which names the TIFF
    itself, goes to :meth:`answer` before the middleware sees it (:mod:`.api` does that)::

        files = PrecomputedMiddleware(None, root)
        tiles = TiffTileMiddleware.behind(files)

    :param app: the application for every other request (None: the middleware's 404).
    :param files: the precomputed middleware whose rules (safe joins, symlinks, CORS setting,
        Cache-Control, content codings) apply here too.
    :param cache_bytes: the memory bound of the converted-chunk cache.
    """

    def __init__(
        self,
        app: WSGIApplication | None,
        files: PrecomputedMiddleware,
        *,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.app = app
        self.files = files
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, Converted] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        # Request-time compression: gzip only. Brotli at a useful quality costs ~10x gzip's
        # time on a chunk, and every browser that sends "br" also accepts gzip.
        self._codings = tuple(e for e in ("gzip",) if e in files.encodings)

    @classmethod
    def behind(
        cls, files: PrecomputedMiddleware, *, cache_bytes: int = CACHE_BYTES
    ) -> TiffTileMiddleware:
        """A TIFF-tile server installed as ``files``' answer for URLs without a stored file."""
        tiles = cls(files.app, files, cache_bytes=cache_bytes)
        files.app = tiles
        return tiles

    def tiff_for(self, url_path: str) -> str | None:
        """The TIFF behind a chunk URL (with or without ``.tiff``), or None."""
        m = _URL_RE.match(url_path)
        if m is None or not _CHUNK_RE.match(m["chunk"]):
            return None
        found = self.files.find(m["base"] + m["chunk"] + TIFF_SUFFIX)
        if found is None or None not in found.files:
            return None
        return found.files[None].path

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        tiff = None
        if environ["REQUEST_METHOD"] != "OPTIONS":  # a preflight gets the middleware's answer
            tiff = self.tiff_for(get_path_info(environ))
        if tiff is not None:
            return self.answer(tiff, environ, start_response)
        if self.app is None:
            return self.files.not_found(environ, start_response)
        return self.app(environ, start_response)

    def answer(
        self, tiff: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """The chunk stored as ``tiff``, for a GET or HEAD (405 otherwise)."""
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            allow = ", ".join(ALLOW_METHODS)
            headers = [("Allow", allow), ("Content-Length", "0"), *cors_headers().items()]
            start_response(_STATUS[405], headers)
            return []
        try:
            converted = self.convert(tiff)
        except OSError as e:  # unreadable or vanished between stat and read
            log.warning("%s: cannot convert: %s", tiff, e)
            return self.files.not_found(environ, start_response)
        return self._serve(converted, environ, start_response)

    def convert(self, tiff: str) -> Converted:
        """The converted chunk of ``tiff``, from the cache when its identity is unchanged."""
        st = os.stat(tiff)
        tag = f"{st.st_mtime_ns:x}-{st.st_size:x}-tiff"
        with self._lock:
            hit = self._cache.get(tiff)
            if hit is not None and hit.tag == tag:
                self._cache.move_to_end(tiff)
                return hit
        raw = tiff_chunk_bytes(tiff)
        converted = Converted(tag, st.st_mtime, {None: raw})
        for name in self._codings:
            encoded = ENCODINGS[name].compress(raw)
            if is_effective(len(raw), len(encoded)):
                converted.data[name] = encoded
        with self._lock:
            old = self._cache.pop(tiff, None)
            if old is not None:
                self._cached -= old.nbytes
            if converted.nbytes <= self.cache_bytes:
                self._cache[tiff] = converted
                self._cached += converted.nbytes
            while self._cached > self.cache_bytes:
                _, evicted = self._cache.popitem(last=False)
                self._cached -= evicted.nbytes
        return converted

    @property
    def cached_bytes(self) -> int:
        return self._cached

    def _serve(
        self, converted: Converted, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        sizes: dict[str | None, float] = {e: len(b) for e, b in converted.data.items()}
        # A Range is answered from identity bytes, as for stored chunks (RFC 9110 §14.1.2).
        ranged = "HTTP_RANGE" in environ
        encoding = None if ranged else choose(environ.get("HTTP_ACCEPT_ENCODING"), sizes)
        body = converted.data[encoding]
        etag = converted.tag if encoding is None else f"{converted.tag}-{encoding}"
        headers = [("ETag", quote_etag(etag)), ("Last-Modified", http_date(converted.mtime))]
        if len(converted.data) > 1:
            headers.append(("Vary", "Accept-Encoding"))
        if self.files.cache_control is not None:
            headers.append(("Cache-Control", self.files.cache_control))
        if self.files.cors:
            headers += cors_headers().items()
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None and parse_etags(if_none_match).contains_weak(etag):
            start_response(_STATUS[304], headers)
            return []
        headers.append(("Content-Type", OCTET_STREAM))
        status = 200
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        else:
            headers.append(("Accept-Ranges", "bytes"))
        ranges = parse_range_header(environ.get("HTTP_RANGE"))
        if ranges is not None and ranges.units == "bytes" and len(ranges.ranges) == 1:
            # The middleware's reading of a range (suffixes, clipping), one rule for both.
            span = range_for_length(ranges.ranges[0], len(body))
            if span is None:
                unsatisfiable = ("Content-Range", f"bytes */{len(body)}")
                start_response(_STATUS[416], [*headers, unsatisfiable, ("Content-Length", "0")])
                return []
            start, stop = span
            headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}"))
            body, status = body[start:stop], 206
        # else: RFC 9110 §14.2, a Range the server does not support is ignored (200, all).
        headers.append(("Content-Length", str(len(body))))
        start_response(_STATUS[status], headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
