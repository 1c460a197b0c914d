"""Open a Neuroglancer view in headless Chromium and record what happened: :class:`ViewResult`.

:func:`open_view` loads the real client with a state in the URL fragment, records every request
to the data origin (status, ``Content-Encoding``, CORS header, network failure), console errors
and chunk-queue statistics while it waits for loading to settle (bounded), then reads the canvas
the way Neuroglancer's own screenshot code does (``display.draw()`` then read the canvas in the
same task, before the drawing buffer is discarded) and measures each data panel's pixels.
:func:`check_view` turns a result into a list of problems; the positive tests assert it is empty,
the negative controls assert it names the failure they planted.

The state builders (:func:`image_state`, :func:`segmentation_state`) turn off everything that
draws without data (axis lines, scale bar, default annotations such as bounding boxes, the
slices shown in the 3D view) on a black background, so a lit pixel means data.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from playwright.sync_api import ConsoleMessage, Frame, Page, Playwright, Request, Response

CHROMIUM = "/usr/bin/chromium"
#: Issue #6: a quiet, reproducible browser; WebGL2 through SwiftShader since there is no GPU.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
)
VIEWPORT = {"width": 800, "height": 600}

#: A pixel whose brightest channel is above this is "lit" (the background is pure black).
LIT_LEVEL = 24
#: A data panel with fewer lit pixels than this fraction counts as blank.
MIN_LIT_FRACTION = 0.02

# Neuroglancer's chunk statistics layout (src/chunk_manager/base.ts): for each ChunkState and
# ChunkPriorityTier, numChunkMemoryStatistics (=3) numbers, the first being the chunk count.
_JS_PROBE = """
async () => {
  const v = window.viewer;
  if (!v || !v.display) return null;
  const stats = await v.chunkManager.chunkQueueManager.getStatistics();
  const count = (s, state) => {
    let n = 0;
    for (let tier = 0; tier < 3; ++tier) n += s[(state * 3 + tier) * 3];
    return n;
  };
  let loaded = 0, pending = 0, failed = 0;
  for (const s of stats.values()) {
    loaded += count(s, 0) + count(s, 1) + count(s, 2);  // GPU, system, worker memory
    pending += count(s, 3) + count(s, 4) + count(s, 5); // downloading, queued, new
    failed += count(s, 6);                              // FAILED
  }
  let ready = false;
  try { ready = v.display.isReady(); } catch (e) { ready = false; }
  return {ready, loaded, pending, failed};
}
"""

# Neuroglancer's screenshot code (python/screenshot handler): draw, then read the canvas in the
# same task, since the WebGL drawing buffer is not preserved after compositing.
_JS_CAPTURE = """
() => {
  const d = window.viewer.display;
  d.draw();
  const c = d.canvas;
  const png = c.toDataURL('image/png');
  const box = c.getBoundingClientRect();
  const sx = c.width / box.width, sy = c.height / box.height;
  const panels = [];
  for (const p of d.panels) {
    if (!p.visible || !p.element.classList.contains('neuroglancer-rendered-data-panel')) continue;
    const r = p.element.getBoundingClientRect();
    panels.push({
      kind: ('sliceView' in p) ? 'cross-section' : '3d',
      x: Math.round((r.left - box.left) * sx), y: Math.round((r.top - box.top) * sy),
      w: Math.round(r.width * sx), h: Math.round(r.height * sy),
    });
  }
  return {png, panels};
}
"""


@dataclass
class DataRequest:
    """One request the page made to the data origin, as the browser saw it."""

    url: str
    path: str  # relative to the data origin, with the query
    status: int | None = None  # None: no response reached the page
    content_encoding: str | None = None
    allow_origin: str | None = None
    failure: str | None = None  # net::ERR_FAILED for a CORS block, for example
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and self.status in (200, 206, 304)


@dataclass
class PanelStats:
    """Pixel statistics of one data panel of the canvas."""

    kind: str  # "cross-section" or "3d"
    width: int
    height: int
    lit_fraction: float
    mean: float

    @property
    def blank(self) -> bool:
        return self.lit_fraction < MIN_LIT_FRACTION


@dataclass
class ViewResult:
    """Everything :func:`open_view` observed."""

    url: str
    settled: bool
    seconds: float
    requests: list[DataRequest]
    console_errors: list[str]
    loaded_chunks: int = 0
    pending_chunks: int = 0
    failed_chunks: int = 0
    panels: list[PanelStats] = field(default_factory=list)
    screenshot: bytes = b""

    def matching(self, predicate: str) -> list[DataRequest]:
        """The requests whose path contains ``predicate``."""
        return [r for r in self.requests if predicate in r.path]

    def summary(self) -> str:
        lines = [
            f"settled={self.settled} in {self.seconds:.1f}s; chunks loaded={self.loaded_chunks}"
            f" pending={self.pending_chunks} failed={self.failed_chunks}",
            *(f"panel {p.kind} {p.width}x{p.height} lit={p.lit_fraction:.3f}" for p in self.panels),
            *(
                f"  {r.status} enc={r.content_encoding} acao={r.allow_origin} "
                f"fail={r.failure} {r.path}"
                for r in self.requests[:40]
            ),
            *(f"  console: {e[:300]}" for e in self.console_errors[:10]),
        ]
        return "\n".join(lines)


def missing(what: str) -> None:
    """A browser or client is missing: fail in CI (``CI`` set), else skip loudly."""
    import pytest

    message = f"{what}; tests/run.sh installs it (Debian chromium, pip extra 'test')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(f"!!! END-TO-END TESTS SKIPPED: {message}")


def neuroglancer_url(client_origin: str, token: str, state: dict[str, Any]) -> str:
    """The client URL for ``state``: the Python build under ``/v/<token>/``, state in ``#!``."""
    fragment = quote(json.dumps(state, separators=(",", ":")), safe="")
    return f"{client_origin}/v/{token}/#!{fragment}"


