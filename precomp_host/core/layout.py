"""Where a chunk lives on disk: the :class:`Layout` (``FLAT`` or ``NESTED``).

Neuroglancer always asks for ``<scale key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` (spec: volume.md,
"Unsharded chunk storage"). A folder with a million files per scale is slow on most filesystems,
so the default ``NESTED`` layout stores that chunk at ``<key>/<x0>-<x1>/<y0>-<y1>/<z0>-<z1>``
and every server maps the flat URL to the nested path with :data:`URL_PATTERN` and
:data:`URL_REPLACEMENT`. That pair is the only copy of the rule: the generator, the middleware
and the nginx/Apache templates all read it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .model import RANGE_PATTERN, ChunkKey

#: A flat chunk name, alone as the last path segment. It never matches mesh names (``1:0``,
#: ``1052:0:0-512_0-512_0-512``), annotation cells (``1_2_3``), ``*.shard`` or ``*.index``.
CHUNK_NAME_PATTERN = rf"^{RANGE_PATTERN}_{RANGE_PATTERN}_{RANGE_PATTERN}$"

#: The URL rewrite, as PCRE for nginx ``rewrite`` and Apache ``RewriteRule`` (both use ``$n``):
#: group 1 is everything up to the last ``/``, groups 2-4 the x, y and z ranges.
URL_PATTERN = rf"^(.*)/({RANGE_PATTERN})_({RANGE_PATTERN})_({RANGE_PATTERN})$"
URL_REPLACEMENT = "$1/$2/$3/$4"

# re.ASCII: \d as PCRE reads it (ASCII digits only), so Python and the servers agree.
_URL_RE = re.compile(URL_PATTERN, re.ASCII)
_PY_REPLACEMENT = re.sub(r"\$(\d)", r"\\\1", URL_REPLACEMENT)
_NESTED_TAIL = re.compile(
    rf"(?:^|/)({RANGE_PATTERN})/({RANGE_PATTERN})/({RANGE_PATTERN})\Z", re.ASCII
)


def nested_url(url_path: str) -> str:
    """The nested path for a flat chunk URL; any other path is returned unchanged."""
    # fullmatch, not sub: Python's $ also matches before a trailing newline, and a path with one
    # is no chunk URL.
    m = _URL_RE.fullmatch(url_path)
    return url_path if m is None else m.expand(_PY_REPLACEMENT)


@dataclass(frozen=True)
class Layout:
    """How chunk keys map to relative POSIX paths inside a dataset folder."""

    name: ClassVar[str]

    def path_for(self, key: ChunkKey) -> str:
        raise NotImplementedError

    def key_for(self, path: str) -> ChunkKey | None:
        """The chunk stored at ``path`` (relative to the dataset), or None for other files."""
        raise NotImplementedError

    def resolve(self, url_path: str) -> str:
        """The path on disk that serves Neuroglancer's request for ``url_path``."""
        raise NotImplementedError


@dataclass(frozen=True)
class FlatLayout(Layout):
    name: ClassVar[str] = "flat"

    def path_for(self, key: ChunkKey) -> str:
        return f"{key.scale}/{key.name}"

    def key_for(self, path: str) -> ChunkKey | None:
        scale, _, tail = path.rpartition("/")
        if not scale or re.fullmatch(CHUNK_NAME_PATTERN, tail, re.ASCII) is None:
            return None
        try:
            return ChunkKey.parse(scale, tail)
        except ValueError:
            return None

    def resolve(self, url_path: str) -> str:
        return url_path


@dataclass(frozen=True)
class NestedLayout(Layout):
    name: ClassVar[str] = "nested"

    def path_for(self, key: ChunkKey) -> str:
        # The flat name's three ranges, one folder level each.
        return f"{key.scale}/{key.name.replace('_', '/')}"

    def key_for(self, path: str) -> ChunkKey | None:
        m = _NESTED_TAIL.search(path)
        if m is None or m.start() == 0:
            return None
        try:
            return ChunkKey.parse(path[: m.start()], "_".join(m.groups()))
        except ValueError:
            return None

    def resolve(self, url_path: str) -> str:
        return nested_url(url_path)


#: Files in progress: the generator writes each file as ``<TMP_DIR>/<uuid><PARTIAL_SUFFIX>`` inside
#: the dataset and renames it into place. The watcher takes a ``.partial`` file as "a build is
#: running here"; uploads and servers never publish such files.
TMP_DIR = ".precomp-tmp"
PARTIAL_SUFFIX = ".partial"

FLAT = FlatLayout()
NESTED = NestedLayout()
LAYOUTS: dict[str, Layout] = {FLAT.name: FLAT, NESTED.name: NESTED}

#: A legacy mesh manifest URL ``<dir>/<segment id>:0`` (spec: meshes.md). Trees written on
#: filesystems without ``:`` in file names store it as ``<id>`` or ``<id>.json`` instead; servers
#: try :data:`MESH_MANIFEST_FALLBACKS` (same ``$n`` syntax as :data:`URL_REPLACEMENT`) in order.
MESH_MANIFEST_PATTERN = r"^(.*/)?(\d+):0$"
MESH_MANIFEST_FALLBACKS = ("$1$2", "$1$2.json")
_MESH_RE = re.compile(MESH_MANIFEST_PATTERN, re.ASCII)


def mesh_manifest_url(path: str) -> str | None:
    """The manifest URL (``<id>:0``) that the colon-free file ``path`` stands in for, or None.

    The inverse of :func:`mesh_manifest_fallbacks`, derived from it, for stores that cannot
    fall back at request time (S3, GCS) and so must hold the manifest under its URL.
    """
    folder, sep, name = path.rpartition("/")
    digits = re.match(r"\d+", name, re.ASCII)
    if digits is None:
        return None
    url = f"{folder}{sep}{digits.group()}:0"
    return url if path in mesh_manifest_fallbacks(url) else None


def mesh_manifest_fallbacks(url_path: str) -> list[str]:
    """The colon-free paths to try for a mesh manifest URL (``[]`` for any other path)."""
    m = _MESH_RE.fullmatch(url_path)
    if m is None:
        return []
    return [m.expand(re.sub(r"\$(\d)", r"\\g<\1>", r)) for r in MESH_MANIFEST_FALLBACKS]
