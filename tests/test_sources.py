"""Tests of :mod:`precomp_host.build.sources`: every input read back exactly, bad input named.

Expected arrays are built independently of the module under test: the test writes a known
``[z, y, x(, c)]`` array with tifffile or numpy and compares ``Volume.read`` with slices of it.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from precomp_host.build.sources import (
    PagedTiff,
    SliceStack,
    SourceError,
    Volume,
    natural_key,
    open_volume,
    read_region,
)

DTYPES = ["uint8", "uint16", "uint32", "float32"]


def _random(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _assert_reads(volume: Volume, expected_zyxc: np.ndarray) -> None:
    """``volume`` has the shape/dtype of ``expected`` and reads back every z-range exactly."""
    z, y, x, c = expected_zyxc.shape
    assert volume.shape == (x, y, z)
    assert volume.num_channels == c
    assert volume.dtype == expected_zyxc.dtype
    whole = volume.read(0, z)
    assert whole.shape == (z, y, x, c)
    assert whole.dtype == expected_zyxc.dtype
    np.testing.assert_array_equal(whole, expected_zyxc)
    # Slabs, including single slices and the last one (what the build streams).
    for z0, z1 in {(0, 1), (z - 1, z), (z // 3, max(z // 3 + 1, 2 * z // 3)), (1 % z, z)}:
        if z0 < z1:
            np.testing.assert_array_equal(volume.read(z0, z1), expected_zyxc[z0:z1])
    _assert_regions(volume, expected_zyxc)


def _assert_regions(volume: Volume, expected_zyxc: np.ndarray) -> None:
    """``read_region`` of boxes at the corners, inside, and of one voxel (region tasks)."""
    z, y, x, _ = expected_zyxc.shape
    boxes = {
        ((0, 0, 0), (x, y, z)),
        ((x // 2, y // 3, z // 2), (x, y, z)),
        ((0, 0, 0), ((x + 1) // 2, (y + 1) // 2, 1)),
        ((x // 3, y // 2, z - 1), (max(x // 3 + 1, 2 * x // 3), y, z)),
        ((x - 1, y - 1, z - 1), (x, y, z)),
    }
    for (x0, y0, z0), (x1, y1, z1) in boxes:
        got = read_region(volume, (x0, y0, z0), (x1, y1, z1))
        np.testing.assert_array_equal(got, expected_zyxc[z0:z1, y0:y1, x0:x1])
        assert got.dtype == expected_zyxc.dtype


@pytest.mark.parametrize(
    "layout",
    [{"rowsperstrip": 7, "compression": "zlib"}, {"tile": (32, 48), "compression": "zlib"}, {}],
    ids=["strips", "tiles", "uncompressed"],
)
@pytest.mark.parametrize("samples", [1, 3])
def test_a_region_of_a_slice_reads_only_its_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: dict[str, Any], samples: int
) -> None:
    shape = (150, 200, samples) if samples > 1 else (150, 200)
    stack = _random((2, *shape), "uint8")
    photometric = "rgb" if samples > 1 else "minisblack"
    _write_slices(tmp_path / "s", stack, photometric=photometric, **layout)
    read: list[int] = []
    real = tifffile.FileHandle.read_segments

    def counting(self: Any, offsets: Any, bytecounts: Any, *a: Any, **kw: Any) -> Any:
        read.extend(bytecounts)
        return real(self, offsets, bytecounts, *a, **kw)

    monkeypatch.setattr(tifffile.FileHandle, "read_segments", counting)
    volume = open_volume(tmp_path / "s")
    expected = stack if samples > 1 else stack[..., np.newaxis]
    box = ((50, 60, 1), (90, 75, 2))
    got = read_region(volume, *box)
    np.testing.assert_array_equal(got, expected[1:2, 60:75, 50:90])
    plane = 150 * 200 * samples
    if layout:
        # zlib of random bytes is a little larger than the bytes: a strip or tile set, not a plane.
        assert 0 < sum(read) < plane / 2, (sum(read), plane)
    else:
        assert not read  # memory-mapped


def _write_slices(folder: Path, stack: np.ndarray, name: str = "z{}.tif", **kw: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, plane in enumerate(stack):
        tifffile.imwrite(folder / name.format(i), plane, **kw)


# -- natural sort ----------------------------------------------------------------------------


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["z10.tif", "z2.tif", "z1.tif", "z100.tif", "z20.tif"]
    assert sorted(names, key=natural_key) == [
        "z1.tif",
        "z2.tif",
        "z10.tif",
        "z20.tif",
        "z100.tif",
    ]


@settings(deadline=None)  # timing on a shared 2-core CI box is not the property
@given(
    numbers=st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True),
    prefix=st.sampled_from(["z", "slice_", "img-", "Z", ""]),
    width=st.integers(0, 7),
    seed=st.integers(0, 2**32 - 1),
)
def test_natural_key_sorts_numbered_names_by_number(
    numbers: list[int], prefix: str, width: int, seed: int
) -> None:
    # Zero padding (or none) must not matter: the order is the order of the numbers.
    names = [f"{prefix}{n:0{width}d}.tif" for n in numbers]
    random.Random(seed).shuffle(names)
    got = [int(name[len(prefix) : -4]) for name in sorted(names, key=natural_key)]
    assert got == sorted(numbers)


def test_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    # Each slice holds its own number: a lexicographic sort would read z10 before z2.
    folder = tmp_path / "stack"
    folder.mkdir()
    order = [0, 1, 2, 3, 9, 10, 11, 25, 100]
    for n in reversed(order):
        tifffile.imwrite(folder / f"z{n}.tif", np.full((3, 4), n, np.uint8))
    volume = open_volume(folder)
    assert isinstance(volume, SliceStack)
    assert volume.read(0, len(order))[:, 0, 0, 0].tolist() == order


# -- reading each kind of source -------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    z=st.integers(2, 6),
    y=st.integers(1, 9),
    x=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_folder_of_slices(dtype: str, z: int, y: int, x: int, seed: int) -> None:
    stack = _random((z, y, x), dtype, seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "slices"
        _write_slices(folder, stack)
        volume = open_volume(folder)
        assert isinstance(volume, SliceStack)
        _assert_reads(volume, stack[..., np.newaxis])


def test_folder_ignores_hidden_files_and_subfolders(tmp_path: Path) -> None:
    stack = _random((3, 5, 6), "uint16")
    _write_slices(tmp_path, stack)
    (tmp_path / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "sub").mkdir()
    _assert_reads(open_volume(tmp_path), stack[..., np.newaxis])


def test_glob_selects_matching_slices_in_natural_order(tmp_path: Path) -> None:
    stack = _random((12, 4, 5), "uint8")
    _write_slices(tmp_path, stack, "img_{}.tiff")
    (tmp_path / "notes.txt").write_text("not matched by the glob")
    volume = open_volume(str(tmp_path / "img_*.tiff"))
    _assert_reads(volume, stack[..., np.newaxis])
    # A narrower glob: img_1, img_10, img_11 in natural order.
    narrow = open_volume(str(tmp_path / "img_1*.tiff"))
    _assert_reads(narrow, stack[[1, 10, 11], ..., np.newaxis])


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    z=st.integers(1, 7),
    y=st.integers(1, 9),
    # x >= 2: tifffile's writer stores a trailing axis of length 1 as samples (axes YXQ).
    x=st.integers(2, 9),
    compression=st.sampled_from([None, "zlib"]),
)
def test_multipage_tiff(dtype: str, z: int, y: int, x: int, compression: str | None) -> None:
    stack = _random((z, y, x), dtype, z * 100 + y * 10 + x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.tif"
        tifffile.imwrite(path, stack, compression=compression, photometric="minisblack")
        _assert_reads(open_volume(path), stack[..., np.newaxis])


def test_compressed_multipage_tiff_is_read_page_by_page(tmp_path: Path) -> None:
    # A compressed TIFF cannot be memory-mapped: the page-wise reader must be the one used.
    stack = _random((9, 13, 11), "uint16")
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, compression="zlib", photometric="minisblack")
    volume = open_volume(path)
    assert isinstance(volume, PagedTiff)
    _assert_reads(volume, stack[..., np.newaxis])


def test_uncompressed_multipage_tiff_is_memory_mapped(tmp_path: Path) -> None:
    stack = _random((4, 6, 5), "uint8")
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    volume = open_volume(path)
    assert not isinstance(volume, PagedTiff | SliceStack)
    _assert_reads(volume, stack[..., np.newaxis])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_ome_tiff_with_singleton_t_and_c(tmp_path: Path, compression: str | None) -> None:
    stack = _random((6, 7, 8), "uint16")
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        path,
        stack.reshape(1, 6, 1, 7, 8),
        ome=True,
        metadata={"axes": "TZCYX"},
        compression=compression,
    )
    with tifffile.TiffFile(path) as tif:  # the premise: tifffile reports the OME axes
        assert tif.is_ome
        assert tif.series[0].get_axes(False).startswith("TZCYX")
    _assert_reads(open_volume(path), stack[..., np.newaxis])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_rgb_multipage_tiff(tmp_path: Path, compression: str | None) -> None:
    stack = _random((5, 6, 7, 3), "uint8")
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, stack, photometric="rgb", compression=compression)
    _assert_reads(open_volume(path), stack)


def test_rgb_slices(tmp_path: Path) -> None:
    stack = _random((4, 6, 7, 3), "uint8")
    _write_slices(tmp_path, stack, photometric="rgb")
    volume = open_volume(tmp_path)
    assert volume.num_channels == 3
    _assert_reads(volume, stack)


def test_single_2d_tiff_is_a_one_slice_volume(tmp_path: Path) -> None:
    plane = _random((5, 6), "float32")
    tifffile.imwrite(tmp_path / "one.tif", plane)
    _assert_reads(open_volume(tmp_path / "one.tif"), plane[np.newaxis, ..., np.newaxis])


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    channels=st.sampled_from([None, 1, 3]),
)
def test_npy_3d_and_4d(dtype: str, shape: tuple[int, int, int], channels: int | None) -> None:
    arr = _random(shape if channels is None else (*shape, channels), dtype)
    expected = arr[..., np.newaxis] if channels is None else arr
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vol.npy")
        np.save(path, arr)
        _assert_reads(open_volume(path), expected)


def test_npy_axes_xyz(tmp_path: Path) -> None:
    # A Fortran-minded array indexed [x, y, z]: voxel (x, y, z) must land at [z, y, x].
    xyz = _random((7, 5, 4), "uint16")
    path = tmp_path / "xyz.npy"
    np.save(path, xyz)
    volume = open_volume(path, npy_axes="XYZ")
    assert volume.shape == (7, 5, 4)
    expected = np.transpose(xyz, (2, 1, 0))[..., np.newaxis]
    _assert_reads(volume, expected)
    got = volume.read(0, 4)
    assert got[3, 2, 6, 0] == xyz[6, 2, 3]


def test_npy_axes_xyzc(tmp_path: Path) -> None:
    xyzc = _random((4, 3, 2, 3), "uint8")
    np.save(tmp_path / "v.npy", xyzc)
    volume = open_volume(tmp_path / "v.npy", npy_axes="XYZC")
    _assert_reads(volume, np.transpose(xyzc, (2, 1, 0, 3)))


# -- errors: SourceError, one line, naming the file ------------------------------------------


def _source_error(path: os.PathLike[str] | str, **kw: Any) -> str:
    with pytest.raises(SourceError) as info:
        open_volume(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    message = _source_error(missing)
    assert str(missing) in message
    assert "no such file" in message


def test_empty_folder(tmp_path: Path) -> None:
    message = _source_error(tmp_path)
    assert str(tmp_path) in message


def test_folder_of_only_hidden_files_is_empty(tmp_path: Path) -> None:
    (tmp_path / ".hidden.tif").write_bytes(b"")
    assert str(tmp_path) in _source_error(tmp_path)


def test_glob_matching_nothing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "z*.tif")
    message = _source_error(pattern)
    assert pattern in message
    assert "no file matches" in message


def test_slices_of_different_shapes(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "z1.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(tmp_path / "z2.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(tmp_path / "z10.tif", np.zeros((4, 6), np.uint8))
    message = _source_error(tmp_path)
    assert str(tmp_path / "z10.tif") in message
    assert "shape" in message


def test_slices_of_different_dtypes(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "z1.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(tmp_path / "z2.tif", np.zeros((4, 5), np.uint16))
    message = _source_error(tmp_path)
    assert str(tmp_path / "z2.tif") in message
    assert "dtype" in message


def test_rgb_slice_among_grey_slices(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "z1.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(tmp_path / "z2.tif", np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    assert str(tmp_path / "z2.tif") in _source_error(tmp_path)


def test_non_image_file_among_slices(tmp_path: Path) -> None:
    _write_slices(tmp_path, np.zeros((3, 4, 5), np.uint8))
    (tmp_path / "notes.txt").write_text("acquired on Tuesday\n")
    message = _source_error(tmp_path)
    assert str(tmp_path / "notes.txt") in message


def test_garbage_with_tif_name_among_slices(tmp_path: Path) -> None:
    _write_slices(tmp_path, np.zeros((3, 4, 5), np.uint8))
    (tmp_path / "z1.tif").write_bytes(b"this is not a TIFF at all" * 10)
    assert str(tmp_path / "z1.tif") in _source_error(tmp_path)


def test_garbage_with_tif_name(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    path.write_bytes(os.urandom(4096).replace(b"II", b"ab").replace(b"MM", b"ab"))
    assert str(path) in _source_error(path)


def test_tiff_header_with_garbage_after(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 200)
    assert str(path) in _source_error(path)


@pytest.mark.parametrize("name", ["empty.tif", "empty.tiff", "empty.npy"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    message = _source_error(path)
    assert str(path) in message
    assert "empty" in message


def test_zero_byte_slice_among_slices(tmp_path: Path) -> None:
    _write_slices(tmp_path, np.zeros((3, 4, 5), np.uint8))
    (tmp_path / "z2.tif").write_bytes(b"")
    assert str(tmp_path / "z2.tif") in _source_error(tmp_path)


def test_truncated_tiff_header(tmp_path: Path) -> None:
    # Cut inside the first page's tags: the structure itself is damaged.
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, _random((5, 7, 9), "uint16"), photometric="minisblack")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[:200])
    assert str(cut) in _source_error(cut)


def _open_and_read_all(path: Path) -> np.ndarray:
    volume = open_volume(path)
    return volume.read(0, volume.shape[2])


def test_truncated_tiff_pixel_data(tmp_path: Path) -> None:
    # The header is intact, the pixels are not: found at open or when the slab is read,
    # and either way a SourceError naming the file (never a short or zero-filled volume).
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, _random((5, 7, 9), "uint16"), photometric="minisblack")
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=str(cut)):
        _open_and_read_all(cut)


def test_corrupt_compressed_pixel_data(tmp_path: Path) -> None:
    stack = _random((3, 16, 16), "uint8")
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[1].dataoffsets[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + 8] = b"\xde\xad\xbe\xef" * 2  # not a zlib stream any more
    path.write_bytes(bytes(data))
    volume = open_volume(path)  # the structure is fine
    np.testing.assert_array_equal(volume.read(0, 1)[..., 0], stack[:1])
    with pytest.raises(SourceError, match=str(path)):
        volume.read(1, 2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut_fraction=st.floats(0.0, 1.0, exclude_max=True), compression=st.sampled_from(["", "zlib"])
)
def test_any_truncation_is_a_source_error_or_exact(cut_fraction: float, compression: str) -> None:
    """A TIFF cut anywhere either raises SourceError (no other exception, no log record on
    stderr) or, if what remains still holds every pixel, reads back exactly."""
    stack = _random((4, 6, 5), "uint16", 7)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.tif"
        tifffile.imwrite(full, stack, compression=compression or None, photometric="minisblack")
        data = full.read_bytes()
        cut = Path(tmp) / "cut.tif"
        cut.write_bytes(data[: int(cut_fraction * len(data))])
        records: list[logging.LogRecord] = []
        handler = _ListHandler(records)
        logging.getLogger().addHandler(handler)
        error: SourceError | None = None
        try:
            got = _open_and_read_all(cut)
        except SourceError as e:
            error = e
        finally:
            logging.getLogger().removeHandler(handler)
        if error is not None:
            assert str(cut) in str(error)
        else:
            np.testing.assert_array_equal(got[..., 0], stack)
        assert not [r for r in records if r.name.startswith("tifffile")]


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_npy_that_is_text(tmp_path: Path) -> None:
    path = tmp_path / "vol.npy"
    path.write_text("1 2 3\n4 5 6\n")
    assert str(path) in _source_error(path)


def test_npy_of_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "vol.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert str(path) in _source_error(path)


def test_npy_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "vol.npy"
    np.save(path, np.zeros((8, 8, 8), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    assert str(path) in _source_error(path)


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((4, 5), None), ((2, 3, 4, 5, 6), None), ((4, 5, 6), "XYZC"), ((4, 5, 6), "ZYQ")],
)
def test_npy_with_wrong_number_of_axes(
    tmp_path: Path, shape: tuple[int, ...], axes: str | None
) -> None:
    path = tmp_path / "vol.npy"
    np.save(path, np.zeros(shape, np.uint8))
    assert str(path) in _source_error(path, npy_axes=axes)


# -- read whole or refused (issue 11) ---------------------------------------------------------


def test_a_tiff_written_page_by_page_is_read_as_its_whole_stack(tmp_path: Path) -> None:
    # tifffile counts one series per page for such a file; reading series 0 built 1 slice.
    path = tmp_path / "pages.tif"
    stack = np.stack([np.full((30, 40), i, np.uint8) for i in range(20)])
    for page in stack:
        tifffile.imwrite(path, page, append=True)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 20
    vol = open_volume(path)
    assert vol.shape == (40, 30, 20)
    np.testing.assert_array_equal(vol.read(0, 20)[..., 0], stack)
    np.testing.assert_array_equal(vol.read(7, 9)[..., 0], stack[7:9])


def test_tiff_series_with_different_pages_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tif"
    tifffile.imwrite(path, np.zeros((30, 40), np.uint8), append=True)
    tifffile.imwrite(path, np.zeros((31, 40), np.uint8), append=True)
    with pytest.raises(SourceError, match="2 image series with different pages"):
        open_volume(path)


def _crafted_tiff(path: Path, width: int, height: int) -> None:
    """A one-strip uint8 TIFF whose header declares ``width`` x ``height`` (TIFF 6.0 tags)."""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
            (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
            (279, 4, 1, 1)]  # fmt: skip
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 16) + bytes(8) + ifd + bytes(4))


def test_an_absurd_declared_size_is_refused_before_any_allocation(tmp_path: Path) -> None:
    # 2**31 x 2**31 uint8: 4 EiB, which numpy was asked to allocate (MemoryError).
    path = tmp_path / "huge.tif"
    _crafted_tiff(path, 2**31, 2**31)
    with pytest.raises(SourceError, match=r"declares shape \(2147483648, 2147483648\)"):
        open_volume(path)
    slices = tmp_path / "slices"
    slices.mkdir()
    for i in range(2):
        _crafted_tiff(slices / f"z{i}.tif", 2**31, 2**31)
    with pytest.raises(SourceError, match="declares shape"):
        open_volume(slices)


@pytest.mark.parametrize("where", ["alone", "in a folder", "in a glob"])
def test_a_fifo_is_refused_without_opening_it(tmp_path: Path, where: str) -> None:
    # Opening a FIFO for reading blocks until a writer comes: the build used to hang.
    folder = tmp_path / "slices"
    folder.mkdir()
    tifffile.imwrite(folder / "z0.tif", np.zeros((4, 4), np.uint8))
    os.mkfifo(folder / "z1.tif")
    source = {"alone": folder / "z1.tif", "in a folder": folder, "in a glob": folder / "*.tif"}
    with pytest.raises(SourceError, match="z1.tif: is a FIFO"):
        open_volume(source[where])


def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a device"):
        open_volume("/dev/zero")
