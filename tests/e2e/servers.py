"""Loopback HTTP servers for the end-to-end tests; the central class is :class:`LoopbackServer`.

Two of them run in every view: :class:`ClientHandler` serves Neuroglancer's built client (one
origin) and :class:`StaticDataHandler` serves a folder of datasets (another origin, so every data
request is cross-origin and CORS is exercised). The data server is deliberately tiny and knobbed so
that the harness can be proven, and its negative controls built, before any of our own servers
exist: ``cors=False`` is "the same data behind a server without CORS", ``content_encoding=False``
is "gzip bytes served without ``Content-Encoding``".
"""

from __future__ import annotations

import http.server
import posixpath
import threading
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote, urlsplit

from precomp_host.core.encodings import GZIP
from precomp_host.core.headers import cors_headers, preflight_headers
from precomp_host.core.layout import nested_url
from precomp_host.core.media_types import media_type_for

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

#: Media types of the client bundle's files (the only kinds it ships).
_CLIENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".wasm": "application/wasm",
    ".map": "application/json",
}


class LoopbackServer:
    """A threaded ``http.server`` on 127.0.0.1 and a free port, as a context manager.

    :param handler: the request handler class; it reads its settings from ``self.server``.
    :param settings: attributes set on the server object for the handler to read.
    """

    def __init__(
        self, handler: type[http.server.BaseHTTPRequestHandler], **settings: object
    ) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Threads serving the event stream block; daemon threads let the process exit anyway.
        self.httpd.daemon_threads = True
        self.stopping = threading.Event()
        for name, value in settings.items():
            setattr(self.httpd, name, value)
        self.httpd.stopping = self.stopping  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # the browser's record of requests is what the tests read

    def send_body(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ClientHandler(_QuietHandler):
    """Neuroglancer's Python-integration client build, the way ``neuroglancer.server`` serves it.

    The bundle finds its server from its own URL: it must live under ``/v/<token>/`` and it opens
    ``/events/<token>`` (server-sent events) at once; a silent keep-alive is enough, since the view
    comes from the URL fragment. It POSTs its state to ``/state/<token>``; we acknowledge.
    Settings: ``client_dir`` (Path), ``token`` (str).
    """

    KEEPALIVE_SECONDS: ClassVar[float] = 1.0

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        client_dir: Path = self.server.client_dir  # type: ignore[attr-defined]
        token: str = self.server.token  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        if path == "/favicon.ico":
            self.send_body(204, b"", {})  # keeps the console free of an unrelated 404
            return
        if path == f"/events/{token}":
            self._event_stream()
            return
        prefix = f"/v/{token}/"
        if not path.startswith(prefix):
            self.send_body(404, b"not found", {})
            return
        name = path[len(prefix) :] or "index.html"
        file = client_dir / name
        if "/" in name or ".." in name or not file.is_file():
            self.send_body(404, b"not found", {})
            return
        media = _CLIENT_TYPES.get(file.suffix, "application/octet-stream")
        self.send_body(200, file.read_bytes(), {"Content-Type": media})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_body(200, b'{"g": "0"}', {"Content-Type": "application/json"})

    def _event_stream(self) -> None:
        stopping: threading.Event = self.server.stopping  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.close_connection = True
        try:
            while not stopping.wait(self.KEEPALIVE_SECONDS):
                # An SSE comment line: keeps the stream open, carries no state.
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
        except OSError:
            pass  # the page went away


class StaticDataHandler(_QuietHandler):
    """A folder of datasets, served the simplest correct way, with knobs to break it.

    A URL names a file under ``root``, or a flat chunk URL names its nested file (the one
    :func:`~precomp_host.core.layout.nested_url` rule); when only ``<file>.gz`` exists its bytes are
    sent with ``Content-Encoding: gzip`` (every browser accepts gzip). Settings: ``root`` (Path),
    ``cors`` (send :func:`cors_headers` on every response), ``content_encoding`` (label the gzip
    bytes as such).
    """

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = dict(cors_headers()) if self.server.cors else {}  # type: ignore[attr-defined]
        headers["Cache-Control"] = "no-cache"
        headers.update(extra)
        return headers

    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib name
        extra = preflight_headers() if self.server.cors else {}  # type: ignore[attr-defined]
        self.send_body(204, b"", self._headers(extra))

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        root: Path = self.server.root  # type: ignore[attr-defined]
        rel = posixpath.normpath(unquote(urlsplit(self.path).path)).lstrip("/")
        if rel.startswith("..") or rel in ("", "."):
            self.send_body(404, b"not found", self._headers({}))
            return
        media = {"Content-Type": media_type_for(rel)}
        for candidate in (rel, nested_url(rel)):
            plain = root / candidate
            packed = root / (candidate + GZIP.suffix)
            if plain.is_file() or packed.is_file():
                break
        if plain.is_file():
            self.send_body(200, plain.read_bytes(), self._headers(media))
        elif packed.is_file():
            if self.server.content_encoding:  # type: ignore[attr-defined]
                media["Content-Encoding"] = GZIP.name
            self.send_body(200, packed.read_bytes(), self._headers(media))
        else:
            self.send_body(404, b"not found", self._headers({}))
