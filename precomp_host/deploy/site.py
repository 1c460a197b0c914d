"""Deployment files for a folder of datasets: nginx, Apache, S3 and GCS, rendered from templates.

The central function is :func:`render`, which turns a :class:`Site` (what is served where) into
the text of one target's files (:func:`render_nginx`, :func:`render_apache`: one file each).
Nothing in ``templates/`` is typed twice: the rewrite pattern
(:mod:`~precomp_host.core.layout`), the sibling suffixes (:mod:`~precomp_host.core.encodings`),
the media types (:mod:`~precomp_host.core.media_types`) and the CORS and cache headers
(:mod:`~precomp_host.core.headers`) are passed in from here. :func:`write_files` writes a
target's files into a folder, and :func:`render_index` the site's ``index.html`` into the root
(the datasets of :func:`~precomp_host.core.datasets.find_datasets`, the links of
:mod:`~precomp_host.core.viewer`); uploads to S3 and GCS live in
:mod:`precomp_host.deploy.objectstores`.

The servers choose the variant with patterns from :func:`accept_regex`, the same rule as
:func:`precomp_host.core.encodings.choose` (q-values, the last entry wins), rather than with
nginx's gzip_static/brotli_static: Debian's brotli_static misreads Accept-Encoding when ``br``
ends the last request header (measured: it falls back to gzip, or 404s a br-only file).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..core import headers, layout, media_types
from ..core.datasets import dataset_name, find_datasets, read_dataset
from ..core.encodings import BROTLI, ENCODINGS, GZIP
from ..core.templates import environment
from ..core.viewer import PAGE_BASE, page_relative_link
from .objectstores import (
    render_gcs_cors,
    render_s3_cors,
    render_s3_policy,
    write_gcs_staging,
)
from .targets import Target

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: Internal URL namespace of the nginx stages (never reachable from outside: ``internal``).
NGINX_INTERNAL = "/.precomp"
#: How many leading path levels the Apache configs check for symlinks (404 when one is).
SYMLINK_DEPTH = 8
#: Apache modules each form needs (``a2enmod``): the templates' headers and ``next_steps``.
APACHE_VHOST_MODULES = ("rewrite", "headers", "deflate", "buffer", "mime")
APACHE_HTACCESS_MODULES = ("rewrite", "headers", "mime")
#: Apache vhost: the largest inflated body held in memory so that a Range over it gets a 206
#: (larger ones are streamed and a Range gets the whole body, 200). A chunk is rarely above a
#: few MiB; 128^3 uint64 is 16 MiB.
APACHE_INFLATE_BUFFER = 64 * 1024 * 1024
# nginx's gzip_static always looks for X.gz: GZIP.suffix must stay ".gz" (a test checks it).

# Config templates are written with block tags on their own lines.
_ENV = environment().overlay(trim_blocks=True, lstrip_blocks=True)


def render_template(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)


def accept_regex(coding: str) -> str:
    """A PCRE that matches an ``Accept-Encoding`` value accepting ``coding`` (case-blind use).

    Mirrors :func:`precomp_host.core.encodings.parse_accept_encoding`: the coding (or an alias) is
    listed with no q or a q above 0, and is not listed again later (the last entry wins).
    ``*`` is not matched: it never turns compression on while identity exists.
    """
    q_value = r"(?!0(?:\.0*)?\s*(?:,|$))(?:1(?:\.0*)?|0(?:\.\d*)?)"

    def listed(token: str) -> str:  # "token", or "token;q=..." with q > 0, listed last
        return (
            rf"(?:^|,)\s*{token}\s*(?:;\s*q\s*=\s*{q_value}\s*)?(?=,|$)"
            rf"(?!.*,\s*{token}\s*(?:[;,]|$))"
        )

    name = re.escape(coding)
    aliases = "|".join(re.escape(a) for a in ENCODINGS[coding].aliases)
    if not aliases:
        return listed(name)
    # An alias counts only when the coding's own name is not listed at all.
    absent = rf"^(?!.*(?:^|,)\s*{name}\s*(?:[;,]|$))"
    return rf"{listed(name)}|{absent}.*?{listed(f'(?:{aliases})')}"


@dataclass(frozen=True)
class Site:
    """A folder of datasets served at a URL prefix.

    :param root: the folder (absolute; a dataset itself or a folder of datasets).
    :param url_prefix: ``""`` or ``/data``-like, no trailing slash.
    :param listen: ``HOST:PORT`` for a complete server block / ``<VirtualHost>``, else a snippet.
    :param brotli: nginx only: also send ``.br`` siblings (needs the brotli_static module).
    """

    root: Path
    url_prefix: str = ""
    listen: str | None = None
    brotli: bool = False
    cache_control: str = headers.DEPLOY_CACHE_CONTROL

    @classmethod
    def make(cls, root: str | Path, url_prefix: str = "", **kw: Any) -> Site:
        prefix = "/" + url_prefix.strip("/") if url_prefix.strip("/") else ""
        if re.search(r"[\s\"'$;{}\\]", prefix):
            raise ValueError(f"unsafe URL prefix for a server config: {url_prefix!r}")
        root = Path(root).resolve()
        if re.search(r"[\s\"'$;{}\\]", str(root)):
            raise ValueError(f"unsafe root path for a server config: {root}")
        return cls(root, prefix, **kw)


def _common(site: Site) -> dict[str, Any]:
    return {
        "root": str(site.root),
        "root_regex": re.escape(str(site.root)),
        "prefix": site.url_prefix,
        "listen": site.listen,
        "cors": list(headers.cors_headers().items()),
        "preflight": list(headers.preflight_headers().items()),
        "methods": headers.ALLOW_METHODS,
        "methods_regex": "^(?:" + "|".join(headers.ALLOW_METHODS) + ")$",
        "cache_control": site.cache_control,
        "chunk_pattern": layout.URL_PATTERN,
        "chunk_replacement": layout.URL_REPLACEMENT,
        "manifest_pattern": layout.MESH_MANIFEST_PATTERN,
        "manifest_fallbacks": layout.MESH_MANIFEST_FALLBACKS,
        "manifest_type": media_types.media_type_for("mesh/1:0"),
        "type_rules": [(regex, media) for _, regex, media in media_types.RULES],
        "default_type": media_types.OCTET_STREAM,
        "symlink_depth": SYMLINK_DEPTH,
        "all_encodings": [{"name": e.name, "suffix": e.suffix} for e in ENCODINGS.values()],
    }


def served_encodings(site: Site, server: Literal["nginx", "apache"]) -> tuple[str, ...]:
    """The content codings ``server`` sends for ``site``, in :data:`ENCODINGS` order.

    Apache sends ``.br`` siblings with core directives; nginx needs the brotli_static module,
    so it sends them only when ``site.brotli`` says the module is there.
    """
    return tuple(
        e.name for e in ENCODINGS.values() if server == "apache" or site.brotli or e is not BROTLI
    )


def _encodings(site: Site, server: Literal["nginx", "apache"]) -> list[dict[str, str]]:
    """Template context for the content codings ``server`` sends (the tie order)."""
    names = served_encodings(site, server)
    return [
        {"name": e.name, "suffix": e.suffix, "accept_regex": accept_regex(e.name)}
        for e in ENCODINGS.values()
        if e.name in names
    ]


def render_nginx(site: Site) -> str:
    """``nginx.conf``: a snippet for inside ``server {}``, or a server block with ``listen``."""
    return render_template(
        "nginx.conf.j2",
        **_common(site),
        served_encodings=_encodings(site, "nginx"),
        internal=NGINX_INTERNAL,
        gzip_suffix=GZIP.suffix,
    )


def _with_sibling_suffix(regex: str) -> str:
    """A :data:`~precomp_host.core.media_types.RULES` regex that also matches ``X.gz``/``X.br``."""
    if not regex.endswith("$"):
        raise ValueError(f"media type rule not anchored at the end: {regex}")
    suffixes = "|".join(re.escape(e.suffix) for e in ENCODINGS.values())
    return f"{regex[:-1]}(?:{suffixes})?$"


def render_apache(site: Site, form: Literal["vhost", "htaccess"] = "vhost") -> str:
    """``<VirtualHost>`` (or a block to include in one without ``listen``), or ``.htaccess``.

    Only the vhost form decodes gz-only files for clients without gzip: mod_deflate's INFLATE
    filter does not run after a per-directory (``.htaccess``) rewrite.
    """
    context = _common(site)
    context["served_encodings"] = _encodings(site, "apache")
    context["type_rules"] = [
        (_with_sibling_suffix(rx), media) for rx, media in context["type_rules"]
    ]
    return render_template(
        f"apache-{form}.conf.j2",
        **context,
        inflate=form == "vhost",
        inflate_buffer=APACHE_INFLATE_BUFFER,
        modules=APACHE_VHOST_MODULES if form == "vhost" else APACHE_HTACCESS_MODULES,
        gzip_suffix=GZIP.suffix,
    )


def render_index(site: Site) -> str:
    """The site's ``index.html``: each dataset with a link that opens it in Neuroglancer.

    The datasets are :func:`~precomp_host.core.datasets.find_datasets`' (the dev server lists
    the same); a folder whose ``info`` cannot be read is left out with a warning.
    """
    rows = []
    for rel in find_datasets(site.root):
        try:
            ds = read_dataset(site.root / rel)
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", site.root / rel, exc)
            continue
        scale = ds.scales[0]
        rows.append(
            {
                "path": rel,
                "name": rel or site.root.name,
                "type": ds.type,
                "data_type": ds.data_type,
                "size": "×".join(str(n) for n in scale.size),
                "resolution": " × ".join(f"{r:g}" for r in scale.resolution),
                "scales": len(ds.scales),
                "encoding": scale.encoding,
                "link": page_relative_link(rel, ds.type, dataset_name(site.root, rel)),
            }
        )
    return render_template("site-index.html.j2", datasets=rows, page_base=PAGE_BASE)


def render(target: Target, site: Site, bucket: str = "BUCKET") -> dict[str, str]:
    """File name -> text of every file of ``target`` (index.html excluded)."""
    makers: dict[Target, Callable[[], dict[str, str]]] = {
        "nginx": lambda: {"nginx.conf": render_nginx(site)},
        "apache": lambda: {
            "apache.conf": render_apache(site, "vhost"),
            ".htaccess": render_apache(site, "htaccess"),
        },
        "s3": lambda: {
            "cors.json": render_s3_cors(),
            "bucket-policy.json": render_s3_policy(bucket, site.url_prefix),
        },
        "gcs": lambda: {"cors.json": render_gcs_cors()},
    }
    return makers[target]()


def write_files(
    target: Target,
    root: str | Path,
    out: str | Path,
    url_prefix: str = "",
    listen: str | None = None,
    brotli: bool = False,
    *,
    cache_control: str = headers.DEPLOY_CACHE_CONTROL,
    bucket: str = "BUCKET",
    index: bool = True,
) -> list[Path]:
    """Write ``target``'s files into ``out`` and ``index.html`` into ``root``; return the paths."""
    site = Site.make(root, url_prefix, listen=listen, brotli=brotli, cache_control=cache_control)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(target, site, bucket).items():
        path = out / name
        path.write_text(text)
        written.append(path)
    if target == "gcs":
        written += write_gcs_staging(site.root, site.url_prefix, site.cache_control, out, bucket)
    if index:
        path = site.root / "index.html"
        try:
            path.write_text(render_index(site))
            written.append(path)
        except OSError as exc:  # a read-only data folder: the configs are still usable
            log.warning("could not write the site index %s: %s", path, exc)
    for path in written:
        log.info("wrote %s", path)
    return written


