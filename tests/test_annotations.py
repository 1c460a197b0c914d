"""The annotation writer (build/annotations.py) against the spec and Neuroglancer's own writer.

Files are decoded here from ``annotations.md`` alone (not with the writer's code), compared with
what ``neuroglancer.write_annotations`` writes for the same points, and every annotation's bounds
and spatial cells are checked against its raw geometry. That writer gets the bounds of lines,
boxes and ellipsoids wrong (issue 16), so it is the reference for points only.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.annotation_sources import (
    AnnotationSourceError,
    Dimensions,
    open_annotations,
    read_neurotrale,
    stable_id,
)
from precomp_host.build.annotation_writer import write_annotations
from precomp_host.build.annotations import (
    AnnotationError,
    AnnotationTable,
    AnnotationType,
    Property,
    Related,
)

if TYPE_CHECKING:
    from pathlib import Path

DIMS = {"x": (4e-9, "m"), "y": (4e-9, "m"), "z": (40e-9, "m")}
SIZES = {"uint32": 4, "int32": 4, "float32": 4, "uint16": 2, "int16": 2, "uint8": 1, "int8": 1}


# -- an independent decoder: annotations.md, nothing else ---------------------------------------


def _stored(path: Path) -> bytes:
    """A file's bytes, from the plain file or its gzip sibling (the writer may keep only that)."""
    if path.exists():
        return path.read_bytes()
    import gzip

    return gzip.decompress(path.with_name(path.name + ".gz").read_bytes())


def _record_size(info: dict[str, Any]) -> int:
    rank = len(info["dimensions"])
    size = 4 * (rank if info["annotation_type"].upper() == "POINT" else 2 * rank)
    for p in info["properties"]:
        size += {"rgb": 3, "rgba": 4}.get(p["type"], SIZES.get(p["type"], 0))
    return size + (-size) % 4


@dataclass
class Decoded:
    records: dict[int, bytes]  # id -> record bytes

    def geometry(self, ann_id: int, rank: int, width: int) -> np.ndarray:
        return np.frombuffer(self.records[ann_id][: 4 * width], "<f4").astype(np.float64)


def decode_list(data: bytes, info: dict[str, Any]) -> tuple[list[int], list[bytes]]:
    size = _record_size(info)
    (count,) = struct.unpack_from("<Q", data)
    assert len(data) == 8 + count * (size + 8), "multiple annotation encoding: wrong length"
    recs = [data[8 + i * size : 8 + (i + 1) * size] for i in range(count)]
    ids = list(struct.unpack_from(f"<{count}Q", data, 8 + count * size))
    return ids, recs


def decode_by_id(data: bytes, info: dict[str, Any]) -> tuple[bytes, list[list[int]]]:
    size = _record_size(info)
    rec, pos, rels = data[:size], size, []
    for _ in info["relationships"]:
        (n,) = struct.unpack_from("<I", data, pos)
        rels.append(list(struct.unpack_from(f"<{n}Q", data, pos + 4)))
        pos += 4 + 8 * n
    assert pos == len(data), "single annotation encoding: trailing bytes"
    return rec, rels


def spatial_cells(folder: Path, info: dict[str, Any]) -> list[dict[tuple[int, ...], list[int]]]:
    """Per level: cell -> ids, asserting the per-cell limit and the grid on the way."""
    lower, upper = np.array(info["lower_bound"]), np.array(info["upper_bound"])
    levels = []
    for level in info["spatial"]:
        grid, chunk = np.array(level["grid_shape"]), np.array(level["chunk_size"])
        np.testing.assert_allclose(grid * chunk, upper - lower)
        cells: dict[tuple[int, ...], list[int]] = {}
        for f in (folder / level["key"]).iterdir():
            name = f.name.removesuffix(".gz").removesuffix(".br")
            cell = tuple(int(c) for c in name.split("_"))
            if cell in cells:
                continue
            assert all(0 <= c < g for c, g in zip(cell, grid, strict=True)), (level, cell)
            ids, _ = decode_list(_stored(folder / level["key"] / name), info)
            assert len(ids) <= level["limit"], f"{level['key']}/{name}: over the limit"
            assert len(set(ids)) == len(ids), f"{level['key']}/{name}: an id twice"
            cells[cell] = ids
        levels.append(cells)
    return levels


