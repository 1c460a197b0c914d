"""Answer GET and HEAD for the files of precomputed datasets: :class:`PrecomputedMiddleware`.

The HTTP contract is the one the emitted nginx and Apache configs meet (issue #4, checked by
``tests/contract``): flat chunk URLs resolve to nested files, ``.gz``/``.br`` siblings are chosen
per ``Accept-Encoding`` (and decoded for clients that take neither), ``Range`` is answered from
identity bytes, every variant has its own ``ETag``, and every status carries CORS headers.

A request goes through two halves. Resolution (:mod:`precomp_host.host.resolve`) finds the
stored variants of the URL, behind an optional bounded :class:`~.resolve.ResolutionCache` that
a watcher invalidates (:meth:`PrecomputedMiddleware.invalidate`). Answering, here, is three
steps in :meth:`PrecomputedMiddleware.serve`: choose the variant and open it, evaluate the
conditionals (:mod:`precomp_host.host.conditional`), send the body (whole, a slice, or
decoded: :mod:`precomp_host.host.bodies`). What an answer owes to no request header (its
header lists) is made once per resolution (:class:`Reply`); its length and validators are
checked against the descriptor that is sent, so a cached resolution never outranks the disk.

About 400 lines, most of them the public class's documentation and measured constants; the
request path is ``serve`` and the ``_send_*`` method it picks, each under 35 lines.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from werkzeug.http import http_date, quote_etag
from werkzeug.wsgi import get_path_info, wrap_file

from ..core.encodings import ENCODINGS, choose
from ..core.headers import ALLOW_METHODS, cors_headers, preflight_headers
from ..core.layout import NESTED, Layout
from .bodies import Decoded, FileSlice, RawFile, decoded_length
from .conditional import if_range_holds, is_not_modified, range_for_length, single_range
from .resolve import ResolutionCache, Resolver, Resource, StoredFile

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from werkzeug.datastructures import Range

log = logging.getLogger(__name__)

#: Identity bytes decoded from a sibling for a client that takes none of the stored codings
#: are held in memory up to this many, to be sent with a Content-Length; past it they are
#: streamed (no length), so memory stays bounded whatever the compression ratio.
DECODE_IN_MEMORY_LIMIT = 4 * 1024 * 1024
#: A file at most this large is read and returned as one bytes object; larger ones go to the
#: server's ``wsgi.file_wrapper``. gunicorn sends a file wrapper with ``socket.sendfile``,
#: whose set-up (a selector, fstat, two ``lseek``) costs more than reading a small file.
#: Measured under gunicorn gthread (server CPU a request): 11 KiB chunk ~180 us read vs
#: ~210 us wrapped; 256 KiB chunk ~290 us read vs ~240 us wrapped.
READ_LIMIT = 32 * 1024
#: Decoding past this many identity bytes to learn a length (a Range on a ``.gz``/``.br``-only
#: file) is refused with 406: the work of such a request is bounded by this, not by the
#: compression ratio. Decoding a whole body needs no length and is streamed past
#: :data:`DECODE_IN_MEMORY_LIMIT`, so its work is the bytes the client reads.
DECODE_LIMIT = 256 * 1024 * 1024
#: How often a request resolves again when the file it opens is not the one resolved (a
#: dataset replaced under it) before it gives up with a 404.
_ATTEMPTS = 4
#: Statuses whose responses have no body (RFC 9110 §6.4.1).
_NO_BODY = (204, 304)
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
#: Formatting a date costs more than the rest of a header; chunks of a build share mtimes.
_http_date = functools.lru_cache(maxsize=1024)(http_date)


@functools.lru_cache(maxsize=1024)
def _choose(accept_encoding: str | None, ranked: tuple[str | None, ...]) -> str | None:
    # encodings.choose ranks by size; the rank order is all it needs, so the answer depends on
    # the header and the order only, and browsers send a handful of distinct headers.
    return choose(accept_encoding, {e: float(i) for i, e in enumerate(ranked)})


@dataclass(frozen=True)
class Reply:
    """What the answer for one variant of a :class:`~.resolve.Resource` owes to no request
    header: made once per resolution, so a plain GET only copies a header list (whitenoise
    keeps its header lists per file for the same reason)."""

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


@dataclass(frozen=True)
class Prepared:
    """A resolution with the :class:`Reply` of each variant it can send: what the cache keeps."""

    resource: Resource
    replies: Mapping[str | None, Reply]


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
    :param decode_in_memory_limit: identity bytes decoded from a sibling (for a client that
        takes none of the stored codings) are held in memory up to this many, to be sent with
        a Content-Length; larger ones are streamed.
    :param encodings: the content codings to send (tokens of
        :data:`~precomp_host.encodings.ENCODINGS`; default all). Siblings of other codings are
        not looked at, as an nginx without the brotli module ignores ``.br`` files.
    :param decode_limit: a Range on a file stored only coded decodes it once to learn its
        length; past this many identity bytes (default 256 MiB) the request gets a 406 instead.
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
        decode_limit: int = DECODE_LIMIT,
    ) -> None:
        served = set(ENCODINGS if encodings is None else encodings)
        if unknown := served - set(ENCODINGS):
            raise ValueError(f"unknown content encodings: {', '.join(sorted(unknown))}")
        self.app = app
        self.resolver = Resolver(root, layout, served)
        self.root = self.resolver.root
        self.layout = layout
        self.cors = cors
        self.cache_control = cache_control
        self.cache: ResolutionCache[Prepared | None] = ResolutionCache(cache_size, cache_ttl)
        self.decode_in_memory_limit = decode_in_memory_limit
        self.decode_limit = decode_limit
        self.encodings = frozenset(served)
        self._cors_headers = cors_headers() if cors else {}

    @property
    def cache_size(self) -> int:
        return self.cache.size

    @property
    def cache_ttl(self) -> float | None:
        return self.cache.ttl

    # -- resolution ------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget cached resolutions (call after files changed)."""
        self.cache.invalidate()
        self.resolver.forget_folders()

    def find(self, url_path: str) -> Resource | None:
        """The stored files behind a decoded URL path (relative to the mount), or None."""
        prepared = self.cache.get(url_path, self._prepare)
        return None if prepared is None else prepared.resource

    def _prepare(self, url_path: str) -> Prepared | None:
        resource = self.resolver.resolve(url_path)
        if resource is None:
            return None
        return Prepared(resource, {e: self._reply(resource, e) for e in resource.ranked})

    def _reply(self, resource: Resource, encoding: str | None) -> Reply:
        stored = resource.files.get(encoding)
        source = stored if stored is not None else resource.decode_source()
        etag = source.etag if stored is not None else f"{source.etag}-identity"
        validators = [("ETag", quote_etag(etag)), ("Last-Modified", _http_date(source.mtime))]
        if resource.has_variants:
            validators.append(("Vary", "Accept-Encoding"))
        if self.cache_control is not None:
            validators.append(("Cache-Control", self.cache_control))
        validators += self._cors_headers.items()
        metadata = [("Content-Type", resource.media_type)]
        metadata.append(
            ("Accept-Ranges", "bytes") if encoding is None else ("Content-Encoding", encoding)
        )
        headers = (*metadata, *validators)
        whole = () if stored is None else (*headers, ("Content-Length", str(stored.size)))
        return Reply(stored, source, etag, headers, whole, tuple(validators))

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        prepared = self.cache.get(get_path_info(environ), self._prepare)
        if prepared is None:
            if self.app is not None:
                return self.app(environ, start_response)
            return self.not_found(environ, start_response)
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            return self._preflight(start_response)
        if method not in ("GET", "HEAD"):
            headers = {"Allow": ", ".join(ALLOW_METHODS), **self._cors()}
            return self._simple(start_response, 405, headers)
        return self.serve(prepared, environ, start_response)

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

    # -- answering -------------------------------------------------------------------------

    def serve(
        self, prepared: Prepared, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Answer a GET or HEAD: choose the variant and open it, evaluate the conditionals,
        send."""
        ranged = single_range(environ) if "HTTP_RANGE" in environ else None
        opened = self._open(prepared, environ, ranged is not None)
        if opened is None:  # gone since it was resolved
            return self.not_found(environ, start_response)
        reply, fd = opened
        try:
            if ranged is not None and not if_range_holds(environ, reply.etag, reply.source.mtime):
                ranged = None
            # Most requests carry no validator; the membership test is cheaper than the parse.
            if (
                "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ
            ) and is_not_modified(environ, reply.etag, reply.source.mtime):
                start_response(_STATUS[304], list(reply.not_modified))
                body: Iterable[bytes] = []
            elif ranged is not None:
                body = self._send_range(fd, reply, ranged, environ, start_response)
            elif reply.stored is not None:
                body = self._send_whole(fd, reply, environ, start_response)
            else:
                body = self._send_decoded(fd, reply, environ, start_response)
        except BaseException:
            os.close(fd)
            raise
        if isinstance(body, list):  # any other body owns fd and closes it (PEP 3333)
            os.close(fd)
        return body

    def _open(
        self, prepared: Prepared, environ: WSGIEnvironment, ranged: bool
    ) -> tuple[Reply, int] | None:
        """The reply for the variant the request gets, and that variant's file, opened and
        checked with ``fstat``: the length and validators sent are those of the bytes sent
        (STYLE.md, a cache never outranks the disk). A file that is no longer the one resolved
        (replaced, rewritten, gone) means resolving again; None when it is gone for good."""
        accept = environ.get("HTTP_ACCEPT_ENCODING")
        for _ in range(_ATTEMPTS):
            reply = prepared.replies[None if ranged else _choose(accept, prepared.resource.ranked)]
            source = reply.source
            try:
                # A bare descriptor: a small file is read with one os.read, a larger one
                # wrapped for sendfile (gunicorn); a file object costs as much as the rest.
                fd = os.open(source.path, os.O_RDONLY)
            except OSError:
                fd = -1
            else:
                st = os.fstat(fd)
                # StoredFile.is_same_file, inline: this runs on every request
                if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_dev) == source.stat_key:
                    return reply, fd
                os.close(fd)
            fresh = self._prepare(get_path_info(environ))
            self.cache.put(get_path_info(environ), fresh)
            if fresh is None:
                return None
            prepared = fresh
        log.warning("%s kept changing while it was opened; answered 404", source.path)
        return None

    @staticmethod
    def _send_whole(
        fd: int, reply: Reply, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        # Most requests: a stored file, whole; no header to compute.
        start_response(_STATUS[200], list(reply.whole))
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        size = reply.source.size
        if size > READ_LIMIT:
            return wrap_file(environ, RawFile(fd))  # type: ignore[arg-type] # a file enough
        return [os.read(fd, size)]

    def _send_range(
        self,
        fd: int,
        reply: Reply,
        ranged: Range,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """A 206 (or 416) of identity bytes: of the stored file, or decoded from a sibling."""
        source = reply.source
        coding = source.encoding if reply.stored is None else None
        length = source.size if coding is None else decoded_length(fd, coding, self.decode_limit)
        if length is None:
            return self._refuse_decoding(start_response)
        span = range_for_length(ranged.ranges[0], length)
        if span is None:
            refusal = {**self._cors(), "Content-Range": f"bytes */{length}"}
            return self._simple(start_response, 416, refusal)
        start, stop = span
        headers = [*reply.headers, ("Content-Range", f"bytes {start}-{stop - 1}/{length}")]
        headers.append(("Content-Length", str(stop - start)))
        start_response(_STATUS[206], headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        if coding is None:
            return FileSlice(fd, start, stop)
        return Decoded(fd, coding, start, stop)

    def _send_decoded(
        self, fd: int, reply: Reply, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """A 200 of identity bytes decoded from a sibling: with a Content-Length when they
        come to at most ``decode_in_memory_limit`` bytes, else streamed without one."""
        assert reply.source.encoding is not None
        body = Decoded(fd, reply.source.encoding)
        data = body.read_ahead(self.decode_in_memory_limit)
        headers = list(reply.headers)
        if data is not None:
            headers.append(("Content-Length", str(len(data))))
        start_response(_STATUS[200], headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        return body if data is None else [data]

    def _refuse_decoding(self, start_response: StartResponse) -> Iterable[bytes]:
        # 406, as the contract answers a client that refuses every coding we could send:
        # finding the length of identity bytes would decode more than decode_limit.
        message = b"Not Acceptable: identity bytes too large to decode; accept gzip or br\n"
        return self._simple(start_response, 406, self._cors(), message)


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
        and again), like nginx's ``open_file_cache`` with ``open_file_cache_valid 1s``. A
        replaced or deleted file is seen at once (the file sent is checked with ``fstat``);
        a file that appears where there was none is seen within that time.
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
