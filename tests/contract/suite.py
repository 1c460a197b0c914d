"""The HTTP contract every server of a precomputed folder must meet: :class:`ContractSuite`.

One suite, run against any base URL: the middleware in-process, under gunicorn/waitress, and the
emitted nginx and Apache configs (issues #4 and #5). A consumer writes the tree of
:mod:`tests.contract.fixtures` into a folder, serves it, and provides a ``contract_server``
fixture (a :class:`ContractServer`); then subclasses the suite::

    @pytest.fixture(scope="module")
    def contract_server(tmp_path_factory) -> ContractServer:
        root = tmp_path_factory.mktemp("contract") / "root"
        write_contract_tree(root)
        ...start a server on root...
        yield ContractServer(base_url, root, cache_control="no-cache")

    class TestNginxContract(ContractSuite):
        pass

Requests go through raw :mod:`http.client` (no ``Accept-Encoding`` added, nothing decoded, the
path sent byte for byte) and every body is compared with the exact bytes on disk.

**Check ids.** Every check has a stable id ``<check>:<case>`` (the pytest parameter id is the
``<case>`` part, e.g. ``variant:img-gz-br:browser``). A server that knowingly misses part of the
contract says so on its :class:`ContractServer`, never by editing this file:

* ``encodings``: the content codings the server is *configured* to send (an nginx without the
  brotli module sends no ``br``). This is configuration, not a failure: the expected answer is
  the smallest acceptable variant among those codings, exactly what the middleware gives with
  the same ``encodings=``; a URL whose only files are siblings of other codings is a 404;
* capability flags (``supports_identity_decompression``, ``supports_brotli_decompression``):
  a check whose answer needs a missing capability is an expected failure (strict: if it
  passes, the flag is wrong);
* ``expected_failures``: ``{fnmatch pattern on check ids: reason}``, for the rest.

Check id prefixes: ``variant`` (choice, bytes, Vary, types, CORS; ``<resource>:<accept>``),
``nested-direct``, ``head``, ``accept-random``, ``identity-coded-only``, ``etag-304``,
``etag-per-variant``, ``if-modified-since``, ``inm-precedence``, ``range``
(``<resource>:<range>:<accept>``), ``range-416``, ``range-random``, ``cors:<status>``,
``preflight``, ``method-405``, ``missing``, ``traversal``. Resource names are the keys of
``build_tree().resources`` (``img-gz-br``, ``ngs-gz``, ``mesh-bare``, ...).
"""

from __future__ import annotations

import email.utils
import fnmatch
import http.client
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from precomp_host.core.encodings import ENCODINGS, choose, parse_accept_encoding

from .fixtures import MTIME, SECRET, Resource, build_tree, outside_dir

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

#: Capability names, as used in xfail reasons.
GUNZIP = "identity-decompression"  # decodes a gz-only file for clients without gzip
UNBROTLI = "brotli-decompression"  # decodes a br-only file for clients without br


