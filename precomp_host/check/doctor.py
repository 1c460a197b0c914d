"""The doctor itself: :func:`check` a URL the way the viewers read it.

It fetches ``info`` (or the site index's datasets), picks chunks at every scale (all of them
with ``full``), shard indexes and chunks with Range, mesh manifests and their fragments, segment
properties, sends each with the ``Accept-Encoding`` of each reader (:data:`~.http.CLIENTS`) and
the ``Origin`` of the viewer, preflights a Range request, and probes a chunk that cannot exist.
Every body is decoded: the content coding, then the chunk encoding (raw size, jpeg, png,
compressed_segmentation), shard indexes parsed. What fails lands in a :class:`~.findings.Report`.
"""

from __future__ import annotations

import functools
import html.parser
import itertools
import json
import logging
import math
import re
import threading
import time
import urllib.parse
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..build.chunk_codecs import make_codec
from ..core import layout, media_types
from ..core.datasets import ANNOTATION_INFO_TYPE as ANNOTATIONS_TYPE
from ..core.encodings import ENCODINGS, GZIP
from ..core.model import INFO_NAME, LEGACY_MESH_TYPE, MULTILOD_MESH_TYPE, Dataset, Scale
from ..core.progress import Progress
from ..core.sharding import (
    InvalidShardingError,
    compressed_morton_code,
    decode_compressed_morton,
    parse_minishard_index,
    parse_shard_index,
)
from ..core.viewer import PUBLIC_VIEWER
from .findings import RULES, Finding, Report, detect_server
from .http import CLIENTS, MUST_EXPOSE, Reply, request

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..core.model import ChunkKey

log = logging.getLogger(__name__)

#: The viewer's origin when none is given: the public Neuroglancer app.
DEFAULT_ORIGIN = PUBLIC_VIEWER.rstrip("/")
#: Requests in flight at once by default (a browser opens 6 per host over HTTP/1.1).
DEFAULT_CONCURRENCY = 8
#: Jobs queued per request in flight: enough to keep the pool busy, few enough to stay small.
WINDOW = 4
#: Segment ids whose meshes are checked without ``full`` (all listed ids with it, up to this).
SAMPLE_SEGMENTS, MAX_SEGMENTS = 3, 1000
#: Redirects followed from the URL given (a browser follows up to 20; a chain is a mistake).
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
_ALIASES = {alias: e.name for e in ENCODINGS.values() for alias in (e.name, *e.aliases)}
_GZIP_MAGIC = b"\x1f\x8b"


def _natural(url: str) -> tuple[str | int, ...]:
    """``url`` ordered with its numbers as numbers: scale ``4_4_4`` before ``16_16_16``."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", url)))


class _Tally:
    """Findings as they come, from several threads: a count and one example of each.

    The example is the first URL in natural order, not the first to arrive: threads finish in
    any order, and a report (and a CI diff of ``--json``) must not change from run to run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.found: dict[str, Finding] = {}

    def note(self, code: str, url: str, detail: str = "") -> None:
        assert code in RULES, code
        with self._lock:
            f = self.found.get(code)
            if f is None:
                self.found[code] = Finding(code, 1, url, detail)
                return
            f.count += 1
            if _natural(url) < _natural(f.example):
                f.example, f.detail = url, detail


@dataclass
class _Work:
    """One chunk to fetch and check."""

    scale: Scale
    key: ChunkKey
    accepts: tuple[str, ...]


@dataclass
class _Counters:
    requests: int = 0
    decoded: set[str] = field(default_factory=set)  # URLs of the chunks decoded
    chunks_read: int = 0
    chunks_found: int = 0
    received: int = 0
    servers: list[list[tuple[str, str]]] = field(default_factory=list)


def _offered(accept: str) -> set[str]:
    tokens = (t.split(";")[0].strip().lower() for t in accept.split(","))
    return {_ALIASES.get(t, t) for t in tokens}


