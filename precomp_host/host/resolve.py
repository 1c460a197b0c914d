"""From a URL to the files stored for it: :class:`Resolver`, :class:`Resource` and
:class:`ResolutionCache`.

Resolution is the half of the request path that looks at the disk and at nothing else of the
request: the URL path is safe-joined under the root, tried as sent, then as the nested layout
stores a flat chunk name, then as a mesh manifest (``mesh_manifest_fallbacks``); the first
candidate with a plain file or a ``.br``/``.gz`` sibling wins. Every file must stay inside the
root after symlinks are followed. Answering (which variant, conditionals, the body) is
:mod:`precomp_host.host.middleware`.

There is no startup scan (STYLE.md: datasets hold millions of chunks, whitenoise#263): each
miss costs a few ``lstat`` calls. :class:`ResolutionCache` may keep results for a while, but it
only says where to look: the answer re-checks every file it opens against the disk.
"""

from __future__ import annotations

import functools
import math
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock
from typing import TYPE_CHECKING, Generic, TypeVar

from werkzeug.security import safe_join

from ..core.encodings import BY_SUFFIX, ENCODINGS
from ..core.layout import mesh_manifest_fallbacks
from ..core.media_types import media_type_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ..core.layout import Layout

T = TypeVar("T")


@dataclass(frozen=True)
class StoredFile:
    """One file on disk standing for a URL: the plain file or a sibling, as ``stat`` saw it."""

    path: str
    size: int
    mtime_ns: int
    encoding: str | None  # None: the plain file
    #: st_ino and st_dev: a file replaced by rename has a new inode even with the same size
    #: and mtime (a rebuild copies mtimes onto siblings).
    ino: int = 0
    dev: int = 0
    #: What an ``fstat`` of the same file gives: (st_ino, st_size, st_mtime_ns, st_dev); the
    #: middleware compares it with the descriptor it is about to send from.
    stat_key: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stat_key", (self.ino, self.size, self.mtime_ns, self.dev))

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result, encoding: str | None) -> StoredFile:
        return cls(path, st.st_size, st.st_mtime_ns, encoding, st.st_ino, st.st_dev)

    @property
    def mtime(self) -> int:
        """Seconds, as HTTP dates carry them."""
        return self.mtime_ns // 1_000_000_000

    @property
    def etag(self) -> str:
        # Per variant (whitenoise gives every variant the same one): a cache that stored the
        # gzip bytes must not revalidate them for an identity request (RFC 9110 §8.8.3).
        tag = f"{self.mtime_ns:x}-{self.size:x}"
        return tag if self.encoding is None else f"{tag}-{self.encoding}"


def _ranked(files: Mapping[str | None, StoredFile]) -> tuple[str | None, ...]:
    # Identity can always be made by decoding; its size is unknown but larger than any sibling
    # (the generator keeps only siblings that save space), so it ranks last when not stored.
    order = [None, *ENCODINGS]
    sizes = {e: float(f.size) for e, f in files.items()}
    sizes.setdefault(None, math.inf)
    return tuple(sorted(sizes, key=lambda e: (sizes[e], order.index(e))))


