"""A NIfTI brain volume built without ``--resolution`` renders in Neuroglancer (issue #18).

The MNI152 template nilearn ships is built by the command line with no grid options: 1 mm
voxels and its origin come from the header, and the view placed on that grid must draw it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.test_inputs import _mni_template

from .test_matrix import MIN_CHUNKS, REPO, devserver, origin_of
from .viewer import check_view, image_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from .viewer import ViewResult

    View = Callable[[dict[str, Any], str], ViewResult]

pytestmark = pytest.mark.slow


def test_mni_template_renders_on_its_own_grid(view: View) -> None:
    template = _mni_template()
    base = Path(tempfile.mkdtemp(prefix="precomp-e2e-mni-"))
    os.chmod(base, 0o755)  # the real servers' workers read it as another user
    try:
        subprocess.run(
            [sys.executable, "-m", "precomp_host", "build", str(template),
             str(base / "root" / "mni"), "-q"],
            check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300,
        )  # fmt: skip
        scale = json.loads((base / "root" / "mni" / "info").read_text())["scales"][0]
        assert scale["resolution"] == [1000000, 1000000, 1000000]
        assert scale["voxel_offset"] == [-98, -134, -72]
        with devserver(base / "root") as url:
            state = image_state(
                f"precomputed://{url}/mni", scale["size"], scale["resolution"],
                offset=scale["voxel_offset"],
            )  # fmt: skip
            result = view(state, origin_of(url))
        assert check_view(result, min_chunks=MIN_CHUNKS) == [], result.summary()
        assert any("/-98--34_" in r.path for r in result.requests), result.summary()
    finally:
        shutil.rmtree(base, ignore_errors=True)