def next_steps(
    target: Target,
    out: str | Path,
    site_root: str | Path,
    url_prefix: str = "",
    listen: str | None = None,
    brotli: bool = False,
) -> list[str]:
    """What to run after :func:`write_files` to have a working site (the README's commands)."""
    out, root = Path(out), Path(site_root)
    port = (listen or "").rsplit(":", 1)[-1]
    host = "<this host>" + (f":{port}" if port not in ("", "80") else "")
    index = f"then open http://{host}{Site.make(root, url_prefix).url_prefix}/ (the index)"
    if target == "nginx":
        conf = out / "nginx.conf"
        reload = "sudo nginx -t && sudo systemctl reload nginx"
        steps = []
        if brotli:
            steps.append("sudo apt-get install libnginx-mod-http-brotli-static  # for --brotli")
        if listen:
            steps.append(f"sudo cp {conf} /etc/nginx/conf.d/precomputed.conf && {reload}")
        else:
            steps.append(f"add 'include {conf.resolve()};' inside your server {{ }} block, then:")
            steps.append(reload)
        return [*steps, index]
    if target == "apache":
        return [
            f"sudo cp {out / 'apache.conf'} /etc/apache2/sites-available/precomputed.conf"
            f" && sudo a2enmod {' '.join(APACHE_VHOST_MODULES)} && sudo a2ensite precomputed"
            " && sudo apache2ctl configtest && sudo systemctl reload apache2",
            f"or, on a shared host: cp {out / '.htaccess'} {root}/ (needs a2enmod"
            f" {' '.join(APACHE_HTACCESS_MODULES)}, AllowOverride FileInfo,"
            " Options FollowSymLinks)",
            index,
        ]
    if target == "gcs":
        return [f"sh {out / 'gcloud-upload.sh'}"]
    return []


#: The site the examples in the repository's ``deploy/`` folder are rendered for.
EXAMPLE_SITE = {"root": "/srv/precomputed", "url_prefix": "/data", "listen": "*:8080"}


def example_files() -> dict[str, str]:
    """``deploy/<server>/<file>`` -> text: the ready examples, as the templates render them."""
    root, prefix, listen = EXAMPLE_SITE["root"], EXAMPLE_SITE["url_prefix"], EXAMPLE_SITE["listen"]
    nginx_listen = listen.replace("*:", "")  # nginx: a bare port listens on every address
    return {
        "nginx/precomputed.conf": render_nginx(
            Site(Path(root), prefix, listen=nginx_listen, brotli=True)
        ),
        "nginx/precomputed-snippet.conf": render_nginx(Site(Path(root), prefix)),
        "apache/precomputed.conf": render_apache(Site(Path(root), prefix, listen=listen)),
        "apache/htaccess": render_apache(Site(Path(root), prefix), "htaccess"),
        "s3/cors.json": render_s3_cors(),
        "s3/bucket-policy.json": render_s3_policy("BUCKET", prefix),
    }
