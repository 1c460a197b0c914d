"""The HTTP contract every server of a precomputed folder meets, in two tiers (issue 12).

:class:`ClientTier` is what browsers, Neuroglancer, tensorstore, cloud-volume and
neuroglancer-scripts rely on: info as JSON, CORS on every status, the preflight, flat->nested,
a variant the client accepts whose decoded bytes equal the data, ``Vary``, mesh manifests with
and without ``:``, Range on plain files (shards), 404 with CORS for a missing file, 406 or
decoded bytes where nothing acceptable is stored, no traversal, no directory listing. Every
server passes it in full: the middleware, the dev server, gunicorn, waitress and every config
emitted for nginx and Apache.

:class:`StrictTier` is the rest (q-value ranking and the smallest variant, ETag and 304
semantics across variants, Range and 416 on decoded bodies, exact 404/405 statuses): the
middleware passes it (:class:`ContractSuite` is both tiers). A server that does not do part of
it declares each missing behaviour once, with its reason: :func:`declared_limits` makes one
strict xfail per limitation from :data:`PROBES` (a probe is one strict check on one
representative case; if the server starts passing it, the xfail fails and the declaration goes).

A consumer writes the tree of :mod:`tests.contract.fixtures` into a folder, serves it, and
provides a ``contract_server`` fixture (a :class:`ContractServer`); then subclasses a tier.
Requests go through the hosting doctor's :func:`precomp_host.check.http.request` (raw
:mod:`http.client`: no ``Accept-Encoding`` added, nothing decoded, the path sent byte for byte)
and every body is compared with the exact bytes on disk.
"""

from __future__ import annotations

import email.utils
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from precomp_host.check.http import MUST_EXPOSE, Reply, request
from precomp_host.core.encodings import ENCODINGS, choose, parse_accept_encoding

from .fixtures import MTIME, SECRET, Resource, build_tree, outside_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path


@dataclass
class ContractServer:
    """A running server over a folder written by ``write_contract_tree``.

    :param base_url: ``http://host:port`` plus an optional path prefix (``/data``).
    :param root: the served folder.
    :param encodings: the content codings the server is configured to send (an nginx without
        the brotli module sends no ``br``): a URL whose only files are siblings of other codings
        names no file for it (404), and the strict tier's choice is among these codings.
    :param cache_control: the exact ``Cache-Control`` expected on 200s, None to not check.
    """

    base_url: str
    root: Path
    name: str = "server"
    encodings: frozenset[str] = frozenset(ENCODINGS)
    cache_control: str | None = None


def fetch(
    server: ContractServer,
    method: str,
    url: str,
    headers: Mapping[str, str | None] | None = None,
) -> Reply:
    """One request on a fresh connection; ``url`` is appended to the base path verbatim."""
    base = urllib.parse.urlsplit(server.base_url)
    target = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}/{url}"
    return request(target, method, headers)


# -- expectations ---------------------------------------------------------------------------

TREE = build_tree()
RES = TREE.resources
LAST_MODIFIED = email.utils.formatdate(MTIME, usegmt=True)

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


def answered_absent(server: ContractServer, res: Resource) -> bool:
    """When ``res`` names no file for ``server`` (only siblings of codings it does not send),
    check its 404 or 406 (with CORS, never a redirect, GET and HEAD) and return True: the
    calling check has nothing else to look at."""
    if not is_absent(server, res):
        return False
    for method in ("GET", "HEAD"):
        reply = fetch(server, method, res.url, {"Accept-Encoding": "gzip, deflate"})
        assert reply.status in (404, 406), (method, res.url, reply.status)
        assert reply.header("Location") is None
        assert_cors(reply)
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


