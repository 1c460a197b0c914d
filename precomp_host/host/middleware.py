"""Serve a folder of precomputed datasets over WSGI: :class:`PrecomputedMiddleware`.

The HTTP contract is the one the emitted nginx and Apache configs meet (issue #4, checked by
``tests/contract``): flat chunk URLs resolve to nested files, ``.gz``/``.br`` siblings are chosen
per ``Accept-Encoding`` (and decoded for clients that take neither), ``Range`` is answered from
identity bytes, every variant has its own ``ETag``, and every status carries CORS headers.

There is no startup scan: a dataset holds millions of chunks (whitenoise#263), so each request is
resolved with a few ``stat`` calls (plain, ``.br``, ``.gz``) on paths safe-joined under the root,
optionally behind a small bounded cache that a watcher invalidates (:meth:`invalidate`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from threading import Lock
from typing import TYPE_CHECKING

from werkzeug.http import http_date, parse_date, parse_etags, parse_range_header, quote_etag
from werkzeug.security import safe_join
from werkzeug.wsgi import get_path_info, wrap_file

from ..core.encodings import BY_SUFFIX, ENCODINGS, choose, stream_decoder
from ..core.headers import ALLOW_METHODS, cors_headers, preflight_headers
from ..core.layout import NESTED, Layout, mesh_manifest_fallbacks
from ..core.media_types import media_type_for

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

BLOCK = 64 * 1024
#: A sibling at most this large is decoded in memory for an identity client, which gives the
#: response a Content-Length; larger ones are decoded as a stream (chunked, no length).
DECODE_IN_MEMORY_LIMIT = 4 * 1024 * 1024
#: A file at most this large is read and returned as one bytes object; larger ones go to the
#: server's ``wsgi.file_wrapper``. gunicorn sends a file wrapper with ``socket.sendfile``,
#: whose set-up (a selector, fstat, two ``lseek``) costs more than reading a small file.
#: Measured under gunicorn gthread (server CPU a request): 11 KiB chunk ~180 us read vs
#: ~210 us wrapped; 256 KiB chunk ~290 us read vs ~240 us wrapped.
READ_LIMIT = 32 * 1024
#: Statuses whose responses have no body (RFC 9110 §6.4.1).
_NO_BODY = (204, 304)
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
#: Formatting a date costs more than the rest of a header; chunks of a build share mtimes.
_http_date = functools.lru_cache(maxsize=1024)(http_date)


@dataclass(frozen=True)
class StoredFile:
    """One file on disk standing for a URL: the plain file or a sibling."""

    path: str
    size: int
    mtime_ns: int
    encoding: str | None  # None: the plain file

    @property
    def etag(self) -> str:
        # Per variant (whitenoise gives every variant the same one): a cache that stored the
        # gzip bytes must not revalidate them for an identity request (RFC 9110 §8.8.3).
        tag = f"{self.mtime_ns:x}-{self.size:x}"
        return tag if self.encoding is None else f"{tag}-{self.encoding}"


@dataclass(frozen=True)
class Found:
    """What a URL resolves to: its stored variants (plain and/or siblings) and media type."""

    url_path: str
    media_type: str
    files: dict[str | None, StoredFile]

    @functools.cached_property
    def has_variants(self) -> bool:
        return any(e is not None for e in self.files)

    def decode_source(self) -> StoredFile:
        """The sibling that identity bytes are decoded from when no plain file exists."""
        return next(self.files[e] for e in ENCODINGS if e in self.files)

    @functools.cached_property
    def sizes(self) -> dict[str | None, float]:
        out: dict[str | None, float] = {e: f.size for e, f in self.files.items()}
        # Identity can always be made by decoding; its size is unknown but larger than any
        # sibling (the generator keeps only siblings that save space), so rank it last.
        out.setdefault(None, float("inf"))
        return out

    def encoding_for(self, accept_encoding: str | None) -> str | None:
        """``encodings.choose`` for this resource, remembered per header value: a cached
        resolution is asked the same question by every request of the same browser."""
        memo = self._choices
        if accept_encoding not in memo:
            if len(memo) >= 32:  # a handful of distinct headers in practice; stay bounded
                memo.clear()
            memo[accept_encoding] = choose(accept_encoding, self.sizes)
        return memo[accept_encoding]

    @functools.cached_property
    def _choices(self) -> dict[str | None, str | None]:
        return {}

    @functools.cached_property
    def replies(self) -> dict[str | None, Reply]:
        """The middleware's :class:`Reply` per encoding, made on first use (at most one per
        variant, plus identity)."""
        return {}


@dataclass(frozen=True)
class Reply:
    """What the answer for one variant of a :class:`Found` owes to no request header: made
    once per cached resolution, so a plain GET only copies a header list (whitenoise keeps
    its header lists per file for the same reason)."""

    #: The file sent as is, or None when identity bytes are decoded from ``source``.
    stored: StoredFile | None
    source: StoredFile
    etag: str  # unquoted
    #: Headers of a 200 or 206 but the length (Content-Length, Content-Range).
    headers: tuple[tuple[str, str], ...]
    #: The full header list of a 200 with ``stored``; empty when ``stored`` is None.
    whole: tuple[tuple[str, str], ...]
    #: RFC 9110 §15.4.5: a 304 carries the validators, Vary and Cache-Control, not the
    #: representation's metadata (Content-Type, Content-Encoding, Accept-Ranges).
    not_modified: tuple[tuple[str, str], ...]


class _FileSlice:
    """Bytes ``[start, stop)`` of a file, as a WSGI iterable that closes the file."""

    def __init__(self, path: str, start: int, stop: int) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close(), as WSGI requires
        self.file.seek(start)
        self.left = stop - start

    def __iter__(self) -> Iterator[bytes]:
        while self.left > 0:
            block = self.file.read(min(BLOCK, self.left))
            if not block:
                break
            self.left -= len(block)
            yield block

    def close(self) -> None:
        self.file.close()


class _Decoded:
    """A sibling decoded block by block (identity for a client that accepts no coding)."""

    def __init__(self, source: StoredFile) -> None:
        assert source.encoding is not None
        self.file = open(source.path, "rb")  # noqa: SIM115 - closed by close()
        self.feed = stream_decoder(source.encoding)

    def __iter__(self) -> Iterator[bytes]:
        while block := self.file.read(BLOCK):
            out = self.feed(block)
            if out:
                yield out

    def close(self) -> None:
        self.file.close()


class PrecomputedMiddleware:
    """WSGI middleware serving the precomputed datasets under ``root``.

    Requests for files under ``root`` are answered here; anything else goes to ``app`` (or gets
    a 404 with CORS headers when ``app`` is None)::

        app = PrecomputedMiddleware(None, "/data/datasets", cache_control="no-cache")
        # or in front of an existing app, the way SharedDataMiddleware is used:
        app.wsgi_app = PrecomputedMiddleware(app.wsgi_app, "/data/datasets")

    :param app: the WSGI application for every other path, or None.
    :param root: the folder served at the mount point.
    :param layout: how flat chunk URLs map to files; the URL as sent is always tried first, so
        flat and nested trees both work with the default :data:`~precomp_host.layout.NESTED`.
    :param cors: send the CORS headers of :mod:`precomp_host.headers` and answer preflights.
    :param cache_control: the ``Cache-Control`` value for files, or None for no header.
    :param cache_size: how many URL resolutions to keep (0: stat on every request). Use with a
        watcher that calls :meth:`invalidate`, a tree that does not change, or ``cache_ttl``.
    :param cache_ttl: seconds a cached resolution stays valid (None: until :meth:`invalidate`),
        like nginx's ``open_file_cache_valid``: a rewritten file is seen within that time.
    :param decode_in_memory_limit: siblings up to this size are decoded in memory for identity
        clients (with a Content-Length); larger ones are streamed.
    :param encodings: the content codings to send (tokens of
        :data:`~precomp_host.encodings.ENCODINGS`; default all). Siblings of other codings are
        not looked at, as an nginx without the brotli module ignores ``.br`` files.
    """

    def __init__(
        self,
        app: WSGIApplication | None,
        root: str | os.PathLike[str],
        *,
        layout: Layout = NESTED,
        cors: bool = True,
        cache_control: str | None = None,
        cache_size: int = 0,
        cache_ttl: float | None = None,
        decode_in_memory_limit: int = DECODE_IN_MEMORY_LIMIT,
        encodings: Iterable[str] | None = None,
    ) -> None:
        served = set(ENCODINGS if encodings is None else encodings)
        if unknown := served - set(ENCODINGS):
            raise ValueError(f"unknown content encodings: {', '.join(sorted(unknown))}")
        self.app = app
        self.root = os.path.realpath(root)
        self.layout = layout
        self.cors = cors
        self.cache_control = cache_control
        self.cache_size = cache_size
        self.cache_ttl = cache_ttl
        self.decode_in_memory_limit = decode_in_memory_limit
        self._cache: OrderedDict[str, tuple[Found | None, float]] = OrderedDict()
        self._lock = Lock()
        self._root_prefix = self.root.rstrip(os.sep) + os.sep
        self._real_dir = functools.lru_cache(maxsize=4096)(os.path.realpath)
        self.encodings = frozenset(served)
        self._suffixes = (
            ("", None),
            *((s, e.name) for s, e in BY_SUFFIX.items() if e.name in served),
        )
        self._cors_headers = cors_headers() if cors else {}

    # -- resolution ------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget cached resolutions (call after files changed)."""
        with self._lock:
            self._cache.clear()
        self._real_dir.cache_clear()

    def find(self, url_path: str) -> Found | None:
        """The stored files behind a decoded URL path (relative to the mount), or None."""
        if not self.cache_size:
            return self._find(url_path)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url_path)
            if hit is not None and hit[1] > now:
                self._cache.move_to_end(url_path)
                return hit[0]
        found = self._find(url_path)
        expires = now + self.cache_ttl if self.cache_ttl is not None else math.inf
        with self._lock:
            self._cache[url_path] = (found, expires)
            self._cache.move_to_end(url_path)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def _find(self, url_path: str) -> Found | None:
        rel = url_path.lstrip("/")
        # NUL cannot be in a file name (stat raises); a backslash is a separator on Windows and
        # a traversal spelling everywhere else: neither names a dataset file.
        if not rel or "\x00" in rel or "\\" in rel:
            return None
        joined = safe_join(self.root, rel)
        if joined is None:  # "..", absolute: traversal never reaches the file system
            return None
        # The rewrites below only replace the last segment with digits and separators, so
        # the normalized, safe-joined path stays safe after them.
        norm = joined[len(self._root_prefix) :]
        candidates = [norm]
        nested = self.layout.resolve(norm)
        if nested != norm:
            candidates.append(nested)
        candidates += mesh_manifest_fallbacks(norm)
        for candidate in candidates:
            files = self._stat_variants(self._root_prefix + candidate)
            if files:
                return Found(rel, media_type_for(rel), files)
        return None

    def _stat_variants(self, path: str) -> dict[str | None, StoredFile]:
        # safe_join only looks at the string; a symlink inside the root may still point outside
        # it, so the real path must be inside too. The folder's real path is cached (realpath
        # costs an lstat per component); a file that is itself a symlink is resolved each time.
        files: dict[str | None, StoredFile] = {}
        folder_checked = False
        for suffix, encoding in self._suffixes:
            candidate = path + suffix
            try:
                st = os.lstat(candidate)
                if stat.S_ISLNK(st.st_mode):
                    if not self._is_inside_root(os.path.realpath(candidate)):
                        continue
                    st = os.stat(candidate)
                elif not folder_checked:
                    if not self._is_inside_root(self._real_dir(os.path.dirname(path))):
                        return {}
                    folder_checked = True
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode):
                files[encoding] = StoredFile(candidate, st.st_size, st.st_mtime_ns, encoding)
        return files

    def _is_inside_root(self, real: str) -> bool:
        return real.startswith(self._root_prefix) or real == self.root

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        found = self.find(get_path_info(environ))
        if found is None:
            if self.app is not None:
                return self.app(environ, start_response)
            return self.not_found(environ, start_response)
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            return self._preflight(start_response)
        if method not in ("GET", "HEAD"):
            headers = {"Allow": ", ".join(ALLOW_METHODS), **self._cors()}
            return self._simple(start_response, 405, headers)
        return self.serve(found, environ, start_response)

    def not_found(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The answer for a path with no file: 404 with CORS (a preflight gets its 204)."""
        if environ["REQUEST_METHOD"] == "OPTIONS":
            return self._preflight(start_response)
        return self._simple(start_response, 404, self._cors(), b"Not Found\n")

    def _cors(self) -> dict[str, str]:
        return dict(self._cors_headers)

    def _preflight(self, start_response: StartResponse) -> Iterable[bytes]:
        if not self.cors:
            return self._simple(start_response, 204, {"Allow": ", ".join(ALLOW_METHODS)})
        return self._simple(start_response, 204, {**cors_headers(), **preflight_headers()})

    @staticmethod
    def _simple(
        start_response: StartResponse, status: int, headers: dict[str, str], body: bytes = b""
    ) -> Iterable[bytes]:
        if status not in _NO_BODY:
            headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
            headers["Content-Length"] = str(len(body))
        start_response(_STATUS[status], list(headers.items()))
        return [body] if body else []

    def serve(
        self, found: Found, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Answer a GET or HEAD for ``found``."""
        range_header = environ.get("HTTP_RANGE")
        ranged = None if range_header is None else parse_range_header(range_header)
        if ranged is not None and (ranged.units != "bytes" or len(ranged.ranges) != 1):
            ranged = None  # RFC 9110 §14.2: a server may ignore a Range it does not support
        # A Range applies to the bytes of the selected representation (RFC 9110 §14.1.2); we
        # always select identity for one, as Neuroglancer reads shards with Range expecting
        # raw bytes (it sends "Accept-Encoding: identity" but other clients may not).
        encoding = (
            None if ranged is not None else found.encoding_for(environ.get("HTTP_ACCEPT_ENCODING"))
        )
        reply = found.replies.get(encoding)
        if reply is None:
            reply = self._reply(found, encoding)
        stored, source = reply.stored, reply.source

        if ranged is not None and not self._if_range_holds(environ, reply.etag, source):
            ranged = None
        # Most requests carry no validator; the membership test is cheaper than the parse.
        if (
            "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ
        ) and self._not_modified(environ, reply.etag, source):
            start_response(_STATUS[304], list(reply.not_modified))
            return []
        is_head = environ["REQUEST_METHOD"] == "HEAD"
        if stored is not None and ranged is None:
            # Most requests: a stored file, whole; no header to compute.
            start_response(_STATUS[200], list(reply.whole))
            if is_head:
                return []
            # Unbuffered: the body is read once or sent with sendfile (gunicorn), and a
            # BufferedReader costs as much as the rest of the request.
            file = open(stored.path, "rb", buffering=0)  # noqa: SIM115 - closed below or by WSGI
            if stored.size > READ_LIMIT:
                return wrap_file(environ, file)
            with file:
                # The length announced, as sendfile would: a file rewritten since it was
                # resolved never gets more bytes out than its Content-Length.
                return [file.read(stored.size)]

        # Identity bytes out of a sibling: in memory when small (or ranged), else streamed.
        data: bytes | None = None
        if stored is None and (ranged is not None or source.size <= self.decode_in_memory_limit):
            with open(source.path, "rb") as f:
                assert source.encoding is not None
                data = ENCODINGS[source.encoding].decompress(f.read())
        length = len(data) if data is not None else stored.size if stored is not None else None

        headers = list(reply.headers)
        status = 200
        start, stop = 0, length or 0
        if ranged is not None:
            assert length is not None
            span = self._range_for_length(ranged.ranges[0], length)
            if span is None:
                return self._simple(
                    start_response, 416, {**self._cors(), "Content-Range": f"bytes */{length}"}
                )
            start, stop = span
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{length}"))
        if length is not None:
            headers.append(("Content-Length", str(stop - start)))
        start_response(_STATUS[status], headers)
        if is_head:
            return []
        if data is not None:
            return [data[start:stop]]
        if stored is None:
            return _Decoded(source)
        return _FileSlice(stored.path, start, stop)

    def _reply(self, found: Found, encoding: str | None) -> Reply:
        """The request-independent part of the answer for ``encoding`` of ``found``,
        remembered in ``found.replies`` (a resolution lives as long as its cache entry)."""
        stored = found.files.get(encoding)
        source = stored if stored is not None else found.decode_source()
        etag = source.etag if stored is not None else f"{source.etag}-identity"
        validators = [("ETag", quote_etag(etag))]
        validators.append(("Last-Modified", _http_date(source.mtime_ns // 1_000_000_000)))
        if found.has_variants:
            validators.append(("Vary", "Accept-Encoding"))
        if self.cache_control is not None:
            validators.append(("Cache-Control", self.cache_control))
        validators += self._cors_headers.items()
        metadata = [("Content-Type", found.media_type)]
        metadata.append(
            ("Accept-Ranges", "bytes") if encoding is None else ("Content-Encoding", encoding)
        )
        headers = (*metadata, *validators)
        whole = () if stored is None else (*headers, ("Content-Length", str(stored.size)))
        reply = Reply(stored, source, etag, headers, whole, tuple(validators))
        found.replies[encoding] = reply
        return reply

    @staticmethod
    def _range_for_length(span: tuple[int, int | None], length: int) -> tuple[int, int] | None:
        # werkzeug's Range.range_for_length rejects a suffix longer than the file, which RFC
        # 9110 §14.1.2 says selects the whole file; a last position past the end is clipped.
        first, stop = span
        if first < 0:
            first = max(0, length + first)
            stop = length
        elif stop is None or stop > length:
            stop = length
        if first >= length or first >= stop:
            return None
        return first, stop

    @staticmethod
    def _not_modified(environ: WSGIEnvironment, etag: str, source: StoredFile) -> bool:
        # RFC 9110 §13.2.2: If-None-Match (weak comparison) decides when present; only then
        # is If-Modified-Since looked at; an unparsable date is ignored (§13.1.3).
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None:
            return bool(parse_etags(if_none_match).contains_weak(etag))
        since = parse_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
        return since is not None and source.mtime_ns // 1_000_000_000 <= since.timestamp()

    @staticmethod
    def _if_range_holds(environ: WSGIEnvironment, etag: str, source: StoredFile) -> bool:
        # RFC 9110 §13.1.5: If-Range with a strong ETag or the exact date keeps the Range;
        # anything else means "send the whole representation".
        value: str | None = environ.get("HTTP_IF_RANGE")
        if value is None:
            return True
        if value.startswith(('"', "W/")):
            return value == quote_etag(etag)
        date = parse_date(value)
        return date is not None and int(date.timestamp()) == source.mtime_ns // 1_000_000_000


def make_app(
    root: str | os.PathLike[str] | None = None,
    *,
    layout: Layout = NESTED,
    cors: bool = True,
    cache_control: str | None = None,
    cache_size: int = 65536,
    cache_ttl: float | None = 1.0,
    encodings: Iterable[str] | None = None,
) -> PrecomputedMiddleware:
    """A standalone WSGI application serving ``root``, for gunicorn, waitress or mod_wsgi.

    ``gunicorn 'precomp_host.middleware:make_app("/data")'``, or with the root in the
    environment (``PRECOMP_HOST_ROOT=/data``), ``waitress-serve --call
    precomp_host.middleware:make_app``. Paths that are no file get a 404 with CORS headers.

    :param root: the folder to serve; default ``$PRECOMP_HOST_ROOT``.
    :param cache_size: remember this many URL resolutions (0: stat on every request).
    :param cache_ttl: for how long, in seconds (None: until restart). The default, one second,
        saves the stat calls of repeated requests (Neuroglancer asks for the same chunks again
        and again) while a rebuilt file is served fresh within a second, like nginx's
        ``open_file_cache`` with ``open_file_cache_valid 1s``.
    :param encodings: the content codings to send (default all, see
        :class:`PrecomputedMiddleware`).
    """
    if root is None:
        root = os.environ.get("PRECOMP_HOST_ROOT")
        if not root:
            raise ValueError("make_app() needs a root folder or PRECOMP_HOST_ROOT")
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    return PrecomputedMiddleware(
        None,
        root,
        layout=layout,
        cors=cors,
        cache_control=cache_control,
        cache_size=cache_size,
        cache_ttl=cache_ttl,
        encodings=encodings,
    )
