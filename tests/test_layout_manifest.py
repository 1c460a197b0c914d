"""Legacy mesh manifest fallbacks (:data:`precomp_host.layout.MANIFEST_PATTERN`)."""

from __future__ import annotations

import re

import pytest
from precomp_host.layout import MANIFEST_FALLBACK_SUFFIXES, MANIFEST_PATTERN, manifest_fallbacks


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("seg/mesh/2:0", ["seg/mesh/2", "seg/mesh/2.json"]),
        ("/data/seg/mesh/123:0", ["/data/seg/mesh/123", "/data/seg/mesh/123.json"]),
        ("seg/mesh/1:0:0-32_0-32_0-32", []),  # a fragment, not a manifest
        ("seg/mesh/1:1", []),
        ("seg/mesh/info", []),
        ("seg/8_8_8/0-32_0-32_0-32", []),
    ],
)
def test_manifest_fallbacks(url: str, expected: list[str]) -> None:
    assert manifest_fallbacks(url) == expected


def test_pattern_is_one_pcre_group() -> None:
    # nginx and Apache substitute $1; the suffixes are appended to it.
    assert re.compile(MANIFEST_PATTERN).groups == 1
    assert MANIFEST_FALLBACK_SUFFIXES[0] == ""
