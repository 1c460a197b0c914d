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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

#: The public Neuroglancer app: it may fetch from ``http://127.0.0.1`` (a potentially
#: trustworthy origin, W3C Secure Contexts §3.1) and from any CORS-enabled server.
PUBLIC_VIEWER = "https://neuroglancer-demo.appspot.com/"

#: Stands for the (unknown) URL of a static page's folder, without a trailing slash; the page
#: replaces it with ``encodeURIComponent(base)``. Letters and ``_`` only, so URI encoding
#: leaves it intact.
PAGE_BASE = "PRECOMP_PAGE_BASE"


def dataset_state(
    url: str, volume_type: str, name: str, annotations: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The Neuroglancer state that shows the dataset at ``url`` as the selected layer, with
    its annotation collections as annotation layers above it.

    :param url: the dataset's folder URL (``http://host/data/ds``), no trailing slash.
    :param volume_type: the ``info``'s ``type`` (``image`` or ``segmentation``), or
        ``annotation`` for a collection shown on its own.
    :param name: the layer name.
    :param annotations: ``(layer name, folder URL)`` of each annotation collection.
    """
    layers = [{"type": volume_type, "source": f"precomputed://{url}", "name": name}]
    layers += [
        {"type": "annotation", "source": f"precomputed://{u}", "name": n} for n, u in annotations
    ]
    return {"layers": layers, "selectedLayer": {"layer": name}, "layout": "4panel"}


def annotation_layer_name(dataset_rel: str, layer_rel: str) -> str:
    """The layer name of the collection at ``layer_rel`` of the dataset at ``dataset_rel``: its
    path inside the dataset's ``annotations`` folder (``synapses``, ``live/points``)."""
    inside = layer_rel[len(dataset_rel) :].lstrip("/") if dataset_rel else layer_rel
    return inside.split("/", 1)[1] if "/" in inside else inside


def fragment(state: dict[str, Any]) -> str:
    """The URL fragment Neuroglancer reads its state from: ``#!`` + URI-encoded JSON."""
    return "#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")), safe=",:[]{}/@")


def dataset_url(base_url: str, rel: str) -> str:
    """The URL of the dataset at ``rel`` (``""``: the root) under ``base_url``."""
    return base_url.rstrip("/") + ("/" + rel if rel else "")


def page_relative_link(
    rel: str,
    volume_type: str,
    name: str,
    app: str = PUBLIC_VIEWER,
    annotations: Sequence[str] = (),
) -> str:
    """A link opening the dataset at ``rel`` relative to a static page, with :data:`PAGE_BASE`
    for the page's folder URL, and the annotation collections at ``annotations`` (paths
    relative to the page too) beside it."""
    layers = [(annotation_layer_name(rel, a), dataset_url(PAGE_BASE, a)) for a in annotations]
    return app + fragment(dataset_state(dataset_url(PAGE_BASE, rel), volume_type, name, layers))
