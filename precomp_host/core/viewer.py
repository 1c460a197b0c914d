"""Neuroglancer links: the state a link opens (:func:`dataset_state`) and the URL carrying it.

Neuroglancer reads its state from the URL fragment, ``#!`` followed by URI-encoded JSON
(:func:`fragment`). The dev server's index and viewer page and the deployed ``index.html``
build their links here, so they open the same view. A static page does not know the URL it will
be served at, so :func:`page_relative_link` writes :data:`PAGE_BASE` where that URL goes and the
page substitutes it in the browser: the state itself is never typed in a template.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

#: The public Neuroglancer app: it may fetch from ``http://127.0.0.1`` (a potentially
#: trustworthy origin, W3C Secure Contexts §3.1) and from any CORS-enabled server.
PUBLIC_VIEWER = "https://neuroglancer-demo.appspot.com/"

#: Stands for the (unknown) URL of a static page's folder, without a trailing slash; the page
#: replaces it with ``encodeURIComponent(base)``. Letters and ``_`` only, so URI encoding
#: leaves it intact.
PAGE_BASE = "PRECOMP_PAGE_BASE"


def dataset_state(url: str, volume_type: str, name: str) -> dict[str, Any]:
    """The Neuroglancer state that shows the dataset at ``url`` as one selected layer.

    :param url: the dataset's folder URL (``http://host/data/ds``), no trailing slash.
    :param volume_type: the ``info``'s ``type`` (``image`` or ``segmentation``).
    :param name: the layer name.
    """
    layer = {"type": volume_type, "source": f"precomputed://{url}", "name": name}
    return {"layers": [layer], "selectedLayer": {"layer": name}, "layout": "4panel"}


def fragment(state: dict[str, Any]) -> str:
    """The URL fragment Neuroglancer reads its state from: ``#!`` + URI-encoded JSON."""
    return "#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")), safe=",:[]{}/@")


def dataset_url(base_url: str, rel: str) -> str:
    """The URL of the dataset at ``rel`` (``""``: the root) under ``base_url``."""
    return base_url.rstrip("/") + ("/" + rel if rel else "")


def page_relative_link(rel: str, volume_type: str, name: str, app: str = PUBLIC_VIEWER) -> str:
    """A link opening the dataset at ``rel`` relative to a static page, with :data:`PAGE_BASE`
    for the page's folder URL."""
    return app + fragment(dataset_state(dataset_url(PAGE_BASE, rel), volume_type, name))