def assert_client_representation(
    server: ContractServer, res: Resource, reply: Reply, accept: str | None
) -> None:
    """Client tier: a coding the client named (none without a header), decoded bytes equal to
    the data, the media type, Vary where variants exist, CORS; or 406 when no representation
    the client takes is stored and the server cannot decode one."""
    assert_cors(reply)
    if reply.status == 406:
        assert None not in stored_for(server, res), "406 for a file stored plain"
        assert reply.header("Content-Encoding") is None
        return
    assert reply.status == 200, (reply.status, reply.body[:200])
    sent = reply.header("Content-Encoding")
    named = {t.split(";")[0].strip().lower() for t in (accept or "").split(",")}
    if sent is not None:
        assert sent in named, f"sent {sent} for {accept!r}"
    decoded = reply.body if sent is None else ENCODINGS[sent].decompress(reply.body)
    assert decoded == res.identity, "decoded body differs from the data"
    assert reply.media_type() == res.media_type
    if res.has_variants:
        assert "accept-encoding" in reply.tokens("Vary"), reply.headers
    assert reply.header("Location") is None


#: Resources stored as more than one representation: the Accept-Encoding grids run on these.
VARIANT_RES = {k: v for k, v in RES.items() if v.has_variants}
#: Resources stored plain only: one request each (a grid would only confirm identity again).
PLAIN_RES = {k: v for k, v in RES.items() if not v.has_variants}
#: What the clients send: browsers, Python's urllib/requests, curl (tensorstore).
CLIENT_ACCEPTS = {k: ACCEPTS[k] for k in ("none", "identity", "gzip", "br", "browser",
                                          "browser-http")}  # fmt: skip
#: Files read with Range by the clients: shards (and any plain file).
PLAIN_RANGE_RES = {k: RES[k] for k in ("seg-shard", "img-plain")}
#: Missing files (as opposed to folders) in every spelling the clients use.
MISSING_FILES = {k: v for k, v in MISSING.items() if "dir" not in k}
MISSING_DIRS = {k: v for k, v in MISSING.items() if "dir" in k}


class ClientTier:
    """What the clients rely on; every server and every emitted config passes all of it."""

    @pytest.mark.parametrize(
        ("res", "accept"),
        [
            *product(VARIANT_RES, CLIENT_ACCEPTS),
            *product(PLAIN_RES, {"browser": ACCEPTS["browser"]}),
        ],
    )
    def test_variant(
        self, contract_server: ContractServer, res: Resource, accept: str | None
    ) -> None:
        """A variant the client accepts, decoding to the data; Vary; the media type; CORS."""
        if answered_absent(contract_server, res):
            return
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept})
        assert_client_representation(contract_server, res, reply, accept)
        if accept is None or accept == "identity":
            # Python's urllib and requests without a decoder: never coded bytes.
            assert reply.header("Content-Encoding") is None

    def test_nested_url_served_as_is(self, contract_server: ContractServer) -> None:
        """The on-disk nested path is a URL too (the rewrite only adds the flat spelling)."""
        res = RES["img-plain-gz"]
        reply = fetch(contract_server, "GET", res.disk, {"Accept-Encoding": "gzip"})
        assert_client_representation(contract_server, res, reply, "gzip")

    @pytest.mark.parametrize(("res", "rng"), product(PLAIN_RANGE_RES, RANGES))
    def test_range_on_plain_file(
        self, contract_server: ContractServer, res: Resource, rng: tuple[str, int, int | None]
    ) -> None:
        """Shards are read with Range, by a browser that also takes gzip and br."""
        header, first, last = rng
        n = len(res.identity)
        if first < 0:
            first, last = max(0, n + first), n - 1
        last = n - 1 if last is None else min(last, n - 1)
        reply = fetch(contract_server, "GET", res.url,
                      {"Accept-Encoding": ACCEPTS["browser"], "Range": header})  # fmt: skip
        assert reply.status == 206, (reply.status, reply.headers)
        assert reply.header("Content-Encoding") is None
        assert reply.header("Content-Range") == f"bytes {first}-{last}/{n}"
        assert reply.body == res.identity[first : last + 1]
        assert_cors(reply)

    @pytest.mark.parametrize("status", [200, 206, 304, 404, 416])
    def test_cors_on_every_status(self, contract_server: ContractServer, status: int) -> None:
        res = RES["img-plain-gz"]
        etag = fetch(contract_server, "GET", res.url, {"Accept-Encoding": "gzip"}).header("ETag")
        headers: dict[int, dict[str, str | None]] = {
            200: {},
            206: {"Range": "bytes=1-2"},
            304: {"If-None-Match": etag},
            404: {},
            416: {"Range": "bytes=999999-"},
        }
        # Ranges on the file the clients read with Range (a Range over a stored-coded chunk
        # is the strict tier's).
        urls = {404: MISSING["chunk-flat"], 206: RES["seg-shard"].url, 416: RES["seg-shard"].url}
        url = urls.get(status, res.url)
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
    def test_preflight(self, contract_server: ContractServer, url: str) -> None:
        """OPTIONS -> 204 allowing GET, HEAD, OPTIONS and the Range request header."""
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

    @pytest.mark.parametrize("url", params(MISSING_FILES))
    def test_missing_is_404(self, contract_server: ContractServer, url: str) -> None:
        """404 with CORS (viewers draw it as empty data): never 403, 500 or a redirect."""
        for accept in (None, "gzip, deflate, br"):
            reply = fetch(contract_server, "GET", url, {"Accept-Encoding": accept})
            assert reply.status == 404, (url, reply.status)
            assert reply.header("Location") is None
            assert_cors(reply)

    @pytest.mark.parametrize("url", params(MISSING_DIRS))
    def test_no_directory_listing(self, contract_server: ContractServer, url: str) -> None:
        """A folder is never listed, and never a 5xx (nginx redirects it to "folder/")."""
        reply = fetch(contract_server, "GET", url, {"Accept-Encoding": "gzip"})
        assert reply.status in (301, 403, 404), reply.status  # a listing is a 200

    @pytest.mark.parametrize("spelling", params(TRAVERSALS))
    def test_traversal_never_escapes(self, contract_server: ContractServer, spelling: str) -> None:
        """Traversal in any spelling, links leaving the root included: never the secret."""
        out = outside_dir(contract_server.root)
        url = spelling.format(out=out.name, abs=str(out / "secret.txt"))
        for method in ("GET", "HEAD"):
            reply = fetch(contract_server, method, url, {"Accept-Encoding": "gzip"})
            assert SECRET not in reply.body
            assert 400 <= reply.status < 500, (url, reply.status)


