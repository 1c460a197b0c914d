"""Deployment files for a folder of datasets: nginx, Apache, S3 and GCS, rendered from templates.

The central function is :func:`render`, which turns a :class:`Site` (what is served where) into
the text of one target's files; the nginx and Apache configs are rendered by
:mod:`~precomp_host.deploy.servers` for what :func:`~precomp_host.deploy.survey.survey` finds in
the tree. :func:`write_files` writes a target's files into a folder, and :func:`render_index`
the site's ``index.html`` into the root (the datasets of
:func:`~precomp_host.core.datasets.find_datasets`, the links of :mod:`~precomp_host.core.viewer`);
uploads to S3 and GCS live in :mod:`precomp_host.deploy.objectstores`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import headers
from ..core.datasets import (
    dataset_name,
    find_annotation_layers,
    find_datasets,
    is_annotation_layer,
    read_dataset,
)
from ..core.viewer import PAGE_BASE, annotation_layer_name, page_relative_link
from .objectstores import (
    render_gcs_cors,
    render_s3_cors,
    render_s3_policy,
    write_gcs_staging,
)
from .servers import (
    APACHE_HTACCESS_MODULES,
    APACHE_VHOST_MODULES,
    render_apache,
    render_nginx,
    render_template,
)
from .survey import TreeSurvey, survey

if TYPE_CHECKING:
    from collections.abc import Callable

    from .targets import Target

log = logging.getLogger(__name__)


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


def survey_site(site: Site) -> TreeSurvey:
    """What the server configs need to know of the site's tree (see :func:`survey`)."""
    return survey(site.root)


def render_index(site: Site) -> str:
    """The site's ``index.html``: each dataset with a link that opens it in Neuroglancer.

    The datasets are :func:`~precomp_host.core.datasets.find_datasets`' (the dev server lists
    the same); a folder whose ``info`` cannot be read is left out with a warning. A dataset's
    annotation collections (:func:`~precomp_host.core.datasets.find_annotation_layers`) are
    listed in its row and its link opens them with it; a collection outside any dataset is
    a row of its own.
    """
    rows: list[dict[str, Any]] = []
    for rel in find_datasets(site.root):
        name = dataset_name(site.root, rel)
        if is_annotation_layer(site.root / rel):
            rows.append(
                {
                    "path": rel,
                    "name": rel or site.root.name,
                    "type": "annotation",
                    **dict.fromkeys(("data_type", "size", "resolution", "encoding"), ""),
                    "scales": "",
                    "sharded": False,
                    "annotations": [],
                    "link": page_relative_link(rel, "annotation", name),
                }
            )
            continue
        try:
            ds = read_dataset(site.root / rel)
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", site.root / rel, exc)
            continue
        scale = ds.scales[0]
        layers = find_annotation_layers(site.root, rel)
        rows.append(
            {
                "path": rel,
                "name": rel or site.root.name,
                "type": ds.type,
                "data_type": ds.data_type,
                "size": "×".join(str(n) for n in scale.size),
                "resolution": " × ".join(f"{r:g}" for r in scale.resolution),
                "scales": len(ds.scales),
                # Sharded scales are fetched with Range: worth knowing before serving them.
                "sharded": any(s.is_sharded for s in ds.scales),
                "encoding": scale.encoding,
                "annotations": [{"path": a, "name": annotation_layer_name(rel, a)} for a in layers],
                "link": page_relative_link(rel, ds.type, name, annotations=layers),
            }
        )
    return render_template("site-index.html.j2", datasets=rows, page_base=PAGE_BASE)