@dataclass
class ContractServer:
    """A running server over a folder written by ``write_contract_tree``.

    :param base_url: ``http://host:port`` plus an optional path prefix (``/data``).
    :param root: the served folder.
    :param encodings: the content codings the server is configured to send.
    :param cache_control: the exact ``Cache-Control`` expected on 200s, None to not check.
    :param expected_failures: fnmatch pattern on check ids -> reason (strict xfail).
    """

    base_url: str
    root: Path
    name: str = "server"
    encodings: frozenset[str] = frozenset(ENCODINGS)
    supports_identity_decompression: bool = True
    supports_brotli_decompression: bool = True
    cache_control: str | None = None
    expected_failures: Mapping[str, str] = field(default_factory=dict)

    def capabilities(self) -> frozenset[str]:
        flags = {
            GUNZIP: self.supports_identity_decompression,
            UNBROTLI: self.supports_brotli_decompression,
        }
        return frozenset(k for k, v in flags.items() if v)

    def failure_reason(self, check_id: str, needs: frozenset[str] = frozenset()) -> str | None:
        missing = needs - self.capabilities()
        if missing:
            return f"{self.name} lacks {', '.join(sorted(missing))}"
        for pattern, reason in self.expected_failures.items():
            if fnmatch.fnmatchcase(check_id, pattern):
                return reason
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The field value, repeated lines joined with ``, `` (RFC 9110 §5.3)."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        """A list-valued header as a set of lower-cased tokens."""
        value = self.header(name) or ""
        return {t.strip().lower() for t in value.split(",") if t.strip()}

    def media_type(self) -> str | None:
        value = self.header("Content-Type")
        return None if value is None else value.split(";")[0].strip().lower()


def fetch(
    server: ContractServer,
    method: str,
    url: str,
    headers: Mapping[str, str | None] | None = None,
) -> Reply:
    """One request on a fresh connection; ``url`` is appended to the base path verbatim."""
    base = urllib.parse.urlsplit(server.base_url)
    conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=30)
    try:
        conn.putrequest(method, base.path.rstrip("/") + "/" + url, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            if v is not None:
                conn.putheader(k, v)
        if method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        try:
            body = resp.read()
        finally:
            resp.close()
        return Reply(resp.status, tuple(resp.getheaders()), body)
    finally:
        conn.close()


# -- expectations ---------------------------------------------------------------------------

TREE = build_tree()
RES = TREE.resources
LAST_MODIFIED = email.utils.formatdate(MTIME, usegmt=True)
MUST_EXPOSE = {"content-range", "content-encoding", "content-length", "etag"}

#: Accept-Encoding headers the variant checks send (None: no header at all).
ACCEPTS: dict[str, str | None] = {
    "none": None,
    "identity": "identity",
    "gzip": "gzip",
    "br": "br",
    "browser": "gzip, deflate, br, zstd",  # Chromium on loopback / https
    "browser-http": "gzip, deflate",  # Chromium elsewhere
    "gzip-q0": "gzip;q=0",
    "br-q0": "br;q=0, gzip",
    "gzip-q0-br": "gzip;q=0, br",
    "star": "*",
    "identity-q0": "identity;q=0, gzip",
    "weighted": "br;q=0.1, gzip;q=0.9, identity;q=0.5",
    "x-gzip": "x-gzip",
    "upper": "GZIP, BR",
}


def stored_for(server: ContractServer, res: Resource) -> dict[str | None, bytes]:
    """The files of ``res`` that ``server`` looks at: the plain one and its codings' siblings."""
    return {k: v for k, v in res.stored.items() if k is None or k in server.encodings}


def is_absent(server: ContractServer, res: Resource) -> bool:
    """Only siblings of codings ``server`` does not send: the URL names no file for it."""
    return not stored_for(server, res)


def _sizes(server: ContractServer, res: Resource) -> dict[str | None, float]:
    out: dict[str | None, float] = {k: len(v) for k, v in stored_for(server, res).items()}
    out.setdefault(None, len(res.identity))
    return out


def expected_encoding(server: ContractServer, res: Resource, accept: str | None) -> str | None:
    """The contract's choice: the smallest acceptable representation (encodings.choose)
    among the plain file, the siblings of the codings ``server`` sends, and decoded identity."""
    return choose(accept, _sizes(server, res))


def needs_for(server: ContractServer, res: Resource, encoding: str | None) -> frozenset[str]:
    """Capabilities ``server`` needs to send ``res`` as ``encoding``: decoding, for identity
    bytes with no plain file."""
    stored = stored_for(server, res)
    if encoding is None and stored and None not in stored:
        return frozenset({GUNZIP} if "gzip" in stored else {UNBROTLI})
    return frozenset()


def servable_encoding(server: ContractServer, res: Resource, accept: str | None) -> str | None:
    """The best choice among what ``server`` can send (the contract's one minus missing
    decoding capabilities).

    Checks of consistency (HEAD, 304s) expect this, so a server that cannot decode is held to
    its coded answer instead of being marked as failing a check it passes; test_variant keeps
    holding every server to the contract's choice.
    """
    can = server.capabilities()
    sizes = {
        enc: n for enc, n in _sizes(server, res).items() if not needs_for(server, res, enc) - can
    }
    return choose(accept, sizes) if sizes else expected_encoding(server, res, accept)


def answered_absent(server: ContractServer, res: Resource) -> bool:
    """When ``res`` names no file for ``server``, check its 404 (with CORS, never a redirect,
    GET and HEAD) and return True: the calling check has nothing else to look at."""
    if not is_absent(server, res):
        return False
    for method in ("GET", "HEAD"):
        reply = fetch(server, method, res.url, {"Accept-Encoding": "gzip, deflate, br"})
        assert reply.status == 404, (method, res.url, reply.status)
        assert reply.header("Location") is None
        assert_cors(reply)
    return True


