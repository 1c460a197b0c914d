"""The NeuroTrALE annotation files, written so that none is ever lost: :class:`AnnotationStore`.

The NeuroTrALE viewer reads and edits JSON lists of annotations stored beside a dataset, at
``{dataset}/annotations/{folder}/{leaf}.json`` (issue #15). Every change here is a
read-modify-write of one whole file, done

* under an inter-process lock (``fcntl.flock`` on a lock file per annotation file: a production
  server runs several worker processes, and a thread lock would not stop two of them);
* into a temporary file in the same folder, ``fsync``-ed, renamed over the old one, and the
  folder ``fsync``-ed (POSIX ``rename`` is atomic: a reader, or a crash, sees the old bytes or
  the new ones, never a truncated file);
* after saving the previous version in a bounded history (:meth:`AnnotationStore.versions`,
  :meth:`AnnotationStore.restore`);
* only when the caller's ``If-Match`` tag still names the current content (a content hash, so
  every worker process computes the same tag) and the new list passes :data:`SCHEMA` with
  unique ids and fits in :attr:`AnnotationStore.max_bytes`.

Problems raise :class:`AnnotationError` carrying the HTTP status the API answers with.

Over 400 lines: the paths, the lock, the history and the schema are one safety rule (no write
without all four), kept in one module so that a reader can check it in one place.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.http import parse_etags

from ..core.datasets import ANNOTATIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

#: Optional file in that folder: first row ``sx,sy,sz``, the block size in voxels.
BLOCK_INFO = "block_info.csv"
#: The previous versions of ``{folder}/{leaf}.json`` (and its lock file) are kept in
#: ``{folder}/HISTORY/{leaf}.json/``: a dot folder, which no annotation route names.
HISTORY = ".annotation-history"
#: Versions kept per file; the oldest are removed first.
HISTORY_LIMIT = 50
#: Largest body accepted for one file. The largest NeuroTrALE file seen (a ``fibers.json`` of a
#: dense block) is a few MiB; 16 MiB leaves room and still bounds a worker's memory.
MAX_BYTES = 16 * 1024 * 1024

#: ``xNNNyMMMzPPP``: the point a block is named by.
BLOCK_RE = re.compile(r"x(\d+)y(\d+)z(\d+)")
#: A leaf file's name without ``.json``: ``fibers``, ``z-0001``; no dot first, no separator.
LEAF_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

# The schemas are written in the subset of JSON Schema that OpenAPI 3.0 schema objects share
# (no "const", no type lists): the same dicts validate bodies here and document them at
# /api/openapi.json, which Swagger UI 4 (the swagger-ui-bundle package) renders; it does not
# render OpenAPI 3.1.
_ID = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
_XYZ_INT = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}
_XYZ = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_COMMON = {"id": _ID, "reviewed": {"type": "boolean"}, "visited": {"type": "boolean"}}
_REQUIRED = ["id", "type", "anntype", "reviewed", "visited"]


def _kind(type_: str, anntype: list[str], required: list[str], **props: Any) -> dict[str, Any]:
    return {
        "title": type_,
        "type": "object",
        "required": [*_REQUIRED, *required],
        "properties": {
            **_COMMON,
            "type": {"type": "string", "enum": [type_]},
            "anntype": {"type": "string", "enum": anntype},
            **props,
        },
        # Keys the viewer may add (colour, comments) are kept, not rejected: refusing them
        # would make the viewer's save fail, and dropping them would lose the user's data.
        "additionalProperties": True,
    }


#: One annotation, the three kinds NeuroTrALE draws (issue #15).
ANNOTATION_SCHEMA: dict[str, Any] = {
    "title": "Annotation",
    "oneOf": [
        _kind("point", ["neuron", "glia"], ["point"], point=_XYZ_INT),
        _kind("polygon", ["neuron", "glia"], ["points"], points={"type": "array", "items": _XYZ}),
        _kind(
            "linestring",
            ["axon"],
            ["points", "length"],
            points={"type": "array", "items": _XYZ},
            length={"type": "number"},
        ),
    ],
}
#: A whole file: a list of annotations.
SCHEMA: dict[str, Any] = {"title": "AnnotationFile", "type": "array", "items": ANNOTATION_SCHEMA}


class AnnotationError(Exception):
    """A request the store refuses; ``status`` is the HTTP answer, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Version:
    """One saved previous content of an annotation file."""

    name: str  # the history file's name: "{time_ns}-{tag}.json"
    saved_ns: int
    etag: str
    size: int


