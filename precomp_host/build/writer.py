"""Writing a dataset folder atomically: the :class:`DatasetWriter`.

Every file is written under ``<root>/.precomp-tmp/`` and renamed into place (``os.replace`` is
atomic on POSIX within one filesystem), so a server never serves a half-written file at a final
name. ``info`` is written last (:meth:`DatasetWriter.commit`): a dataset without ``info`` is not
loadable, and a watcher can take a new ``info`` as "this build is complete".

Which files a chunk gets (the "variants") follows one rule, shared with the servers:

* a ``.br`` / ``.gz`` sibling for each requested content encoding that saves >= 5 %, a ``.br``
  only when smaller than the ``.gz`` (``encodings.worth_storing``);
* the plain (identity) file only when asked (``keep_identity``) or when there is no ``.gz``:
  every server we configure can then answer any client, decompressing ``.gz`` when needed.

Files read with HTTP Range (shards, multi-resolution mesh data) are stored plain only:
:meth:`DatasetWriter.open_atomic` streams one, ``put(..., precompress=False)`` writes one.

Variants are written brotli, gzip, identity; the last one written marks the chunk complete,
which is what ``--resume`` checks (:meth:`DatasetWriter.is_complete`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.encodings import BY_SUFFIX, ENCODINGS, GZIP, worth_storing
from ..core.layout import LAYOUTS, PARTIAL_SUFFIX, TMP_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import BinaryIO

    from ..core.layout import Layout
    from ..core.model import ChunkKey, Dataset

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

#: A build's scratch store (the region tasks' exact intermediates and records,
#: :mod:`~.regions`): inside TMP_DIR, so no reader, server or scan of OUT sees it; kept when a
#: run stops (``--resume`` reuses it) and removed with TMP_DIR when the dataset is committed.
SCRATCH_DIR = f"{TMP_DIR}/scratch"


def drop_partials(root: Path) -> None:
    """Remove the partial files of an interrupted run under ``root``; the scratch store stays."""
    tmp = root / TMP_DIR
    if not tmp.is_dir():
        return
    keep = root / SCRATCH_DIR
    for child in tmp.iterdir():
        if child == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


class DiskFullError(OSError):
    """No space left (or a file size limit hit) while writing a dataset."""


def _names(suffixes: set[str]) -> str:
    return "+".join(s or "plain" for s in sorted(suffixes))


def _format_json(obj: Any, indent: str = "") -> str:
    """JSON with one member per line but short lists of numbers kept on one line."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_format_json(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if (
        isinstance(obj, list)
        and obj
        and not all(
            isinstance(v, int | float | str) or (isinstance(v, list) and len(v) <= 3) for v in obj
        )
    ):
        return "[\n" + ",\n".join(inner + _format_json(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj)


class Writer(Protocol):
    """What a build writes through: a folder (:class:`DatasetWriter`) or an object store
    (:class:`~precomp_host.build.objectwriter.ObjectStoreWriter`)."""

    layout: Layout

    def is_complete(self, rel_path: str) -> bool: ...
    def get_json(self, rel_path: str) -> Any: ...
    def put(self, rel_path: str, data: bytes, *, precompress: bool = True) -> int: ...
    def put_json(self, rel_path: str, obj: Any) -> int: ...
    def open_atomic(self, rel_path: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def begin(self) -> None: ...
    def abort(self) -> None: ...
    def commit(self, dataset: Dataset) -> None: ...


class DatasetWriter:
    """Writes files of one dataset under ``root``, each atomically, with compressed siblings.

    :param root: the dataset folder (created by the caller).
    :param layout: where chunks go (``NESTED`` or ``FLAT``).
    :param compress: content encoding names to store as siblings (``"gzip"``, ``"br"``).
    :param keep_identity: also store the plain file when a ``.gz`` exists.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: Layout,
        *,
        compress: Sequence[str] = ("gzip", "br"),
        keep_identity: bool = False,
    ) -> None:
        unknown = [c for c in compress if c not in ENCODINGS]
        if unknown:
            raise ValueError(f"unknown content encoding {unknown[0]!r} (use gzip, br)")
        self.root = Path(root)
        self.layout = layout
        # Write order: brotli, gzip, identity (identity last marks completion).
        self.encodings = [e for e in ENCODINGS.values() if e.name in compress]
        self.encodings.sort(key=lambda e: e is GZIP)
        self.keep_identity = keep_identity
        self.tmp = self.root / TMP_DIR
        self._made_dirs: set[Path] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for tasks run in other processes (issue #14): the lock and the cache of
        # folders made are this process's own.
        state = dict(self.__dict__)
        del state["_lock"], state["_made_dirs"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._made_dirs = set()
        self._lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------------

    def _final(self, rel_path: str) -> Path:
        return self.root / rel_path

    def _ensure_dir(self, path: Path) -> None:
        if path in self._made_dirs:
            return
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._made_dirs.add(path)

    def is_complete(self, rel_path: str) -> bool:
        """Whether ``rel_path`` was fully written (all its variants) by an earlier run."""
        final = self._final(rel_path)
        if final.exists():
            return True
        has_gzip = any(e is GZIP for e in self.encodings)
        gz = final.with_name(final.name + GZIP.suffix)
        return has_gzip and not self.keep_identity and gz.exists()

    def get_json(self, rel_path: str) -> Any:
        """The JSON document at ``rel_path`` (a resume journal record), or None when absent."""
        try:
            return json.loads(self._final(rel_path).read_text())
        except FileNotFoundError:
            return None

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _open_atomic(self, final: Path) -> Iterator[BinaryIO]:
        self._ensure_dir(final.parent)
        tmp = self.tmp / f"{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in _DISK_FULL:
                raise DiskFullError(e.errno, f"disk full while writing {final}") from None
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _write_atomic(self, final: Path, data: bytes) -> None:
        with self._open_atomic(final) as f:
            f.write(data)

    def open_atomic(self, rel_path: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A file to stream ``rel_path`` into, renamed into place when the block ends without
        an error (removed otherwise). Stored plain, without siblings: for files read with
        Range and too large to hold in memory (shards)."""
        return self._open_atomic(self._final(rel_path))

    def _variants(self, data: bytes) -> dict[str, bytes]:
        """Suffix -> bytes of the files ``data`` gets, in write order (identity last)."""
        packed = {enc.suffix: enc.compress(data) for enc in self.encodings}
        kept = worth_storing(len(data), {e.name: len(packed[e.suffix]) for e in self.encodings})
        out = {e.suffix: packed[e.suffix] for e in self.encodings if e.name in kept}
        if self.keep_identity or GZIP.suffix not in out:
            out[""] = data
        return out

    def put(self, rel_path: str, data: bytes, *, precompress: bool = True) -> int:
        """Write ``data`` at ``rel_path`` with its effective siblings; returns bytes stored.

        ``precompress=False`` stores the plain file alone: files read with Range (shards,
        multi-resolution mesh data, annotation files a reader fetches by byte range) must be
        served without a Content-Encoding (sharded.md), so they get no siblings.
        """
        final = self._final(rel_path)
        written = 0
        variants = self._variants(data) if precompress else {"": data}
        for suffix, blob in variants.items():
            self._write_atomic(final.with_name(final.name + suffix), blob)
            written += len(blob)
        return written

    def stored_differently(self, key: ChunkKey) -> str | None:
        """Why chunk ``key``, already on disk, is not what these settings store (its layout,
        its variants), or None. A finished dataset records no settings of its own: its files
        are the record."""
        found = {}
        for name, layout in LAYOUTS.items():
            final = self._final(layout.path_for(key))
            suffixes = ["", *BY_SUFFIX]
            found[name] = {s for s in suffixes if final.with_name(final.name + s).is_file()}
        here = sorted(n for n, v in found.items() if v)
        if here and self.layout.name not in here:
            return f"layout: {here[0]} here, {self.layout.name} now"
        stored = found[self.layout.name]
        if not stored:
            return None
        final = self._final(self.layout.path_for(key))
        suffix = "" if "" in stored else sorted(stored)[0]
        data = final.with_name(final.name + suffix).read_bytes()
        if suffix:
            data = BY_SUFFIX[suffix].decompress(data)
        expected = set(self._variants(data))
        if stored != expected:
            return f"stored files: {_names(stored)} here, {_names(expected)} now"
        return None

    def put_json(self, rel_path: str, obj: Any) -> int:
        """Metadata JSON: plain only, so that every server answers it as ``application/json``."""
        data = (_format_json(obj) + "\n").encode()
        self._write_atomic(self._final(rel_path), data)
        return len(data)

    # -- lifecycle -------------------------------------------------------------------------

    def begin(self) -> None:
        """Prepare the temporary folder, dropping partial files of an interrupted run (its
        scratch store stays, for ``--resume``)."""
        drop_partials(self.root)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def abort(self) -> None:
        """Drop the temporary folder of a write that stops without a new ``info``."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, dataset: Dataset) -> None:
        """Write ``info``: the last file of a build."""
        self.put_json("info", dataset.to_json())
        shutil.rmtree(self.tmp, ignore_errors=True)