def enter(
    request: pytest.FixtureRequest,
    server: ContractServer,
    check_id: str,
    needs: frozenset[str] = frozenset(),
) -> None:
    """Mark the running check as an expected failure when the server says it misses it."""
    reason = server.failure_reason(check_id, needs)
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(reason=f"{check_id}: {reason}", strict=True))


def begin(
    request: pytest.FixtureRequest,
    server: ContractServer,
    prefix: str,
    res: Resource,
    encoding: str | None,
) -> bool:
    """Start the check ``<prefix>:<case>`` of ``res`` answered as ``encoding``: False (after
    checking its 404) when ``server`` has no file for ``res``; else marked as an expected
    failure when ``server`` lacks what that answer needs."""
    if answered_absent(server, res):
        return False
    cid = f"{prefix}:{request.node.callspec.id}"
    enter(request, server, cid, needs_for(server, res, encoding))
    return True


def assert_cors(reply: Reply) -> None:
    assert reply.header("Access-Control-Allow-Origin") == "*", reply.headers
    exposed = reply.tokens("Access-Control-Expose-Headers")
    assert exposed >= MUST_EXPOSE, f"Expose-Headers misses {MUST_EXPOSE - exposed}"


def assert_representation(
    server: ContractServer, res: Resource, reply: Reply, encoding: str | None
) -> None:
    """A 200 carrying ``res`` as ``encoding``: exact bytes and every header the contract names."""
    assert reply.status == 200, (reply.status, reply.body[:200])
    assert reply.header("Content-Encoding") == encoding, reply.headers
    assert reply.body == res.body(encoding), "body differs from the bytes on disk"
    length = reply.header("Content-Length")
    if length is not None:
        assert int(length) == len(reply.body)
    elif encoding is not None or None in res.stored:
        pytest.fail("a stored file must be sent with Content-Length")
    assert reply.media_type() == res.media_type
    if res.has_variants:
        assert "accept-encoding" in reply.tokens("Vary"), reply.headers
    assert reply.header("ETag"), "no ETag"
    assert reply.header("Last-Modified") == LAST_MODIFIED
    assert reply.header("Location") is None
    if server.cache_control is not None:
        assert reply.header("Cache-Control") == server.cache_control
    assert_cors(reply)


def params(items: Mapping[str, object]) -> list[object]:
    return [pytest.param(v, id=k) for k, v in items.items()]


def cases(*groups: Mapping[str, object]) -> Iterator[tuple[str, tuple[object, ...]]]:
    """The cartesian product of named groups, ids joined with ':'."""
    if not groups:
        yield "", ()
        return
    head, *rest = groups
    for name, value in head.items():
        for tail_id, tail in cases(*rest):
            yield (f"{name}:{tail_id}" if tail_id else name), (value, *tail)


def product(*groups: Mapping[str, object]) -> list[object]:
    return [pytest.param(*values, id=cid) for cid, values in cases(*groups)]


RANGE_RES = {
    k: RES[k]
    for k in (
        "seg-shard",
        "img-plain",
        "img-plain-gz",
        "img-gz",
        "img-gz-br",
        "img-br",
        "ngs-gz",
        "seg-info",
    )
}
#: name -> (Range header, first byte, last byte or None for "to the end"); negative = suffix.
RANGES: dict[str, tuple[str, int, int | None]] = {
    "first-byte": ("bytes=0-0", 0, 0),
    "head-100": ("bytes=0-99", 0, 99),
    "from-100": ("bytes=100-", 100, None),
    "suffix-7": ("bytes=-7", -7, None),
    "suffix-huge": ("bytes=-9999999", -9999999, None),
    "one-inside": ("bytes=5-5", 5, 5),
    "past-end": ("bytes=10-9999999", 10, 9999999),
}
RANGE_ACCEPTS = {"identity": "identity", "browser": "gzip, deflate, br, zstd", "none": None}