def etag_for(data: bytes) -> str:
    """The (unquoted, strong) entity tag of a file's bytes: the same in every worker process,
    and unchanged by a rewrite of the same content, unlike an mtime-based tag."""
    return hashlib.sha256(data).hexdigest()[:32]


def _validator() -> Callable[[Any], str | None]:
    """A function giving the one-line reason ``obj`` is not a valid file, or None."""
    # jsonschema is imported here: only the annotation API needs it.
    import jsonschema

    # One validator per kind, chosen by the item's "type": a failed oneOf would only say "not
    # valid under any of the given schemas", and the reason must tell the user what to fix.
    kinds = {b["properties"]["type"]["enum"][0]: b for b in ANNOTATION_SCHEMA["oneOf"]}
    by_kind = {k: jsonschema.Draft202012Validator(b) for k, b in kinds.items()}

    def check(obj: Any) -> str | None:
        if not isinstance(obj, list):
            return "body: expected a JSON list of annotations"
        for i, item in enumerate(obj):
            kind = item.get("type") if isinstance(item, dict) else None
            validator = by_kind.get(kind) if isinstance(kind, str) else None
            if validator is None:
                return f"[{i}]: expected an object with type {' or '.join(kinds)}"
            error = jsonschema.exceptions.best_match(validator.iter_errors(item))
            if error is not None:
                where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in error.path)
                return f"[{i}]{where}: {error.message}"
        return None

    return check


