"""Tests of :mod:`precomp_host.host.resolve`: :class:`Resolver`, :class:`Resource` and
:class:`ResolutionCache`, apart from answering (the HTTP contract is in ``test_middleware.py``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from unittest import mock

from precomp_host.core.encodings import GZIP
from precomp_host.core.layout import NESTED
from precomp_host.host.resolve import ResolutionCache, Resolver, StoredFile

if TYPE_CHECKING:
    from pathlib import Path


def _resolver(root: Path) -> Resolver:
    return Resolver(root, NESTED, ["gzip", "br"])


def test_variants_ranked_smallest_first_identity_last_when_not_stored(tmp_path: Path) -> None:
    data = b"abc" * 1000
    (tmp_path / "c.gz").write_bytes(GZIP.compress(data))
    found = _resolver(tmp_path).resolve("/c")
    assert found is not None
    assert set(found.files) == {"gzip"}
    assert found.ranked == ("gzip", None)
    (tmp_path / "c").write_bytes(data)
    found = _resolver(tmp_path).resolve("c")
    assert found is not None
    assert found.ranked == ("gzip", None)
    assert found.files[None].size == len(data)


def test_flat_chunk_name_resolves_to_the_nested_file(tmp_path: Path) -> None:
    (tmp_path / "8_8_8" / "0-16" / "0-16").mkdir(parents=True)
    (tmp_path / "8_8_8" / "0-16" / "0-16" / "0-16").write_bytes(b"x")
    found = _resolver(tmp_path).resolve("/8_8_8/0-16_0-16_0-16")
    assert found is not None
    assert found.files[None].path.endswith(os.path.join("0-16", "0-16", "0-16"))


def test_traversal_and_odd_names_are_never_stat(tmp_path: Path) -> None:
    resolver = _resolver(tmp_path / "root")
    with mock.patch("precomp_host.host.resolve.os.lstat") as lstat:
        for url in ("/../x", "/a/../../x", "/a\\b", "/a\x00b", "/", ""):
            assert resolver.resolve(url) is None, url
    lstat.assert_not_called()


def test_stored_file_knows_its_own_inode(tmp_path: Path) -> None:
    """A file replaced by rename with the same size and mtime is another file."""
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = StoredFile.from_stat(str(path), os.stat(path), None)
    st = os.stat(path)
    (tmp_path / "g").write_bytes(b"two")
    os.utime(tmp_path / "g", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "g", path)

    def key(st: os.stat_result) -> tuple[int, int, int, int]:
        return StoredFile.from_stat(str(path), st, None).stat_key

    assert first.stat_key == key(st)
    assert first.stat_key != key(os.stat(path))


def test_cache_is_bounded_least_recently_used_out() -> None:
    cache: ResolutionCache[int | None] = ResolutionCache(2, None)
    calls: list[str] = []

    def compute(key: str) -> int | None:
        calls.append(key)
        return None if key == "miss" else len(key)

    for key in ("a", "miss", "a", "bbb", "miss"):
        cache.get(key, compute)
    # "miss" is remembered like a hit; "a" was used after "miss", so "miss" went out for "bbb"
    assert calls == ["a", "miss", "bbb", "miss"]
    assert len(cache) == 2


def test_cache_ttl_and_invalidate() -> None:
    clock = [100.0]
    cache: ResolutionCache[str] = ResolutionCache(8, 1.0)
    values = iter(("v1", "v2", "v3"))
    with mock.patch("precomp_host.host.resolve.time.monotonic", side_effect=lambda: clock[0]):
        assert cache.get("k", lambda _: next(values)) == "v1"
        clock[0] += 0.9
        assert cache.get("k", lambda _: next(values)) == "v1"
        clock[0] += 0.2
        assert cache.get("k", lambda _: next(values)) == "v2"
        cache.invalidate()
        assert cache.get("k", lambda _: next(values)) == "v3"


def test_cache_of_size_zero_keeps_nothing() -> None:
    cache: ResolutionCache[int] = ResolutionCache(0, None)
    counter = iter(range(3))
    assert [cache.get("k", lambda _: next(counter)) for _ in range(3)] == [0, 1, 2]
    assert len(cache) == 0
