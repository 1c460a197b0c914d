"""The harness proven on hand-made datasets behind our own tiny static server, with negative
controls that must fail the same checks (issue #6): no CORS, gzip bytes without
``Content-Encoding``, and chunks that are missing (drawn black, so the pixel check must see it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .handmade import Handmade, write_image, write_segmentation
from .servers import LoopbackServer, StaticDataHandler
from .viewer import check_view, image_state, segmentation_state

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .viewer import ViewResult

    View = Callable[[dict[str, Any], str], ViewResult]

pytestmark = pytest.mark.slow


def state_for(ds: Handmade, origin: str) -> dict[str, Any]:
    source = f"precomputed://{origin}/{ds.path.name}"
    if ds.kind == "image":
        return image_state(source, ds.shape)
    return segmentation_state(source, ds.shape, ds.segments)


def serve_and_view(
    view: View, ds: Handmade, *, cors: bool = True, content_encoding: bool = True
) -> ViewResult:
    root = ds.path.parent
    settings = {"root": root, "cors": cors, "content_encoding": content_encoding}
    with LoopbackServer(StaticDataHandler, **settings) as data:
        return view(state_for(ds, data.origin), data.origin)


# The view at the middle z shows the four chunks of one z row.
MIN_CHUNKS = 4


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_image_renders(view: View, tmp_path: Path, gzip: bool) -> None:
    result = serve_and_view(view, write_image(tmp_path / "data" / "img", gzip=gzip))
    assert check_view(result, min_chunks=MIN_CHUNKS) == []
    chunks = [r for r in result.requests if "/1_1_1/" in r.path]
    assert {r.content_encoding for r in chunks} == {"gzip" if gzip else None}
    assert all(r.allow_origin == "*" for r in result.requests)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segmentation_renders_meshes(view: View, tmp_path: Path, gzip: bool) -> None:
    result = serve_and_view(view, write_segmentation(tmp_path / "data" / "seg", gzip=gzip))
    assert check_view(result, min_chunks=MIN_CHUNKS, meshes=True) == []


def test_negative_no_cors(view: View, tmp_path: Path) -> None:
    result = serve_and_view(view, write_image(tmp_path / "data" / "img", gzip=True), cors=False)
    problems = check_view(result, min_chunks=MIN_CHUNKS)
    assert "info not loaded" in problems
    assert any("cors" in p.lower() for p in problems), problems
    assert any(p.startswith("cross-section panel blank") or "no cross-section" in p
               for p in problems), problems  # fmt: skip


def test_negative_gzip_without_content_encoding(view: View, tmp_path: Path) -> None:
    ds = write_image(tmp_path / "data" / "img", gzip=True)
    result = serve_and_view(view, ds, content_encoding=False)
    problems = check_view(result, min_chunks=MIN_CHUNKS)
    assert any("FAILED" in p for p in problems), problems
    assert any("panel blank" in p for p in problems), problems


def test_negative_segmentation_without_cors_draws_no_meshes(view: View, tmp_path: Path) -> None:
    ds = write_segmentation(tmp_path / "data" / "seg", gzip=True)
    problems = check_view(serve_and_view(view, ds, cors=False), meshes=True)
    assert "no mesh manifest fetched" in problems
    assert "3d panel blank" in problems


def test_negative_missing_chunks_are_seen_as_blank(view: View, tmp_path: Path) -> None:
    # Neuroglancer draws a 404 chunk as empty without any error: only the pixels tell.
    ds = write_image(tmp_path / "data" / "img", gzip=True)
    for chunk in (ds.path / "1_1_1").iterdir():
        chunk.unlink()
    problems = check_view(serve_and_view(view, ds), min_chunks=MIN_CHUNKS)
    assert any(p.startswith("only 0 of") for p in problems), problems
    assert any("cross-section panel blank" in p for p in problems), problems
