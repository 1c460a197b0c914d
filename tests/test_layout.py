"""Tests for :mod:`precomp_host.core.layout`: the contract every Layout keeps, and the URL rewrite.

``LayoutContract`` is written once and run for ``FLAT`` and ``NESTED`` (zarr's ``StoreTests``).
"""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from precomp_host.core.layout import (
    CHUNK_NAME_PATTERN,
    FLAT,
    LAYOUTS,
    NESTED,
    URL_PATTERN,
    URL_REPLACEMENT,
    Layout,
    nested_url,
)
from precomp_host.core.model import ChunkKey
from tests.strategies import any_chunk_keys, chunk_keys

#: The last path segment of a chunk URL, exactly (issue #2), for checking the regexes against.
LAST_SEGMENT = re.compile(r"[0-9]+-[0-9]+_[0-9]+-[0-9]+_[0-9]+-[0-9]+")
#: URL_PATTERN as nginx and Apache read it: PCRE's \d is ASCII.
URL_RE = re.compile(URL_PATTERN, re.ASCII)

#: Names in a precomputed dataset that are not volume chunks (spec: meshes.md, annotations.md,
#: sharded.md), including the cloud-volume fixtures' mesh names.
NOT_CHUNKS = [
    "info",
    "8_8_40/info",
    "mesh/info",
    "mesh/1:0",
    "mesh/123:0",
    "mesh/123:0:0-64_0-64_0-64",
    "mesh/1052:0:0-512_0-512_0-512",
    "1052:0:0-512_0-512_0-512",
    "segment_properties/info",
    "annotations/spatial0/1_2_3",
    "1_2_3",
    "8_8_40/0.shard",
    "8_8_40/x.shard",
    "8_8_40/x.index",
    "mesh/0.index",
    "8_8_40/0-64_0-64_0-64.gz",
    "8_8_40/0-64_0-64_0-64.br",
    "8_8_40/0-64/0-64/0-64.gz",
    "8_8_40/0-64_0-64_0-64/",
    "8_8_40/0-64_0-64",
    "8_8_40/0-64_0-64_0-64_0-64",
    "8_8_40/0-64_0-64_0-64\n",
    "8_8_40/0-64/0-64/0-64\n",
    "8_8_40/０-64_0-64_0-64",
    "8_8_40/０-64/0-64/0-64",
    "0-64/0-64/0-64",
    "/0-64/0-64/0-64",
    "",
]
#: Names the URL rewrite maps (they look like chunk names) but that name no chunk.
NOT_KEYS = [
    "8_8_40/64-0_0-64_0-64",
    "8_8_40/64-0/0-64/0-64",
    "8_8_40/0-0_0-64_0-64",
    "8_8_40/0-0/0-64/0-64",
    "0-64_0-64_0-64",
    "/0-64_0-64_0-64",
]


class LayoutContract:
    """What every layout must do. Subclasses set ``layout`` and ``segments``.

    The properties run an inner ``@given`` function: hypothesis refuses one test method run
    from several classes (its ``differing_executors`` health check).
    """

    layout: ClassVar[Layout]
    #: Path segments below the scale key.
    segments: ClassVar[int]

    def test_key_for_path_for_round_trips(self) -> None:
        layout = self.layout

        @given(any_chunk_keys())
        def check(k: ChunkKey) -> None:
            assert layout.key_for(layout.path_for(k)) == k

        check()

    def test_round_trips_for_chunks_of_a_scale(self) -> None:
        layout = self.layout

        @given(chunk_keys())
        def check(k: ChunkKey) -> None:
            assert layout.key_for(layout.path_for(k)) == k

        check()

    def test_path_is_relative_under_the_scale_key(self) -> None:
        layout, segments = self.layout, self.segments

        @given(any_chunk_keys())
        def check(k: ChunkKey) -> None:
            path = layout.path_for(k)
            assert path.startswith(k.scale + "/")
            assert path.count("/") - k.scale.count("/") == segments

        check()

    def test_resolve_maps_neuroglancer_url_to_path(self) -> None:
        layout = self.layout

        @given(any_chunk_keys(), st.text("abc/_", max_size=6))
        def check(k: ChunkKey, prefix: str) -> None:
            assert layout.resolve("/" + k.scale + "/" + k.name) == "/" + layout.path_for(k)
            url = f"/{prefix}/{k.scale}/{k.name}"  # the dataset mounted under a prefix
            assert layout.resolve(url) == f"/{prefix}/{layout.path_for(k)}"

        check()

    @pytest.mark.parametrize("name", NOT_CHUNKS + NOT_KEYS)
    def test_key_for_non_chunk_names_is_none(self, name: str) -> None:
        assert self.layout.key_for(name) is None

    @pytest.mark.parametrize("name", [n for n in NOT_CHUNKS if "_" not in n.rpartition("/")[2]])
    def test_resolve_leaves_other_files_alone(self, name: str) -> None:
        # Names whose last segment has no "_" cannot be flat chunk URLs for either layout.
        assert self.layout.resolve("/" + name) == "/" + name

    def test_registered_by_name(self) -> None:
        assert LAYOUTS[self.layout.name] is self.layout