MISSING = {
    "chunk-flat": "img/8_8_8/48-64_0-16_0-16",
    "chunk-nested": "img/8_8_8/48-64/0-16/0-16",
    "scale": "img/1_1_1/0-16_0-16_0-16",
    "dataset": "nope/info",
    "mesh-manifest": "seg/mesh/99:0",
    "mesh-manifest-encoded": "seg/mesh/99%3A0",
    "dir": "img/8_8_8",
    "dir-slash": "img/8_8_8/",
    "dataset-dir": "img",
    "dataset-dir-slash": "img/",
    "nested-dir": "img/8_8_8/0-16",
    "shard-sibling": "seg/8_8_8/1.shard",
}

#: Traversal spellings; {out} is the name of the folder beside the root holding the secret.
TRAVERSALS = {
    "dotdot": "../{out}/secret.txt",
    "dotdot-deep": "img/../../{out}/secret.txt",
    "pct-dotdot": "%2e%2e/{out}/secret.txt",
    "pct-dotdot-upper": "img/%2E%2E/%2E%2E/{out}/secret.txt",
    "dotdot-pct-slash": "..%2f{out}%2fsecret.txt",
    "img-dotdot-pct-slash": "img/..%2f..%2f{out}/secret.txt",
    "double-pct": "%252e%252e/{out}/secret.txt",
    "double-pct-slash": "img/..%252f..%252f{out}/secret.txt",
    "backslash": "..\\{out}\\secret.txt",
    "img-backslash": "img\\..\\..\\{out}\\secret.txt",
    "pct-backslash": "img/..%5c..%5c{out}%5csecret.txt",
    "double-slash-absolute": "{abs}",
    "double-slash-dotdot": "img//../../{out}/secret.txt",
    "overlong-utf8": "%c0%ae%c0%ae/{out}/secret.txt",
    "nul-byte": "img/info%00",
    "symlink-file": "img/escape-file",
    "symlink-dir": "escape-dir/secret.txt",
}

_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    # One suite, many server classes: the same method runs on several subclasses by design.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)