def _view_settings(
    shape: Sequence[int],
    resolution: Sequence[float],
    layout: str,
    offset: Sequence[int] = (0, 0, 0),
) -> dict[str, Any]:
    # With "dimensions" given, crossSectionScale is in those units (voxels) per screen pixel;
    # without it Neuroglancer reads the zoom in metres per pixel and the view is blank (issue #6).
    extent = max(shape[0], shape[1])
    return {
        "dimensions": {axis: [r * 1e-9, "m"] for axis, r in zip("xyz", resolution, strict=True)},
        "position": [o + s / 2 for o, s in zip(offset, shape, strict=True)],
        "crossSectionScale": extent / 420,
        "projectionScale": extent * 2.5,
        "layout": layout,
        "showAxisLines": False,
        "showScaleBar": False,
        "showDefaultAnnotations": False,
        "showSlices": False,
        "crossSectionBackgroundColor": "#000000",
        "projectionBackgroundColor": "#000000",
        "selectedLayer": {"visible": False},
        "statistics": {"visible": False},
    }


def image_state(
    source: str,
    shape: Sequence[int],
    resolution: Sequence[float] = (1.0, 1.0, 1.0),
    layout: str = "xy",
    offset: Sequence[int] = (0, 0, 0),
) -> dict[str, Any]:
    """A one-layer image view of ``source`` (``precomputed://http://...``), zoomed to fit the
    volume that starts at voxel ``offset``."""
    state = _view_settings(shape, resolution, layout, offset)
    state["layers"] = [{"type": "image", "source": source, "name": "image"}]
    return state


def segmentation_state(
    source: str,
    shape: Sequence[int],
    segments: Sequence[int],
    resolution: Sequence[float] = (1.0, 1.0, 1.0),
    layout: str = "xy-3d",
) -> dict[str, Any]:
    """A segmentation view with ``segments`` selected, so their meshes load into the 3D panel."""
    state = _view_settings(shape, resolution, layout)
    state["layers"] = [
        {
            "type": "segmentation",
            "source": source,
            "name": "segmentation",
            "segments": [str(s) for s in segments],
        }
    ]
    return state


class Browser:
    """Chromium from Debian driven by Playwright; each session gets a fresh profile."""

    def __init__(self, playwright: Playwright, executable: str = CHROMIUM) -> None:
        self.playwright = playwright
        self.executable = executable

    @contextmanager
    def session(self, data_origin: str) -> Iterator[ViewSession]:
        """A fresh browser profile and page, recording requests to ``data_origin``."""
        profile = tempfile.mkdtemp(prefix="precomp-e2e-chromium-")
        try:
            # Playwright takes the fresh --user-data-dir only through a persistent context.
            context = self.playwright.chromium.launch_persistent_context(
                profile,
                executable_path=self.executable,
                headless=True,
                args=list(CHROMIUM_ARGS),
                viewport=VIEWPORT,  # type: ignore[arg-type]
            )
            try:
                yield ViewSession(context.new_page(), data_origin)
            finally:
                context.close()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    def open_view(self, url: str, data_origin: str, timeout: float = 30.0) -> ViewResult:
        """Load ``url`` in a fresh session and :meth:`ViewSession.settle`."""
        with self.session(data_origin) as session:
            session.page.goto(url, wait_until="load")
            return session.settle(timeout=timeout)