class TestFlat(LayoutContract):
    layout = FLAT
    segments = 1

    def test_example(self) -> None:
        k = ChunkKey("8_8_40", (64, 0, 7), (70, 64, 40))
        assert FLAT.path_for(k) == "8_8_40/64-70_0-64_7-40"

    @given(any_chunk_keys())
    def test_resolve_is_identity(self, k: ChunkKey) -> None:
        url = "/" + k.scale + "/" + k.name
        assert FLAT.resolve(url) == url

    @given(any_chunk_keys())
    def test_nested_path_is_no_flat_chunk(self, k: ChunkKey) -> None:
        assert FLAT.key_for(NESTED.path_for(k)) is None


class TestNested(LayoutContract):
    layout = NESTED
    segments = 3

    def test_example(self) -> None:
        k = ChunkKey("8_8_40", (64, 0, 7), (70, 64, 40))
        assert NESTED.path_for(k) == "8_8_40/64-70/0-64/7-40"
        assert NESTED.resolve("/data/8_8_40/64-70_0-64_7-40") == "/data/8_8_40/64-70/0-64/7-40"

    @given(any_chunk_keys())
    def test_flat_path_is_no_nested_chunk(self, k: ChunkKey) -> None:
        assert NESTED.key_for(FLAT.path_for(k)) is None

    @given(any_chunk_keys())
    def test_resolve_is_nested_url(self, k: ChunkKey) -> None:
        url = "/" + k.scale + "/" + k.name
        assert NESTED.resolve(url) == nested_url(url)


# --- URL_PATTERN: the one rule every server uses -------------------------------------------


def _last_segment_is_chunk(url: str) -> bool:
    return "/" in url and LAST_SEGMENT.fullmatch(url.rpartition("/")[2]) is not None


@pytest.mark.parametrize("name", NOT_CHUNKS)
@pytest.mark.parametrize("prefix", ["", "/", "/data/", "/a/b/"])
def test_url_pattern_never_matches_non_chunk_names(prefix: str, name: str) -> None:
    url = prefix + name
    if "\n" in name:
        # PCRE's and Python's $ match before a final newline; nginx and Apache would rewrite
        # this to the chunk itself (harmless). nested_url, the Python side, is strict.
        assert nested_url(url) == url
        return
    assert URL_RE.match(url) is None
    assert nested_url(url) == url


@pytest.mark.parametrize(
    ("url", "nested"),
    [
        ("/8_8_40/0-64_0-64_0-64", "/8_8_40/0-64/0-64/0-64"),
        ("/a/b/16_16_40/64-70_128-131_0-1", "/a/b/16_16_40/64-70/128-131/0-1"),
        ("s/0-1_2-3_4-5", "s/0-1/2-3/4-5"),
        ("/0-1_2-3_4-5", "/0-1/2-3/4-5"),
        # Only the last segment counts, even when an earlier one looks like a chunk.
        ("/0-1_2-3_4-5/6-7_8-9_10-11", "/0-1_2-3_4-5/6-7/8-9/10-11"),
    ],
)
def test_nested_url_examples(url: str, nested: str) -> None:
    assert nested_url(url) == nested
    assert nested_url(nested) == nested


