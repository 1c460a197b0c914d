"""Raw HTTP the way the viewers send it: :func:`request` and its :class:`Reply`.

Requests go through :mod:`http.client`: no ``Accept-Encoding`` is added, nothing is decoded
and the path is sent byte for byte, so what is checked is what the server sent. The contract
suite (tests/contract) sends its requests with these too. :data:`CLIENTS` holds the
``Accept-Encoding`` headers of the readers whose view of a server the doctor takes.
"""

from __future__ import annotations

import http.client
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core import headers as core_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Response headers a script on another origin must be allowed to read (a subset of what our
#: servers expose, core.headers.EXPOSE_HEADERS): Range replies, codings and validators.
MUST_EXPOSE = frozenset(h.lower() for h in core_headers.EXPOSE_HEADERS) - {"last-modified"}

#: Accept-Encoding of each reader (one request per distinct value is enough).
CLIENTS: dict[str, str] = {
    # Chromium and Firefox offer br and zstd only on secure contexts (https, localhost).
    "browser (https)": "gzip, deflate, br, zstd",
    # ... and "gzip, deflate" over plain http to another host: br sent there is undecodable.
    "browser (http)": "gzip, deflate",
    # tensorstore's libcurl asks for its built-in decoders (CURLOPT_ACCEPT_ENCODING ""); with
    # zlib only, as in its default build, that is these two. cloud-volume's requests sends
    # "gzip, deflate" (the browser-http value above).
    "tensorstore (libcurl)": "deflate, gzip",
}

#: Give up on a server after this many seconds without an answer.
TIMEOUT = 30.0


@dataclass(frozen=True)
class Reply:
    """One response: status, headers in order, the body as sent (``truncated``: the connection
    closed before the ``Content-Length`` bytes came)."""

    url: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool = False

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


def request(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str | None] | None = None,
    timeout: float = TIMEOUT,
) -> Reply:
    """One request on a fresh connection; ``url``'s path is sent as it is written.

    >>> request("http://127.0.0.1:8000/img/info", headers={"Accept-Encoding": "gzip"})

    :param headers: request headers; a None value is not sent.
    :raises OSError: no connection (refused, unknown host, timeout).
    """
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            if v is not None:
                conn.putheader(k, v)
        if method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        truncated = False
        try:
            body = resp.read()
        except http.client.IncompleteRead as e:
            body, truncated = e.partial, True
        finally:
            resp.close()
        return Reply(url, resp.status, tuple(resp.getheaders()), body, truncated)
    finally:
        conn.close()
