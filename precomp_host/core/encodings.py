"""HTTP content encodings (``br``, ``gzip``): the registry :data:`ENCODINGS` and the choice rule.

Not to be confused with a scale's chunk ``encoding`` (raw, jpeg, ...), which lives in
``chunk_codecs``. A content encoding is bytes to bytes, stored as a sibling file with its
:attr:`ContentEncoding.suffix` (``X.gz`` beside ``X``) and sent with ``Content-Encoding``.

The same rules decide what the generator stores and what the middleware sends:

* a sibling is kept only where it saves at least 5 % (:func:`is_effective`, as whitenoise does)
  and, beside a ``.gz``, only when it is smaller than the ``.gz`` (:func:`worth_storing`);
* :func:`choose` picks, among the variants a client accepts, the smallest (RFC 9110 §12.5.3,
  q-values honoured, ``q=0`` meaning "not acceptable").
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import brotli

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_libdeflate: Any
try:  # libdeflate: the same format as zlib at about 3x the speed (issue #2, measured).
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - deflate is a declared dependency
    _libdeflate = None

#: Compressed size over original size above which a sibling is not worth storing.
MAX_RATIO = 0.95
GZIP_LEVEL = 6  # level 9 is no smaller on chunks and 3x slower (issue #2)
BROTLI_QUALITY = 5  # quality 11 runs at 1-2 MB/s; 5 is ~4 % smaller than gzip 6 at its speed


@dataclass(frozen=True)
class ContentEncoding:
    """One HTTP content coding and how its sibling files are made and read."""

    name: str  # the HTTP token
    suffix: str  # the sibling's suffix on disk
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    #: Other tokens a client may send for this coding; they count only when ``name`` itself is
    #: not listed in ``Accept-Encoding``.
    aliases: tuple[str, ...] = ()


def gzip_compress(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    # Deterministic: mtime 0 and no file name in the header (RFC 1952 §2.3), so reruns of a
    # build are byte-identical.
    if _libdeflate is not None:
        return bytes(_libdeflate.gzip_compress(data, level))
    return gzip.compress(data, compresslevel=level, mtime=0)


def gzip_decompress(data: bytes) -> bytes:
    # wbits 16+MAX_WBITS: gzip framing only; a multi-member stream is not something we write.
    return zlib.decompress(data, 16 + zlib.MAX_WBITS)


def brotli_compress(data: bytes, quality: int = BROTLI_QUALITY) -> bytes:
    return bytes(brotli.compress(data, quality=quality))


def brotli_decompress(data: bytes) -> bytes:
    return bytes(brotli.decompress(data))


# RFC 9110 §8.4.1.3: a recipient should treat x-gzip as equivalent to gzip.
GZIP = ContentEncoding("gzip", ".gz", gzip_compress, gzip_decompress, aliases=("x-gzip",))
BROTLI = ContentEncoding("br", ".br", brotli_compress, brotli_decompress)

#: Every content encoding we store or serve, by HTTP token, in order of preference on a tie.
ENCODINGS: dict[str, ContentEncoding] = {BROTLI.name: BROTLI, GZIP.name: GZIP}
#: Sibling suffix -> encoding.
BY_SUFFIX: dict[str, ContentEncoding] = {e.suffix: e for e in ENCODINGS.values()}


def is_effective(original: int, compressed: int) -> bool:
    """Whether a compressed sibling is worth storing and sending."""
    return compressed <= original * MAX_RATIO


def worth_storing(original: int, compressed: Mapping[str, int]) -> frozenset[str]:
    """The siblings to store out of ``compressed`` (coding -> size) for a file of ``original``
    bytes: the effective ones, minus any that is not smaller than the gzip sibling.

    gzip is the coding every client takes (browsers offer br only to https and loopback
    origins, always beside gzip), so a larger or equal br would only ever be sent to a client
    that offers br alone; storing it wastes disk (seen on noisy chunks: br 176,525 B vs gzip
    175,788 B).
    """
    kept = {name for name, size in compressed.items() if is_effective(original, size)}
    if GZIP.name in kept:
        kept = {n for n in kept if n == GZIP.name or compressed[n] < compressed[GZIP.name]}
    return frozenset(kept)


def parse_accept_encoding(header: str | None) -> dict[str, float]:
    """``Accept-Encoding`` as {coding: q}; lower-cased codings, malformed q read as 0."""
    return dict(_parse_accept_encoding(header)) if header else {}


# Browsers send a handful of distinct headers: parsing each once keeps it off the hot path.
@functools.lru_cache(maxsize=256)
def _parse_accept_encoding(header: str) -> tuple[tuple[str, float], ...]:
    out: dict[str, float] = {}
    for item in header.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        if not coding:
            continue
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        out[coding.lower()] = q
    return tuple(out.items())


def choose(accept_encoding: str | None, variants: Mapping[str | None, float]) -> str | None:
    """Pick the variant to send: an encoding token, or ``None`` for identity.

    ``variants`` maps each variant we can send (None = identity) to its size; a caller that can
    make identity bytes by decompressing a sibling lists identity with its (larger) true size.
    Among the variants the client accepts (RFC 9110 §12.5.3: listed, or matched by ``*``, with
    q > 0) the smallest wins, ties going to identity and then to :data:`ENCODINGS` order. Like
    whitenoise and nginx, a missing header or ``*`` alone gets identity. When nothing is
    acceptable we send identity, which RFC 9110 §12.5.3 allows and which nginx and Apache do.
    """
    accepted = parse_accept_encoding(accept_encoding)
    star = accepted.get("*")

    def acceptable(name: str | None) -> bool:
        if name is None:
            q = accepted.get("identity", star if star == 0 else None)
            return q is None or q > 0
        q = accepted.get(name)
        for alias in ENCODINGS[name].aliases:
            q = accepted.get(alias) if q is None else q
        if q is None:
            # "*" stands for codings not listed, but never turns compression on by itself
            # when identity exists (whitenoise test_get_accept_star).
            q = star if (star and None not in variants) else 0.0
        return q > 0

    order = [None, *ENCODINGS]
    candidates = sorted(
        (size, order.index(name), name) for name, size in variants.items() if acceptable(name)
    )
    return candidates[0][2] if candidates else None


#: Incremental decoders by HTTP token, for servers that stream identity bytes out of a sibling
#: without holding the whole file (a large chunk for a client without gzip).
_STREAM_DECODERS: dict[str, Callable[[], Callable[[bytes], bytes]]] = {
    GZIP.name: lambda: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress,
    BROTLI.name: lambda: brotli.Decompressor().process,
}


def stream_decoder(encoding: str) -> Callable[[bytes], bytes]:
    """A fresh incremental decoder for ``encoding``: feed it coded blocks in order, it returns
    the identity bytes decoded so far."""
    return _STREAM_DECODERS[encoding]()