def parse_annotations(data: bytes, check: Callable[[Any], str | None]) -> list[dict[str, Any]]:
    """The list in ``data`` if it is valid (schema, unique ids), else a 422."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(422, f"body is not JSON: {e}") from None
    if (reason := check(obj)) is not None:
        raise AnnotationError(422, reason)
    seen: set[str] = set()
    for item in obj:
        key = str(item["id"])
        if key in seen:
            raise AnnotationError(422, f"id {key!r} appears more than once")
        seen.add(key)
    return list(obj)


def _dump(annotations: list[dict[str, Any]]) -> bytes:
    return (json.dumps(annotations, separators=(",", ":")) + "\n").encode()


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is (fsync(2), "Calling fsync() does
    # not necessarily ensure that the entry in the directory ... has also reached disk").
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: temporary file, fsync, rename, fsync of the folder.

    The caller holds the file's lock, so one temporary name per file is enough; one left by a
    writer that died (kill -9, power loss) is simply overwritten by the next write.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # Without it a crash after the rename can leave an empty file (ext4's
            # auto_da_alloc narrows that window for renames but does not close it).
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class AnnotationStore:
    """The annotation files of every dataset under ``root``.

    ::

        store = AnnotationStore("/data/datasets")
        path = store.path_for("brain1", "x100y200z3", "fibers")
        data, tag = store.read(path)
        store.patch(path, "17", b'{"id": "17", ...}', if_match=tag)

    :param root: the folder of datasets (the same one the middleware serves).
    :param history: previous versions kept per file (0: none).
    :param max_bytes: the largest file a write may produce.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        history: int = HISTORY_LIMIT,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.history = history
        self.max_bytes = max_bytes
        self._check = _validator()

    # -- paths -----------------------------------------------------------------------------

    def path_for(self, dataset: str, block: str, leaf: str) -> Path:
        """The file of ``/{dataset}/annotations/{block}/{leaf}.json``; a 404 for any path that
        would leave the root (``..`` however it was spelled, absolute, a symlink out)."""
        parts = dataset.split("/")
        for part in parts:
            # WSGI hands us PATH_INFO decoded, so "%2e%2e" arrives here as "..".
            if part in ("", ".", "..") or part.startswith(".") or "\\" in part or "\x00" in part:
                raise AnnotationError(404, "no such dataset")
        if not LEAF_RE.fullmatch(leaf):
            raise AnnotationError(404, "no such annotation file")
        match = BLOCK_RE.fullmatch(block)
        if match is None:
            raise AnnotationError(404, f"block {block!r} is not of the form xNNNyMMMzPPP")
        folder = self.root.joinpath(*parts, ANNOTATIONS)
        if not self._inside(folder):
            raise AnnotationError(404, "no such dataset")
        size = self.block_size(folder)
        if size is None:
            sub = block
        else:
            sub = block_folder((int(match[1]), int(match[2]), int(match[3])), size)
        path = folder / sub / f"{leaf}.json"
        # Again for the block folder and the file: either may be a symlink too.
        if not self._inside(path):
            raise AnnotationError(404, "no such annotation file")
        return path

    def _inside(self, path: Path) -> bool:
        # The real path of the deepest existing ancestor must be under the root: a symlinked
        # dataset or block folder pointing elsewhere is not ours to read or write.
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        real = Path(os.path.realpath(probe))
        return real == self.root or self.root in real.parents

    @staticmethod
    def block_size(annotations_folder: Path) -> tuple[int, int, int] | None:
        """``sx, sy, sz`` from ``block_info.csv``, or None when the file is absent."""
        try:
            with open(annotations_folder / BLOCK_INFO, newline="") as f:
                row = next(csv.reader(f), [])
        except FileNotFoundError:
            return None
        try:
            sx, sy, sz = (int(float(v)) for v in row[:3])
        except ValueError:
            raise AnnotationError(500, f"{BLOCK_INFO}: first row is not sx,sy,sz") from None
        if min(sx, sy, sz) <= 0:
            raise AnnotationError(500, f"{BLOCK_INFO}: block size must be positive")
        return sx, sy, sz

    # -- reads -----------------------------------------------------------------------------

    def read(self, path: Path) -> tuple[bytes, str]:
        """The bytes of ``path`` and their tag; 404 when there is no such file."""
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise AnnotationError(404, "no such annotation file") from None
        return data, etag_for(data)

    # -- writes ----------------------------------------------------------------------------

    def put(self, path: Path, body: bytes, *, if_match: str | None = None) -> tuple[str, int]:
        """Replace the whole file by ``body`` (a valid list). Returns (new tag, annotations)."""
        new = parse_annotations(self._bounded(body), self._check)
        return self._update(path, lambda _old: new, if_match=if_match, create=True), len(new)

    def patch(
        self, path: Path, ann_id: str | None, body: bytes, *, if_match: str | None = None
    ) -> tuple[str, bool]:
        """Replace the annotation whose id is the body's, or append it. Returns (tag, created)."""
        try:
            item = json.loads(self._bounded(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AnnotationError(422, f"body is not JSON: {e}") from None
        if not isinstance(item, dict):
            raise AnnotationError(422, "body: expected one annotation (a JSON object)")
        if (reason := self._check([item])) is not None:
            raise AnnotationError(422, reason.replace("[0]", "body", 1))
        if ann_id is not None and str(item["id"]) != ann_id:
            raise AnnotationError(422, f"?id={ann_id} differs from the body's id {item['id']!r}")
        key = str(item["id"])
        created = True

        def change(old: list[dict[str, Any]]) -> list[dict[str, Any]]:
            nonlocal created
            out = list(old)
            for i, a in enumerate(out):
                if str(a["id"]) == key:
                    out[i] = item
                    created = False
                    return out
            created = True
            return [*out, item]

        return self._update(path, change, if_match=if_match, create=True), created

    def delete(self, path: Path, ann_id: str, *, if_match: str | None = None) -> tuple[str, bool]:
        """Remove the annotation ``ann_id``. Returns (tag, whether one was removed)."""
        removed = False

        def change(old: list[dict[str, Any]]) -> list[dict[str, Any]]:
            nonlocal removed
            out = [a for a in old if str(a["id"]) != ann_id]
            removed = len(out) != len(old)
            return out

        return self._update(path, change, if_match=if_match, create=False), removed

    def restore(self, path: Path, version: str, *, if_match: str | None = None) -> str:
        """Make the saved ``version`` (a :attr:`Version.name`) current again; the content it
        replaces is itself saved, so a restore can be undone."""
        saved = self._history_dir(path) / version
        if not re.fullmatch(r"\d+-[0-9a-f]+\.json", version) or not saved.is_file():
            raise AnnotationError(404, f"no version {version!r} of this file")
        data = saved.read_bytes()
        parse_annotations(data, self._check)  # still valid under today's schema
        # The saved bytes as they were, so the restored file's ETag is the one it had.
        return self._update(path, lambda _cur: data, if_match=if_match, create=True)

    def _bounded(self, body: bytes) -> bytes:
        if len(body) > self.max_bytes:
            raise AnnotationError(413, f"body is larger than {self.max_bytes} bytes")
        return body

    @contextlib.contextmanager
    def locked(self, path: Path) -> Iterator[None]:
        """Hold the inter-process lock of ``path`` (blocking)."""
        lock_dir = self._history_dir(path)
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # flock locks are per open file description and released by the kernel when the
            # process dies, so a worker killed mid-write never leaves the file locked.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _update(
        self,
        path: Path,
        change: Callable[[list[dict[str, Any]]], list[dict[str, Any]] | bytes],
        *,
        if_match: str | None,
        create: bool,
    ) -> str:
        folder = path.parent
        if not folder.is_dir():
            if not create or not folder.parent.is_dir():
                # The dataset's annotations folder must exist: a write never creates a dataset.
                raise AnnotationError(404, "no such annotation folder")
            folder.mkdir(exist_ok=True)
        with self.locked(path):
            try:
                current: bytes | None = path.read_bytes()
            except FileNotFoundError:
                current = None
            if current is None and not create:
                raise AnnotationError(404, "no such annotation file")
            tag = None if current is None else etag_for(current)
            if if_match is not None and not _matches(if_match, tag):
                raise AnnotationError(412, "the file changed since it was read (If-Match)")
            old = [] if current is None else parse_annotations(current, lambda _o: None)
            new = change(old)
            data = new if isinstance(new, bytes) else _dump(new)
            if len(data) > self.max_bytes:
                raise AnnotationError(
                    413, f"the result would be larger than {self.max_bytes} bytes"
                )
            if current is not None and self.history:
                self._save_version(path, current, tag or "")
            write_atomic(path, data)
            return etag_for(data)

    # -- history ---------------------------------------------------------------------------

    def _history_dir(self, path: Path) -> Path:
        return path.parent / HISTORY / path.name

    def _save_version(self, path: Path, data: bytes, tag: str) -> None:
        folder = self._history_dir(path)
        saved = folder / f"{time.time_ns()}-{tag[:12]}.json"
        try:
            # A hard link to the current file: the write that follows renames a new file over
            # the name, so the linked inode keeps the old bytes, already on disk, with no copy
            # and no fsync (two of the four a copy costs: 5 ms each measured here).
            os.link(path, saved)
        except OSError:  # a file system without hard links
            write_atomic(saved, data)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
        for old in names[: max(0, len(names) - self.history)]:
            with contextlib.suppress(OSError):
                (folder / old).unlink()

    def versions(self, path: Path) -> list[Version]:
        """The saved previous contents of ``path``, newest first."""
        folder = self._history_dir(path)
        try:
            names = [n for n in os.listdir(folder) if re.fullmatch(r"\d+-[0-9a-f]+\.json", n)]
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(names, reverse=True):
            data = (folder / name).read_bytes()
            out.append(Version(name, int(name.split("-", 1)[0]), etag_for(data), len(data)))
        return out


def _matches(if_match: str, tag: str | None) -> bool:
    # RFC 9110 §13.1.1: "*" matches any current representation; otherwise a strong comparison
    # of the listed tags (weak tags never match for If-Match).
    value = if_match.strip()
    if value == "*":
        return tag is not None
    if tag is None:
        return False
    return bool(parse_etags(value).contains(tag))


def block_folder(point: tuple[int, int, int], size: tuple[int, int, int]) -> str:
    """The folder name of the block holding ``point`` when ``block_info.csv`` gives ``size``:
    NeuroTrALE's rule, ``x%04d_y%04d`` of the 1-based block index in x and y (z unused)."""
    return f"x{math.floor(point[0] / size[0]) + 1:04d}_y{math.floor(point[1] / size[1]) + 1:04d}"
