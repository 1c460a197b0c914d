"""``precomp-host serve``: the middleware on a threaded server, with pages and live reload.

The central class is :class:`DevServer`. It serves every dataset under a root folder through
:class:`~precomp_host.middleware.PrecomputedMiddleware` (``Cache-Control: no-cache``, so each
fetch revalidates with a cheap 304 and a rebuilt chunk shows at once), and adds

* ``/``: an index of the datasets (type, data type, size, scales, encodings, mesh, segment
  properties and annotation layers) with "open in Neuroglancer" links that open each dataset
  with its annotation layers;
* ``/{dataset}/annotations/live/<name>/``: the dataset's NeuroTrALE annotation store as the
  annotation layers ``points`` and ``lines``
  (:class:`~precomp_host.host.live_annotations.LiveAnnotations`), regenerated when the store
  changes, which live reload reports like any data change;
* ``/viewer/#!{state}``: a page that embeds Neuroglancer and reloads it, keeping its state (the
  URL fragment), when the :class:`~precomp_host.host.watch.DataWatcher` reports a change;
* ``/v/<token>/``: when the ``neuroglancer`` package is installed, its built client, same-origin
  (it is the Python-integration build: it must live under ``/v/<token>/`` and it opens an event
  stream at ``/events/<token>``, answered here with keep-alives); otherwise links go to the
  public Neuroglancer app, which may fetch from ``http://127.0.0.1`` (a potentially trustworthy
  origin, W3C Secure Contexts §3.1);
* :data:`EVENTS_ROUTE`: a server-sent event stream of the data epoch, which our pages follow
  (handed to the templates, never typed in them).

The datasets listed are :func:`~precomp_host.core.datasets.find_datasets`' (the deployed index
lists the same), and each link opens :func:`~precomp_host.core.viewer.dataset_state`.

Just over 400 lines: the pages, the event stream and the server loop of one command.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import socket
import threading
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from ..core.datasets import (
    dataset_name,
    find_annotation_layers,
    find_datasets,
    is_annotation_layer,
    read_dataset,
)
from ..core.headers import DEV_CACHE_CONTROL, IMMUTABLE, REVALIDATE
from ..core.layout import FLAT
from ..core.media_types import HTML, JSON
from ..core.templates import environment
from ..core.viewer import (
    PUBLIC_VIEWER,
    annotation_layer_name,
    dataset_state,
    dataset_url,
    fragment,
)
from .api import make_api_app
from .live_annotations import LiveAnnotations
from .middleware import PrecomputedMiddleware
from .watch import DataWatcher, Epoch

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from wsgiref.types import StartResponse, WSGIEnvironment

    from .live_annotations import Builder
    from .write_policy import WritePolicy

log = logging.getLogger(__name__)

#: The ``/v/<token>/`` token of the bundled client; any token is accepted, this one is linked.
TOKEN = "precomp"
#: The server-sent event stream of the data epoch that our pages follow.
EVENTS_ROUTE = "/__precomp__/events"
#: The current epoch as JSON, for scripts that poll instead of streaming.
EPOCH_ROUTE = "/__precomp__/epoch"
#: Seconds between keep-alive comments on event streams (proxies drop idle connections).
KEEPALIVE = 15.0


def neuroglancer_client_dir() -> Path | None:
    """The folder of the built Neuroglancer client inside the installed package, if any."""
    spec = importlib.util.find_spec("neuroglancer")
    if spec is None or spec.origin is None:
        return None
    client = Path(spec.origin).parent / "static" / "client"
    return client if (client / "index.html").is_file() else None


@dataclass(frozen=True)
class ScaleSummary:
    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    chunk_size: tuple[int, int, int]
    encoding: str
    sharded: bool


@dataclass(frozen=True)
class DatasetSummary:
    """What the index page shows of one dataset."""

    path: str  # relative to the root, "" for the root itself
    name: str
    error: str | None = None
    type: str = ""
    data_type: str = ""
    num_channels: int = 0
    scales: tuple[ScaleSummary, ...] = ()
    mesh: str | None = None
    segment_properties: str | None = None
    #: Content encodings stored for the first chunk of the first scale ("identity" = plain).
    stored: tuple[str, ...] = ()
    #: Its annotation collections (paths from the root): stored ones, then live ones.
    annotations: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def state(self, base_url: str) -> dict[str, Any]:
        """The Neuroglancer state showing this dataset and its annotation layers, served
        under ``base_url``."""
        layers = [
            (annotation_layer_name(self.path, a), dataset_url(base_url, a))
            for a in self.annotations
        ]
        url = dataset_url(base_url, self.path)
        return dataset_state(url, self.type or "image", self.name, layers)


def summarize(root: str | os.PathLike[str], rel: str, live: Sequence[str] = ()) -> DatasetSummary:
    """Read the ``info`` of the dataset at ``root/rel`` (and stat one chunk's siblings).

    :param live: the dataset's live annotation layers (paths from the root).
    """
    folder = Path(root, rel)
    name = dataset_name(root, rel)
    if is_annotation_layer(folder):  # a collection on its own: opened alone
        return DatasetSummary(rel, name, type="annotation")
    try:
        ds = read_dataset(folder)
    except (OSError, ValueError) as e:
        return DatasetSummary(rel, name, error=str(e))
    scales = tuple(
        ScaleSummary(s.key, s.size, s.resolution, s.chunk_size, s.encoding, s.is_sharded)
        for s in ds.scales
    )
    stored: tuple[str, ...] = ()
    first = ds.scales[0] if ds.scales else None
    if first is not None and not first.is_sharded:
        # Resolved as a request for the chunk would be: flat or nested, plain and siblings.
        found = PrecomputedMiddleware(None, folder).find(FLAT.path_for(first.chunk_key((0, 0, 0))))
        if found is not None:
            stored = tuple("identity" if e is None else e for e in found.files)
    return DatasetSummary(
        rel,
        name,
        type=ds.type,
        data_type=ds.data_type,
        num_channels=ds.num_channels,
        scales=scales,
        mesh=ds.mesh,
        segment_properties=ds.segment_properties,
        stored=stored,
        annotations=(*find_annotation_layers(root, rel), *live),
    )


class _NoDelayServer(ThreadedWSGIServer):
    # werkzeug writes headers and body in separate sends; without TCP_NODELAY Nagle's
    # algorithm and the browser's delayed ACK add ~40 ms to every chunk.
    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class DevServer:
    """The dev server: files, pages, client, event streams and the watcher, on one port.

    ::

        with DevServer("/data/datasets", port=0) as server:
            print(server.url)
            server.serve_forever()

    :param root: the folder of datasets.
    :param host: the interface to listen on (loopback by default: the data is not public).
    :param port: the port, 0 for a free one.
    :param poll: watch with a ``PollingObserver`` (network mounts, Docker).
    :param watch: set to False to serve without a watcher.
    :param policy: who may write annotations (default: nobody).
    :param client_dir: the built Neuroglancer client to serve under ``/v/<token>/``; default
        the installed ``neuroglancer`` package's, None if it is not installed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        poll: bool = False,
        watch: bool = True,
        client_dir: Path | None | bool = True,
        cache_control: str | None = DEV_CACHE_CONTROL,
        policy: WritePolicy | None = None,
        annotation_builder: Builder | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(str(root))
        self.client_dir = neuroglancer_client_dir() if client_dir is True else client_dir or None
        self.epoch = Epoch()
        # Live annotation layers behind the stored files: a stored file of the same URL wins.
        self.live = (
            LiveAnnotations(self.pages, self.root, annotation_builder, cache_control=cache_control)
            if annotation_builder is not None
            else None
        )
        self.files = PrecomputedMiddleware(
            self.live or self.pages, self.root, cache_control=cache_control
        )
        self.templates = environment()
        self.watcher = DataWatcher(self.root, self._changed, poll=poll) if watch else None
        # The NeuroTrALE API (annotations, TIFF tiles, /api/) in front of the files.
        api = make_api_app(self.files, self.root, policy, on_write=self._written)
        self.server = _NoDelayServer(host, port, api)
        self._closing = threading.Event()
        self._streams = 0
        self._streams_cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._watcher_starter: threading.Thread | None = None
        #: Set once the watcher observes the root (changes before that are not reported).
        self.watching = threading.Event()
        self._state_generation = 0
        self.routes = Map(
            [
                Rule("/", endpoint=self._page_index),
                Rule("/viewer/", endpoint=self._page_viewer),
                Rule("/v/<token>/", endpoint=self._page_client, defaults={"name": "index.html"}),
                Rule("/v/<token>/<path:name>", endpoint=self._page_client),
                Rule("/events/<token>", endpoint=self._page_ng_events),
                Rule("/state/<token>", endpoint=self._page_ng_state, methods=["POST"]),
                Rule("/action/<token>", endpoint=self._page_ng_action, methods=["POST"]),
                Rule(EVENTS_ROUTE, endpoint=self._page_events),
                Rule(EPOCH_ROUTE, endpoint=self._page_epoch),
            ]
        )

    @property
    def url(self) -> str:
        host = self.server.host
        if host in ("", "0.0.0.0", "::"):  # listening everywhere: link to this machine
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}"

    def _written(self, dataset: str) -> None:
        # The native watcher sees every file of the store change and reports it once settled;
        # the polling one watches dataset folders only, not the store's block folders, and
        # without a watcher (or before it observes the root) nothing would: then the API's
        # own report is the signal.
        if self.watcher is None or self.watcher.poll or not self.watching.is_set():
            self._changed({dataset})

    def _changed(self, datasets: set[str]) -> None:
        self.files.invalidate()
        n = self.epoch.bump()
        log.info("epoch %d: %s changed", n, ", ".join(sorted(datasets)) or "(root)")

    # -- lifecycle -------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        # In a thread: a native observer adds one inotify watch per folder before it returns,
        # and the first response must not wait for that on a tree of many folders.
        if self.watcher is not None and self._watcher_starter is None:
            watcher = self.watcher

            def start() -> None:
                watcher.start()
                self.watching.set()

            self._watcher_starter = threading.Thread(target=start, name="watch-start", daemon=True)
            self._watcher_starter.start()

    def start(self) -> DevServer:
        """Serve in a background thread (tests, embedding); see :meth:`serve_forever`."""
        self._start_watcher()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` or an interrupt."""
        self._start_watcher()
        if self._thread is None:
            self.server.serve_forever()
        else:
            self._thread.join()

    def stop(self) -> None:
        self._closing.set()
        self.epoch.bump()  # wake the streams so they end
        with self._streams_cond:
            self._streams_cond.wait_for(lambda: self._streams == 0, timeout=5)
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()
        if self.watcher is not None and self._watcher_starter is not None:
            self._watcher_starter.join()
            self.watcher.stop()
        if self.live is not None:
            self.live.close()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pages -----------------------------------------------------------------------------

    def pages(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app behind the files: pages, client and event streams."""
        adapter = self.routes.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException:  # NotFound, MethodNotAllowed, RequestRedirect: as a file would be
            return self.files.not_found(environ, start_response)
        request = Request(environ)
        handler: Callable[..., Response] = endpoint  # a _page_* method (the Map's endpoints)
        try:
            response = handler(request, **args)
        except NotFound:
            return self.files.not_found(environ, start_response)
        except HTTPException as e:
            return e(environ, start_response)
        return response(environ, start_response)

    def _viewer_url(self, state: dict[str, Any]) -> str:
        if self.client_dir is not None:
            return "/viewer/" + fragment(state)
        return PUBLIC_VIEWER + fragment(state)

    def _page_index(self, request: Request) -> Response:
        base = request.host_url.rstrip("/")
        rows = []
        for rel in find_datasets(self.root):
            live = self.live.layers(rel) if self.live is not None else []
            summary = summarize(self.root, rel, live)
            state = summary.state(base)
            rows.append(
                {
                    "summary": summary,
                    "url": dataset_url(base, rel),
                    "open": self._viewer_url(state) if not summary.error else None,
                    "client": f"/v/{TOKEN}/{fragment(state)}" if self.client_dir else None,
                    "public": PUBLIC_VIEWER + fragment(state),
                    "annotations": [
                        (annotation_layer_name(rel, a), dataset_url(base, a))
                        for a in summary.annotations
                    ],
                }
            )
        html = self.templates.get_template("index.html.j2").render(
            root=str(self.root),
            datasets=rows,
            epoch=self.epoch.value,
            has_client=self.client_dir is not None,
            public_viewer=PUBLIC_VIEWER,
            events_url=EVENTS_ROUTE,
        )
        return Response(html, content_type=HTML, headers={"Cache-Control": REVALIDATE})

    def _page_viewer(self, request: Request) -> Response:
        client = f"/v/{TOKEN}/" if self.client_dir is not None else PUBLIC_VIEWER
        html = self.templates.get_template("viewer.html.j2").render(
            client=client,
            same_origin=self.client_dir is not None,
            epoch=self.epoch.value,
            events_url=EVENTS_ROUTE,
        )
        return Response(html, content_type=HTML, headers={"Cache-Control": REVALIDATE})

    def _page_client(self, request: Request, token: str, name: str) -> Response:
        if self.client_dir is None:
            return Response("neuroglancer is not installed\n", status=404)
        # The client's own table of its files' media types (.wasm must be application/wasm).
        from neuroglancer.static import guess_mime_type_from_path

        response = send_from_directory(
            self.client_dir, name, request.environ, mimetype=guess_mime_type_from_path(name)
        )
        # The bundle's file names carry a content hash: let the browser keep them, so that a
        # live reload only revalidates index.html and the data (Chrome's reload does not
        # revalidate fresh subresources).
        immutable = name != "index.html"
        response.headers["Cache-Control"] = IMMUTABLE if immutable else REVALIDATE
        return response

    def _stream(self, events: Iterator[str]) -> Response:
        def body() -> Iterator[bytes]:
            with self._streams_cond:
                self._streams += 1
            try:
                for event in events:
                    yield event.encode()
            finally:
                with self._streams_cond:
                    self._streams -= 1
                    self._streams_cond.notify_all()

        headers = {"Cache-Control": REVALIDATE, "X-Accel-Buffering": "no"}
        return Response(body(), content_type="text/event-stream", headers=headers)

    def _page_ng_events(self, request: Request, token: str) -> Response:
        # The Python-integration client subscribes to state updates; we never push any, but
        # the stream must stay open or the client shows "Connecting to Python server".
        def events() -> Iterator[str]:
            yield ": precomp-host\n\n"
            while not self._closing.wait(KEEPALIVE):
                yield ": keep-alive\n\n"

        return self._stream(events())

    def _page_ng_state(self, request: Request, token: str) -> Response:
        # The client posts its state here and expects the new server generation back.
        self._state_generation += 1
        return Response(json.dumps({"g": str(self._state_generation)}), content_type=JSON)

    def _page_ng_action(self, request: Request, token: str) -> Response:
        return Response("", status=200)

    def _page_events(self, request: Request) -> Response:
        def events() -> Iterator[str]:
            seen = self.epoch.value
            yield f"retry: 500\nevent: epoch\ndata: {seen}\n\n"
            while not self._closing.is_set():
                now = self.epoch.wait(seen, timeout=KEEPALIVE)
                if self._closing.is_set():
                    return
                if now > seen:
                    seen = now
                    yield f"event: epoch\ndata: {now}\n\n"
                else:
                    yield ": keep-alive\n\n"

        return self._stream(events())

    def _page_epoch(self, request: Request) -> Response:
        return Response(json.dumps({"epoch": self.epoch.value}), content_type=JSON)


def serve(
    root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    open_browser: bool = False,
    poll: bool = False,
    *,
    ready: Callable[[str], None] | None = None,
    policy: WritePolicy | None = None,
    annotation_builder: Builder | None = None,
) -> None:
    """Run the dev server until interrupted (``precomp-host serve``).

    :param ready: called with the base URL once the server listens (the CLI prints it).
    :param annotation_builder: generates the live annotation layers from a dataset's store
        (none without it).
    """
    server = DevServer(
        root, host, port, poll=poll, policy=policy, annotation_builder=annotation_builder
    )
    previous = _stop_on_sigterm()
    try:
        if ready is not None:
            ready(server.url)
        if open_browser:
            webbrowser.open(server.url + "/")
        server.serve_forever()
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(Exception):
    """SIGTERM arrived (``kill``, systemd, a container stopping)."""


def _stop_on_sigterm() -> Any:
    """Make SIGTERM end :func:`serve` as Ctrl+C does; returns the handler it replaced.

    Without it SIGTERM kills the process where it stands, and open event streams end without
    their last chunk. SIGINT is left as the process got it: a shell starts background jobs with
    SIGINT ignored (POSIX, "Shell Execution Environment") so that Ctrl+C in the terminal spares
    them, and a server started that way keeps that choice.
    """
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread

    def terminated(_signum: int, _frame: object) -> None:
        raise _Terminated

    return signal.signal(signal.SIGTERM, terminated)
