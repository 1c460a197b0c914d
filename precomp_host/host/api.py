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
"""

from __future__ import annotations

import functools
import hmac
import html
import json
import logging
import mimetypes
import os
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs

from werkzeug.http import parse_etags
from werkzeug.security import safe_join
from werkzeug.wsgi import get_path_info, wrap_file

from ..core.datasets import find_datasets
from ..core.headers import REVALIDATE, cors_headers
from ..core.media_types import HTML, JSON
from .annotations import (
    ANNOTATION_SCHEMA,
    HISTORY,
    SCHEMA,
    AnnotationError,
    AnnotationStore,
)
from .tiff_tiles import TIFF_SUFFIX, TiffTileMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .middleware import PrecomputedMiddleware

    #: A route's handler: (self, environ, **path parameters) -> (status, headers, body).
    Handler = Callable[..., tuple[int, dict[str, str], bytes]]

log = logging.getLogger(__name__)

#: The environment variable a write token may be given in (else ``--write-token-file``).
TOKEN_ENV = "PRECOMP_HOST_WRITE_TOKEN"
#: Methods that change an annotation file.
WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE", "POST"})
#: Request headers a cross-origin writer may send (the viewer sends Content-Type text/plain,
#: a script If-Match and Authorization).
WRITE_ALLOW_HEADERS = ("Content-Type", "If-Match", "Authorization")
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_ANNOTATION_PREFIX = r"/(?P<dataset>.+)/annotations/(?P<block>[^/]+)/(?P<leaf>[^/]+)\.json"


# -- the route table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" | "query" | "header"
    description: str
    required: bool = True
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    """One operation: its OpenAPI path, the regex that matches it, and its documentation."""

    method: str
    path: str  # OpenAPI path template
    regex: str
    handler: str  # AnnotationApi method name
    summary: str
    description: str
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None  # request body schema (any content type)
    responses: Mapping[int, str] = field(default_factory=dict)
    response_schema: Mapping[str, Any] | None = None
    write: bool = False
    tag: str = "annotations"


_DATASET = Param("dataset", "path", "The dataset's folder under the root (may contain /).")
_BLOCK = Param(
    "block",
    "path",
    "The block, a point named xNNNyMMMzPPP. With annotations/block_info.csv (first row: the "
    "block size sx,sy,sz) the folder is x%04d_y%04d of the 1-based block index floor(p/s)+1 "
    "in x and y; without it, the block string is the folder name.",
    schema={"type": "string", "pattern": r"^x\d+y\d+z\d+$"},
)
_LEAF = Param("leaf", "path", "The file's name without .json: fibers, z-0001, ...")
_IF_MATCH = Param(
    "If-Match",
    "header",
    "The ETag of the file as last read; a write is refused (412) if the file changed since. "
    "Omit it to write unconditionally (the NeuroTrALE viewer does).",
    required=False,
)
_ID = Param("id", "query", "The annotation's id.", required=False)
_READ_ERRORS = {404: "No such dataset, block or file (or a path outside the root)."}
_WRITE_ERRORS = {
    401: "No valid token and not from an allowed origin; nothing changed.",
    403: "The server is read-only; nothing changed.",
    404: "No such dataset or annotations folder.",
    412: "If-Match names an older version of the file; nothing changed.",
    413: "The body, or the file it would make, is larger than the limit.",
    422: "The body is not a valid annotation (list); the reason is one line of text.",
}
_ANNOTATION_PATH = "/{dataset}/annotations/{block}/{leaf}.json"

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/index.html",
        r"/index\.html",
        "index",
        "The dataset index",
        "An HTML page linking every dataset (folder with an info file) under the root.",
        responses={200: "The index page."},
        tag="datasets",
    ),
    Route(
        "GET",
        _ANNOTATION_PATH,
        _ANNOTATION_PREFIX,
        "read",
        "Read an annotation file",
        "The file's bytes as stored, with a strong ETag (a hash of the content).",
        (_DATASET, _BLOCK, _LEAF),
        responses={200: "The file, a JSON list of annotations.", 304: "Not modified."}
        | _READ_ERRORS,
        response_schema={"$ref": "#/components/schemas/AnnotationFile"},
    ),
    Route(
        "PUT",
        _ANNOTATION_PATH,
        _ANNOTATION_PREFIX,
        "put",
        "Replace an annotation file",
        "The body (any Content-Type; the NeuroTrALE viewer sends text/plain) is the whole new "
        "list. It is validated, ids must be unique, and the previous content is kept in the "
        "file's history.",
        (_DATASET, _BLOCK, _LEAF, _IF_MATCH),
        body={"$ref": "#/components/schemas/AnnotationFile"},
        responses={200: "Replaced (or created); the new ETag is in the ETag header."}
        | _WRITE_ERRORS,
        write=True,
    ),
    Route(
        "PATCH",
        _ANNOTATION_PATH,
        _ANNOTATION_PREFIX,
        "patch",
        "Replace or add one annotation",
        "The annotation whose id equals the body's id is replaced; if there is none the body "
        "is appended (201). ?id=, when given, must equal the body's id.",
        (_DATASET, _BLOCK, _LEAF, _ID, _IF_MATCH),
        body={"$ref": "#/components/schemas/Annotation"},
        responses={200: "Replaced.", 201: "Added."} | _WRITE_ERRORS,
        write=True,
    ),
    Route(
        "DELETE",
        _ANNOTATION_PATH,
        _ANNOTATION_PREFIX,
        "delete",
        "Delete one annotation",
        "Removes the annotation ?id=. Without id nothing is done (204), as NeuroTrALE does.",
        (_DATASET, _BLOCK, _LEAF, _ID, _IF_MATCH),
        responses={200: "Removed.", 204: "No id given: nothing done."}
        | _WRITE_ERRORS
        | {404: "No such file, or no annotation with that id."},
        write=True,
    ),
    Route(
        "GET",
        _ANNOTATION_PATH + "/versions",
        _ANNOTATION_PREFIX + r"/versions",
        "versions",
        "List the saved versions of an annotation file",
        "Every write saves the content it replaces; the newest versions are kept (50 by "
        "default). Newest first.",
        (_DATASET, _BLOCK, _LEAF),
        responses={200: "The versions."} | _READ_ERRORS,
        response_schema={"type": "array", "items": {"$ref": "#/components/schemas/Version"}},
        tag="history",
    ),
    Route(
        "POST",
        _ANNOTATION_PATH + "/versions/{version}/restore",
        _ANNOTATION_PREFIX + r"/versions/(?P<version>[^/]+)/restore",
        "restore",
        "Restore a saved version",
        "Makes a saved version current again; the content it replaces is saved too, so a "
        "restore can itself be undone.",
        (
            _DATASET,
            _BLOCK,
            _LEAF,
            Param("version", "path", "A version's name, from the versions list."),
            _IF_MATCH,
        ),
        responses={200: "Restored."} | _WRITE_ERRORS,
        write=True,
        tag="history",
    ),
    Route(
        "GET",
        "/{dataset}/{scale}/{chunk}",
        r"(?!)",  # answered by TiffTileMiddleware and the precomputed middleware, not here
        "",
        "Read an image chunk",
        "A precomputed chunk. For a TIFF-tile dataset (chunks stored as "
        "{scale}/{x0-x1_y0-y1_z0-z1}.tiff, as precomputed-tif writes them) the TIFF is "
        "converted to raw chunk bytes; a .tiff suffix on the URL is accepted. Content codings, "
        "ETag, Range and CORS follow the same rules as every stored chunk.",
        (
            _DATASET,
            Param("scale", "path", "The scale's key, e.g. 1_1_1."),
            Param("chunk", "path", "x0-x1_y0-y1_z0-z1, optionally with .tiff."),
        ),
        responses={200: "The chunk bytes (application/octet-stream)."} | _READ_ERRORS,
        tag="datasets",
    ),
)


def openapi_document(routes: Iterable[Route] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``routes``, with the schemas the store validates with
    (3.0, not 3.1: Swagger UI 4, which ``swagger-ui-bundle`` ships, renders only 3.0)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "operationId": route.handler or "chunk",
            "summary": route.summary,
            "description": route.description,
            "tags": [route.tag],
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": dict(p.schema),
                }
                for p in route.params
            ],
            "responses": {
                str(code): _response(code, text, route.response_schema if code == 200 else None)
                for code, text in sorted(route.responses.items())
            },
        }
        if route.body is not None:
            schema = dict(route.body)
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "text/plain": {"schema": schema},
                },
            }
        if route.write:
            # Either a token, or no credentials at all from an allowed origin.
            op["security"] = [{"bearer": []}, {}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
    file_schema = dict(SCHEMA, items={"$ref": "#/components/schemas/Annotation"})
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "precomp-host: NeuroTrALE API",
            "version": "1",
            "description": "Datasets, image chunks and annotation files; writes need a token "
            "or an allowed origin.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Annotation": dict(ANNOTATION_SCHEMA),
                "AnnotationFile": file_schema,
                "Version": {
                    "type": "object",
                    "required": ["version", "saved", "etag", "size"],
                    "properties": {
                        "version": {"type": "string"},
                        "saved": {"type": "string", "format": "date-time"},
                        "etag": {"type": "string"},
                        "size": {"type": "integer"},
                    },
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _response(code: int, text: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": text}
    if schema is not None:
        out["content"] = {"application/json": {"schema": dict(schema)}}
    return out


# -- who may write -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WritePolicy:
    """Who may write: holders of ``token``, and browsers on ``origins`` (no credentials).

    The default, no token and no origin, is read-only.
    """

    token: str | None = None
    origins: frozenset[str] = frozenset()

    @classmethod
    def from_options(
        cls, token_file: str | os.PathLike[str] | None, origins: Iterable[str] = ()
    ) -> WritePolicy:
        """The policy from ``--write-token-file`` (else ``$PRECOMP_HOST_WRITE_TOKEN``) and
        ``--allow-writes-from`` values."""
        token = os.environ.get(TOKEN_ENV) or None
        if token_file is not None:
            token = Path(token_file).read_text().strip()
            if not token:
                raise ValueError(f"{token_file}: the token file is empty")
        return cls(token, frozenset(o.rstrip("/") for o in origins))

    @property
    def read_only(self) -> bool:
        return self.token is None and not self.origins

    def describe(self) -> str:
        """What this policy allows, and why origins are weaker than a token (said at start)."""
        if self.read_only:
            return "annotations are read-only (no --write-token-file, no --allow-writes-from)"
        parts = []
        if self.token is not None:
            parts.append("writes with 'Authorization: Bearer <token>'")
        if self.origins:
            parts.append(
                "writes without credentials from pages on "
                + ", ".join(sorted(self.origins))
                + " (weaker than a token: a browser cannot fake its Origin, but any other "
                "client on the network can send one, so anyone who can reach this port can "
                "write)"
            )
        return "annotations: " + "; ".join(parts)

    def allows(self, environ: WSGIEnvironment) -> tuple[int, str]:
        """(0, how) when the request may write, else (status, reason)."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if self.token is not None and auth[:7].lower() == "bearer ":
            # compare_digest: the time taken does not tell how much of the token was right.
            if hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
                return 0, "token"
            return 401, "wrong token"
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin in self.origins:
            return 0, f"origin {origin}"
        if self.read_only:
            return 403, "this server is read-only"
        return 401, "a write needs 'Authorization: Bearer <token>' or an allowed origin"


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
    """

    def __init__(
        self,
        app: WSGIApplication,
        root: str | os.PathLike[str],
        *,
        policy: WritePolicy | None = None,
        store: AnnotationStore | None = None,
        tiles: TiffTileMiddleware | None = None,
    ) -> None:
        self.app = app
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
) -> AnnotationApi:
    """The NeuroTrALE API in front of ``files`` (the precomputed middleware over ``root``), and
    TIFF-tile chunks where ``files`` finds no stored file."""
    tiles = TiffTileMiddleware.behind(files)
    return AnnotationApi(files, root, policy=policy, tiles=tiles)
