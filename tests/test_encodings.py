"""Tests for :mod:`precomp_host.core.encodings`: the registry, round trips, :func:`choose`."""

from __future__ import annotations

import gzip
import zlib
from typing import TYPE_CHECKING

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.core import encodings
from precomp_host.core.encodings import (
    BY_SUFFIX,
    ENCODINGS,
    MAX_RATIO,
    choose,
    gzip_compress,
    is_effective,
    parse_accept_encoding,
    worth_storing,
)

if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK = bytes(range(256)) * 64  # compressible, like most chunks

# --- the registry --------------------------------------------------------------------------


def test_registry() -> None:
    assert set(ENCODINGS) == {"br", "gzip"}
    assert {e.suffix: e.name for e in ENCODINGS.values()} == {".br": "br", ".gz": "gzip"}
    for name, enc in ENCODINGS.items():
        assert enc.name == name
        assert BY_SUFFIX[enc.suffix] is enc
    assert len(BY_SUFFIX) == len(ENCODINGS)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@given(data=st.binary(max_size=4096))
def test_round_trip(name: str, data: bytes) -> None:
    enc = ENCODINGS[name]
    assert enc.decompress(enc.compress(data)) == data


#: Independent decoders: what a browser (or nginx gunzip) does with our siblings.
REFERENCE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@given(data=st.binary(max_size=4096))
def test_readable_by_reference_decoder(name: str, data: bytes) -> None:
    assert REFERENCE[name](ENCODINGS[name].compress(data)) == data


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_compression_is_deterministic_and_effective(name: str) -> None:
    enc = ENCODINGS[name]
    a, b = enc.compress(CHUNK), enc.compress(CHUNK)
    assert a == b
    assert is_effective(len(CHUNK), len(a))


def _check_gzip_header(blob: bytes) -> None:
    # RFC 1952 §2.3: ID1 ID2 CM FLG MTIME(4) XFL OS.
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] & 0x08 == 0, "FNAME set: the header names a file"
    assert blob[3] & 0x10 == 0, "FCOMMENT set"
    assert blob[4:8] == b"\0\0\0\0", "MTIME is not zero: reruns would differ"


def test_gzip_header_has_no_time_or_name() -> None:
    _check_gzip_header(ENCODINGS["gzip"].compress(CHUNK))
    _check_gzip_header(ENCODINGS["gzip"].compress(b""))


def test_gzip_without_libdeflate_is_also_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encodings, "_libdeflate", None)
    a = gzip_compress(CHUNK)
    _check_gzip_header(a)
    assert a == gzip_compress(CHUNK)
    assert ENCODINGS["gzip"].decompress(a) == CHUNK


def test_gzip_decompress_rejects_zlib_and_raw_deflate() -> None:
    with pytest.raises(zlib.error):
        ENCODINGS["gzip"].decompress(zlib.compress(CHUNK))


# --- is_effective --------------------------------------------------------------------------


def test_is_effective_boundary() -> None:
    assert MAX_RATIO == 0.95
    assert is_effective(100, 95)
    assert not is_effective(100, 96)
    assert is_effective(20, 19)
    assert not is_effective(19, 19)
    assert not is_effective(100, 100)
    assert not is_effective(100, 120)


@given(st.integers(0, 2**44), st.integers(0, 2**44))
def test_is_effective_saves_at_least_five_percent(original: int, compressed: int) -> None:
    # Exact integer arithmetic as the reference: 5 % saved means compressed/original <= 95/100.
    assert is_effective(original, compressed) == (compressed * 100 <= original * 95)


# --- worth_storing -------------------------------------------------------------------------


def test_worth_storing_examples() -> None:
    assert worth_storing(1000, {"gzip": 500, "br": 450}) == {"gzip", "br"}
    assert worth_storing(1000, {"gzip": 500, "br": 500}) == {"gzip"}  # a tie: br is waste
    assert worth_storing(1000, {"gzip": 500, "br": 520}) == {"gzip"}
    assert worth_storing(1000, {"gzip": 960, "br": 900}) == {"br"}  # gzip saves < 5 %
    assert worth_storing(1000, {"br": 990}) == frozenset()
    assert worth_storing(1000, {"br": 700}) == {"br"}


