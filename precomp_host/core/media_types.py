"""Content-Type for each kind of file in a precomputed dataset, one table for every server.

Most precomputed files have no extension, so no server's default mime table fits: ``info``,
``segment_properties/info``, ``mesh/info`` and legacy mesh manifests ``<id>:0`` are JSON, and
chunks, mesh fragments, shards and indexes are opaque bytes (spec: volume.md, meshes.md).
The nginx and Apache templates are rendered from :data:`RULES`, the middleware calls
:func:`media_type_for`.
"""

from __future__ import annotations

import re

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
HTML = "text/html; charset=utf-8"

#: (name, regex on the URL/file path, media type), first match wins. The regexes are PCRE-safe
#: so that nginx ``location ~`` and Apache ``<FilesMatch>``/``RewriteRule`` can use them as is.
RULES: tuple[tuple[str, str, str], ...] = (
    ("json-file", r"\.json$", JSON),
    ("info", r"(^|/)info$", JSON),
    # Legacy mesh manifest "<segment id>:<lod>" (meshes.md); fragments are "<id>:<lod>:<name>".
    ("mesh-manifest", r"(^|/)\d+:\d+$", JSON),
    ("html", r"\.html$", HTML),
)
_COMPILED = tuple((re.compile(rx), media) for _, rx, media in RULES)


def media_type_for(path: str) -> str:
    """The Content-Type of the file a URL path names (sibling suffix already stripped)."""
    for rx, media in _COMPILED:
        if rx.search(path):
            return media
    return OCTET_STREAM
