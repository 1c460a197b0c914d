"""An independent way to read what we write: a flat, uncompressed copy read by tensorstore.

tensorstore's ``neuroglancer_precomputed`` driver reads flat chunk names and no ``.gz``/``.br``
siblings, and it silently reads a missing chunk as zeros. So the tests (1) assert every chunk's
files exist, and (2) convert the tree with code that shares nothing with ``precomp_host``: its
own regex for nested names, the standard library's gzip and brotli's own decoder.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
from typing import TYPE_CHECKING, Any

import brotli
import tensorstore as ts

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

_NESTED = re.compile(r"^(-?\d+--?\d+)/(-?\d+--?\d+)/(-?\d+--?\d+)$")


def flat_copy(src: Path, dst: Path) -> Path:
    """Copy dataset ``src`` to ``dst`` with flat chunk names and every file decompressed."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        if not path.is_file() or ".precomp-tmp" in path.parts:
            continue
        rel = path.relative_to(src).as_posix()
        data = path.read_bytes()
        if rel.endswith(".gz"):
            rel, data = rel[:-3], gzip.decompress(data)
        elif rel.endswith(".br"):
            rel, data = rel[:-3], brotli.decompress(data)
        parts = rel.split("/")
        if len(parts) >= 4 and _NESTED.match("/".join(parts[-3:])):
            rel = "/".join(parts[:-3]) + "/" + "_".join(parts[-3:])
        target = dst / rel
        if target.exists():
            assert target.read_bytes() == data, f"variants of {rel} disagree"
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dst


def expected_chunk_names(scale: dict[str, Any]) -> list[str]:
    """Every chunk name of a scale, computed from the spec's rules (volume.md)."""
    size, off, chunk = scale["size"], scale["voxel_offset"], scale["chunk_sizes"][0]
    axes = []
    for n, o, c in zip(size, off, chunk, strict=True):
        axes.append([(o + i * c, min(o + (i + 1) * c, o + n)) for i in range(math.ceil(n / c))])
    return [
        f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
        for (z0, z1) in axes[2]
        for (y0, y1) in axes[1]
        for (x0, x1) in axes[0]
    ]


def assert_all_chunks_present(flat: Path) -> None:
    info = json.loads((flat / "info").read_text())
    for scale in info["scales"]:
        missing = [n for n in expected_chunk_names(scale) if not (flat / scale["key"] / n).exists()]
        assert not missing, f"scale {scale['key']}: missing chunks {missing[:5]}"


def read_scale(flat: Path, index: int) -> np.ndarray:
    """Scale ``index`` of a flat dataset as [x, y, z, c], read by tensorstore."""
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(flat) + "/"},
            "scale_index": index,
        },
        read=True,
    ).result()
    out: np.ndarray = store.read().result()
    return out