class StrictTier:
    """The middleware's answers beyond the clients' needs (issue #4's full contract)."""

    @pytest.mark.parametrize(("res", "accept"), product(VARIANT_RES, ACCEPTS))
    def test_variant_choice(
        self, contract_server: ContractServer, res: Resource, accept: str | None
    ) -> None:
        """The smallest acceptable variant (q-values, q=0 never, x-gzip), exact bytes, ETag,
        Last-Modified, Cache-Control."""
        if answered_absent(contract_server, res):
            return
        encoding = expected_encoding(contract_server, res, accept)
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": accept})
        assert_representation(contract_server, res, reply, encoding)

    @pytest.mark.parametrize(
        ("res", "accept"),
        product(VARIANT_RES, {k: ACCEPTS[k] for k in ("none", "gzip", "browser")}),
    )
    def test_head_equals_get(
        self, contract_server: ContractServer, res: Resource, accept: str | None
    ) -> None:
        if answered_absent(contract_server, res):
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
        self, contract_server: ContractServer, data: st.DataObject
    ) -> None:
        """Random Accept-Encoding: a q=0 coding is never sent; the smallest acceptable is."""
        res = data.draw(st.sampled_from(sorted(VARIANT_RES.values(), key=lambda r: r.name)))
        codings = st.sampled_from(["gzip", "br", "identity", "deflate", "*", "zstd", "GZip"])
        qs = st.sampled_from(["", ";q=0", ";q=0.0", ";q=0.001", ";q=0.5", ";q=1", " ; q=1.000"])
        items = data.draw(
            st.lists(st.tuples(codings, qs), max_size=5, unique_by=lambda t: t[0].lower())
        )
        header = data.draw(st.sampled_from([", ", ",", " ,  "])).join(c + q for c, q in items)
        assume(not is_absent(contract_server, res))
        encoding = expected_encoding(contract_server, res, header)
        reply = fetch(contract_server, "GET", res.url, {"Accept-Encoding": header})
        sent = reply.header("Content-Encoding")
        if sent is not None:
            q = parse_accept_encoding(header)
            assert q.get(sent, q.get("*", 0.0)) > 0, f"sent {sent} for {header!r}"
        assert_representation(contract_server, res, reply, encoding)

    @pytest.mark.parametrize(
        ("res", "accept"),
        product(VARIANT_RES, {k: ACCEPTS[k] for k in ("none", "gzip", "br", "browser")}),
    )
    def test_etag_304(
        self, contract_server: ContractServer, res: Resource, accept: str | None
    ) -> None:
        """If-None-Match with the variant's own ETag (alone or in a list) gives a bare 304."""
        if answered_absent(contract_server, res):
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

    @pytest.mark.parametrize("res", params(VARIANT_RES))
    def test_etag_per_variant(self, contract_server: ContractServer, res: Resource) -> None:
        """Each representation has its own ETag; one variant's tag never validates another."""
        if answered_absent(contract_server, res):
            return
        stored = stored_for(contract_server, res)
        encodings: list[str | None] = [None, *(k for k in stored if k is not None)]
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
            {k: RES[k] for k in ("img-plain", "img-gz-br", "ngs-gz")},
            {
                "same": (LAST_MODIFIED, 304),
                "later": (email.utils.formatdate(MTIME + 3600, usegmt=True), 304),
                "earlier": (email.utils.formatdate(MTIME - 3600, usegmt=True), 200),
                "mangled": ("yesterday-ish", 200),
            },
        ),
    )
    def test_if_modified_since(
        self, contract_server: ContractServer, res: Resource, ims: tuple[str, int]
    ) -> None:
        accept = "gzip, deflate, br"
        encoding = expected_encoding(contract_server, res, accept)
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
        self, contract_server: ContractServer, res: Resource
    ) -> None:
        """RFC 9110 §13.2.2: If-Modified-Since is ignored when If-None-Match is present."""
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

    @pytest.mark.parametrize(("res", "rng", "accept"), product(RANGE_RES, RANGES, RANGE_ACCEPTS))
    def test_range(
        self,
        contract_server: ContractServer,
        res: Resource,
        rng: tuple[str, int, int | None],
        accept: str | None,
    ) -> None:
        """A Range is answered from identity bytes, whatever is stored and accepted."""
        if answered_absent(contract_server, res):
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
        self, contract_server: ContractServer, res: Resource, rng: str
    ) -> None:
        if answered_absent(contract_server, res):
            return
        n = len(res.identity)
        ask = {"Accept-Encoding": "identity", "Range": rng.format(n=n, m=n + 10)}
        reply = fetch(contract_server, "GET", res.url, ask)
        assert reply.status == 416
        assert reply.header("Content-Range") == f"bytes */{n}"
        assert_cors(reply)

    @given(data=st.data())
    @_SETTINGS
    def test_random_range(self, contract_server: ContractServer, data: st.DataObject) -> None:
        """Random ``bytes=s-e`` / ``bytes=s-`` / ``bytes=-k``: body == identity[s:e+1] or 416."""
        res = data.draw(st.sampled_from(sorted(RANGE_RES.values(), key=lambda r: r.name)))
        assume(not is_absent(contract_server, res))
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
            assert reply.status == 416
            assert reply.header("Content-Range") == f"bytes */{n}"
            return
        assert reply.status == 206
        assert reply.header("Content-Encoding") is None
        assert reply.header("Content-Range") == f"bytes {first}-{last}/{n}"
        assert reply.body == res.identity[first : last + 1]

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    @pytest.mark.parametrize(
        "url", params({"chunk": RES["img-gz"].url, "info": RES["img-info"].url})
    )
    def test_other_methods_405(
        self, contract_server: ContractServer, method: str, url: str
    ) -> None:
        reply = fetch(contract_server, method, url)
        assert reply.status == 405, reply.status

    @pytest.mark.parametrize("url", params(MISSING_DIRS))
    def test_directory_is_404(self, contract_server: ContractServer, url: str) -> None:
        """A folder is not a resource: 404 with CORS, not a redirect or a 403."""
        reply = fetch(contract_server, "GET", url, {"Accept-Encoding": "gzip"})
        assert reply.status == 404, (url, reply.status)
        assert reply.header("Location") is None
        assert_cors(reply)

    @pytest.mark.parametrize("spelling", params(TRAVERSALS))
    def test_traversal_is_400_or_404(self, contract_server: ContractServer, spelling: str) -> None:
        out = outside_dir(contract_server.root)
        url = spelling.format(out=out.name, abs=str(out / "secret.txt"))
        reply = fetch(contract_server, "GET", url, {"Accept-Encoding": "gzip"})
        assert reply.status in (400, 404), (url, reply.status)


