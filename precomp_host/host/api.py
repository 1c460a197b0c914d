"""NeuroTrALE's HTTP API over a folder of datasets: :class:`AnnotationApi` and :data:`ROUTES`.

The routes of the NeuroTrALE Precomputed Service (issue #15), kept with their paths and meanings
so that its viewer works against us: ``/index.html``, annotation files under
``/{dataset}/annotations/{block}/{leaf}.json`` (GET, PUT, PATCH, DELETE), TIFF-tile chunks
(:mod:`precomp_host.host.tiff_tiles`), plus a version history per annotation file, the OpenAPI
document at ``/api/openapi.json`` and Swagger UI at ``/api/`` (served from the
``swagger-ui-bundle`` package, never a CDN).

:data:`ROUTES` is the one table both the dispatcher and :func:`openapi_document` read, so the
document cannot drift from the code. Anything no route matches goes to the wrapped application
(the precomputed middleware), werkzeug ``DispatcherMiddleware`` style.

Writes are refused unless a :class:`WritePolicy` allows them: a bearer token (compared in
constant time), or a request whose ``Origin`` is listed, for the NeuroTrALE viewer, which sends
no credentials. The second is weaker (any non-browser client can send any ``Origin``), and
:meth:`WritePolicy.describe` says so at start. Every write is logged with the origin, the client
address and what changed.

The route table is :mod:`.routes`, the write rule :mod:`.write_policy`; what stays here is
the dispatcher and one handler per route (just over 400 lines, one screen a handler).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import mimetypes
import os
import re
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import parse_qs

from werkzeug.http import parse_etags
from werkzeug.security import safe_join
from werkzeug.wsgi import get_path_info, wrap_file

from ..core.datasets import find_datasets
from ..core.headers import REVALIDATE, cors_headers
from ..core.media_types import HTML, JSON
from .annotations import (
    HISTORY,
    AnnotationError,
    AnnotationStore,
)
from .routes import ROUTES, Route, openapi_document
from .tiff_tiles import TIFF_SUFFIX, TiffTileMiddleware
from .write_policy import WritePolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .middleware import PrecomputedMiddleware

    #: A route's handler: (self, environ, **path parameters) -> (status, headers, body).
    Handler = Callable[..., tuple[int, dict[str, str], bytes]]

log = logging.getLogger(__name__)

#: Methods that change an annotation file.
WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE", "POST"})
#: Request headers a cross-origin writer may send (the viewer sends Content-Type text/plain,
#: a script If-Match and Authorization).
WRITE_ALLOW_HEADERS = ("Content-Type", "If-Match", "Authorization")
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


# -- the application ---------------------------------------------------------------------------


def swagger_ui_dir() -> Path | None:
    """The folder of Swagger UI's static files in the installed ``swagger-ui-bundle``."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(swagger_ui_path)


_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>precomp-host API</title>
<link rel="stylesheet" href="static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="static/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui",
  // no validator badge: it would send the document to a public service
  validatorUrl: null});