def sample_geometry(kind: str, g: np.ndarray, rank: int, n: int = 64) -> np.ndarray:
    """Points on (or in) an annotation, from its raw coordinates."""
    t = np.linspace(0, 1, n)[:, None]
    if kind == "POINT":
        return np.asarray(g[None, :rank])
    a, b = g[:rank], g[rank:]
    if kind == "LINE":
        return np.asarray(a + t * (b - a))
    if kind == "AXIS_ALIGNED_BOUNDING_BOX":
        corners = np.array(np.meshgrid(*[[a[k], b[k]] for k in range(rank)])).reshape(rank, -1).T
        return np.vstack([corners, a + t * (b - a)])
    # ellipsoid: center and the ends of each axis
    ends = [a + s * np.eye(rank)[k] * b[k] for k in range(rank) for s in (-1, 1)]
    return np.vstack([a[None], *ends])


def check_collection(folder: Path, table: AnnotationTable) -> None:
    """Bounds, cell membership and coverage of every annotation, from the raw geometry."""
    info = json.loads((folder / "info").read_text())
    rank = len(info["dimensions"])
    lower, upper = np.array(info["lower_bound"]), np.array(info["upper_bound"])
    kind = table.type
    by_row = {int(i): table.geometry[r] for r, i in enumerate(table.ids)}
    for i, g in by_row.items():
        pts = sample_geometry(kind, g, rank)
        inside = bool(np.all(pts >= lower)) and bool(np.all(pts < upper))
        assert inside, f"{i} outside the bounds"
    levels = spatial_cells(folder, info)
    where: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {i: [] for i in by_row}
    for level, cells in zip(info["spatial"], levels, strict=True):
        chunk = np.array(level["chunk_size"])
        for cell, ids in cells.items():
            lo = lower + np.array(cell) * chunk
            hi = lo + chunk
            for i in ids:
                pts = sample_geometry(kind, by_row[i], rank, n=1024)
                g = by_row[i]
                if kind == "ELLIPSOID":  # its box, as a conservative membership test
                    c, r = g[:rank], np.abs(g[rank:])
                    touches = bool(np.all(c + r >= lo) and np.all(c - r <= hi))
                elif kind == "AXIS_ALIGNED_BOUNDING_BOX":  # two boxes overlap
                    a, b = np.minimum(g[:rank], g[rank:]), np.maximum(g[:rank], g[rank:])
                    touches = bool(np.all(b >= lo) and np.all(a <= hi))
                else:
                    tol = 1e-3 * max(1.0, float(np.ptp(pts, axis=0).max()))
                    touches = bool(np.any(np.all((pts >= lo - tol) & (pts <= hi + tol), axis=1)))
                assert touches, f"{i} is in {level['key']} cell {cell} but does not meet it"
                where[i].append((lo, hi))
    for i, g in by_row.items():
        pts = sample_geometry(kind, g, rank)
        boxes = where[i]
        assert boxes, f"{i} in no spatial cell"
        for p in pts:
            assert any(np.all((p >= lo) & (p <= hi)) for lo, hi in boxes), (
                f"{i}: the part at {p} is in no cell of its own"
            )


# -- inputs -------------------------------------------------------------------------------------


def point_table(n: int, seed: int = 0) -> AnnotationTable:
    rng = np.random.default_rng(seed)
    geometry = rng.random((n, 3)) * [600, 500, 40] + [10, -20, 3]
    kinds = rng.integers(0, 3, n)
    segs = [list(rng.integers(1, 40, rng.integers(0, 3))) for _ in range(n)]
    return AnnotationTable(
        "POINT",
        geometry.astype(np.float32),
        np.arange(100, 100 + n),
        DIMS,
        [
            (Property("score", "float32"), rng.random(n)),
            (Property("count", "uint16"), rng.integers(0, 60000, n)),
            (
                Property("kind", "uint8", enum_values=(0, 1, 2), enum_labels=("a", "b", "c")),
                kinds,
            ),
        ],
        {"segment": Related.from_lists(segs)},
    )


def two_point_table(kind: AnnotationType, n: int, seed: int = 1) -> AnnotationTable:
    rng = np.random.default_rng(seed)
    a = rng.random((n, 3)) * [300, 300, 30]
    # Long and short ones, in every direction: end A is often the larger one.
    b = a + rng.normal(0, 1, (n, 3)) * rng.choice([3, 80], (n, 1)) * [1, 1, 0.1]
    if kind == "ELLIPSOID":
        b = np.abs(b - a) + 0.5  # radii
    geometry = np.hstack([a, b]).astype(np.float32)
    return AnnotationTable(kind, geometry, np.arange(1, n + 1), DIMS)


