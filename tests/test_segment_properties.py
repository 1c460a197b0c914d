"""segment_properties: --names CSV parsing, the info document, and the spec's rules."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from precomp_host.build.segment_properties import (
    NamesError,
    SegmentRow,
    VoxelCounter,
    properties_info,
    read_names_csv,
    validate,
)

if TYPE_CHECKING:
    from pathlib import Path


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_reads_names_tags_header_comments(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        'id,name,tags\n# comment\n\n7,"soma, left",#cell glia\n3,axon\n'
        "18446744073709551615,big,a;B;b\n",
    )
    assert read_names_csv(p) == [
        SegmentRow(7, "soma, left", ("cell", "glia")),
        SegmentRow(3, "axon"),
        SegmentRow(2**64 - 1, "big", ("a", "B", "b")),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,a\nx,b\n", r"labels\.csv:2: segment id must be a uint64 number, got 'x'"),
        ("1,a\n-3,b\n", r"labels\.csv:2: segment id must be a uint64"),
        ("18446744073709551616,a\n", r"labels\.csv:1: segment id must be a uint64"),
        ("1,a\n\n1,b\n", r"labels\.csv:3: segment id 1 already named on line 1"),
        ("0,bg\n", r"labels\.csv:1: segment id 0 is the background"),
        ("5\n", r"labels\.csv:1: expected id,name\[,tags\], got 1 fields"),
        ("5,a,b,c\n", r"labels\.csv:1: expected id,name\[,tags\], got 4 fields"),
        ("5, \n", r"labels\.csv:1: segment 5 has an empty name"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NamesError, match=message) as err:
        read_names_csv(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_unreadable_csv(tmp_path: Path) -> None:
    with pytest.raises(NamesError, match=r"missing\.csv: cannot read names"):
        read_names_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"1,\xff\xfe\n")
    with pytest.raises(NamesError, match=r"bin\.csv: not UTF-8"):
        read_names_csv(bad)


def test_info_with_names_tags_and_counts() -> None:
    rows = [SegmentRow(7, "soma", ("Cell", "glia")), SegmentRow(3, "axon", ("cell",))]
    doc = properties_info(rows, {0: 100, 3: 5, 9: 2})
    inline = doc["inline"]
    assert doc["@type"] == "neuroglancer_segment_properties"
    assert inline["ids"] == ["3", "7", "9"]  # every named id and every label of the volume
    by_type = {p["type"]: p for p in inline["properties"]}
    assert by_type["label"]["values"] == ["axon", "soma", ""]
    # Tags are case-insensitive in neuroglancer: "Cell" and "cell" are one tag.
    assert by_type["tags"]["tags"] == ["cell", "glia"]
    assert by_type["tags"]["values"] == [[0], [0, 1], []]
    assert by_type["number"]["values"] == [5, 0, 2]
    assert by_type["number"]["data_type"] == "uint32"


def test_info_without_names_lists_ids_with_counts() -> None:
    doc = properties_info((), {0: 1, 2**40: 3, 5: 2**33})
    assert doc["inline"]["ids"] == ["5", str(2**40)]
    (prop,) = doc["inline"]["properties"]
    assert prop["type"] == "number"
    assert prop["data_type"] == "float32"  # a count past uint32
    assert prop["values"] == [2**33, 3]


def good() -> dict[str, Any]:
    return properties_info([SegmentRow(1, "a", ("t",)), SegmentRow(2, "b")], {1: 4, 2: 5})


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("@type",), "x", "@type"),
        (("inline", "ids"), ["1", "01"], "base-10"),
        (("inline", "ids"), ["1", "1"], "unique"),
        (("inline", "ids"), ["1", str(2**64)], "uint64"),
        (("inline", "properties", 0, "values"), ["a"], "one entry per id"),
        (("inline", "properties", 0, "values"), ["a", 3], "strings"),
        (("inline", "properties", 1, "values"), [[0, 0], []], "increasing"),
        (("inline", "properties", 1, "values"), [[1], []], "increasing"),
        (("inline", "properties", 1, "tags"), ["has space"], "no spaces"),
        (("inline", "properties", 2, "data_type"), "uint64", "data_type"),
        (("inline", "properties", 2, "values"), [1, "2"], "numbers"),
        (("inline", "properties", 2, "type"), "label", "at most one"),
        (("inline", "properties", 2, "type"), "weird", "unknown type"),
        (("inline", "properties", 0, "tags"), ["x"], "tags only"),
    ],
)
def test_validate_rejects(path: tuple[Any, ...], value: Any, message: str) -> None:
    doc = copy.deepcopy(good())
    validate(doc)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        validate(doc)


@given(
    st.dictionaries(
        st.integers(1, 2**64 - 1),
        st.tuples(st.text(min_size=1), st.lists(st.sampled_from(["a", "B", "b", "c"]))),
        max_size=20,
    ),
    st.dictionaries(st.integers(0, 2**64 - 1), st.integers(1, 2**40), max_size=20),
)
def test_properties_always_valid_and_aligned(
    names: dict[int, tuple[str, list[str]]], counts: dict[int, int]
) -> None:
    rows = [SegmentRow(i, n, tuple(t)) for i, (n, t) in names.items()]
    doc = properties_info(rows, counts)
    validate(doc)
    ids = [int(i) for i in doc["inline"]["ids"]]
    assert ids == sorted(set(names) | (set(counts) - {0}))
    for prop in doc["inline"]["properties"]:
        assert len(prop["values"]) == len(ids)
        if prop["type"] == "label":
            assert prop["values"] == [names[i][0] if i in names else "" for i in ids]


def test_voxel_counter_dense_and_sparse_labels() -> None:
    c = VoxelCounter()
    c.add(np.array([[0, 1], [1, 5]], np.uint32))
    c.add(np.array([2**63, 5, 5], np.uint64))  # too sparse for bincount
    c.add(np.zeros((0,), np.uint32))
    assert c.counts == {0: 1, 1: 2, 5: 3, 2**63: 1}