@given(
    st.integers(1, 10**9),
    st.dictionaries(st.sampled_from(sorted(ENCODINGS)), st.integers(0, 2 * 10**9)),
)
def test_worth_storing_rule(original: int, compressed: dict[str, int]) -> None:
    kept = worth_storing(original, compressed)
    assert kept <= compressed.keys()
    for name in compressed:
        effective = is_effective(original, compressed[name])
        beats_gzip = name == "gzip" or "gzip" not in kept or compressed[name] < compressed["gzip"]
        assert (name in kept) == (effective and beats_gzip), (name, kept)
    # Whatever is kept, a client taking gzip and br is sent the smallest stored variant.
    if kept:
        sizes: dict[str | None, float] = {n: compressed[n] for n in kept}
        sizes[None] = original
        best = choose("gzip, br", sizes)
        assert best is not None
        assert sizes[best] == min(sizes.values())


# --- Accept-Encoding and choose ------------------------------------------------------------


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding(None) == {}
    assert parse_accept_encoding("") == {}
    assert parse_accept_encoding("gzip, deflate, br, zstd") == dict.fromkeys(
        ["gzip", "deflate", "br", "zstd"], 1.0
    )
    assert parse_accept_encoding(" GZip ;Q=0.5 , br;q=0 ,, *;q=0.001") == {
        "gzip": 0.5,
        "br": 0.0,
        "*": 0.001,
    }


@pytest.mark.parametrize("q", ["", "abc", "1.5", "2", "-1", "-0.5", "nan", "inf", "0.5x", '"1"'])
def test_malformed_q_is_zero(q: str) -> None:
    assert parse_accept_encoding(f"gzip;q={q}") == {"gzip": 0.0}
    assert choose(f"gzip;q={q}", {None: 100, "gzip": 10}) is None


ALL = {None: 1000, "gzip": 300, "br": 250}


@pytest.mark.parametrize(
    ("header", "variants", "expected"),
    [
        # smallest acceptable wins
        ("gzip, deflate, br", ALL, "br"),
        ("gzip, deflate, br", {None: 1000, "gzip": 200, "br": 250}, "gzip"),
        ("gzip", ALL, "gzip"),
        ("br", ALL, "br"),
        ("deflate", ALL, None),
        # a sibling bigger than identity is never sent when identity is acceptable
        ("gzip, br", {None: 100, "gzip": 120, "br": 110}, None),
        # ties: identity, then ENCODINGS order
        ("gzip, br", {None: 100, "gzip": 100, "br": 100}, None),
        ("gzip, br", {"gzip": 100, "br": 100}, "br"),
        # missing header, empty header, "*": identity when identity exists (whitenoise)
        (None, ALL, None),
        ("", ALL, None),
        ("*", ALL, None),
        # ... and "*" does accept a coding when there is no identity to send
        ("*", {"gzip": 300}, "gzip"),
        ("*", {"gzip": 300, "br": 250}, "br"),
        ("br;q=0, *", {"gzip": 300, "br": 250}, "gzip"),
        # q=0 means "not acceptable"
        ("gzip;q=0, br", ALL, "br"),
        ("gzip, br;q=0", ALL, "gzip"),
        ("gzip;q=0, br;q=0", ALL, None),
        ("gzip;q=0.001", ALL, "gzip"),
        ("gzip;q=0.000", ALL, None),
        # identity;q=0 honoured: a bigger acceptable coding beats refused identity
        ("gzip, identity;q=0", {None: 100, "gzip": 120}, "gzip"),
        ("gzip, *;q=0", {None: 100, "gzip": 120}, "gzip"),
        ("gzip, identity;q=0.5", {None: 100, "gzip": 120}, None),
        # nothing acceptable: identity all the same (RFC 9110 §12.5.3, nginx, Apache)
        ("identity;q=0", ALL, None),
        ("*;q=0", ALL, None),
        (None, {"gzip": 300}, None),
        ("br", {"gzip": 300}, None),
        # x-gzip is gzip (RFC 9110 §8.4.1.3)
        ("x-gzip", ALL, "gzip"),
        ("X-GZIP;q=0.5", ALL, "gzip"),
        ("gzip;q=0, x-gzip", ALL, None),
        # tokens and parameter names are case-insensitive (RFC 9110 §8.4.1, §12.4.2)
        ("GZIP, BR", ALL, "br"),
        ("Gzip;Q=1, Br;Q=0", ALL, "gzip"),
        ("gzip;Q=0", ALL, None),
        ("IDENTITY;q=0, GZip", {None: 100, "gzip": 120}, "gzip"),
    ],
)
def test_choose(
    header: str | None, variants: dict[str | None, float], expected: str | None
) -> None:
    assert choose(header, variants) == expected