def render(target: Target, site: Site, bucket: str = "BUCKET") -> dict[str, str]:
    """File name -> text of every file of ``target`` (index.html excluded)."""
    makers: dict[Target, Callable[[], dict[str, str]]] = {
        "nginx": lambda: {"nginx.conf": render_nginx(site, survey_site(site))},
        "apache": lambda: {
            "apache.conf": render_apache(site, "vhost", survey_site(site)),
            ".htaccess": render_apache(site, "htaccess", survey_site(site)),
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
    public: bool = False,
) -> list[Path]:
    """Write ``target``'s files into ``out`` and ``index.html`` into ``root``; return the paths.

    :param public: gcs: the upload script also makes the bucket publicly readable.
    """
    site = Site.make(root, url_prefix, listen=listen, brotli=brotli, cache_control=cache_control)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(target, site, bucket).items():
        path = out / name
        path.write_text(text)
        written.append(path)
    if target == "gcs":
        written += write_gcs_staging(
            site.root, site.url_prefix, site.cache_control, out, bucket, public=public
        )
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


@dataclass(frozen=True)
class Host:
    """How commands run on the machine the steps are printed for (:func:`next_steps`)."""

    root: bool  # as root: no sudo (absent on many servers)
    systemd: bool  # systemd running: systemctl; else the servers' own reload commands

    @classmethod
    def here(cls) -> Host:
        # sd_booted(3): systemd is running when this folder exists.
        return cls(os.geteuid() == 0, Path("/run/systemd/system").is_dir())


#: Debian's stock sites, which answer on port 80 before ours would (measured: 404 on every URL).
NGINX_STOCK_SITE = "/etc/nginx/sites-enabled/default"
APACHE_STOCK_SITE = "000-default"


def next_steps(
    target: Target,
    out: str | Path,
    site_root: str | Path,
    url_prefix: str = "",
    listen: str | None = None,
    brotli: bool = False,
    host: Host | None = None,
) -> list[str]:
    """What to run after :func:`write_files` to have a working site (the README's commands):
    shell lines (a ``#`` comment says why), for ``host`` (default: this machine)."""
    host = host or Host.here()
    sudo = "" if host.root else "sudo "
    out, root = Path(out), Path(site_root)
    port = (listen or "").rsplit(":", 1)[-1]
    on_80 = listen is not None and port in ("", "80")
    url_host = "<this host>" + (f":{port}" if port not in ("", "80") else "")
    index = f"# then open http://{url_host}{Site.make(root, url_prefix).url_prefix}/ (the index)"
    if target == "nginx":
        if host.systemd:
            reload = f"{sudo}nginx -t && {sudo}systemctl reload nginx"
        else:
            reload = f"{sudo}nginx -t && {sudo}nginx -s reload  # or: {sudo}nginx, to start it"
        steps = []
        if brotli:
            steps.append(f"{sudo}apt-get install libnginx-mod-http-brotli-static  # for --brotli")
        if listen:
            steps.append(f"{sudo}cp {out / 'nginx.conf'} /etc/nginx/conf.d/precomputed.conf")
            if on_80:
                steps.append(
                    f"{sudo}rm {NGINX_STOCK_SITE}  # Debian's stock site is port 80's "
                    "default_server too: nginx -t fails while both are there"
                )
        else:
            steps.append(
                f"# add 'include {(out / 'nginx.conf').resolve()};' inside your server {{ }}"
            )
        return [*steps, reload, index]
    if target == "apache":
        reload = f"{sudo}apache2ctl configtest && " + (
            f"{sudo}systemctl reload apache2" if host.systemd else f"{sudo}apache2ctl graceful"
        )
        steps = []
        if listen:
            steps.append(
                f"{sudo}cp {out / 'apache.conf'} /etc/apache2/sites-available/precomputed.conf"
            )
            steps.append(
                f"{sudo}a2enmod {' '.join(APACHE_VHOST_MODULES)} && {sudo}a2ensite precomputed"
            )
            if on_80:
                steps.append(
                    f"{sudo}a2dissite {APACHE_STOCK_SITE}  # Debian's stock site is the "
                    "first <VirtualHost *:80>: it would answer every request (404)"
                )
            else:
                steps.append(
                    f"echo 'Listen {port}' | {sudo}tee -a /etc/apache2/ports.conf  # "
                    "Apache listens only on the ports named there"
                )
        else:
            steps.append(
                f"# add 'Include {(out / 'apache.conf').resolve()}' inside your <VirtualHost>,"
                f" then: {sudo}a2enmod {' '.join(APACHE_VHOST_MODULES)}"
            )
        steps.append(reload)
        steps.append(
            f"# or, on a shared host: cp {out / '.htaccess'} {root}/ (needs a2enmod "
            f"{' '.join(APACHE_HTACCESS_MODULES)}, AllowOverride FileInfo, "
            "Options FollowSymLinks)"
        )
        return [*steps, index]
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
