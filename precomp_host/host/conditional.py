"""The rules of RFC 9110 §13 and §14 that the middleware answers by: conditional requests
(:func:`is_not_modified`, :func:`if_range_holds`) and single byte ranges (:func:`single_range`,
:func:`range_for_length`).

werkzeug's helpers are used where they give the same answer (``parse_range_header``,
``is_resource_modified``); where they do not, the reason is beside our own code.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from werkzeug.http import parse_date, parse_range_header, quote_etag
from werkzeug.sansio.http import is_resource_modified

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment

    from werkzeug.datastructures import Range


def single_range(environ: WSGIEnvironment) -> Range | None:
    ranged = parse_range_header(environ["HTTP_RANGE"])
    if ranged is not None and (ranged.units != "bytes" or len(ranged.ranges) != 1):
        return None  # RFC 9110 §14.2: a server may ignore a Range it does not support
    return ranged


def range_for_length(span: tuple[int, int | None], length: int) -> tuple[int, int] | None:
    # werkzeug's Range.range_for_length rejects a suffix longer than the file, which RFC 9110
    # §14.1.2 says selects the whole file; a last position past the end is clipped.
    first, stop = span
    if first < 0:
        first = max(0, length + first)
        stop = length
    elif stop is None or stop > length:
        stop = length
    if first >= length or first >= stop:
        return None
    return first, stop


def is_not_modified(environ: WSGIEnvironment, etag: str, mtime: int) -> bool:
    # werkzeug's rule is RFC 9110 §13.2.2: If-None-Match (weak comparison) decides when
    # present, else If-Modified-Since, an unparsable date being ignored (§13.1.3). If-Match is
    # left out: it asks for a 412, which werkzeug's helper would turn into a 304.
    return not is_resource_modified(
        http_if_none_match=environ.get("HTTP_IF_NONE_MATCH"),
        http_if_modified_since=environ.get("HTTP_IF_MODIFIED_SINCE"),
        etag=etag,
        last_modified=datetime.fromtimestamp(mtime, timezone.utc),
    )


def if_range_holds(environ: WSGIEnvironment, etag: str, mtime: int) -> bool:
    # RFC 9110 §13.1.5: If-Range with a strong ETag or the exact date keeps the Range;
    # anything else means "send the whole representation". werkzeug's parse_if_range_header
    # drops the weakness of a W/ tag, which must never match, so this stays ours.
    value: str | None = environ.get("HTTP_IF_RANGE")
    if value is None:
        return True
    if value.startswith(('"', "W/")):
        return value == quote_etag(etag)
    date = parse_date(value)
    return date is not None and int(date.timestamp()) == mtime
