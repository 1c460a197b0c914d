"""A dataset's NeuroTrALE store as precomputed annotation layers: :class:`LiveAnnotations`.

The dev server shows the store of ``{dataset}/annotations/`` (the JSON files the CRUD API
edits, issue #15) as the collections ``points`` and ``lines`` at
``{dataset}/annotations/live/<name>/`` (:data:`LIVE`; block folders are ``x...`` names, so
``live`` is never one), generated from the store on demand:

* The store's **version** is a hash of every JSON file's entity tag (the content hash the API
  sends as ``ETag``, :func:`~precomp_host.host.annotations.etag_for`) and of the dataset's
  ``info`` (the voxel size). Files are read again only when their ``stat`` changed, so an
  unchanged store costs one folder walk per ``info`` request.
* A new version is built in a temporary folder of the cache (outside the served root, so the
  watcher never sees our own writes), moved whole to ``<name>/<version>/``, and only then is
  ``<name>/info`` replaced (a rename). That ``info`` names its indices by version
  (``"key": "<version>/spatial0"``, a relative path annotations.md allows), so a viewer holding
  an older ``info`` keeps reading the files of its own version, never a mix of two: the swap
  is the ``info``'s rename. The last :data:`KEEP` versions are kept for viewers not yet
  reloaded.
* The generator is handed in (``builder``): the host wing serves and caches, the build wing
  reads the store and writes the layers (``build.annotation_sources.write_store_layers``,
  sharded: a few files per version, read with Range).

A change reaches an open viewer through the dev server's live reload (the watcher sees the
store's files change; the API reports its writes too), which reloads the viewer; its new
``info`` request finds the new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import get_path_info

from ..core.datasets import ANNOTATIONS
from ..core.model import INFO_NAME
from .annotations import etag_for
from .middleware import PrecomputedMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    #: (store folder, dataset folder, output folder that must not exist) -> collection names.
    Builder = Callable[[Path, Path, Path], Sequence[str]]

log = logging.getLogger(__name__)

#: The folder, inside a dataset's ``annotations``, of the live layers' URLs.
LIVE = "live"
#: Versions of a layer kept after a newer one is built.
KEEP = 3
_MARKER = f"/{ANNOTATIONS}/{LIVE}/"


@dataclass(frozen=True)
class StoreVersion:
    """One built version of a dataset's store."""

    signature: tuple[tuple[str, int, int, int], ...]  # (path, size, mtime_ns, inode) per file
    version: str
    names: tuple[str, ...]


