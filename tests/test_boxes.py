"""build.boxes.assemble: a box pasted from the chunks it meets equals the same box cut from the
whole array, for boxes that start and end anywhere (inside one chunk, across many, at the edge
of a clipped last chunk, with a negative voxel offset)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.build.boxes import assemble
from precomp_host.core.model import ChunkKey, Scale

SIZE, OFFSET, CHUNK = (23, 17, 11), (-5, 3, 0), (8, 6, 4)
SCALE = Scale(key="1_1_1", size=SIZE, resolution=(1.0, 1.0, 1.0), chunk_size=CHUNK,
              voxel_offset=OFFSET, encoding="raw")  # fmt: skip
WHOLE = np.arange(np.prod(SIZE) * 2, dtype=np.uint32).reshape(SIZE[2], SIZE[1], SIZE[0], 2)


def _chunk(key: ChunkKey) -> np.ndarray:
    a = [s - o for s, o in zip(key.start, OFFSET, strict=True)]
    b = [s - o for s, o in zip(key.stop, OFFSET, strict=True)]
    return WHOLE[a[2] : b[2], a[1] : b[1], a[0] : b[0]].copy()


@st.composite
def boxes(draw: st.DrawFn) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    lo, hi = [], []
    for n, o in zip(SIZE, OFFSET, strict=True):
        a = draw(st.integers(0, n - 1))
        lo.append(o + a)
        hi.append(o + draw(st.integers(a + 1, n)))
    return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


@given(boxes())
def test_a_box_from_its_chunks_is_the_box_of_the_whole(box: tuple[tuple[int, ...], ...]) -> None:
    start, stop = box
    got = assemble(SCALE, start, stop, _chunk)  # type: ignore[arg-type]
    a = [s - o for s, o in zip(start, OFFSET, strict=True)]
    b = [s - o for s, o in zip(stop, OFFSET, strict=True)]
    assert np.array_equal(got, WHOLE[a[2] : b[2], a[1] : b[1], a[0] : b[0]])
    assert got.dtype == WHOLE.dtype