# -- tests -------------------------------------------------------------------------------------


def test_points_match_neuroglancer_writer(tmp_path: Path) -> None:
    neuroglancer = pytest.importorskip("neuroglancer")
    from neuroglancer.write_annotations import AnnotationWriter

    table = point_table(2500)
    write_annotations({"": table}, tmp_path / "ours", limit=300)
    space = neuroglancer.CoordinateSpace(
        names=list(DIMS), units="m", scales=[s for s, _ in DIMS.values()]
    )
    props = [neuroglancer.AnnotationPropertySpec(**p.to_json()) for p, _ in table.properties]
    ng = AnnotationWriter(space, "point", relationships=["segment"], properties=props)
    rel = table.relationships["segment"]
    for r, ann_id in enumerate(table.ids.tolist()):
        values = {p.id: v[r].item() for p, v in table.properties}
        segs = rel.values[rel.offsets[r] : rel.offsets[r + 1]].tolist()
        ng.add_point(table.geometry[r].tolist(), id=ann_id, segment=segs, **values)
    ng.write(tmp_path / "ng")

    ours_info = json.loads((tmp_path / "ours/info").read_text())
    ng_info = json.loads((tmp_path / "ng/info").read_text())
    assert ours_info["annotation_type"] == ng_info["annotation_type"].upper() == "POINT"
    assert ours_info["dimensions"] == ng_info["dimensions"]
    assert ours_info["properties"] == ng_info["properties"]
    # Its bounds are the extremes of the points; ours are whole numbers around them, the upper
    # one exclusive as the spec says.
    assert np.all(np.array(ours_info["lower_bound"]) <= ng_info["lower_bound"])
    assert np.all(np.array(ours_info["upper_bound"]) > ng_info["upper_bound"])
    # by_id: byte for byte, complete relationship lists included.
    for ann_id in table.ids.tolist():
        assert (
            _stored(tmp_path / f"ours/by_id/{ann_id}")
            == (tmp_path / f"ng/by_id/{ann_id}").read_bytes()
        )
    # relationships: the same objects, each with the same annotations (order is free).
    ours_rel = {f.name.split(".")[0] for f in (tmp_path / "ours/rel_segment").iterdir()}
    assert ours_rel == {f.name for f in (tmp_path / "ng/rel_segment").iterdir()}
    for obj in ours_rel:
        a = decode_list(_stored(tmp_path / f"ours/rel_segment/{obj}"), ours_info)
        b = decode_list((tmp_path / f"ng/rel_segment/{obj}").read_bytes(), ng_info)
        assert dict(zip(*a, strict=True)) == dict(zip(*b, strict=True))
    # spatial: our levels hold exactly its one cell's annotations, each once, and sample.
    ours = spatial_cells(tmp_path / "ours", ours_info)
    ng_ids, ng_recs = decode_list((tmp_path / "ng/spatial0/0_0_0").read_bytes(), ng_info)
    placed = [i for level in ours for ids in level.values() for i in ids]
    assert sorted(placed) == sorted(ng_ids)
    assert len(ours) > 2
    assert len(ours[0][(0, 0, 0)]) == 300
    check_collection(tmp_path / "ours", table)


@pytest.mark.parametrize("kind", ["LINE", "AXIS_ALIGNED_BOUNDING_BOX", "ELLIPSOID"])
def test_bounds_and_cells_of_two_point_types(tmp_path: Path, kind: AnnotationType) -> None:
    table = two_point_table(kind, 600)
    write_annotations({"": table}, tmp_path / "out", limit=40)
    check_collection(tmp_path / "out", table)
    info = json.loads((tmp_path / "out/info").read_text())
    assert len(info["spatial"]) >= 3


def test_the_checker_catches_an_annotation_in_a_wrong_cell(tmp_path: Path) -> None:
    table = point_table(400)
    out = tmp_path / "out"
    write_annotations({"": table}, out, limit=50, compress=())
    info = json.loads((out / "info").read_text())
    finest = out / info["spatial"][-1]["key"]
    files = sorted(p for p in finest.iterdir())
    assert len(files) > 1
    # Swap two cells' contents: every annotation still appears, but in a cell it misses.
    a, b = files[0].read_bytes(), files[-1].read_bytes()
    files[0].write_bytes(b)
    files[-1].write_bytes(a)
    with pytest.raises(AssertionError, match="does not meet it"):
        check_collection(out, table)