class ViewSession:
    """One page: what it requested from the data origin, its console errors, and its view.

    Neuroglancer runs in the page itself or in an iframe (the dev server's live-reload viewer
    page); :meth:`frame` finds it by its ``/v/<token>/`` URL.
    """

    def __init__(self, page: Page, data_origin: str) -> None:
        self.page = page
        self.data_origin = data_origin
        self.requests: list[DataRequest] = []
        self.console_errors: list[str] = []
        self._by_request: dict[int, DataRequest] = {}
        page.on("request", self._on_request)
        page.on("response", self._on_response)
        page.on("requestfinished", self._on_finished)
        page.on("requestfailed", self._on_failed)
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))

    def _record(self, request: Request) -> DataRequest | None:
        if not request.url.startswith(self.data_origin + "/"):
            return None
        # When the client shares the data's origin (the dev server), its pages, bundle and
        # never-ending event streams are not data requests.
        path = request.url[len(self.data_origin) :]
        if request.resource_type in ("document", "eventsource") or path.startswith("/v/"):
            return None
        rec = self._by_request.get(id(request))
        if rec is None:
            rec = DataRequest(request.url, path)
            self._by_request[id(request)] = rec
            self.requests.append(rec)
        return rec

    def _on_request(self, request: Request) -> None:
        self._record(request)

    def _on_response(self, response: Response) -> None:
        rec = self._record(response.request)
        if rec is not None:
            headers = response.headers
            rec.status = response.status
            rec.content_encoding = headers.get("content-encoding")
            rec.allow_origin = headers.get("access-control-allow-origin")

    def _on_finished(self, request: Request) -> None:
        rec = self._record(request)
        if rec is not None:
            rec.done = True

    def _on_failed(self, request: Request) -> None:
        rec = self._record(request)
        if rec is not None:
            rec.failure = request.failure or "failed"
            rec.done = True

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def frame(self) -> Frame:
        for frame in self.page.frames:
            if "/v/" in frame.url:
                return frame
        return self.page.main_frame

    def _evaluate(self, script: str) -> Any:
        from playwright.sync_api import Error as PlaywrightError  # the tests skip without it

        try:
            return self.frame().evaluate(script)
        except PlaywrightError:
            return None  # the frame is navigating (a reload); ask again on the next tick

    def settle(
        self, *, timeout: float = 30.0, quiet: float = 0.5, stuck: float = 3.0, since: int = 0
    ) -> ViewResult:
        """Wait until loading settles, at most ``timeout`` seconds, then capture the view.

        Settled: the display reports ready (every visible chunk and mesh on the GPU), no chunk is
        queued or downloading and no data request is in flight, for ``quiet`` seconds, and at
        least one data request was made after the first ``since``. A view that cannot settle (a
        layer whose ``info`` failed never becomes ready) ends early once nothing has moved for
        ``stuck`` seconds, unsettled.
        """
        start = time.monotonic()
        settled = False
        probe: dict[str, Any] | None = None
        calm_since: float | None = None
        last_change = time.monotonic()
        last_seen: tuple[Any, ...] = ()
        while time.monotonic() - start < timeout:
            self.page.wait_for_timeout(100)
            probe = self._evaluate(_JS_PROBE)
            new = self.requests[since:]
            in_flight = sum(1 for r in new if not r.done)
            seen = (len(new), in_flight, json.dumps(probe, sort_keys=True))
            now = time.monotonic()
            if seen != last_seen:
                last_seen, last_change = seen, now
            if new and in_flight == 0 and probe is not None and probe["pending"] == 0:
                if probe["ready"]:
                    calm_since = calm_since if calm_since is not None else now
                    if now - calm_since >= quiet:
                        settled = True
                        break
                elif now - last_change >= stuck:
                    break  # nothing moves any more and the view is not ready: it never will be
            else:
                calm_since = None
                if new and in_flight == 0 and now - last_change >= stuck:
                    break
        result = ViewResult(
            url=self.frame().url,
            settled=settled,
            seconds=time.monotonic() - start,
            requests=self.requests[since:],
            console_errors=list(self.console_errors),
        )
        if probe is not None:
            result.loaded_chunks = probe["loaded"]
            result.pending_chunks = probe["pending"]
            result.failed_chunks = probe["failed"]
            capture = self._evaluate(_JS_CAPTURE)
            if capture is not None:
                result.screenshot = base64.b64decode(capture["png"].split(",", 1)[1])
                result.panels = measure_panels(result.screenshot, capture["panels"])
        return result


