"""Tests for :mod:`precomp_host.core.media_types`: the Content-Type of every kind of file."""

from __future__ import annotations

import re

import pytest

from precomp_host.core.media_types import HTML, JSON, OCTET_STREAM, RULES, media_type_for


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("info", JSON),
        ("/info", JSON),
        ("/data/info", JSON),
        ("mesh/info", JSON),
        ("segment_properties/info", JSON),
        ("annotations/info", JSON),
        ("mesh/123:0", JSON),  # legacy mesh manifest
        ("/data/mesh/1:0", JSON),
        ("provenance.json", JSON),
        ("index.html", HTML),
        ("8_8_40/0-64_0-64_0-64", OCTET_STREAM),
        ("8_8_40/0-64/0-64/0-64", OCTET_STREAM),
        ("mesh/123:0:0-64_0-64_0-64", OCTET_STREAM),  # legacy mesh fragment
        ("mesh/1052:0:0-512_0-512_0-512", OCTET_STREAM),
        ("mesh/123", OCTET_STREAM),  # multi-resolution mesh fragment data
        ("mesh/123.index", OCTET_STREAM),
        ("8_8_40/0.shard", OCTET_STREAM),
        ("annotations/spatial0/1_2_3", OCTET_STREAM),
        ("information", OCTET_STREAM),
        ("myinfo", OCTET_STREAM),
        ("info/x", OCTET_STREAM),
        ("x.json.gz", OCTET_STREAM),  # the caller strips sibling suffixes first
    ],
)
def test_media_type_for(path: str, expected: str) -> None:
    assert media_type_for(path) == expected


def test_rules_are_portable_to_pcre() -> None:
    names = [name for name, _, _ in RULES]
    assert len(set(names)) == len(names)
    for _, rx, media in RULES:
        re.compile(rx)
        # Python-only syntax would break nginx "location ~" and Apache <FilesMatch>.
        assert "(?P" not in rx
        assert "\\Z" not in rx
        assert media in (JSON, HTML, OCTET_STREAM) or media.startswith(("text/", "application/"))


def test_media_types_are_valid_header_values() -> None:
    for value in (JSON, OCTET_STREAM, HTML):
        assert value.isascii()
        assert "\n" not in value
        assert re.fullmatch(r"[a-z]+/[a-z0-9.+-]+(; ?charset=utf-8)?", value)