def test_the_checker_catches_a_bound_that_cuts_an_annotation(tmp_path: Path) -> None:
    table = two_point_table("LINE", 100)
    out = tmp_path / "out"
    write_annotations({"": table}, out, limit=20)
    info = json.loads((out / "info").read_text())
    # What Neuroglancer's Python writer does for lines: the lower bound from end A only, the
    # upper from end B only; the grid is stretched to match, so only the bounds are wrong.
    lower = table.geometry[:, :3].min(axis=0)
    upper = table.geometry[:, 3:].max(axis=0)
    old = np.array(info["upper_bound"]) - np.array(info["lower_bound"])
    for level in info["spatial"]:
        level["chunk_size"] = (np.array(level["chunk_size"]) * (upper - lower) / old).tolist()
    info["lower_bound"], info["upper_bound"] = lower.tolist(), upper.tolist()
    (out / "info").write_text(json.dumps(info))
    with pytest.raises(AssertionError, match="outside the bounds"):
        check_collection(out, table)


def test_rebuild_replaces_the_whole_layer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_annotations({"": point_table(50)}, out)
    with pytest.raises(AnnotationError, match="overwrite"):
        write_annotations({"": point_table(10)}, out)
    write_annotations({"": point_table(10)}, out, overwrite=True)
    assert len(list((out / "by_id").iterdir())) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(AnnotationError, match="holds no annotations"):
        write_annotations({"": point_table(10)}, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_table_rejects_bad_input() -> None:
    with pytest.raises(AnnotationError, match="not unique"):
        AnnotationTable("POINT", np.zeros((2, 3)), np.array([1, 1]), DIMS)
    with pytest.raises(AnnotationError, match="geometry"):
        AnnotationTable("LINE", np.zeros((2, 3)), np.array([1, 2]), DIMS)
    with pytest.raises(AnnotationError, match="must match"):
        Property("Bad-id", "uint8")


# -- sources -----------------------------------------------------------------------------------


def _neurotrale_tree(root: Path) -> Path:
    ann = root / "annotations"
    (ann / "x0001_y0001").mkdir(parents=True)
    (ann / "x0001_y0001" / "z-0001.json").write_text(
        json.dumps(
            [
                {"id": 1, "type": "point", "anntype": "neuron", "point": [10, 20, 1],
                 "reviewed": True, "visited": False},
                {"id": "g7", "type": "point", "anntype": "glia", "point": [30, 5, 1],
                 "reviewed": False, "visited": True},
                {"id": 3, "type": "polygon", "anntype": "neuron", "reviewed": False,
                 "visited": False, "points": [[0, 0, 1], [10, 0, 1], [10, 10, 1], [0, 10, 1]]},
            ]
        )
    )  # fmt: skip
    (ann / "x0001_y0001" / "fibers.json").write_text(
        json.dumps(
            [
                {"id": "ax1", "type": "linestring", "anntype": "axon", "length": 42.5,
                 "reviewed": True, "visited": True, "points": [[0, 0, 0], [5, 5, 2], [9, 1, 4]]},
            ]
        )
    )  # fmt: skip
    return ann


def test_neurotrale_tree_becomes_points_and_lines(tmp_path: Path) -> None:
    tables = read_neurotrale(_neurotrale_tree(tmp_path), Dimensions((4, 4, 40)))
    points, lines = tables["points"], tables["lines"]
    assert points.ids.tolist() == [1, stable_id("g7")]
    assert points.dimensions["z"] == pytest.approx((40e-9, "m"))
    props = {p.id: v.tolist() for p, v in points.properties}
    assert props == {"anntype": [0, 1], "reviewed": [1, 0], "visited": [0, 1]}
    # fibers.json sorts first: the linestring's 2 segments, then the polygon's 4 (closed).
    assert len(lines) == 6
    assert lines.geometry[:2].tolist() == [[0, 0, 0, 5, 5, 2], [5, 5, 2, 9, 1, 4]]
    assert lines.geometry[-1].tolist() == [0, 10, 1, 0, 0, 1]
    shape = lines.relationships["shape"]
    assert shape.values.tolist() == [stable_id("ax1")] * 2 + [3] * 4
    length = {p.id: v for p, v in lines.properties}["length"]
    assert length.tolist() == [42.5, 42.5, 0, 0, 0, 0]
    write_annotations(tables, tmp_path / "out")
    for name in ("points", "lines"):
        check_collection(tmp_path / "out" / name, tables[name])
    info = json.loads((tmp_path / "out/lines/info").read_text())
    shape_3 = decode_list(_stored(tmp_path / "out/lines/rel_shape/3"), info)[0]
    assert sorted(shape_3) == sorted(lines.ids[-4:].tolist())


def test_csv_and_json_tables(tmp_path: Path) -> None:
    csv_file = tmp_path / "syn.csv"
    csv_file.write_text(
        "id,x,y,z,x2,y2,z2,segment_id,confidence,kind,ok\n"
        "5,1,2,3,4,5,6,17,0.5,pre,true\n"
        "6,7,8,9,1,1,1,,0.25,post,false\n"
    )
    table = open_annotations(csv_file)[""]
    assert table.type == "LINE"
    assert table.ids.tolist() == [5, 6]
    props = {p.id: (p, v.tolist()) for p, v in table.properties}
    assert props["confidence"][0].type == "float32"
    assert props["kind"][0].enum_labels == ("post", "pre")
    assert props["kind"][1] == [1, 0]
    assert props["ok"][1] == [1, 0]
    assert table.relationships["segment"].values.tolist() == [17]
    json_file = tmp_path / "pts.json"
    json_file.write_text(json.dumps([{"x": 1, "y": 2, "z": 3, "segments": [4, 5], "n": 2}]))
    points = open_annotations(json_file)[""]
    assert points.type == "POINT"
    assert {p.id: p.type for p, _ in points.properties} == {"n": "int32"}
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(AnnotationSourceError, match="no column 'z'"):
        open_annotations(bad)
    parquet = tmp_path / "t.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(AnnotationSourceError, match="Parquet"):
        open_annotations(parquet)


def test_cli_builds_a_neurotrale_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from precomp_host.cli import main

    tree = _neurotrale_tree(tmp_path)
    out = tmp_path / "layers"
    assert main(["annotations", "build", str(tree), str(out), "--resolution", "4", "4", "40"]) == 0
    printed = capsys.readouterr().out
    assert "points: 2 annotations" in printed
    assert "lines: 6 annotations" in printed
    assert json.loads((out / "points/info").read_text())["dimensions"]["z"] == [4e-8, "m"]
    assert json.loads((out / "lines/info").read_text())["annotation_type"] == "LINE"
    assert main(["annotations", "build", str(tree), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["annotations", "build", str(tmp_path / "nope.csv"), str(out)]) == 2


def test_every_cell_samples_at_its_levels_one_rate(tmp_path: Path) -> None:
    """The spec's rule, recomputed from the files: at each level, every cell emits its remaining
    points (those not emitted by a coarser level) at the one rate ``limit / maxCount(level)``,
    rounded to a whole count, so a dense cluster and a sparse region are sampled alike."""
    rng = np.random.default_rng(5)
    dense = rng.normal([100, 100, 10], 4, (6000, 3))
    sparse = rng.random((1500, 3)) * [400, 400, 40]
    geometry = np.clip(np.vstack([dense, sparse]), 0, None)
    table = AnnotationTable("POINT", geometry, np.arange(1, 7501), DIMS)
    write_annotations({"": table}, tmp_path / "out", limit=200)
    info = json.loads((tmp_path / "out/info").read_text())
    levels = spatial_cells(tmp_path / "out", info)
    emitted_at = {i: n for n, cells in enumerate(levels) for ids in cells.values() for i in ids}
    assert sorted(emitted_at) == list(range(1, 7501))
    lower = np.array(info["lower_bound"])
    for n, level in enumerate(info["spatial"][:-1]):
        chunk = np.array(level["chunk_size"])
        cell_of = np.floor((geometry - lower) / chunk).astype(int)
        remaining: dict[tuple[int, ...], int] = {}
        for row, ann_id in enumerate(range(1, 7501)):
            if emitted_at[ann_id] >= n:
                key = tuple(cell_of[row].tolist())
                remaining[key] = remaining.get(key, 0) + 1
        rate = min(1.0, 200 / max(remaining.values()))
        for cell, count in remaining.items():
            got = len(levels[n].get(cell, []))
            assert int(np.floor(count * rate)) <= got <= int(np.ceil(count * rate)), (n, cell)
