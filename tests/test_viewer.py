"""Tests of :mod:`precomp_host.core.viewer`: the state a link opens and the fragment carrying it."""

from __future__ import annotations

import json
import urllib.parse

from hypothesis import assume, given
from hypothesis import strategies as st

from precomp_host.core.viewer import (
    PAGE_BASE,
    PUBLIC_VIEWER,
    annotation_layer_name,
    dataset_state,
    dataset_url,
    fragment,
    page_relative_link,
)


def test_fragment_round_trips() -> None:
    state = {"layers": [{"source": "precomputed://http://127.0.0.1:1/a b", "type": "image"}]}
    assert json.loads(urllib.parse.unquote(fragment(state)[2:])) == state


def test_dataset_state() -> None:
    state = dataset_state("http://h:1/data/ds", "segmentation", "ds")
    assert state == {
        "layers": [{"type": "segmentation", "source": "precomputed://http://h:1/data/ds",
                    "name": "ds"}],
        "selectedLayer": {"layer": "ds"},
        "layout": "4panel",
    }  # fmt: skip


def test_dataset_state_with_annotation_layers() -> None:
    state = dataset_state("http://h/ds", "image", "ds", [("live/points", "http://h/ds/a/p")])
    assert state["layers"][1] == {
        "type": "annotation",
        "source": "precomputed://http://h/ds/a/p",
        "name": "live/points",
    }
    assert state["selectedLayer"] == {"layer": "ds"}  # the volume stays the selected layer
    assert annotation_layer_name("g/ds", "g/ds/annotations/live/points") == "live/points"
    assert annotation_layer_name("", "annotations/syn") == "syn"
    link = page_relative_link("ds", "image", "ds", annotations=["ds/annotations/syn"])
    assert link.count(PAGE_BASE) == 2
    layers = json.loads(urllib.parse.unquote(link.split("#!", 1)[1]))["layers"]
    assert layers[1]["source"] == f"precomputed://{PAGE_BASE}/ds/annotations/syn"


def test_dataset_url() -> None:
    assert dataset_url("http://h/data/", "g/ds") == "http://h/data/g/ds"
    assert dataset_url("http://h/data", "") == "http://h/data"


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1))
def test_page_base_survives_encoding(name: str) -> None:
    # The page replaces PAGE_BASE in the link's text: it must come out of the encoding whole,
    # once, whatever the dataset is called.
    assume(PAGE_BASE not in name)
    link = page_relative_link("g/" + name, "image", name)
    assert link.startswith(PUBLIC_VIEWER + "#!")
    assert link.count(PAGE_BASE) == 1
    base = "https://lab.example/data"
    filled = link.replace(PAGE_BASE, urllib.parse.quote(base, safe=""), 1)
    expected = dataset_state(f"{base}/g/{name}", "image", name)
    assert json.loads(urllib.parse.unquote(filled.partition("#!")[2])) == expected
