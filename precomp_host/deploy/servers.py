"""nginx and Apache configs for a :class:`~precomp_host.deploy.site.Site`: :func:`render_nginx`
and :func:`render_apache`.

The configs use each server's own mechanisms, as its documentation writes them (STYLE.md,
"Decisions already taken"; issue 12): nginx's ``gzip_static always`` + ``gunzip`` (the stored
``.gz`` for every client, inflated for the rare one without gzip), ``brotli_static`` and
``error_page`` fallbacks; Apache's mod_rewrite with a token match on ``Accept-Encoding``,
``AddEncoding``, ``INFLATE`` and ``Options``. They meet the client tier of the contract; the
strict tier (q-value ranking, validators across variants, Range on decoded bodies) is the
middleware's, and what each server does not do is declared once in the README.

The patterns, suffixes, media types and headers come from the core
(:mod:`~precomp_host.core.layout`, :mod:`~precomp_host.core.encodings`,
:mod:`~precomp_host.core.media_types`, :mod:`~precomp_host.core.headers`). What the tree holds
(:func:`~precomp_host.deploy.survey.survey`) decides whether the flat->nested rewrite and the
legacy mesh-manifest fallbacks are emitted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..core import headers, layout, media_types
from ..core.encodings import BROTLI, ENCODINGS, GZIP
from ..core.sharding import SHARD_SUFFIX
from ..core.templates import environment
from .survey import TreeSurvey

if TYPE_CHECKING:
    from pathlib import Path


class Site(Protocol):
    """What is served where (:class:`precomp_host.deploy.site.Site`; a protocol here so that
    the site module, which renders through this one, is not imported back)."""

    @property
    def root(self) -> Path: ...
    @property
    def url_prefix(self) -> str: ...
    @property
    def listen(self) -> str | None: ...
    @property
    def brotli(self) -> bool: ...
    @property
    def cache_control(self) -> str: ...


#: Internal URL namespace of the nginx fallbacks (never reachable from outside: ``internal``).
NGINX_INTERNAL = "/.precomp"
#: Apache modules each form needs (``a2enmod``): the templates' directives and ``next_steps``.
APACHE_VHOST_MODULES = ("rewrite", "headers", "deflate", "mime", "alias")
APACHE_HTACCESS_MODULES = ("rewrite", "headers", "mime")
#: Path levels the .htaccess form checks for symlinks (mod_rewrite has $1..$9).
HTACCESS_SYMLINK_LEVELS = 8


def _cumulative_prefixes(levels: int) -> str:
    """A regex whose group ``k`` is the first ``levels + 1 - k`` segments of a relative path
    (group 1 the longest): one RewriteRule can then test every ancestor with ``-l``."""
    regex = "([^/]+)"
    for _ in range(levels - 1):
        regex = f"({regex}(?:/[^/]+)?)"
    return regex


# nginx's gzip_static looks for this fixed suffix (and brotli_static for .br); the core agrees.
if GZIP.suffix != ".gz" or BROTLI.suffix != ".br":  # pragma: no cover - a core change
    raise ImportError("nginx's gzip_static/brotli_static need the sibling suffixes .gz/.br")

# Config templates are written with block tags on their own lines.
_ENV = environment().overlay(trim_blocks=True, lstrip_blocks=True)


def render_template(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)


def served_encodings(site: Site, server: Literal["nginx", "apache"]) -> tuple[str, ...]:
    """The content codings ``server`` sends for ``site``, in :data:`ENCODINGS` order.

    Apache sends ``.br`` siblings with core directives; nginx needs the brotli_static module,
    so it sends them only when ``site.brotli`` says the module is there.
    """
    return tuple(
        e.name for e in ENCODINGS.values() if server == "apache" or site.brotli or e is not BROTLI
    )


def _json_regex() -> str:
    """One alternation of the JSON rules of :data:`~precomp_host.core.media_types.RULES`
    (info files and ``*.json``; legacy manifests have a location of their own)."""
    rules = [rx for name, rx, media in media_types.RULES
             if media == media_types.JSON and name != "mesh-manifest"]  # fmt: skip
    return "|".join(rules)


def _context(site: Site, tree: TreeSurvey | None) -> dict[str, Any]:
    tree = tree if tree is not None else TreeSurvey.unknown()
    return {
        "root": str(site.root),
        "root_regex": re.escape(str(site.root)),
        "prefix": site.url_prefix,
        "listen": site.listen,
        "cors": list(headers.cors_headers().items()),
        "preflight": list(headers.preflight_headers().items()),
        "cache_control": site.cache_control,
        "nested": tree.nested,
        "manifests": tree.legacy_manifests,
        "chunk_pattern": layout.URL_PATTERN,
        "chunk_replacement": layout.URL_REPLACEMENT,
        "chunk_regex": layout.URL_PATTERN,
        "manifest_pattern": layout.MESH_MANIFEST_PATTERN,
        "manifest_fallbacks": layout.MESH_MANIFEST_FALLBACKS,
        "json_regex": _json_regex(),
        "json_type": media_types.JSON,
        "html_type": media_types.HTML.split(";")[0],
        "default_type": media_types.OCTET_STREAM,
        "gzip_suffix": GZIP.suffix,
        "brotli_suffix": BROTLI.suffix,
    }


def render_nginx(site: Site, tree: TreeSurvey | None = None, *, default_server: bool = True) -> str:
    """A snippet for inside ``server {}``, or (``site.listen``) a server block of its own.

    ``tree`` (:func:`~precomp_host.deploy.survey.survey`) decides which fallbacks are
    emitted; without one, all of them are.
    """
    return render_template(
        "nginx.conf.j2",
        **_context(site, tree),
        brotli=BROTLI.name in served_encodings(site, "nginx"),
        internal=NGINX_INTERNAL,
        # Only a .br stored and no br module: the fallback answers 406 instead of 404.
        undecodable=True,
        default_server=default_server,
    )


def render_apache(
    site: Site, form: Literal["vhost", "htaccess"] = "vhost", tree: TreeSurvey | None = None
) -> str:
    """``<VirtualHost>`` (or a block to include in one without ``listen``), or ``.htaccess``.

    Only the vhost form decodes gz-only files for clients without gzip: mod_deflate's INFLATE
    filter does not run after a per-directory (``.htaccess``) rewrite; those clients get 406.
    """
    return render_template(
        f"apache-{form}.conf.j2",
        **_context(site, tree),
        encodings=[  # tried in this order: the smaller br first
            {"name": e.name, "suffix": e.suffix}
            for e in sorted(
                map(ENCODINGS.get, served_encodings(site, "apache")), key=lambda e: e is GZIP
            )  # fmt: skip
            if e is not None
        ],
        # <FilesMatch> sees the file sent: the JSON names, with or without a sibling suffix.
        apache_json_regex="(?:{})(?:{})?$".format(
            "|".join(
                rx.removesuffix("$")
                for name, rx, media in media_types.RULES
                if media == media_types.JSON
            ),  # fmt: skip
            "|".join(re.escape(e.suffix) for e in ENCODINGS.values()),
        ),
        symlink_levels=range(1, HTACCESS_SYMLINK_LEVELS + 1),
        symlink_regex=_cumulative_prefixes(HTACCESS_SYMLINK_LEVELS),
        inflate=form == "vhost",
        shard_regex=re.escape(SHARD_SUFFIX) + "$",
        modules=APACHE_VHOST_MODULES if form == "vhost" else APACHE_HTACCESS_MODULES,
    )