def test_replacement_expands_like_pcre() -> None:
    url = "/x/8_8_40/0-64_64-128_128-192"
    m = URL_RE.match(url)
    assert m is not None
    pcre = re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))), URL_REPLACEMENT)
    assert pcre == nested_url(url) == "/x/8_8_40/0-64/64-128/128-192"


def test_chunk_name_pattern_is_the_last_segment_of_url_pattern() -> None:
    assert CHUNK_NAME_PATTERN == r"^-?\d+--?\d+_-?\d+--?\d+_-?\d+--?\d+$"
    assert URL_PATTERN.endswith(r"/(-?\d+--?\d+)_(-?\d+--?\d+)_(-?\d+--?\d+)$")


def test_negative_coordinates_rewrite_and_round_trip() -> None:
    # A scale with a negative voxel_offset (volume.md allows it): Neuroglancer asks for these.
    assert nested_url("/ds/8_8_40/-64-0_0-64_-128--64") == "/ds/8_8_40/-64-0/0-64/-128--64"
    key = ChunkKey.parse("8_8_40", "-64-0_0-64_-128--64")
    assert key.start == (-64, 0, -128)
    assert key.stop == (0, 64, -64)
    assert NESTED.key_for(NESTED.path_for(key)) == key
    assert FLAT.key_for(FLAT.path_for(key)) == key


#: Near misses: chunk-like pieces glued with the characters that occur in real names.
_PIECES = st.sampled_from(
    [
        "0",
        "64",
        "1052",
        "-",
        "_",
        ":",
        "/",
        ".",
        "gz",
        "br",
        "shard",
        "index",
        "info",
        "mesh",
        "x",
        "0-64",
        "_0-64",
        "0-64_",
        "0-64_0-64_0-64",
        "1_2_3",
        "1:0",
        " ",
        "%2F",
        "０",
    ]
)
near_misses = st.lists(_PIECES, max_size=10).map("".join)
#: Anything printable, not only near misses (no newline: see the NOT_CHUNKS case).
printable = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=40)


@given(near_misses | printable)
def test_url_pattern_matches_exactly_when_last_segment_is_a_chunk_name(url: str) -> None:
    assert (URL_RE.match(url) is not None) == _last_segment_is_chunk(url)


@given(near_misses | printable)
def test_nested_url_rewrites_only_chunk_urls(url: str) -> None:
    out = nested_url(url)
    if _last_segment_is_chunk(url):
        head, _, tail = url.rpartition("/")
        assert out == head + "/" + tail.replace("_", "/")
    else:
        assert out == url


@given(near_misses | printable)
def test_nested_url_is_idempotent(url: str) -> None:
    assert nested_url(nested_url(url)) == nested_url(url)


@given(any_chunk_keys(), st.sampled_from([".gz", ".br", ".shard", ".index", ":0", "x", "_1"]))
def test_suffixed_chunk_names_are_not_rewritten(k: ChunkKey, suffix: str) -> None:
    url = f"/{k.scale}/{k.name}{suffix}"
    assume(not _last_segment_is_chunk(url))
    assert URL_RE.match(url) is None
    assert nested_url(url) == url


@pytest.mark.parametrize("url", ["mesh/1:0", "a/b/mesh/1052:0", "7:0"])
def test_mesh_manifest_url_inverts_the_fallbacks(url: str) -> None:
    from precomp_host.core.layout import mesh_manifest_fallbacks, mesh_manifest_url

    fallbacks = mesh_manifest_fallbacks(url)
    assert fallbacks
    for path in fallbacks:
        assert mesh_manifest_url(path) == url


@pytest.mark.parametrize(
    "path",
    [
        "mesh/1:0",
        "mesh/info",
        "mesh/1:0:0-64_0-64_0-64",
        "mesh/12a",
        "mesh/1.gz",
        "x/0-64_0-64_0-64",
    ],
)
def test_mesh_manifest_url_ignores_other_files(path: str) -> None:
    from precomp_host.core.layout import mesh_manifest_url

    assert mesh_manifest_url(path) is None