class _LinkParser(html.parser.HTMLParser):
    """The ``href`` of every link of a page whose target ends in ``info`` (a dataset's)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href") if tag == "a" else None
        path = urllib.parse.urlsplit(href or "").path.rstrip("/")
        if href and (path == INFO_NAME or path.endswith("/" + INFO_NAME)):
            self.links.append(href)


class _Doctor:
    def __init__(self, url: str, origin: str, full: bool, concurrency: int, timeout: float) -> None:
        self.url = url
        self.origin = origin
        self.full = full
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.tally = _Tally()
        self.n = _Counters()
        self.layers: list[str] = []  # the datasets (volumes, annotation layers) found
        self._lock = threading.Lock()

    # -- requests -----------------------------------------------------------------------------

    def get(
        self,
        url: str,
        accept: str | None = CLIENTS["browser (https)"],
        method: str = "GET",
        *,
        cors: bool = True,
        **extra: str,
    ) -> Reply | None:
        """A request as a browser page on ``origin`` sends it; None (noted) without an answer."""
        hdrs: dict[str, str | None] = {"Origin": self.origin, "Accept-Encoding": accept}
        hdrs.update({k.replace("_", "-"): v for k, v in extra.items()})
        try:
            reply = request(url, method, hdrs, timeout=self.timeout)
        except OSError as e:
            self.tally.note("unreachable", url, str(e))
            return None
        with self._lock:
            self.n.requests += 1
            self.n.received += len(reply.body)
            if len(self.n.servers) < 8:
                self.n.servers.append(list(reply.headers))
        if cors:
            self.cors(reply)
        return reply

    def cors(self, reply: Reply) -> None:
        allowed = reply.header("Access-Control-Allow-Origin")
        if allowed not in ("*", self.origin):
            code = "no-cors" if reply.status < 400 else "no-cors-on-errors"
            self.tally.note(code, reply.url, f"status {reply.status}")
            return
        exposed = reply.tokens("Access-Control-Expose-Headers")
        if reply.status < 300 and "*" not in exposed and not exposed >= MUST_EXPOSE:
            missing = ", ".join(sorted(MUST_EXPOSE - exposed))
            self.tally.note("cors-expose", reply.url, f"missing {missing}")

    def status(self, reply: Reply, *, missing: str = "missing-chunks") -> bool:
        """True for a 200/206; otherwise the status is noted (404 as ``missing``)."""
        if reply.status in (200, 206):
            return True
        if reply.status == 404:
            self.tally.note(missing, reply.url)
        elif reply.status == 403:
            self.tally.note("forbidden", reply.url)
        else:
            self.tally.note("server-error", reply.url, f"status {reply.status}")
        return False

    def body(self, reply: Reply, accept: str | None) -> bytes | None:
        """The decoded body (content coding undone), or None (noted) when a reader fails."""
        if reply.truncated:
            cl = reply.header("Content-Length")
            self.tally.note("truncated-body", reply.url, f"{len(reply.body)} of {cl} bytes")
            return None
        sent = (reply.header("Content-Encoding") or "").strip().lower()
        if sent in ("", "identity"):
            if reply.body.startswith(_GZIP_MAGIC):
                try:
                    GZIP.decompress(reply.body)
                except (OSError, EOFError, zlib.error):
                    return reply.body  # data that happens to start like gzip
                self.tally.note("gzip-without-content-encoding", reply.url)
                return None
            return reply.body
        name = _ALIASES.get(sent, sent)
        if accept is None or name not in _offered(accept):
            self.tally.note("unrequested-encoding", reply.url,
                            f"{sent} for Accept-Encoding: {accept}")  # fmt: skip
            return None
        if name not in ENCODINGS:
            return None  # deflate or zstd, which the client takes: we have no decoder to judge
        try:
            return ENCODINGS[name].decompress(reply.body)
        except EOFError:
            self.tally.note("truncated-body", reply.url, f"the {sent} stream ends early")
        except Exception as e:  # zlib.error, brotli.error: whatever the decoder raises
            self.tally.note("bad-content-encoding", reply.url, f"{sent}: {e}")
        return None

    # -- info and datasets --------------------------------------------------------------------

    def datasets(self) -> list[tuple[str, Dataset]]:
        url = self.url
        reply = self.get(f"{url}/{INFO_NAME}")
        for _ in range(MAX_REDIRECTS):
            location = reply.header("Location") if reply is not None else None
            if reply is None or reply.status not in REDIRECTS or location is None:
                break
            # The viewer follows (fetch's "follow"), at a round trip per request: noted, and
            # the rest is checked where it leads.
            target = urllib.parse.urljoin(reply.url, location)
            self.tally.note("redirect", reply.url, f"to {target}")
            url = self.url = target.removesuffix("/" + INFO_NAME).rstrip("/")
            reply = self.get(f"{url}/{INFO_NAME}")
        if reply is None:
            return []
        if reply.status != 404:
            ds = self.info(reply)
            return [(url, ds)] if ds is not None else []
        # A page for people, not read by the viewer: its CORS does not matter.
        index = self.get(url + "/", cors=False)
        links: list[str] = []
        if index is not None and index.status == 200:
            page = self.body(index, CLIENTS["browser (https)"])
            parser = _LinkParser()
            parser.feed((page or b"").decode("utf-8", "replace"))
            links = list(dict.fromkeys(parser.links))
        if not links:
            self.tally.note("info-missing", reply.url, "404, and no index listing datasets")
            return []
        found = []
        for href in links:
            info_url = urllib.parse.urljoin(url + "/", href)
            r = self.get(info_url)
            ds = self.info(r) if r is not None else None
            if ds is not None:
                found.append((info_url[: -len(INFO_NAME) - 1], ds))
        return found

    def json_file(self, reply: Reply, missing: str = "info-missing") -> Any:
        """A JSON file's document; its status, media type and coding checked."""
        if not self.status(reply, missing=missing):
            return None
        data = self.body(reply, CLIENTS["browser (https)"])
        if data is None:
            return None
        if reply.media_type() != media_types.JSON:
            self.tally.note("info-not-json", reply.url, f"Content-Type: {reply.media_type()}")
        try:
            return json.loads(data)
        except ValueError as e:
            self.tally.note("info-invalid", reply.url, f"not JSON: {e}")
            return None

    def info(self, reply: Reply) -> Dataset | None:
        doc = self.json_file(reply)
        if doc is None:
            return None
        base = reply.url[: -len(INFO_NAME) - 1]
        if isinstance(doc, dict) and doc.get("@type") == ANNOTATIONS_TYPE:
            self.layers.append(base)
            self.annotations(base, doc)
            return None
        try:
            ds = Dataset.from_json(doc)
        except ValueError as e:
            self.tally.note("info-invalid", reply.url, str(e))
            return None
        self.layers.append(base)
        self.scales(reply.url, ds)
        skeletons = ds.extra.get("skeletons")
        if isinstance(skeletons, str):
            r = self.get(f"{base}/{skeletons}/{INFO_NAME}")
            if r is not None:
                self.json_file(r, "named-file-missing")
        return ds

    def annotations(self, base: str, doc: dict[str, Any]) -> None:
        """An annotation layer: the first cell of its coarsest spatial level (404: empty)."""
        spatial = doc.get("spatial")
        key = spatial[0].get("key") if isinstance(spatial, list) and spatial else None
        if isinstance(key, str):
            r = self.get(f"{base}/{key}/0_0_0")
            if r is not None and r.status != 404 and self.status(r):
                self.body(r, CLIENTS["browser (https)"])

    def scales(self, url: str, ds: Dataset) -> None:
        first = ds.scales[0]
        for s in ds.scales[1:]:
            for axis in range(3):
                want = first.size[axis] * first.resolution[axis]
                got = s.size[axis] * s.resolution[axis]
                if abs(got - want) > s.resolution[axis]:
                    detail = f"scale {s.key} axis {'xyz'[axis]}: {got:g} vs {want:g}"
                    self.tally.note("inconsistent-scales", url, detail)
                    return

    # -- chunks -------------------------------------------------------------------------------

    def pick(self, scale: Scale) -> list[ChunkKey]:
        """Chunks to read without ``full``: the first, the middle and the last of the grid."""
        g = scale.grid_shape()
        grids = [(0, 0, 0), (g[0] // 2, g[1] // 2, g[2] // 2), (g[0] - 1, g[1] - 1, g[2] - 1)]
        return list(dict.fromkeys(scale.chunk_key(p) for p in grids))

    def work(self, ds: Dataset) -> Iterator[_Work]:
        accepts = tuple(dict.fromkeys(CLIENTS.values()))
        for scale in ds.scales:
            if scale.is_sharded:
                continue
            sampled = set(self.pick(scale))
            keys = scale.iter_chunk_keys() if self.full else iter(sorted(sampled))
            for i, key in enumerate(keys):
                mine = accepts if key in sampled else (accepts[i % len(accepts)],)
                yield _Work(scale, key, mine)

    def decode(self, ds: Dataset, scale: Scale, key: ChunkKey, data: bytes, url: str) -> None:
        x, y, z = key.shape
        shape = (z, y, x, ds.num_channels)
        dtype = np.dtype(ds.data_type)
        if scale.encoding == "raw":
            want = math.prod(shape) * dtype.itemsize
            if len(data) != want:
                self.tally.note("chunk-size-mismatch", url, f"{len(data)} bytes, expected {want}")
                return
        options: dict[str, Any] = {}
        if scale.encoding == "compressed_segmentation":
            options["block_size"] = scale.extra.get("compressed_segmentation_block_size", 8)
        try:
            codec = make_codec(scale.encoding, **options)
        except (KeyError, ValueError, TypeError):
            return  # an encoding we do not know: not ours to judge
        try:
            codec.decode(data, shape, dtype)
        except Exception as e:  # the codecs raise ValueError, PIL's errors, cseg's
            self.tally.note("chunk-undecodable", url, f"{scale.encoding}: {e}")
            return
        with self._lock:
            self.n.decoded.add(url)

    def chunk(self, base: str, ds: Dataset, w: _Work) -> None:
        url = f"{base}/{w.scale.key}/{w.key.name}"
        for accept in w.accepts:
            reply = self.get(url, accept)
            if reply is None:
                return
            if reply.status == 404 and self.elsewhere(base, w.key, url, accept):
                return
            with self._lock:
                self.n.chunks_read += 1
                self.n.chunks_found += reply.status != 404
            if not self.status(reply):
                return
            data = self.body(reply, accept)
            if data is not None:
                self.decode(ds, w.scale, w.key, data, url)

    def elsewhere(self, base: str, key: ChunkKey, url: str, accept: str) -> bool:
        """For a chunk that is a 404: whether it is stored where this server does not look
        (nested, or as a .gz); noted if so."""
        nested = f"{base}/{layout.NESTED.path_for(key)}"
        reply = self.get(nested, accept)
        if reply is not None and reply.status == 200:
            self.tally.note("flat-url-404", url, "the nested path answers 200")
            return True
        for stored in (url, nested):
            reply = self.get(stored + GZIP.suffix, accept)
            if reply is not None and reply.status == 200:
                self.tally.note("gz-not-served", url, f"{stored + GZIP.suffix} answers 200")
                return True
        return False

    def missing_probe(self, base: str, ds: Dataset) -> None:
        """A chunk past the end of the volume, which no one stores: 404 (with CORS)."""
        s = ds.scales[0]
        start, stop = s.stop, tuple(e + c for e, c in zip(s.stop, s.chunk_size, strict=True))
        name = "_".join(f"{a}-{b}" for a, b in zip(start, stop, strict=True))
        reply = self.get(f"{base}/{s.key}/{name}")
        if reply is None or reply.status == 404:
            return
        if reply.status == 403:
            self.tally.note("missing-is-403", reply.url)
        else:
            self.tally.note("server-error", reply.url, f"status {reply.status} for a missing chunk")

    def preflight(self, url: str) -> None:
        reply = self.get(url, None, "OPTIONS", Access_Control_Request_Method="GET",
                         Access_Control_Request_Headers="range")  # fmt: skip
        if reply is None:
            return
        problem = None
        if not 200 <= reply.status < 300:
            problem = f"status {reply.status}"
        elif reply.header("Access-Control-Allow-Origin") not in ("*", self.origin):
            problem = "no Access-Control-Allow-Origin"
        elif not reply.tokens("Access-Control-Allow-Headers") & {"range", "*"}:
            problem = "Access-Control-Allow-Headers lacks Range"
        elif (m := reply.tokens("Access-Control-Allow-Methods")) and not m & {"get", "*"}:
            problem = "Access-Control-Allow-Methods lacks GET"
        if problem:
            self.tally.note("preflight-rejected", url, problem)

    # -- shards -------------------------------------------------------------------------------

    def shard_work(self, base: str, ds: Dataset) -> Iterator[tuple[Scale, str, set[int] | None]]:
        """(scale, shard URL, chunk ids to read or None for all) of each shard to check."""
        for scale in ds.scales:
            spec = scale.sharding
            if spec is None:
                continue
            grid = scale.grid_shape()
            wanted: dict[str, set[int]] = {}
            keys = scale.iter_chunk_keys() if self.full else iter(self.pick(scale))
            for key in keys:
                cid = compressed_morton_code(scale.grid_index(key), grid)
                shard = spec.shard_name(spec.locate(cid)[0])
                wanted.setdefault(shard, set()).add(cid)
            for shard, ids in wanted.items():
                yield scale, f"{base}/{scale.key}/{shard}", None if self.full else ids

    def shard(self, ds: Dataset, scale: Scale, url: str, ids: set[int] | None) -> None:
        spec = scale.sharding
        assert spec is not None
        accept = CLIENTS["browser (https)"]

        def ranged(start: int, stop: int) -> bytes | None:
            reply = self.get(url, accept, Range=f"bytes={start}-{stop - 1}")
            if reply is None or not self.status(reply):
                return None
            coding = reply.header("Content-Encoding")
            if coding not in (None, "identity"):
                self.tally.note("coded-shard", url, f"Content-Encoding: {coding}")
                return None
            if reply.status == 200:
                self.tally.note("range-ignored", url, f"200 with {len(reply.body)} bytes")
                return None
            if reply.truncated or len(reply.body) != stop - start:
                self.tally.note("truncated-body", url, f"{len(reply.body)} of {stop - start} bytes")
                return None
            return reply.body

        index = ranged(0, spec.shard_index_size)
        if index is None:
            return
        grid = scale.grid_shape()
        try:
            for start, stop in parse_shard_index(spec, index):
                if start == stop:
                    continue
                minishard = ranged(start, stop)
                if minishard is None:
                    return
                for entry in parse_minishard_index(spec, minishard):
                    if ids is not None and entry.chunk_id not in ids:
                        continue
                    data = ranged(entry.start, entry.stop)
                    if data is None:
                        return
                    key = scale.chunk_key(decode_compressed_morton(entry.chunk_id, grid))
                    self.decode(ds, scale, key, spec.decode_data(data), f"{url} ({key.name})")
        except (InvalidShardingError, OSError, EOFError, zlib.error, IndexError) as e:
            self.tally.note("shard-invalid", url, str(e))

    # -- meshes and segment properties --------------------------------------------------------

    def segment_ids(self, base: str, ds: Dataset) -> list[str]:
        if ds.segment_properties is None:
            return []
        reply = self.get(f"{base}/{ds.segment_properties}/{INFO_NAME}")
        doc = self.json_file(reply, "named-file-missing") if reply is not None else None
        inline = doc.get("inline") if isinstance(doc, dict) else None
        ids = inline.get("ids") if isinstance(inline, dict) else None
        if not isinstance(ids, list):
            return []
        return [str(i) for i in ids[: MAX_SEGMENTS if self.full else SAMPLE_SEGMENTS]]

    def meshes(self, base: str, ds: Dataset, ids: list[str]) -> None:
        if ds.mesh is None:
            return
        mesh = f"{base}/{ds.mesh}"
        reply = self.get(f"{mesh}/{INFO_NAME}")
        doc = self.json_file(reply) if reply is not None and reply.status != 404 else None
        kind = doc.get("@type") if isinstance(doc, dict) else LEGACY_MESH_TYPE
        for seg in ids:
            if kind == MULTILOD_MESH_TYPE:
                index = self.get(f"{mesh}/{seg}.index")
                if index is not None and index.status != 404:
                    self.status(index)
                continue
            manifest = self.get(f"{mesh}/{seg}:0")
            if manifest is None or manifest.status == 404:
                continue  # a segment without a mesh
            doc = self.json_file(manifest)
            frags = doc.get("fragments") if isinstance(doc, dict) else None
            for frag in frags if isinstance(frags, list) else []:
                r = self.get(f"{mesh}/{urllib.parse.quote(str(frag), safe=':')}")
                if r is not None and r.status == 404:
                    self.tally.note("mesh-fragment-missing", r.url, f"named by {seg}:0")
                elif r is not None and self.status(r):
                    self.body(r, CLIENTS["browser (https)"])

    # -- the whole run ------------------------------------------------------------------------

    def run(self, progress: Callable[[Progress], None] | None) -> Report:
        t0 = time.monotonic()
        found = self.datasets()
        jobs: list[Iterator[Callable[[], None]]] = []
        total = 0
        for base, ds in found:
            self.preflight(f"{base}/{INFO_NAME}")
            self.missing_probe(base, ds)
            # Chunk jobs are made as the pool takes them: a million-chunk --full stays small.
            total += sum(self.count(s) for s in ds.scales if not s.is_sharded)
            jobs.append(self.chunk_jobs(base, ds))
            shards = [functools.partial(self.shard, ds, *s) for s in self.shard_work(base, ds)]
            mesh = functools.partial(self.meshes, base, ds, self.segment_ids(base, ds))
            total += len(shards) + 1
            jobs.append(iter([*shards, mesh]))
        done = 0
        with ThreadPoolExecutor(self.concurrency) as pool:
            pending: set[Future[None]] = set()
            for job in itertools.chain.from_iterable(jobs):
                pending.add(pool.submit(job))
                if len(pending) < WINDOW * self.concurrency:
                    continue
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                done += self.collect(finished, done, total, t0, progress)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                done += self.collect(finished, done, total, t0, progress)
        self.finish()
        kind, label = detect_server(self.n.servers[0] if self.n.servers else [])
        return Report(
            url=self.url,
            datasets=self.layers,
            server=kind,
            server_label=label,
            findings=sorted(
                self.tally.found.values(), key=lambda f: (RULES[f.code].severity != "error", f.code)
            ),  # fmt: skip
            requests=self.n.requests,
            chunks_decoded=len(self.n.decoded),
            elapsed=time.monotonic() - t0,
        )

    def chunk_jobs(self, base: str, ds: Dataset) -> Iterator[Callable[[], None]]:
        for w in self.work(ds):
            yield functools.partial(self.chunk, base, ds, w)

    def count(self, scale: Scale) -> int:
        """Chunk jobs :meth:`work` makes for ``scale``."""
        return scale.num_chunks() if self.full else len(self.pick(scale))

    def collect(
        self,
        finished: set[Future[None]],
        done: int,
        total: int,
        t0: float,
        progress: Callable[[Progress], None] | None,
    ) -> int:
        """Raise what a job raised; report progress; return how many finished."""
        for i, fut in enumerate(finished, 1):
            fut.result()
            if progress is not None:
                progress(Progress(done + i, total, self.n.received, time.monotonic() - t0))
        return len(finished)

    def finish(self) -> None:
        found = self.tally.found
        # Without CORS at all, the errors' missing header is the same problem, said once.
        if "no-cors" in found:
            found.pop("no-cors-on-errors", None)
        # Every chunk a 404: not sparse data, a dataset with nothing behind its info.
        if self.n.chunks_read and not self.n.chunks_found and "missing-chunks" in found:
            f = found.pop("missing-chunks")
            self.tally.note("no-chunks", f.example, f"{self.n.chunks_read} chunks read")


def check(
    url: str,
    *,
    origin: str = DEFAULT_ORIGIN,
    full: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Callable[[Progress], None] | None = None,
    timeout: float = 30.0,
) -> Report:
    """Check the dataset (or the site index's datasets) at ``url`` as the viewers read it.

    >>> report = check("http://127.0.0.1:8000/img")
    >>> report.ok, [f.code for f in report.findings]

    :param url: a dataset's folder URL (``precomputed://`` accepted), or a site root whose
        ``index.html`` links to datasets' ``info`` files.
    :param origin: the viewer's origin, sent as ``Origin`` (CORS is checked against it).
    :param full: read every chunk, not three per scale.
    :param concurrency: requests in flight at once.
    :param progress: called after each chunk (or shard, or mesh set) is checked.
    :param timeout: seconds to wait for each answer.
    """
    url = url.removeprefix("precomputed://").rstrip("/")
    if url.endswith("/" + INFO_NAME):
        url = url[: -len(INFO_NAME) - 1]
    return _Doctor(url, origin.rstrip("/"), full, concurrency, timeout).run(progress)