def measure_panels(png: bytes, boxes: list[dict[str, Any]]) -> list[PanelStats]:
    """Pixel statistics of each panel box (canvas pixels) of a canvas PNG."""
    with Image.open(io.BytesIO(png)) as img:
        rgb = np.asarray(img.convert("RGB"))
    out = []
    for box in boxes:
        x, y, w, h = box["x"], box["y"], box["w"], box["h"]
        crop = rgb[max(y, 0) : y + h, max(x, 0) : x + w]
        if crop.size == 0:
            out.append(PanelStats(box["kind"], w, h, 0.0, 0.0))
            continue
        lit = crop.max(axis=2) > LIT_LEVEL
        out.append(PanelStats(box["kind"], w, h, float(lit.mean()), float(crop.mean())))
    return out


#: Console messages that mean a request or a chunk went wrong (Chromium's wording for a CORS
#: block, Neuroglancer's for fetch and decode failures).
CONSOLE_PROBLEMS = ("cors", "access-control", "failed to fetch", "decod", "error retrieving")


def check_view(
    result: ViewResult,
    *,
    min_chunks: int = 1,
    meshes: bool = False,
) -> list[str]:
    """What is wrong with a view that should show a dataset; empty when it renders.

    :param min_chunks: chunk requests that must be answered 200/206 (or 304).
    :param meshes: the layer is a segmentation with segments selected: mesh manifests and
        fragments must be fetched and the 3D panel must not be blank.
    """
    problems = []
    info = [r for r in result.requests if r.path.split("?")[0].endswith("/info")]
    if not any(r.ok for r in info):
        problems.append("info not loaded")
    chunks = [r for r in result.requests if is_chunk_path(r.path)]
    good = [r for r in chunks if r.ok]
    if len(good) < min_chunks:
        problems.append(
            f"only {len(good)} of {len(chunks)} chunk requests answered (< {min_chunks})"
        )
    if result.failed_chunks:
        problems.append(f"{result.failed_chunks} chunks in the FAILED state")
    bad_console = [
        e for e in result.console_errors if any(p in e.lower() for p in CONSOLE_PROBLEMS)
    ]
    if bad_console:
        problems.append(f"console errors: {bad_console[:3]}")
    if not result.settled:
        problems.append("loading did not settle")
    cross = [p for p in result.panels if p.kind == "cross-section"]
    if not cross:
        problems.append("no cross-section panel")
    problems.extend(f"{p.kind} panel blank (lit {p.lit_fraction:.3f})" for p in cross if p.blank)
    if meshes:
        manifests = [r for r in result.requests if _is_manifest(r.path)]
        if not any(r.ok for r in manifests):
            problems.append("no mesh manifest fetched")
        fragments = [r for r in result.requests if _is_fragment(r.path)]
        if not any(r.ok for r in fragments):
            problems.append("no mesh fragment fetched")
        threed = [p for p in result.panels if p.kind == "3d"]
        if not threed or any(p.blank for p in threed):
            problems.append("3d panel blank")
    return problems


def _last(path: str) -> str:
    return path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def is_chunk_path(path: str) -> bool:
    # The flat chunk name Neuroglancer asks for (spec volume.md): x0-x1_y0-y1_z0-z1.
    parts = _last(path).split("_")
    return len(parts) == 3 and all("-" in p and p.replace("-", "").isdigit() for p in parts)


def _is_manifest(path: str) -> bool:
    name = _last(path).replace("%3A", ":")
    return name.count(":") == 1 and name.replace(":", "").isdigit()


def _is_fragment(path: str) -> bool:
    return "/mesh" in path.split("?")[0] and not _is_manifest(path) and _last(path) != "info"
