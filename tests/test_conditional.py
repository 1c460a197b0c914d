"""Tests of :mod:`precomp_host.host.conditional`: the RFC 9110 rules apart from any server (the
contract suite checks them over HTTP)."""

from __future__ import annotations

import pytest

from precomp_host.host.conditional import (
    if_range_holds,
    is_not_modified,
    range_for_length,
    single_range,
)

MTIME = 1_700_000_000
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # MTIME as an HTTP date


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ((0, 10), (0, 10)),
        ((5, None), (5, 100)),
        ((90, 500), (90, 100)),  # a last position past the end is clipped
        ((-10, None), (90, 100)),
        ((-500, None), (0, 100)),  # RFC 9110 §14.1.2: a longer suffix is the whole file
        ((100, None), None),
        ((150, 160), None),
    ],
)
def test_range_for_length(span: tuple[int, int | None], expected: tuple[int, int] | None) -> None:
    assert range_for_length(span, 100) == expected


def test_only_one_byte_range_is_taken() -> None:
    assert single_range({"HTTP_RANGE": "bytes=0-1,5-6"}) is None
    assert single_range({"HTTP_RANGE": "items=0-1"}) is None
    ranged = single_range({"HTTP_RANGE": "bytes=3-"})
    assert ranged is not None
    assert ranged.ranges == [(3, None)]


def test_if_none_match_decides_when_present() -> None:
    assert is_not_modified({"HTTP_IF_NONE_MATCH": '"t"'}, "t", MTIME)
    assert is_not_modified({"HTTP_IF_NONE_MATCH": 'W/"t"'}, "t", MTIME)  # weak comparison
    both = {"HTTP_IF_NONE_MATCH": '"other"', "HTTP_IF_MODIFIED_SINCE": DATE}
    assert not is_not_modified(both, "t", MTIME)
    assert is_not_modified({"HTTP_IF_MODIFIED_SINCE": DATE}, "t", MTIME)
    assert not is_not_modified({"HTTP_IF_MODIFIED_SINCE": "yesterday-ish"}, "t", MTIME)
    # If-Match asks for a 412, never a 304 (werkzeug's helper would say "not modified")
    assert not is_not_modified({"HTTP_IF_MATCH": '"other"'}, "t", MTIME)


def test_if_range_needs_a_strong_tag_or_the_exact_date() -> None:
    assert if_range_holds({}, "t", MTIME)
    assert if_range_holds({"HTTP_IF_RANGE": '"t"'}, "t", MTIME)
    assert not if_range_holds({"HTTP_IF_RANGE": 'W/"t"'}, "t", MTIME)
    assert if_range_holds({"HTTP_IF_RANGE": DATE}, "t", MTIME)
    assert not if_range_holds({"HTTP_IF_RANGE": "Sat, 01 Jan 2000 00:00:00 GMT"}, "t", MTIME)