class ContractSuite:
    """The HTTP contract of issue #4; subclass it beside a ``contract_server`` fixture."""

    # -- variants and their choice ---------------------------------------------------------

    @pytest.mark.parametrize(("res", "accept"), product(RES, ACCEPTS))
    def test_variant(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        accept: str | None,
    ) -> None:
        """Smallest acceptable variant, exact bytes, q=0 never chosen, Vary, types, CORS."""
        encoding = expected_encoding(contract_server, res, accept)
        if not begin(request, contract_server, "variant", res, encoding):
            return
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept})
        assert_representation(contract_server, res, reply, encoding)

    def test_nested_url_served_as_is(
        self, request: pytest.FixtureRequest, contract_server: ContractServer
    ) -> None:
        """The on-disk nested path is a URL too (the rewrite only adds the flat spelling)."""
        res = RES["img-plain-gz"]
        enter(request, contract_server, "nested-direct")
        reply = fetch(contract_server, "GET", res.disk, {"Accept-Encoding": "gzip"})
        assert reply.status == 200
        assert reply.header("Content-Encoding") == "gzip"
        assert reply.body == res.stored["gzip"]

    @pytest.mark.parametrize(
        ("res", "accept"), product(RES, {k: ACCEPTS[k] for k in ("none", "gzip", "browser")})
    )
    def test_head_equals_get(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        accept: str | None,
    ) -> None:
        encoding = servable_encoding(contract_server, res, accept)
        if not begin(request, contract_server, "head", res, encoding):
            return
        get = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept})
        head = fetch(contract_server, "HEAD", res.url, {"Accept-Encoding": accept})
        assert head.status == get.status == 200
        assert head.body == b""
        ignore = {"date", "connection", "keep-alive", "transfer-encoding"}
        assert {(k.lower(), v) for k, v in head.headers if k.lower() not in ignore} == {
            (k.lower(), v) for k, v in get.headers if k.lower() not in ignore
        }

    @given(data=st.data())
    @_SETTINGS
    def test_random_accept_encoding(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, data: st.DataObject
    ) -> None:
        """Random Accept-Encoding: a q=0 coding is never sent; the smallest acceptable is."""
        enter(request, contract_server, "accept-random")
        res = data.draw(st.sampled_from(sorted(RES.values(), key=lambda r: r.name)))
        codings = st.sampled_from(["gzip", "br", "identity", "deflate", "*", "zstd", "GZip"])
        qs = st.sampled_from(["", ";q=0", ";q=0.0", ";q=0.001", ";q=0.5", ";q=1", " ; q=1.000"])
        items = data.draw(
            st.lists(st.tuples(codings, qs), max_size=5, unique_by=lambda t: t[0].lower())
        )
        header = data.draw(st.sampled_from([", ", ",", " ,  "])).join(c + q for c, q in items)
        assume(not is_absent(contract_server, res))
        encoding = expected_encoding(contract_server, res, header)
        assume(not needs_for(contract_server, res, encoding) - contract_server.capabilities())
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": header})
        sent = reply.header("Content-Encoding")
        if sent is not None:
            q = parse_accept_encoding(header)
            assert q.get(sent, q.get("*", 0.0)) > 0, f"sent {sent} for {header!r}"
        assert_representation(contract_server, res, reply, encoding)

    @pytest.mark.parametrize(
        ("res", "ask"),
        product(
            {k: v for k, v in RES.items() if None not in v.stored},
            {
                "none": {},
                "identity": {"Accept-Encoding": "identity"},
                "range": {"Range": "bytes=0-9"},
            },
        ),
    )
    def test_identity_of_a_coded_only_file(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        ask: dict[str, str],
    ) -> None:
        """Identity asked of a file stored only coded: identity bytes from a server that can
        decode it; otherwise 406 with CORS, never a 404 (viewers draw a 404 chunk as empty
        data, silently) and never the coded bytes."""
        if answered_absent(contract_server, res):
            return
        enter(request, contract_server, f"identity-coded-only:{request.node.callspec.id}")
        reply = fetch(contract_server, "GET", res.url, ask)
        assert_cors(reply)
        assert reply.header("Content-Encoding") is None, reply.headers
        if needs_for(contract_server, res, None) - contract_server.capabilities():
            assert reply.status == 406, reply.status
        else:
            assert reply.status in (200, 206), reply.status
            assert reply.body in (res.identity, res.identity[:10])

    # -- validators ------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("res", "accept"), product(RES, {k: ACCEPTS[k] for k in ("none", "gzip", "br", "browser")})
    )
    def test_etag_304(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        accept: str | None,
    ) -> None:
        """If-None-Match with the variant's own ETag (alone or in a list) gives a bare 304."""
        encoding = servable_encoding(contract_server, res, accept)
        if not begin(request, contract_server, "etag-304", res, encoding):
            return
        first = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept})
        etag = first.header("ETag")
        assert first.status == 200
        assert etag
        again = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept})
        assert again.header("ETag") == etag, "ETag not stable"
        for inm in (etag, f'"no-such-tag", {etag}'):
            reply = fetch(
                contract_server, "GET", res.url, {"Accept-Encoding": accept, "If-None-Match": inm}
            )
            assert reply.status == 304, inm
            assert reply.body == b""
            assert reply.header("ETag") == etag
            assert_cors(reply)
        stale = fetch(
            contract_server,
            "GET",
            res.url,
            {"Accept-Encoding": accept, "If-None-Match": '"no-such-tag"'},
        )
        assert stale.status == 200
        assert stale.body == first.body

    @pytest.mark.parametrize("res", params({k: v for k, v in RES.items() if v.has_variants}))
    def test_etag_per_variant(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, res: Resource
    ) -> None:
        """Each representation has its own ETag; one variant's tag never validates another."""
        if answered_absent(contract_server, res):
            return
        stored = stored_for(contract_server, res)
        encodings: list[str | None] = [None, *(k for k in stored if k is not None)]
        needs = frozenset().union(*(needs_for(contract_server, res, e) for e in encodings))
        enter(request, contract_server, f"etag-per-variant:{res.name}", needs)
        tags: dict[str | None, str] = {}
        for enc in encodings:
            reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": enc or "identity"})
            assert reply.header("Content-Encoding") == enc
            tag = reply.header("ETag")
            assert tag
            tags[enc] = tag
        assert len(set(tags.values())) == len(tags), tags
        for enc, tag in tags.items():
            for other in encodings:
                if other == enc:
                    continue
                ask = {"Accept-Encoding": other or "identity", "If-None-Match": tag}
                reply = fetch(contract_server, "GET", res.url, ask)
                assert reply.status == 200, f"{enc} ETag validated the {other} variant"
                assert reply.body == res.body(other)

    @pytest.mark.parametrize(
        ("res", "ims"),
        product(
            RES,
            {
                "same": (LAST_MODIFIED, 304),
                "later": (email.utils.formatdate(MTIME + 3600, usegmt=True), 304),
                "earlier": (email.utils.formatdate(MTIME - 3600, usegmt=True), 200),
                "mangled": ("yesterday-ish", 200),
            },
        ),
    )
    def test_if_modified_since(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        ims: tuple[str, int],
    ) -> None:
        accept = "gzip, deflate, br"
        encoding = servable_encoding(contract_server, res, accept)
        if not begin(request, contract_server, "if-modified-since", res, encoding):
            return
        value, status = ims
        reply = fetch(
            contract_server, "GET", res.url, {"Accept-Encoding": accept, "If-Modified-Since": value}
        )
        assert reply.status == status
        assert_cors(reply)
        if status == 200:
            assert_representation(contract_server, res, reply, encoding)
        else:
            assert reply.body == b""

    @pytest.mark.parametrize("res", params({k: RES[k] for k in ("img-plain", "img-gz-br")}))
    def test_if_none_match_wins_over_if_modified_since(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, res: Resource
    ) -> None:
        """RFC 9110 §13.2.2: If-Modified-Since is ignored when If-None-Match is present."""
        enter(request, contract_server, f"inm-precedence:{res.name}")
        reply = fetch(
            contract_server,
            "GET",
            res.url,
            {
                "Accept-Encoding": "gzip",
                "If-None-Match": '"other"',
                "If-Modified-Since": LAST_MODIFIED,
            },
        )
        assert reply.status == 200

    # -- ranges ----------------------------------------------------------------------------

    @pytest.mark.parametrize(("res", "rng", "accept"), product(RANGE_RES, RANGES, RANGE_ACCEPTS))
    def test_range(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        rng: tuple[str, int, int | None],
        accept: str | None,
    ) -> None:
        """A Range is answered from identity bytes, whatever Accept-Encoding says."""
        if not begin(request, contract_server, "range", res, None):
            return
        header, first, last = rng
        n = len(res.identity)
        if first < 0:
            first, last = max(0, n + first), n - 1
        last = n - 1 if last is None else min(last, n - 1)
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept, "Range": header})
        assert reply.status == 206, (reply.status, reply.headers)
        assert reply.header("Content-Encoding") is None
        assert reply.header("Content-Range") == f"bytes {first}-{last}/{n}"
        assert reply.body == res.identity[first : last + 1]
        assert int(reply.header("Content-Length") or -1) == last + 1 - first
        assert_cors(reply)

    @pytest.mark.parametrize(
        ("res", "rng"), product(RANGE_RES, {"at-end": "bytes={n}-", "past-end": "bytes={n}-{m}"})
    )
    def test_range_unsatisfiable(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        res: Resource,
        rng: str,
    ) -> None:
        if not begin(request, contract_server, "range-416", res, None):
            return
        n = len(res.identity)
        ask = {"Accept-Encoding": "identity", "Range": rng.format(n=n, m=n + 10)}
        reply = fetch(contract_server, "GET", res.url, ask)
        assert reply.status == 416
        assert reply.header("Content-Range") == f"bytes */{n}"
        assert_cors(reply)

    @given(data=st.data())
    @_SETTINGS
    def test_random_range(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, data: st.DataObject
    ) -> None:
        """Random ``bytes=s-e`` / ``bytes=s-`` / ``bytes=-k``: body == identity[s:e+1] or 416."""
        enter(request, contract_server, "range-random")
        res = data.draw(st.sampled_from(sorted(RANGE_RES.values(), key=lambda r: r.name)))
        assume(not is_absent(contract_server, res))
        assume(not needs_for(contract_server, res, None) - contract_server.capabilities())
        n = len(res.identity)
        kind = data.draw(st.sampled_from(["closed", "open", "suffix"]))
        s = data.draw(st.integers(0, n + 5))
        if kind == "closed":
            e = data.draw(st.integers(s, n + 20))
            header, first, last = f"bytes={s}-{e}", s, min(e, n - 1)
        elif kind == "open":
            header, first, last = f"bytes={s}-", s, n - 1
        else:
            k = data.draw(st.integers(1, n + 20))
            header, first, last = f"bytes=-{k}", max(0, n - k), n - 1
        accept = data.draw(st.sampled_from([None, "identity", "gzip", "gzip, deflate, br"]))
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept, "Range": header})
        assert_cors(reply)
        if first >= n:
            # The same check as test_range_unsatisfiable, under its id (a server that misses
            # it there misses it here, whenever the draw asks for it).
            enter(
                request,
                contract_server,
                f"range-416:{res.name}:random",
                needs_for(contract_server, res, None),
            )
            assert reply.status == 416
            assert reply.header("Content-Range") == f"bytes */{n}"
            return
        # Likewise test_range's check, under its id.
        enter(
            request,
            contract_server,
            f"range:{res.name}:random",
            needs_for(contract_server, res, None),
        )
        assert reply.status == 206
        assert reply.header("Content-Encoding") is None
        assert reply.header("Content-Range") == f"bytes {first}-{last}/{n}"
        assert reply.body == res.identity[first : last + 1]

    # -- CORS, methods ---------------------------------------------------------------------

    @pytest.mark.parametrize("status", [200, 206, 304, 404, 416])
    def test_cors_on_every_status(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, status: int
    ) -> None:
        enter(request, contract_server, f"cors:{status}")
        res = RES["img-plain-gz"]
        etag = fetch(contract_server, "GET", res.url, {"Accept-Encoding": "gzip"}).header("ETag")
        headers: dict[int, dict[str, str | None]] = {
            200: {},
            206: {"Range": "bytes=1-2"},
            304: {"If-None-Match": etag},
            404: {},
            416: {"Range": "bytes=999999-"},
        }
        url = MISSING["chunk-flat"] if status == 404 else res.url
        reply = fetch(contract_server, "GET", url, {"Accept-Encoding": "gzip", **headers[status]})
        assert reply.status == status
        assert_cors(reply)

    @pytest.mark.parametrize(
        "url",
        params(
            {
                "chunk": RES["img-gz"].url,
                "info": RES["img-info"].url,
                "shard": RES["seg-shard"].url,
                "mesh": RES["mesh-colon"].url,
                "missing": MISSING["chunk-flat"],
            }
        ),
    )
    def test_preflight(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, url: str
    ) -> None:
        """OPTIONS -> 204 allowing GET, HEAD, OPTIONS and the Range request header."""
        enter(request, contract_server, f"preflight:{request.node.callspec.id}")
        reply = fetch(
            contract_server,
            "OPTIONS",
            url,
            {
                "Origin": "https://neuroglancer-demo.appspot.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range",
            },
        )
        assert reply.status == 204
        assert reply.body == b""
        assert reply.header("Access-Control-Allow-Origin") == "*"
        assert reply.tokens("Access-Control-Allow-Methods") == {"get", "head", "options"}
        assert "range" in reply.tokens("Access-Control-Allow-Headers")

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    @pytest.mark.parametrize(
        "url", params({"chunk": RES["img-gz"].url, "info": RES["img-info"].url})
    )
    def test_other_methods_405(
        self,
        request: pytest.FixtureRequest,
        contract_server: ContractServer,
        method: str,
        url: str,
    ) -> None:
        enter(request, contract_server, f"method-405:{request.node.callspec.id}")
        reply = fetch(contract_server, method, url)
        assert reply.status == 405

    # -- missing files and traversal -------------------------------------------------------

    @pytest.mark.parametrize("url", params(MISSING))
    def test_missing_is_404(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, url: str
    ) -> None:
        """404 with CORS: never 403, 500, a redirect or a listing."""
        enter(request, contract_server, f"missing:{request.node.callspec.id}")
        for accept in (None, "gzip, deflate, br"):
            reply = fetch(contract_server, "GET", url, {"Accept-Encoding": accept})
            assert reply.status == 404, (url, reply.status)
            assert reply.header("Location") is None
            assert_cors(reply)

    @pytest.mark.parametrize("spelling", params(TRAVERSALS))
    def test_traversal_never_escapes(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, spelling: str
    ) -> None:
        """Traversal in any spelling: 400 or 404, never the secret, never 5xx."""
        enter(request, contract_server, f"traversal:{request.node.callspec.id}")
        out = outside_dir(contract_server.root)
        url = spelling.format(out=out.name, abs=str(out / "secret.txt"))
        for method in ("GET", "HEAD"):
            reply = fetch(contract_server, method, url, {"Accept-Encoding": "gzip"})
            assert SECRET not in reply.body
            assert reply.status in (400, 404), (url, reply.status)