</script></body></html>
"""


class AnnotationApi:
    """The NeuroTrALE routes in front of ``app`` (the precomputed middleware).

    ::

        files = PrecomputedMiddleware(None, root)
        app = AnnotationApi(TiffTileMiddleware(files, files), root,
                            policy=WritePolicy(token="s3cret"))

    :param app: the application for every path no route matches.
    :param root: the folder of datasets.
    :param policy: who may write (default: nobody).
    :param store: the annotation store (default: one over ``root``).
    :param tiles: the TIFF-tile server that ``.tiff`` URLs go to.
    :param on_write: called with the dataset after each write that changed a file (the dev
        server's live reload, when its watcher does not see the store).
    """

    def __init__(
        self,
        app: WSGIApplication,
        root: str | os.PathLike[str],
        *,
        policy: WritePolicy | None = None,
        store: AnnotationStore | None = None,
        tiles: TiffTileMiddleware | None = None,
        on_write: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.on_write = on_write
        self.tiles = tiles
        self.root = Path(root).resolve()
        self.policy = policy or WritePolicy()
        self.store = store or AnnotationStore(self.root)
        self._routes = [(re.compile(r.regex + "$"), r) for r in ROUTES if r.handler]
        self._swagger = swagger_ui_dir()
        self._document = json.dumps(openapi_document(), indent=1).encode()

    @property
    def _has_index_file(self) -> bool:
        # A stored index.html (the one `deploy` writes) wins over the generated list, as a
        # stored file wins everywhere else.
        return (self.root / "index.html").is_file()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = get_path_info(environ)
        method = environ["REQUEST_METHOD"]
        if f"/{HISTORY}/" in path or path.endswith(f"/{HISTORY}"):
            # The history is reached through the versions routes, never as files.
            return self._text(start_response, 404, "Not Found", cors_headers())
        if path == "/api" or path.startswith("/api/"):
            return self._api_docs(path, environ, start_response)
        if path.endswith(TIFF_SUFFIX) and self.tiles is not None:
            # NeuroTrALE's viewer asks for the chunk by its TIFF's name: the converted chunk.
            tiff = self.tiles.tiff_for(path)
            if tiff is not None:
                return self.tiles.answer(tiff, environ, start_response)
        if "/annotations/" not in path and (path != "/index.html" or self._has_index_file):
            return self.app(environ, start_response)  # every chunk: two string tests
        if method == "HEAD":
            method = "GET"
        matched = False
        for regex, route in self._routes:
            m = regex.fullmatch(path)
            if m is None:
                continue
            matched = True
            if method == "OPTIONS":
                return self._preflight(environ, start_response)
            if route.method != method:
                continue
            try:
                handler = functools.partial(self.HANDLERS[route.handler], self)
                if route.write:
                    return self._write(route, handler, m.groupdict(), environ, start_response)
                status, headers, body = handler(environ, **m.groupdict())
            except AnnotationError as e:
                return self._text(start_response, e.status, str(e), cors_headers())
            return self._answer(
                environ, start_response, status, {**cors_headers(), **headers}, body
            )
        if matched:
            allow = sorted({r.method for _, r in self._routes if _.fullmatch(path)} | {"OPTIONS"})
            headers = {**cors_headers(), "Allow": ", ".join(allow)}
            return self._text(start_response, 405, "Method Not Allowed", headers)
        return self.app(environ, start_response)

    # -- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _text(
        start_response: StartResponse, status: int, text: str, headers: Mapping[str, str]
    ) -> Iterable[bytes]:
        body = (text + "\n").encode()
        out = {
            **headers,
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": str(len(body)),
        }
        start_response(_STATUS[status], list(out.items()))
        return [body]

    @staticmethod
    def _answer(
        environ: WSGIEnvironment,
        start_response: StartResponse,
        status: int,
        headers: dict[str, str],
        body: bytes,
    ) -> Iterable[bytes]:
        if status != 204:
            headers["Content-Length"] = str(len(body))
        start_response(_STATUS[status], list(headers.items()))
        return [] if environ["REQUEST_METHOD"] == "HEAD" or status in (204, 304) else [body]

    def _cors_for_write(self, environ: WSGIEnvironment) -> dict[str, str]:
        # Writes answer only the allowed origins' pages (a token holder's script on another
        # origin is not a browser page we vouch for); "Vary: Origin" because the answer
        # depends on it (Fetch standard, CORS protocol and HTTP caches).
        origin = environ.get("HTTP_ORIGIN")
        headers = {"Vary": "Origin", "Access-Control-Expose-Headers": "ETag"}
        if origin is not None and origin in self.policy.origins:
            headers["Access-Control-Allow-Origin"] = origin
        return headers

    def _preflight(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        wanted = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD", "").upper()
        if wanted not in WRITE_METHODS:
            headers = {
                **cors_headers(),
                "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": "If-None-Match, Cache-Control",
            }
            start_response(_STATUS[204], list(headers.items()))
            return []
        headers = self._cors_for_write(environ)
        if "Access-Control-Allow-Origin" in headers:
            headers["Access-Control-Allow-Methods"] = "GET, HEAD, PUT, PATCH, DELETE, POST"
            headers["Access-Control-Allow-Headers"] = ", ".join(WRITE_ALLOW_HEADERS)
            headers["Access-Control-Max-Age"] = "600"
        # Without Access-Control-Allow-Origin the browser fails the preflight and never sends
        # the write.
        start_response(_STATUS[204], list(headers.items()))
        return []

    def _write(
        self,
        route: Route,
        handler: Callable[..., tuple[int, dict[str, str], bytes]],
        args: dict[str, str],
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        cors = self._cors_for_write(environ)
        refused, how = self.policy.allows(environ)
        client = environ.get("REMOTE_ADDR", "?")
        origin = environ.get("HTTP_ORIGIN", "-")
        target = f"/{args['dataset']}/annotations/{args['block']}/{args['leaf']}.json"
        if refused:
            log.warning(
                "refused %s %s from %s (origin %s): %s", route.method, target, client, origin, how
            )
            extra = {"WWW-Authenticate": "Bearer"} if refused == 401 else {}
            return self._text(start_response, refused, how, {**cors, **extra})
        try:
            status, headers, body = handler(environ, **args)
        except AnnotationError as e:
            log.info(
                "%s %s by %s from %s (origin %s): %d %s",
                route.method,
                target,
                how,
                client,
                origin,
                e.status,
                e,
            )
            return self._text(start_response, e.status, str(e), cors)
        log.info(
            "%s %s by %s from %s (origin %s): %s",
            route.method,
            target,
            how,
            client,
            origin,
            headers.pop("X-Change", ""),
        )
        if self.on_write is not None:
            self.on_write(args["dataset"])
        return self._answer(environ, start_response, status, {**cors, **headers}, body)

    def _read_body(self, environ: WSGIEnvironment) -> bytes:
        limit = self.store.max_bytes
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            raise AnnotationError(400, "Content-Length is not a number") from None
        if length > limit:
            raise AnnotationError(413, f"body is larger than {limit} bytes")
        stream = environ["wsgi.input"]
        # Without a length (chunked), read one byte past the limit to know it was passed.
        data: bytes = stream.read(length) if length >= 0 else stream.read(limit + 1)
        if len(data) > limit:
            raise AnnotationError(413, f"body is larger than {limit} bytes")
        return data

    @staticmethod
    def _query(environ: WSGIEnvironment, name: str) -> str | None:
        values = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get(name)
        return values[0] if values else None

    # -- handlers (each returns status, headers, body) -----------------------------------

    def _index(self, environ: WSGIEnvironment) -> tuple[int, dict[str, str], bytes]:
        rows = "".join(
            f'<li><a href="{html.escape(rel)}/info">{html.escape(rel or ".")}</a></li>\n'
            for rel in find_datasets(self.root)
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Datasets</title></head>"
            f"<body><h1>Datasets</h1><ul>\n{rows}</ul>"
            "<p><a href='/api/'>API</a></p></body></html>\n"
        )
        return 200, {"Content-Type": HTML, "Cache-Control": REVALIDATE}, page.encode()

    def _read(
        self, environ: WSGIEnvironment, dataset: str, block: str, leaf: str
    ) -> tuple[int, dict[str, str], bytes]:
        data, tag = self.store.read(self.store.path_for(dataset, block, leaf))
        headers = {"Content-Type": JSON, "ETag": f'"{tag}"', "Cache-Control": REVALIDATE}
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None and parse_etags(if_none_match).contains_weak(tag):
            return 304, headers, b""
        return 200, headers, data

    def _put(
        self, environ: WSGIEnvironment, dataset: str, block: str, leaf: str
    ) -> tuple[int, dict[str, str], bytes]:
        path = self.store.path_for(dataset, block, leaf)
        tag, count = self.store.put(
            path, self._read_body(environ), if_match=environ.get("HTTP_IF_MATCH")
        )
        return 200, {"ETag": f'"{tag}"', "X-Change": f"replaced by {count} annotations"}, b""

    def _patch(
        self, environ: WSGIEnvironment, dataset: str, block: str, leaf: str
    ) -> tuple[int, dict[str, str], bytes]:
        path = self.store.path_for(dataset, block, leaf)
        ann_id = self._query(environ, "id")
        tag, created = self.store.patch(
            path, ann_id, self._read_body(environ), if_match=environ.get("HTTP_IF_MATCH")
        )
        what = "added" if created else "replaced"
        return (
            (201 if created else 200),
            {"ETag": f'"{tag}"', "X-Change": f"{what} id {ann_id}"},
            b"",
        )

    def _delete(
        self, environ: WSGIEnvironment, dataset: str, block: str, leaf: str
    ) -> tuple[int, dict[str, str], bytes]:
        path = self.store.path_for(dataset, block, leaf)
        ann_id = self._query(environ, "id")
        if not ann_id:
            return 204, {"X-Change": "nothing (no id)"}, b""
        tag, removed = self.store.delete(path, ann_id, if_match=environ.get("HTTP_IF_MATCH"))
        if not removed:
            raise AnnotationError(404, f"no annotation with id {ann_id!r}")
        return 200, {"ETag": f'"{tag}"', "X-Change": f"removed id {ann_id}"}, b""

    def _versions(
        self, environ: WSGIEnvironment, dataset: str, block: str, leaf: str
    ) -> tuple[int, dict[str, str], bytes]:
        import datetime

        path = self.store.path_for(dataset, block, leaf)
        out = [
            {
                "version": v.name,
                "saved": datetime.datetime.fromtimestamp(v.saved_ns / 1e9, datetime.timezone.utc)
                .isoformat()
                .replace("+00:00", "Z"),
                "etag": v.etag,
                "size": v.size,
            }
            for v in self.store.versions(path)
        ]
        return 200, {"Content-Type": JSON, "Cache-Control": REVALIDATE}, json.dumps(out).encode()

    def _restore(
        self, environ: WSGIEnvironment, dataset: str, block: str, leaf: str, version: str
    ) -> tuple[int, dict[str, str], bytes]:
        path = self.store.path_for(dataset, block, leaf)
        tag = self.store.restore(path, version, if_match=environ.get("HTTP_IF_MATCH"))
        return 200, {"ETag": f'"{tag}"', "X-Change": f"restored version {version}"}, b""

    #: The methods the route table's ``handler`` names stand for.
    HANDLERS: ClassVar[Mapping[str, Handler]] = {
        "index": _index,
        "read": _read,
        "put": _put,
        "patch": _patch,
        "delete": _delete,
        "versions": _versions,
        "restore": _restore,
    }

    # -- /api/ -------------------------------------------------------------------------------

    def _api_docs(
        self, path: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if path == "/api":
            start_response(_STATUS[308], [("Location", "/api/"), ("Content-Length", "0")])
            return []
        if path == "/api/openapi.json":
            headers = {**cors_headers(), "Content-Type": JSON}
            return self._answer(environ, start_response, 200, headers, self._document)
        if self._swagger is None:
            return self._text(
                start_response, 404, "Swagger UI needs: pip install 'precomp-host[api]'", {}
            )
        if path == "/api/":
            headers = {"Content-Type": HTML, "Cache-Control": REVALIDATE}
            return self._answer(environ, start_response, 200, headers, _SWAGGER_PAGE.encode())
        if path.startswith("/api/static/"):
            file = safe_join(str(self._swagger), path[len("/api/static/") :])
            if file is not None and os.path.isfile(file):
                size = os.path.getsize(file)
                # Swagger UI's .js and .css: not dataset media types, so the standard table.
                media = mimetypes.guess_type(file)[0] or "application/octet-stream"
                start_response(
                    _STATUS[200], [("Content-Type", media), ("Content-Length", str(size))]
                )
                return wrap_file(environ, open(file, "rb"))  # noqa: SIM115 - closed by WSGI
        return self._text(start_response, 404, "Not Found", {})


def make_api_app(
    files: PrecomputedMiddleware,
    root: str | os.PathLike[str],
    policy: WritePolicy | None = None,
    on_write: Callable[[str], None] | None = None,
) -> AnnotationApi:
    """The NeuroTrALE API in front of ``files`` (the precomputed middleware over ``root``), and
    TIFF-tile chunks where ``files`` finds no stored file."""
    tiles = TiffTileMiddleware.behind(files)
    return AnnotationApi(files, root, policy=policy, tiles=tiles, on_write=on_write)
