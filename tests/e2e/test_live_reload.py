"""Live reload seen in the viewer (issues #4 and #6): the dev server's viewer page embeds the
real Neuroglancer client; rewriting the dataset makes the view reload and draw the new data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from precomp_host.core.viewer import fragment
from precomp_host.host.devserver import DevServer

from .handmade import write_image
from .viewer import check_view, image_state, missing

if TYPE_CHECKING:
    from pathlib import Path

    from .viewer import Browser, ViewResult

pytestmark = pytest.mark.slow


def pixels(result: ViewResult) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(result.screenshot)) as img:
        return np.asarray(img.convert("L"), dtype=np.int16)


def test_rewritten_data_is_drawn_after_live_reload(browser: Browser, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ds = write_image(root / "img", gzip=True)
    with DevServer(root, port=0) as server:
        if server.client_dir is None:
            missing("the neuroglancer package (its built client) is not installed")
        state = image_state(f"precomputed://{server.url}/img", ds.shape)
        with browser.session(server.url) as session:
            session.page.goto(f"{server.url}/viewer/{fragment(state)}", wait_until="load")
            before = session.settle()
            assert check_view(before, min_chunks=4) == [], before.summary()

            seen = len(session.requests)
            write_image(root / "img", gzip=True, flip=True)  # chunks first, info last
            session.page.wait_for_function("document.body.dataset.reloads === '1'", timeout=10_000)
            after = session.settle(since=seen)
            print(after.summary())
            assert check_view(after, min_chunks=4) == [], after.summary()
            # The new chunks were fetched, not revalidated into the old bytes (304).
            chunks = [r for r in after.requests if "/1_1_1/" in r.path]
            assert chunks
            assert all(r.status == 200 for r in chunks), after.summary()

    a, b = pixels(before), pixels(after)
    assert a.shape == b.shape
    lit = (a > 24) | (b > 24)
    changed = np.abs(a - b) > 60
    # Every data pixel flipped between the checkerboard's two levels.
    assert changed[lit].mean() > 0.9, f"only {changed[lit].mean():.2f} of the data pixels changed"