@dataclass(frozen=True)
class Resource:
    """What a URL resolves to: its stored variants (plain and/or siblings) and media type."""

    url_path: str
    media_type: str
    files: Mapping[str | None, StoredFile]
    #: Every variant that can be sent (identity always), smallest first, ties going to
    #: identity then to ``ENCODINGS`` order: all :func:`~precomp_host.core.encodings.choose`
    #: needs to know about sizes.
    ranked: tuple[str | None, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranked", _ranked(self.files))

    @property
    def has_variants(self) -> bool:
        return any(e is not None for e in self.files)

    def decode_source(self) -> StoredFile:
        """The sibling that identity bytes are decoded from when no plain file exists."""
        return next(self.files[e] for e in ENCODINGS if e in self.files)


class Resolver:
    """Finds the :class:`Resource` behind a URL path under ``root``.

    :param root: the folder served (resolved to its real path once).
    :param layout: how a flat chunk name is stored; the URL as sent is always tried first.
    :param encodings: the content codings whose siblings are looked at.
    """

    def __init__(self, root: str | os.PathLike[str], layout: Layout, encodings: Iterable[str]):
        served = set(encodings)
        self.root = os.path.realpath(root)
        self.layout = layout
        self._root_prefix = self.root.rstrip(os.sep) + os.sep
        self._suffixes = (
            ("", None),
            *((s, e.name) for s, e in BY_SUFFIX.items() if e.name in served),
        )
        # A folder's real path costs an lstat per component; folders rarely move. The cache is
        # cleared by forget_folders() (the middleware's invalidate()).
        self._real_dir = functools.lru_cache(maxsize=4096)(os.path.realpath)

    def forget_folders(self) -> None:
        self._real_dir.cache_clear()

    def resolve(self, url_path: str) -> Resource | None:
        """The stored files behind a decoded URL path (relative to the mount), or None."""
        rel = url_path.lstrip("/")
        # NUL cannot be in a file name (stat raises); a backslash is a separator on Windows and
        # a traversal spelling everywhere else: neither names a dataset file.
        if not rel or "\x00" in rel or "\\" in rel:
            return None
        joined = safe_join(self.root, rel)
        if joined is None:  # "..", absolute: traversal never reaches the file system
            return None
        # The rewrites below only replace the last segment with digits and separators, so the
        # normalized, safe-joined path stays safe after them.
        norm = joined[len(self._root_prefix) :]
        candidates = [norm]
        nested = self.layout.resolve(norm)
        if nested != norm:
            candidates.append(nested)
        candidates += mesh_manifest_fallbacks(norm)
        for candidate in candidates:
            files = self._stat_variants(self._root_prefix + candidate)
            if files:
                return Resource(rel, media_type_for(rel), files)
        return None

    def _stat_variants(self, path: str) -> dict[str | None, StoredFile]:
        # safe_join only looks at the string; a symlink inside the root may still point outside
        # it, so the real path must be inside too. The folder's real path is cached; a file
        # that is itself a symlink is resolved each time.
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
                files[encoding] = StoredFile.from_stat(candidate, st, encoding)
        return files

    def _is_inside_root(self, real: str) -> bool:
        return real.startswith(self._root_prefix) or real == self.root


class ResolutionCache(Generic[T]):
    """A bounded, thread-safe map from URL path to what it resolved to (a miss included),
    least recently used first out, each entry valid for ``ttl`` seconds (None: until
    :meth:`invalidate`), like nginx's ``open_file_cache`` with ``open_file_cache_valid``.

    :param size: how many entries to keep; 0 keeps none (:meth:`get` always computes).
    :param ttl: seconds an entry stays valid, or None.
    """

    def __init__(self, size: int, ttl: float | None) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[T, float]] = OrderedDict()
        self._lock = Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, compute: Callable[[str], T]) -> T:
        """The cached value for ``key``, or ``compute(key)`` (then cached)."""
        if not self.size:
            return compute(key)
        now = time.monotonic()
        # A hit takes no lock: a dict lookup and OrderedDict.move_to_end are single C calls
        # under the GIL, and an entry evicted between the two is simply a miss. The lock is
        # what a request costs most after the open (measured in serve_inprocess).
        hit = self._entries.get(key)
        if hit is not None and hit[1] > now:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                pass
            else:
                return hit[0]
        value = compute(key)
        self.put(key, value, now)
        return value

    def put(self, key: str, value: T, now: float | None = None) -> None:
        """Remember ``value`` for ``key`` (replacing what was there)."""
        if not self.size:
            return
        now = time.monotonic() if now is None else now
        expires = now + self.ttl if self.ttl is not None else math.inf
        with self._lock:
            self._entries[key] = (value, expires)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """Forget every entry (call after files changed)."""
        with self._lock:
            self._entries.clear()
