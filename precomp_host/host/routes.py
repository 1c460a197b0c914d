"""The NeuroTrALE API as data: :data:`ROUTES` and :func:`openapi_document`.

One table that both the dispatcher (:class:`~precomp_host.host.api.AnnotationApi`) and the
OpenAPI 3 document read, so the document served at ``/api/openapi.json`` cannot drift from the
code. Each :class:`Route` names its handler, its regex, its parameters and its answers; the
request and response schemas are the ones the annotation store validates with
(:mod:`precomp_host.host.annotations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .annotations import ANNOTATION_SCHEMA, SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

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