def _signature(dataset: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What ``stat`` says of the dataset's ``info`` and every JSON file of its store."""
    out = []
    store = dataset / ANNOTATIONS
    files = [dataset / INFO_NAME]
    for folder, dirs, names in os.walk(store):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # the history is hidden
        files += [Path(folder, n) for n in sorted(names) if n.endswith(".json")]
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue  # replaced while we walked: the next request sees the new one
        out.append((path.relative_to(dataset).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _version(dataset: Path, signature: Sequence[tuple[str, int, int, int]]) -> str:
    digest = hashlib.sha256()
    for rel, *_ in signature:
        try:
            tag = etag_for((dataset / rel).read_bytes())
        except OSError:
            continue
        digest.update(f"{rel}\0{tag}\n".encode())
    return digest.hexdigest()[:16]


def _versioned_info(info: dict[str, Any], version: str) -> dict[str, Any]:
    """``info`` with every index key under ``<version>/``."""

    def moved(entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry, "key": f"{version}/{entry['key']}"}

    return {
        **info,
        "by_id": moved(info["by_id"]),
        "relationships": [moved(r) for r in info["relationships"]],
        "spatial": [moved(s) for s in info["spatial"]],
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class LiveAnnotations:
    """Serve ``{dataset}/annotations/live/<name>/...`` from layers built from the store; every
    other request goes to ``app``.

    ::

        live = LiveAnnotations(pages, "/data", write_store_layers)
        live.layers("brain1")        # ["lines", "points"], built if the store changed

    :param app: the application for every other path.
    :param root: the folder of datasets.
    :param builder: writes a store's layers (see :data:`Builder`).
    :param cache_dir: where layers are built and served from (default: a temporary folder,
        removed by :meth:`close`).
    """

    def __init__(
        self,
        app: WSGIApplication,
        root: str | os.PathLike[str],
        builder: Builder,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        self.app = app
        self.root = Path(root).resolve()
        self.builder = builder
        self._own_cache = cache_dir is None
        self.cache = Path(cache_dir or tempfile.mkdtemp(prefix="precomp-live-")).resolve()
        self.files = PrecomputedMiddleware(None, self.cache, cache_control=cache_control)
        self._lock = threading.Lock()
        self._built: dict[str, StoreVersion] = {}

    def close(self) -> None:
        if self._own_cache:
            shutil.rmtree(self.cache, ignore_errors=True)

    # -- versions ------------------------------------------------------------------------

    def _dataset(self, rel: str) -> Path | None:
        """The dataset folder of ``rel`` if it is one with a store (never outside the root)."""
        parts = rel.split("/") if rel else []
        if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
            return None
        folder = self.root.joinpath(*parts)
        real = Path(os.path.realpath(folder))
        if real != self.root and self.root not in real.parents:
            return None
        if not (folder / INFO_NAME).is_file() or not (folder / ANNOTATIONS).is_dir():
            return None
        return folder

    def current(self, rel: str) -> StoreVersion | None:
        """The built version of the store of dataset ``rel`` (built now if it changed), or
        None when ``rel`` has no store or it cannot be read (then its last good version)."""
        dataset = self._dataset(rel)
        if dataset is None:
            return None
        signature = _signature(dataset)
        if not any(p.endswith(".json") for p, *_ in signature):
            return None  # an annotations folder holding only built layers: no store
        with self._lock:  # one build at a time; the others wait and take its result
            built = self._built.get(rel)
            if built is not None and built.signature == signature:
                return built
            version = _version(dataset, signature)
            if built is not None and built.version == version:  # touched, not changed
                built = StoreVersion(signature, version, built.names)
            else:
                try:
                    built = self._build(rel, dataset, signature, version)
                except (OSError, ValueError) as e:
                    log.warning("annotations of %s not rebuilt: %s", rel or ".", e)
                    return self._built.get(rel)
            self._built[rel] = built
            return built

    def _build(
        self, rel: str, dataset: Path, signature: Sequence[Any], version: str
    ) -> StoreVersion:
        home = self.cache.joinpath(*rel.split("/")) if rel else self.cache
        home.mkdir(parents=True, exist_ok=True)
        staging = home / f".build-{uuid.uuid4().hex[:12]}"
        try:
            names = tuple(self.builder(dataset / ANNOTATIONS, dataset, staging))
            for name in names:
                layer = home / name
                layer.mkdir(exist_ok=True)
                if not (layer / version).exists():
                    os.replace(staging / name, layer / version)
                info = json.loads((layer / version / INFO_NAME).read_bytes())
                # The swap: the files of `version` are complete before any info names them.
                _write_atomic(
                    layer / INFO_NAME, json.dumps(_versioned_info(info, version)).encode()
                )
                self._prune(layer, version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.files.invalidate()
        log.info("annotations of %s: version %s (%s)", rel or ".", version, ", ".join(names))
        return StoreVersion(tuple(signature), version, names)

    @staticmethod
    def _prune(layer: Path, version: str) -> None:
        older = sorted(
            (p for p in layer.iterdir() if p.is_dir() and p.name != version),
            key=lambda p: p.stat().st_mtime_ns,
        )
        for path in older[: max(0, len(older) - (KEEP - 1))]:
            shutil.rmtree(path, ignore_errors=True)

    def layers(self, rel: str) -> list[str]:
        """The live layers of dataset ``rel`` (its URL-relative paths), for the index."""
        built = self.current(rel)
        prefix = f"{rel}/{ANNOTATIONS}/{LIVE}" if rel else f"{ANNOTATIONS}/{LIVE}"
        return [f"{prefix}/{name}" for name in sorted(built.names)] if built else []

    # -- requests ------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = get_path_info(environ)
        head, marker, tail = path.partition(_MARKER[1:] if path.startswith(_MARKER) else _MARKER)
        if not marker or "/" not in tail:
            return self.app(environ, start_response)
        rel = head.strip("/")
        name, _, rest = tail.partition("/")
        if rest == INFO_NAME:
            built = self.current(rel)
            if built is None or name not in built.names:
                return self.files.not_found(environ, start_response)
        elif self._dataset(rel) is None:
            return self.files.not_found(environ, start_response)
        # The cache mirrors the URLs below the marker: <rel>/<name>/info, <rel>/<name>/<ver>/...
        inner_path = f"/{rel}/{name}/{rest}" if rel else f"/{name}/{rest}"
        # PATH_INFO is the URL's bytes as latin-1 (PEP 3333); get_path_info decoded UTF-8.
        inner = {**environ, "PATH_INFO": inner_path.encode().decode("latin-1")}
        return self.files(inner, start_response)
