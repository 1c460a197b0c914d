"""Tests for :mod:`precomp_host.core.headers`: the CORS and cache headers every server sends."""

from __future__ import annotations

import re

from precomp_host.core import headers
from precomp_host.core.headers import (
    ALLOW_HEADERS,
    ALLOW_METHODS,
    DEV_CACHE_CONTROL,
    EXPOSE_HEADERS,
    cors_headers,
    preflight_headers,
)

#: RFC 9110 §5.6.2 token: what a header name (and a method) may contain.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def test_cors_headers() -> None:
    h = cors_headers()
    assert h["Access-Control-Allow-Origin"] == "*"
    exposed = {v.strip().lower() for v in h["Access-Control-Expose-Headers"].split(",")}
    # Neuroglancer reads these cross-origin: Range replies of shards, and the encoding.
    assert {"content-range", "content-encoding", "content-length", "etag"} <= exposed


def test_preflight_headers() -> None:
    h = preflight_headers()
    methods = {v.strip() for v in h["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "HEAD", "OPTIONS"} <= methods
    allowed = {v.strip().lower() for v in h["Access-Control-Allow-Headers"].split(",")}
    assert "range" in allowed
    assert int(h["Access-Control-Max-Age"]) == headers.PREFLIGHT_MAX_AGE > 0


def test_each_call_returns_a_fresh_dict() -> None:
    h = cors_headers()
    h["Access-Control-Allow-Origin"] = "https://example.org"
    assert cors_headers()["Access-Control-Allow-Origin"] == "*"
    assert preflight_headers() is not preflight_headers()


def test_values_are_well_formed() -> None:
    for name in (*EXPOSE_HEADERS, *ALLOW_HEADERS, *ALLOW_METHODS):
        assert TOKEN.fullmatch(name), name
    for h in (cors_headers(), preflight_headers()):
        for name, value in h.items():
            assert TOKEN.fullmatch(name)
            assert value.isascii()
            assert value == value.strip()
            assert "\r" not in value
            assert "\n" not in value
    # Cache-Control values are directive lists (RFC 9111 §5.2): token or token=token/number,
    # and the dev server's makes every reuse revalidate (no freshness lifetime).
    for value in (DEV_CACHE_CONTROL, headers.DEPLOY_CACHE_CONTROL):
        for directive in value.split(","):
            name, _, arg = directive.strip().partition("=")
            assert TOKEN.fullmatch(name), value
            assert not arg or TOKEN.fullmatch(arg), value
    dev = {d.strip().split("=")[0] for d in DEV_CACHE_CONTROL.split(",")}
    assert "no-cache" in dev or "no-store" in dev
    assert "max-age" not in dev or "no-cache" in dev
