"""What the doctor can find, and what it tells: :data:`RULES`, :class:`Finding`, :class:`Report`.

Each rule has a code (stable, for ``--json`` and CI), what is wrong, why the viewer shows what it
shows, and how to fix it on each kind of server :func:`detect_server` recognises from the
response headers (``Server``, ``x-amz-*``, ``x-goog-*``, ``Via``). A rule is an ``error`` when the
contract's client tier fails (the exit code is then 1), a ``warning`` when the readers cope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

Severity = Literal["error", "warning"]
ServerKind = Literal["nginx", "apache", "s3", "gcs", "precomp-host", "other"]

#: What a server is called in the advice.
SERVER_NAMES: dict[ServerKind, str] = {
    "nginx": "nginx", "apache": "Apache", "s3": "S3", "gcs": "Google Cloud Storage",
    "precomp-host": "precomp-host serve", "other": "the server",
}  # fmt: skip

_REDEPLOY = {
    "nginx": "regenerate the config with `precomp-host deploy nginx ROOT` and include it",
    "apache": "regenerate the config with `precomp-host deploy apache ROOT` and include it",
    "s3": "upload with `precomp-host deploy s3 ROOT --bucket B` (it sets the CORS rules and "
    "each object's metadata)",
    "gcs": "upload with `precomp-host deploy gcs ROOT` and run the script it writes",
    "precomp-host": "update precomp-host; this is a bug, please report it",
}


@dataclass(frozen=True)
class Rule:
    """One kind of problem: what it is, what the viewer does about it, how to fix it."""

    severity: Severity
    what: str
    why: str
    fix: dict[str, str]  # server kind -> advice; "*" for any other

    def advice(self, server: ServerKind) -> str:
        return self.fix.get(server) or _REDEPLOY.get(server, "") or self.fix["*"]


_CORS_FIX = {
    "nginx": "add `add_header Access-Control-Allow-Origin * always;` (without `always` nginx "
    "drops it on 4xx/5xx)",
    "apache": '`Header always set Access-Control-Allow-Origin "*"` (`Header set` skips error '
    "responses)",
    "s3": "put a CORS configuration on the bucket (`precomp-host deploy s3` writes cors.json: "
    "`aws s3api put-bucket-cors --bucket B --cors-configuration file://cors.json`)",
    "gcs": "`gcloud storage buckets update gs://B --cors-file=cors.json` (from "
    "`precomp-host deploy gcs`)",
    "*": "send `Access-Control-Allow-Origin: *` on every response, errors included",
}

RULES: dict[str, Rule] = {
    "unreachable": Rule(
        "error",
        "no answer from the server",
        "the viewer shows an error for the layer and nothing else",
        {"*": "check the URL, the port and that the server is running"},
    ),
    "info-missing": Rule(
        "error",
        "no info file here, and no site index listing datasets",
        "Neuroglancer says the data source cannot be found",
        {
            "*": "give the URL of the dataset's folder (the one holding `info`) or of the "
            "site root whose index.html `precomp-host deploy` wrote"
        },
    ),
    "named-file-missing": Rule(
        "error",
        "a file the info names is missing (segment properties, skeletons)",
        "Neuroglancer shows an error for that part of the layer (no segment names, no skeletons)",
        {"*": "upload the folder the info names, or remove its key from the info"},
    ),
    "redirect": Rule(
        "warning",
        "the URL redirects",
        "the viewer follows the redirect for every chunk: a round trip more each time",
        {"*": "give the viewer the final URL (https, trailing path) the redirect points to"},
    ),
    "info-invalid": Rule(
        "error",
        "the info file is not a valid precomputed info (JSON)",
        "Neuroglancer fails to parse it and shows an error instead of the layer",
        {
            "*": "serve the info file as written by the build; an HTML page here is usually a "
            "catch-all route (single-page app fallback) answering for a missing file"
        },
    ),
    "info-not-json": Rule(
        "error",
        "the info file is not sent as application/json",
        "Neuroglancer parses the body whatever its type, but the type says the server does not "
        "know the file (caches and CDNs may rewrite text/html; an HTML error page looks the same)",
        {
            "nginx": "map `info` to application/json (`location ~ /info$ { default_type "
            "application/json; }`), or regenerate with `precomp-host deploy nginx`",
            "apache": '`<Files "info">ForceType application/json</Files>`, or regenerate with '
            "`precomp-host deploy apache`",
            "s3": "set `Content-Type: application/json` on the info objects (`precomp-host deploy "
            "s3` does)",
            "*": "send `Content-Type: application/json` for info files",
        },
    ),
    "no-cors": Rule(
        "error",
        "no Access-Control-Allow-Origin header",
        "the browser hides every response from a viewer on another origin: Neuroglancer shows "
        "a network error for the layer and draws nothing",
        _CORS_FIX,
    ),
    "no-cors-on-errors": Rule(
        "error",
        "Access-Control-Allow-Origin on successes only, not on 404s",
        "a missing chunk reaches Neuroglancer as a network error (status 0) instead of a 404: "
        "it retries, logs errors and leaves the area unloaded rather than drawing it empty",
        _CORS_FIX,
    ),
    "cors-expose": Rule(
        "error",
        "Access-Control-Expose-Headers does not expose Content-Range, Content-Encoding, "
        "Content-Length and ETag",
        "a viewer on another origin cannot read the ranges of shard replies or validate its cache",
        {
            **_CORS_FIX,
            "nginx": 'add `add_header Access-Control-Expose-Headers "Content-Range, '
            'Content-Encoding, Content-Length, ETag" always;`',
            "apache": '`Header always set Access-Control-Expose-Headers "Content-Range, '
            'Content-Encoding, Content-Length, ETag"`',
            "*": "send `Access-Control-Expose-Headers: Content-Range, Content-Encoding, "
            "Content-Length, ETag`",
        },
    ),
    "preflight-rejected": Rule(
        "error",
        "the CORS preflight (OPTIONS with Range) is refused",
        "a browser preflights a cross-origin request whose headers are not CORS-safelisted "
        "(Range where the browser does not safelist it: shards, multi-resolution meshes; "
        "If-None-Match): when the preflight fails the request is never sent and that data "
        "never shows",
        {
            "nginx": "answer OPTIONS with 204 and Access-Control-Allow-Methods/-Headers "
            "(`if ($request_method = OPTIONS) { return 204; }` plus the headers), or "
            "regenerate with `precomp-host deploy nginx`",
            "apache": "answer OPTIONS with `Header always set Access-Control-Allow-Headers "
            '"Range"` and a RewriteRule to 204, or regenerate with '
            "`precomp-host deploy apache`",
            **{k: v for k, v in _CORS_FIX.items() if k in ("s3", "gcs")},
            "*": "answer OPTIONS with 2xx, Access-Control-Allow-Origin, "
            "Access-Control-Allow-Methods: GET, HEAD and Access-Control-Allow-Headers: Range",
        },
    ),
    "gzip-without-content-encoding": Rule(
        "error",
        "gzip bytes sent without Content-Encoding: gzip",
        "the viewer takes the compressed bytes for the data: raw chunks have the wrong size and "
        "fail, so Neuroglancer draws black (the S3 console's default for uploaded .gz files)",
        {
            "nginx": "serve the .gz files with `gzip_static on;` (the URL without .gz), never the "
            ".gz under the plain name",
            "apache": "`AddEncoding gzip .gz` with MultiViews, or regenerate with "
            "`precomp-host deploy apache`",
            "s3": "set `Content-Encoding: gzip` on these objects (`precomp-host deploy s3` does)",
            "gcs": "set `Content-Encoding: gzip` metadata on these objects (`precomp-host deploy "
            "gcs` does)",
            "*": "send `Content-Encoding: gzip` with gzip bodies",
        },
    ),
    "unrequested-encoding": Rule(
        "error",
        "a Content-Encoding the client did not offer in Accept-Encoding",
        "the browser cannot decode the body (ERR_CONTENT_DECODING_FAILED): the chunk fails and "
        "that area stays black (browsers offer br only over https)",
        {
            "nginx": "serve .br only through `brotli_static on;`, which checks Accept-Encoding",
            "apache": "send .br with a RewriteCond on `%{HTTP:Accept-Encoding} br`, or regenerate "
            "with `precomp-host deploy apache`",
            "s3": "store gzip, which every client offers (`precomp-host deploy s3` does), not br",
            "gcs": "store gzip, which every client offers (`precomp-host deploy gcs` does), not br",
            "*": "choose the coding from the request's Accept-Encoding",
        },
    ),
    "bad-content-encoding": Rule(
        "error",
        "the body does not decode with the Content-Encoding it is sent with",
        "the browser cannot decode it: the chunk fails and that area stays black",
        {"*": "send Content-Encoding only with bodies stored in that coding"},
    ),
    "coded-shard": Rule(
        "error",
        "shards sent with a Content-Encoding",
        "shards are read with Range; ranges of a coded body are ranges of the compressed bytes, "
        "so every chunk read from the shard is garbage and the scale stays black",
        {
            "nginx": "store shards plain and exclude *.shard from `gzip`/`gzip_static`",
            "apache": "exclude .shard from mod_deflate (`SetEnvIfNoCase Request_URI \\.shard$ "
            "no-gzip`) and store them plain",
            "s3": "upload shards without Content-Encoding (`precomp-host deploy s3` does)",
            "gcs": "upload shards without Content-Encoding (`precomp-host deploy gcs` does)",
            "*": "send shards without Content-Encoding",
        },
    ),
    "range-ignored": Rule(
        "error",
        "Range requests on shards answered with the whole file",
        "readers fetch shard indexes with Range; a 200 with the whole shard is refused or "
        "downloads gigabytes per chunk",
        {"*": "serve shards from a static file server that supports Range (206)"},
    ),
    "flat-url-404": Rule(
        "error",
        "chunks are 404 at the URL Neuroglancer asks for, but exist nested (x/y/z)",
        "Neuroglancer asks for `scale/x0-x1_y0-y1_z0-z1`; every chunk is a 404, read as empty, "
        "so the layer is black without an error",
        {
            "nginx": "rewrite flat names to the nested path (`precomp-host deploy nginx` emits the "
            "rewrite when the tree is nested)",
            "apache": '`RewriteRule "^(.*)/(-?\\d+--?\\d+)_(-?\\d+--?\\d+)_(-?\\d+--?\\d+)$" '
            '"$1/$2/$3/$4"`, or regenerate with `precomp-host deploy apache`',
            "s3": "object stores cannot rewrite: upload with `precomp-host deploy s3`, which "
            "stores chunks under their flat names",
            "gcs": "object stores cannot rewrite: upload with `precomp-host deploy gcs`, which "
            "stores chunks under their flat names",
            "*": "serve chunks under their flat names, or rewrite flat URLs to the nested path",
        },
    ),
    "missing-is-403": Rule(
        "error",
        "a chunk that does not exist is answered 403, not 404",
        "readers take only 404 as 'no data here': on a 403 the chunk fails (tensorstore and "
        "cloud-volume raise, Neuroglancer logs an error) instead of being drawn empty",
        {
            "s3": "grant s3:ListBucket on the bucket to the readers, so S3 answers 404 for "
            "missing keys",
            "gcs": "grant storage.objects.list (roles/storage.legacyBucketReader) so GCS "
            "answers 404",
            "nginx": "do not turn missing files into 403 (`deny`, `return 403`, autoindex off on a "
            "folder URL); answer 404",
            "apache": "answer 404 for missing files (check `Require`/`Options -Indexes` rules "
            "that match every URL)",
            "*": "answer 404 for files that do not exist",
        },
    ),
    "forbidden": Rule(
        "error",
        "files answered 403 Forbidden",
        "the file fails to load: an info, the whole layer; a chunk, its area stays black",
        {
            "s3": "make the objects readable (`precomp-host deploy s3 --public` sets the bucket "
            "policy)",
            "nginx": "make the files readable by nginx's user (and every folder above them "
            "searchable)",
            "apache": "`Require all granted` on the data folder, files readable by www-data; in "
            "a .htaccess, a later `Options X` replaces an earlier `Options FollowSymLinks` and "
            "RewriteRule then answers 403 (error log AH00670): write `Options +FollowSymLinks "
            "+MultiViews`",
            "*": "make the files readable by the server",
        },
    ),
    "gz-not-served": Rule(
        "error",
        "chunks are 404 but their .gz files are there",
        "the server does not send a stored .gz for the plain URL Neuroglancer asks for: every "
        "such chunk is a 404, drawn as empty, so the layer is black without an error",
        {
            "nginx": "`gzip_static on;` (or `always`) where the data is served",
            "apache": "`Options +MultiViews` with `AddEncoding gzip .gz` (needs mod_negotiation "
            "and AllowOverride Options), or regenerate with `precomp-host deploy apache`",
            "s3": "object stores cannot negotiate: upload with `precomp-host deploy s3`, which "
            "stores each .gz under the plain name with Content-Encoding: gzip",
            "gcs": "object stores cannot negotiate: upload with `precomp-host deploy gcs`",
            "*": "send the .gz for the plain URL, with Content-Encoding: gzip",
        },
    ),
    "no-chunks": Rule(
        "error",
        "not one of the chunks read exists (all 404)",
        "Neuroglancer draws missing chunks as empty: the layer is black, without an error",
        {"*": "upload the chunks, or check the URL is the dataset the info describes"},
    ),
    "server-error": Rule(
        "error",
        "unexpected status (5xx or other)",
        "the request fails and the viewer leaves that area unloaded",
        {"*": "read the server's error log for these URLs"},
    ),
    "truncated-body": Rule(
        "error",
        "bodies shorter than they should be (connection closed, or the coded stream ends early)",
        "the chunk fails to decode and that area stays black",
        {"*": "re-upload or rebuild these files; check the server's timeouts and disk"},
    ),
    "chunk-size-mismatch": Rule(
        "error",
        "raw chunks whose size is not the chunk's shape x channels x data type",
        "Neuroglancer refuses a raw chunk of the wrong size and draws nothing there; "
        "tensorstore and cloud-volume raise",
        {
            "*": "the files do not match the info (a different chunk size, data type, or a "
            "partial upload): rebuild or re-upload them"
        },
    ),
    "chunk-undecodable": Rule(
        "error",
        "chunks that do not decode with the info's encoding (jpeg, png, compressed_segmentation)",
        "the viewer fails on these chunks and draws nothing there",
        {"*": "rebuild or re-upload these files; check the info's encoding matches them"},
    ),
    "shard-invalid": Rule(
        "error",
        "shard files whose index does not parse or points past the file",
        "every chunk of the shard fails: that part of the scale stays black",
        {"*": "re-upload or rebuild these shards"},
    ),
    "mesh-fragment-missing": Rule(
        "error",
        "mesh manifests name fragments that are not there",
        "Neuroglancer shows the segment without (part of) its mesh",
        {"*": "upload the mesh folder in full; rebuild the meshes if the manifests are stale"},
    ),
    "missing-chunks": Rule(
        "warning",
        "chunks answered 404",
        "Neuroglancer draws missing chunks as empty (black or no segment): right for sparse "
        "data, wrong if these should exist",
        {"*": "if they should exist, upload them; otherwise nothing to do"},
    ),
    "inconsistent-scales": Rule(
        "warning",
        "scales that do not cover the same physical extent",
        "Neuroglancer draws the scales misaligned when zooming",
        {"*": "check size x resolution of each scale (a downsampled scale rounds up)"},
    ),
}


def detect_server(headers: Iterable[tuple[str, str]]) -> tuple[ServerKind, str]:
    """The kind of server behind a response and a short description (Server, Via)."""
    names = {k.lower(): v for k, v in headers}
    server = names.get("server", "")
    via = names.get("via")
    kind: ServerKind
    if any(k.startswith("x-amz") for k in names) or server.lower().startswith("amazons3"):
        kind = "s3"
    elif any(k.startswith("x-goog") for k in names) or server == "UploadServer":
        kind = "gcs"
    elif server.lower().startswith("nginx"):
        kind = "nginx"
    elif server.lower().startswith("apache"):
        kind = "apache"
    elif "precomp-host" in server.lower():
        kind = "precomp-host"
    else:
        kind = "other"
    label = server or SERVER_NAMES[kind]
    if via:
        label += f" via {via}"
    return kind, label


@dataclass
class Finding:
    """One rule broken: how often, one example, and a detail of that example."""

    code: str
    count: int
    example: str
    detail: str

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    def line(self, server: ServerKind) -> str:
        """The one line the CLI prints."""
        r = self.rule
        return (
            f"{r.severity.upper()} {self.code} ({self.count}x, e.g. {self.example}): {r.what}"
            f"{f' [{self.detail}]' if self.detail else ''}. Why: {r.why}. "
            f"Fix on {SERVER_NAMES[server]}: {r.advice(server)}."
        )


@dataclass
class Report:
    """What :func:`~precomp_host.check.doctor.check` found."""

    url: str
    datasets: list[str] = field(default_factory=list)
    server: ServerKind = "other"
    server_label: str = ""
    findings: list[Finding] = field(default_factory=list)
    requests: int = 0
    chunks_decoded: int = 0  # distinct chunks fetched and decoded without a problem
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the client tier passes: no finding of severity ``error``."""
        return not any(f.rule.severity == "error" for f in self.findings)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "server": {"kind": self.server, "label": self.server_label},
            "datasets": self.datasets,
            "requests": self.requests,
            "chunks_decoded": self.chunks_decoded,
            "elapsed": round(self.elapsed, 3),
            "findings": [
                {"code": f.code, "severity": f.rule.severity, "count": f.count,
                 "example": f.example, "detail": f.detail, "what": f.rule.what,
                 "why": f.rule.why, "fix": f.rule.advice(self.server)}
                for f in self.findings
            ],
        }  # fmt: skip