class ContractSuite(ClientTier, StrictTier):
    """Both tiers: the middleware's contract."""


# -- declared limitations --------------------------------------------------------------------


def _strict(test: str, **kw: object) -> Callable[[ContractServer], None]:
    """A probe: one strict-tier check (a :class:`StrictTier` method) on one case."""

    def probe(server: ContractServer) -> None:
        getattr(StrictTier(), test)(server, **kw)

    return probe


#: Strict-tier behaviours a server may declare it does not have, each probed on one case.
PROBES: dict[str, Callable[[ContractServer], None]] = {
    "q-values": _strict("test_variant_choice", res=RES["img-gz-br"], accept=ACCEPTS["br-q0"]),
    "plain-file-for-identity": _strict(
        "test_variant_choice", res=RES["img-plain-gz"], accept="identity"
    ),  # fmt: skip
    "coded-when-accepted": _strict(
        "test_variant_choice", res=RES["img-gz"], accept="gzip, deflate, br"
    ),  # fmt: skip
    "smallest-variant": _strict(
        "test_variant_choice", res=RES["img-gz-br"], accept=ACCEPTS["weighted"]
    ),  # fmt: skip
    "x-gzip": _strict("test_variant_choice", res=RES["img-gz"], accept="x-gzip"),
    "range-on-decoded-body": _strict(
        "test_range", res=RES["img-gz"], rng=RANGES["head-100"], accept="identity"
    ),  # fmt: skip
    "range-on-coded-variant": _strict(
        "test_range", res=RES["img-plain-gz"], rng=RANGES["head-100"], accept=ACCEPTS["browser"]
    ),  # fmt: skip
    "416-content-range": _strict(
        "test_range_unsatisfiable", res=RES["img-gz"], rng="bytes={n}-"
    ),  # fmt: skip
    "brotli-decoding": lambda server: _decodes(server, RES["img-br"]),
    "etag-per-variant": _strict("test_etag_per_variant", res=RES["img-plain-gz"]),
    "directory-404": _strict("test_directory_is_404", url=MISSING["dir"]),
    "methods-405": _strict("test_other_methods_405", method="PUT", url=RES["img-gz"].url),
}


def _decodes(server: ContractServer, res: Resource) -> None:
    reply = fetch(server, "GET", res.url, {"Accept-Encoding": "identity"})
    assert reply.status == 200, reply.status
    assert reply.body == res.identity


class StrictProbes:
    """One test per strict-tier probe, for a server that is held to the client tier: each
    limitation the server declares in ``LIMITS`` (``PROBES`` name -> reason) is a strict
    xfail, shown once per server in the pytest summary; the undeclared probes must pass."""

    LIMITS: ClassVar[Mapping[str, str]] = {}

    def test_limits_name_probes(self) -> None:
        assert set(self.LIMITS) <= set(PROBES), set(self.LIMITS) - set(PROBES)

    @pytest.mark.parametrize("name", list(PROBES))
    def test_strict_probe(
        self, request: pytest.FixtureRequest, contract_server: ContractServer, name: str
    ) -> None:
        reason = self.LIMITS.get(name)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
        PROBES[name](contract_server)