#: Codings a client may list (lower case; drawn in any case below).
TOKENS = ["gzip", "br", "identity", "*", "x-gzip", "deflate", "zstd", "compress"]
VALID_Q = ["0", "0.0", "0.000", "1", "1.0", "1.000", "0.5", "0.001", "0.999", "0.01"]
MALFORMED_Q = ["", "abc", "1.5", "2", "-1", "nan", "inf", "0.5x", '"1"', "1,0"]


@st.composite
def accept_encodings(draw: st.DrawFn) -> tuple[str, dict[str, float]]:
    """A header with each coding at most once, and the q the client meant for each (0 when
    malformed)."""
    tokens = draw(st.lists(st.sampled_from(TOKENS), unique=True, max_size=6))
    parts, meant = [], {}
    for token in tokens:
        spelled = "".join(c.upper() if draw(st.booleans()) else c for c in token)
        kind = draw(st.sampled_from(["none", "valid", "malformed"]))
        if kind == "none":
            parts.append(spelled)
            meant[token] = 1.0
        elif kind == "valid":
            q = draw(st.sampled_from(VALID_Q))
            parts.append(f"{spelled}{draw(st.sampled_from([';', ' ;', '; ']))}q={q}")
            meant[token] = float(q)
        else:
            q = draw(st.sampled_from([m for m in MALFORMED_Q if "," not in m]))
            parts.append(f"{spelled};q={q}")
            meant[token] = 0.0
    return draw(st.sampled_from([",", ", ", " , "])).join(parts), meant


variant_sets = st.dictionaries(
    st.sampled_from([None, "gzip", "br"]), st.integers(1, 1000), min_size=1
)


def _listed_q(coding: str, meant: dict[str, float]) -> float | None:
    if coding in meant:
        return meant[coding]
    if coding == "gzip" and "x-gzip" in meant:
        return meant["x-gzip"]
    return None


@given(accept_encodings(), variant_sets)
def test_chosen_coding_is_acceptable(
    header: tuple[str, dict[str, float]], variants: dict[str | None, int]
) -> None:
    text, meant = header
    chosen = choose(text, variants)
    assert chosen is None or chosen in variants
    if chosen is not None:
        # Never a coding the client refused with q=0; only ones it listed, or matched by "*".
        q = _listed_q(chosen, meant)
        if q is None:
            q = meant.get("*")
        assert q is not None
        assert q > 0


@given(accept_encodings(), variant_sets)
def test_smallest_acceptable_wins(
    header: tuple[str, dict[str, float]], variants: dict[str | None, int]
) -> None:
    text, meant = header
    chosen = choose(text, variants)
    for coding in ("gzip", "br"):
        q = _listed_q(coding, meant)
        if coding in variants and q is not None and q > 0:
            # A listed coding is acceptable, so whatever we send is no bigger than it.
            assert chosen in variants
            assert variants[chosen] <= variants[coding]
    identity_q = meant["identity"] if "identity" in meant else meant.get("*")
    identity_refused = identity_q == 0
    if chosen is None and None in variants and identity_refused:
        # Refused identity is sent only when no listed coding is acceptable at all.
        assert not any(c in variants and (_listed_q(c, meant) or 0) > 0 for c in ("gzip", "br"))


@given(accept_encodings())
def test_identity_when_smallest_unless_refused(
    header: tuple[str, dict[str, float]],
) -> None:
    text, meant = header
    # With identity the smallest, identity is sent unless the client refused it.
    chosen = choose(text, {None: 10, "gzip": 20, "br": 30})
    refused = meant.get("identity", meant.get("*", 1.0)) == 0
    acceptable_coding = any((_listed_q(c, meant) or 0) > 0 for c in ("gzip", "br"))
    if not refused or not acceptable_coding:
        assert chosen is None
    else:
        assert chosen in ("gzip", "br")
