"""Input volumes, read lazily by region: the :class:`Volume` returned by :func:`open_volume`.

A volume is read as ``[z, y, x, channel]`` blocks of an x/y/z box
(``Volume.read_region(start, stop)``; ``read(z0, z1)`` is the box of whole slices), so memory
is bounded by the box a build task asks for, not by the plane or the depth (issue #13).
Sources, and how each reads a box:

* a folder of 2D TIFF slices, or a glob of them, in natural order (``z2`` before ``z10``),
  and one TIFF (multi-page, 3D, OME-TIFF): an uncompressed page is memory-mapped for the
  read and unmapped after it (so its pages do not stay in our RSS); a striped or tiled page
  reads and decodes only the strips or tiles the box touches (tifffile's segment reader);
  any other page (planar, SubIFD-tiled volumes) is read whole and cropped;
* a ``.npy`` file, memory-mapped for each read;
* a TIFF-tile dataset (a folder with an ``info``, chunks as 3D TIFFs), in
  :mod:`~precomp_host.build.tiff_tiles`, reads the tiles the box touches.

A volume without ``read_region`` (a caller's own) is read by whole slices and cropped
(:func:`read_region`).

Everything that can be checked without reading pixels is checked when the volume is opened
(every slice's shape and dtype, every file being a TIFF), so bad input fails before anything is
written. Problems raise :class:`SourceError` with one line naming the file; what could hang or
exhaust memory (FIFOs, devices, absurd declared sizes) is refused before it is opened or
allocated. (A little over 400 lines: the readers and the checks that guard them belong together.)
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from .boxes import slices_zyx

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

Shape3 = tuple[int, int, int]


class SourceError(ValueError):
    """The input cannot be read as a volume; the message names the file and the problem."""


class Volume(Protocol):
    """A lazily read volume: ``shape`` is (x, y, z); ``read`` returns ``[z, y, x, c]``."""

    shape: Shape3
    dtype: np.dtype[Any]
    num_channels: int

    def read(self, z0: int, z1: int) -> np.ndarray: ...


def read_region(volume: Volume, start: Shape3, stop: Shape3) -> np.ndarray:
    """Voxels ``[start, stop)`` (x, y, z, from 0) of ``volume`` as ``[z, y, x, c]``.

    Every source of ours has ``read_region``; a volume without it (a caller's own) is read by
    whole slices and cropped.
    """
    reader = getattr(volume, "read_region", None)
    if reader is not None:
        out: np.ndarray = reader(start, stop)
        return out
    (x0, y0, z0), (x1, y1, z1) = start, stop
    return np.ascontiguousarray(volume.read(z0, z1)[:, y0:y1, x0:x1])


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``z2`` before ``z10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _as_zyxc(arr: np.ndarray, axes: str, where: str) -> np.ndarray:
    """A view of ``arr`` (labelled by tifffile-style ``axes``) as [z, y, x, c]."""
    axes = axes.upper()
    # Singleton axes we do not model (time, ...) are dropped; anything else is ambiguous.
    for i in reversed(range(len(axes))):
        if axes[i] not in "ZYXCS" and arr.shape[i] == 1:
            arr = arr.reshape(arr.shape[:i] + arr.shape[i + 1 :])
            axes = axes[:i] + axes[i + 1 :]
    axes = axes.replace("I", "Z").replace("Q", "Z")
    if "S" in axes and "C" in axes:
        raise SourceError(f"{where}: both samples and channels axes ({axes}) are not supported")
    axes = axes.replace("S", "C")
    unknown = set(axes) - set("ZYXC")
    if unknown or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
        raise SourceError(f"{where}: cannot read axes {axes!r} as a z, y, x[, channel] volume")
    if "Z" not in axes:
        arr, axes = arr[np.newaxis], "Z" + axes
    if "C" not in axes:
        arr, axes = arr[..., np.newaxis], axes + "C"
    return np.transpose(arr, [axes.index(a) for a in "ZYXC"])


@dataclass
class ArrayVolume:
    """A volume over an array-like in [z, y, x, c] (a memory map or an in-memory array)."""

    array: np.ndarray

    def __post_init__(self) -> None:
        z, y, x, c = self.array.shape
        self.shape: Shape3 = (x, y, z)
        self.dtype: np.dtype[Any] = self.array.dtype
        self.num_channels = c

    def read(self, z0: int, z1: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[z0:z1])

    def read_region(self, start: Shape3, stop: Shape3) -> np.ndarray:
        return np.ascontiguousarray(self.array[slices_zyx(start, stop)])


@dataclass
class MappedVolume:
    """An uncompressed array in a file (a .npy, an uncompressed TIFF), read box by box.

    Pages of a mapping count in our resident set while it lives, so one mapping held for a
    whole build would count the whole file against our memory bound by its end. A file laid
    out as ``[z, y, x, c]`` in C order (the usual case) is mapped one plane at a time, for the
    rows of the box in it; any other layout is mapped for the one read and unmapped after it.

    :param file_shape: the array's shape in the file; ``axes`` names its dimensions
        (tifffile's letters).
    """

    path: str
    offset: int
    file_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    axes: str
    order: Literal["C", "F"] = "C"

    def __post_init__(self) -> None:
        view = self._map()
        z, y, x, c = view.shape
        self.shape: Shape3 = (x, y, z)
        self.num_channels = c
        self._direct = bool(view.flags.c_contiguous)

    def _map(self) -> np.ndarray:
        try:
            mapped = np.memmap(
                self.path,
                self.dtype,
                "r",
                self.offset,
                self.file_shape,
                self.order,
            )
        except (OSError, ValueError) as e:  # shorter than its header says (numpy's ValueError)
            raise SourceError(f"{self.path}: cannot map its data ({e})") from None
        return _as_zyxc(mapped, self.axes, self.path)

    def read_region(self, start: Shape3, stop: Shape3) -> np.ndarray:
        if self._direct:
            return self._by_plane(start, stop)
        view = self._map()
        out = np.array(view[slices_zyx(start, stop)])
        del view  # unmapped with its last reference
        return out

    def _by_plane(self, start: Shape3, stop: Shape3) -> np.ndarray:
        (x0, y0, z0), (x1, y1, z1) = start, stop
        x, y, _ = self.shape
        c = self.num_channels
        out = np.empty((z1 - z0, y1 - y0, x1 - x0, c), self.dtype)
        plane = y * x * c * self.dtype.itemsize
        for k in range(z1 - z0):
            try:
                mapped = np.memmap(self.path, self.dtype, "r", self.offset + (z0 + k) * plane,
                                   (y, x, c))  # fmt: skip
            except (OSError, ValueError) as e:  # the file shrank since it was opened
                raise SourceError(f"{self.path}: cannot map its data ({e})") from None
            out[k] = mapped[y0:y1, x0:x1]
            del mapped  # unmapped now: at most one plane's rows of the box stay resident
        return out

    def read(self, z0: int, z1: int) -> np.ndarray:
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))


class _TifffileProblems(logging.Filter):
    """Takes tifffile's log records on threads that are reading a TIFF through us.

    tifffile does not raise on a damaged structure (a bad page offset, a corrupted tag list):
    it logs an ERROR and carries on with the pages it could parse, so a cut-off stack would
    silently become a shorter volume, and the records would reach the user's terminal as
    extra lines beside ours. On those threads we collect the records instead, and turn the
    errors into a :class:`SourceError`; other threads are left alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        collected: list[logging.LogRecord] | None = getattr(self.local, "records", None)
        if collected is None:
            return True
        collected.append(record)
        return False


_TIFFFILE_FILTER = _TifffileProblems()
logging.getLogger("tifffile").addFilter(_TIFFFILE_FILTER)


@contextmanager
def _tifffile_checked(path: str) -> Iterator[None]:
    """Raise :class:`SourceError` if tifffile logged an error about ``path`` meanwhile."""
    local = _TIFFFILE_FILTER.local
    outer = getattr(local, "records", None)
    records: list[logging.LogRecord] = []
    local.records = records
    try:
        yield
    finally:
        local.records = outer
    for r in records:
        if r.levelno < logging.ERROR:
            log.debug("%s: tifffile: %s", path, r.getMessage())
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    if errors:
        raise SourceError(f"{path}: corrupt TIFF ({errors[0]})")


#: Declared sizes refused before any allocation (crafted or damaged headers): a plane is read
#: whole into memory (a slab holds whole planes), and no machine holds more than this.
MAX_PLANE_BYTES = 1 << 36  # 64 GiB
MAX_VOLUME_BYTES = 1 << 50  # 1 PiB


def check_declared_size(
    where: str, shape: tuple[int, ...], dtype: np.dtype[Any], planes: int
) -> None:
    """:class:`SourceError` for a declared shape no build could hold (checked before reading);
    ``planes`` of the leading axes are z (the rest is one plane)."""
    if any(n <= 0 for n in shape):
        raise SourceError(f"{where}: declares an empty shape {shape}")
    plane = math.prod(shape[planes:]) * dtype.itemsize
    total = math.prod(shape[:planes]) * plane
    if plane > MAX_PLANE_BYTES or total > MAX_VOLUME_BYTES:
        raise SourceError(
            f"{where}: declares shape {shape} of {dtype} ({_gib(total)}, {_gib(plane)} per plane)"
            f"; refusing more than {_gib(MAX_VOLUME_BYTES)} or {_gib(MAX_PLANE_BYTES)} per plane"
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):,.0f} GiB"


def _tiff_info(path: str) -> tuple[tuple[int, ...], np.dtype[Any], str, int]:
    """(shape, dtype, axes, number of pages) of a TIFF's image, without pixels.

    Several series (a TIFF written page by page is one series per page for tifffile) are one
    stack of all their pages when their pages agree, and refused otherwise: never cut to the
    first series.
    """
    import tifffile

    try:
        with _tifffile_checked(path), tifffile.TiffFile(path) as tif:
            found = [(tuple(s.shape), np.dtype(s.dtype), s.axes, len(s.pages)) for s in tif.series]
    except SourceError:
        raise
    except Exception as e:  # tifffile raises many kinds (struct.error, ...) on damaged files
        raise SourceError(f"{path}: not a readable TIFF image ({e})") from None
    if not found:
        raise SourceError(f"{path}: holds no image")
    shape, dtype, axes, pages = found[0] if len(found) == 1 else _one_stack(path, found)
    plane_dims = 3 if axes.endswith("S") else 2
    check_declared_size(path, shape, dtype, len(shape) - plane_dims)
    return shape, dtype, axes, pages


def _one_stack(
    path: str, found: list[tuple[tuple[int, ...], np.dtype[Any], str, int]]
) -> tuple[tuple[int, ...], np.dtype[Any], str, int]:
    """The series of a TIFF as one z-stack of their pages (page shape, dtype and axes agree)."""
    planes = set()
    for shape, dtype, axes, pages in found:
        plane_axes = axes[-3:] if axes.endswith("S") else axes[-2:]
        lead = axes[: len(axes) - len(plane_axes)]
        stacked = [a for a, n in zip(lead, shape, strict=False) if n != 1]
        if any(a not in "ZIQ" for a in stacked) or math.prod(shape[: len(lead)]) != pages:
            raise SourceError(f"{path}: {len(found)} image series, one of axes {axes!r}: "
                              "cannot read them as one stack of slices")  # fmt: skip
        planes.add((shape[len(lead) :], dtype, plane_axes))
    if len(planes) != 1:
        described = ", ".join(sorted({f"{s} {d}" for s, d, _ in planes}))
        raise SourceError(f"{path}: {len(found)} image series with different pages ({described})")
    ((plane, dtype, plane_axes),) = planes
    total = sum(pages for *_, pages in found)
    return (total, *plane), dtype, "Z" + plane_axes, total


def _read_tiff(path: str) -> np.ndarray:
    import tifffile

    try:
        with _tifffile_checked(path):
            out: np.ndarray = tifffile.imread(path)
    except SourceError:
        raise
    except Exception as e:  # tifffile raises many kinds on truncated or corrupt data
        raise SourceError(f"{path}: cannot read TIFF data ({type(e).__name__}: {e})") from None
    return out


def _read_tiff_region(
    path: str, page: int, page_shape: tuple[int, ...], axes: str, ys: slice, xs: slice
) -> np.ndarray:
    """Rows ``ys`` and columns ``xs`` of page ``page``, in the page's ``axes`` (``YX``, ``YXS``).

    Only the page's bytes in the box are read where its storage allows: an uncompressed page
    is memory-mapped for this read alone; a striped or tiled page (planar configuration
    contiguous, one image plane deep) decodes only the segments that meet the box. Anything
    else is read whole and cropped.
    """
    import tifffile

    try:
        with _tifffile_checked(path), tifffile.TiffFile(path) as tif:
            tiff_page = tif.pages[page]
            assert isinstance(tiff_page, tifffile.TiffPage)
            if tiff_page.axes != axes or tuple(tiff_page.shape) != page_shape:
                out = _crop_page(tiff_page.asarray().reshape(page_shape), axes, ys, xs)
            elif tiff_page.is_memmappable:
                out = _mapped_page(tif, tiff_page, axes, ys, xs)
            elif (
                tiff_page.planarconfig == 1
                and tiff_page.imagedepth == 1
                and not (tiff_page.is_subsampled)
            ):
                out = _segments_of_page(tif, tiff_page, axes, ys, xs)
            else:
                out = _crop_page(tiff_page.asarray(), axes, ys, xs)
    except SourceError:
        raise
    except Exception as e:  # tifffile raises many kinds on truncated or corrupt data
        raise SourceError(f"{path}: cannot read TIFF data ({type(e).__name__}: {e})") from None
    return out


def _crop_page(arr: np.ndarray, axes: str, ys: slice, xs: slice) -> np.ndarray:
    index = tuple(ys if a == "Y" else xs if a == "X" else slice(None) for a in axes)
    return np.ascontiguousarray(arr[index])


def _mapped_page(tif: Any, page: Any, axes: str, ys: slice, xs: slice) -> np.ndarray:
    offset = page.dataoffsets[0]
    dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
    if offset + math.prod(page.shape) * dtype.itemsize > tif.filehandle.size:
        raise SourceError(f"{tif.filehandle.path}: file is shorter than its header says")
    mapped = np.memmap(tif.filehandle.path, dtype, "r", offset, tuple(page.shape))
    out = _crop_page(mapped, axes, ys, xs).astype(dtype.newbyteorder("="), copy=False)
    del mapped  # unmapped now: its pages leave our resident set
    return out


def _segments_of_page(tif: Any, page: Any, axes: str, ys: slice, xs: slice) -> np.ndarray:
    """The box of a striped or tiled page from the segments (strips, tiles) that meet it."""
    seg_h, seg_w = int(page.chunks[0]), int(page.chunks[1])
    across = -(-int(page.imagewidth) // seg_w)
    y0, y1 = ys.start, ys.stop
    x0, x1 = xs.start, xs.stop
    wanted = [
        ty * across + tx
        for ty in range(y0 // seg_h, -(-y1 // seg_h))
        for tx in range(x0 // seg_w, -(-x1 // seg_w))
    ]
    samples = int(page.samplesperpixel)
    full = np.zeros((y1 - y0, x1 - x0, samples), page.dtype)
    offsets = [page.dataoffsets[i] for i in wanted]
    counts = [page.databytecounts[i] for i in wanted]
    for data, index in tif.filehandle.read_segments(offsets, counts, indices=wanted):
        if data is None or len(data) == 0:
            raise SourceError(f"{tif.filehandle.path}: segment {index} of its data is missing")
        segment, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        ty, tx = divmod(index, across)
        h, w = shape[1], shape[2]
        block = np.asarray(segment).reshape(
            -1, seg_h if page.is_tiled else shape[1], seg_w, samples
        )
        block = block[0, :h, :w]
        ay, ax = ty * seg_h, tx * seg_w
        sy0, sy1 = max(y0, ay), min(y1, ay + h)
        sx0, sx1 = max(x0, ax), min(x1, ax + w)
        full[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[
            sy0 - ay : sy1 - ay, sx0 - ax : sx1 - ax
        ]
    return full if "S" in axes else full[..., 0]


@dataclass
class SliceStack:
    """A folder or glob of 2D TIFF slices, one per z, all of one shape and dtype."""

    files: list[str]

    def __post_init__(self) -> None:
        first_shape, first_dtype, axes, _ = _tiff_info(self.files[0])
        for f in self.files[1:]:
            shape, dtype, _, _ = _tiff_info(f)
            if shape != first_shape:
                raise SourceError(
                    f"{f}: slice shape {shape} differs from {self.files[0]}'s {first_shape}"
                )
            if dtype != first_dtype:
                raise SourceError(
                    f"{f}: slice dtype {dtype} differs from {self.files[0]}'s {first_dtype}"
                )
        if "Z" in axes or "I" in axes or len(first_shape) not in (2, 3):
            raise SourceError(f"{self.files[0]}: expected a 2D slice, got shape {first_shape}")
        self._axes, self._page_shape = axes, first_shape
        probe = _as_zyxc(np.empty(first_shape, first_dtype), axes, self.files[0])
        _, y, x, c = probe.shape
        self.shape: Shape3 = (x, y, len(self.files))
        self.dtype: np.dtype[Any] = first_dtype
        self.num_channels = c

    def read(self, z0: int, z1: int) -> np.ndarray:
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))

    def read_region(self, start: Shape3, stop: Shape3) -> np.ndarray:
        (x0, y0, z0), (x1, y1, z1) = start, stop
        out = np.empty((z1 - z0, y1 - y0, x1 - x0, self.num_channels), self.dtype)
        for i, f in enumerate(self.files[z0:z1]):
            plane = _read_tiff_region(
                f, 0, self._page_shape, self._axes, slice(y0, y1), slice(x0, x1)
            )
            out[i] = _as_zyxc(plane, self._axes, f)[0]
        return out


@dataclass
class PagedTiff:
    """One TIFF whose pages are the z-slices (multi-page stacks, most OME-TIFFs)."""

    path: str
    page_shape: tuple[int, ...]
    page_axes: str
    pages: int
    dtype: np.dtype[Any]

    def __post_init__(self) -> None:
        probe = _as_zyxc(np.empty(self.page_shape, self.dtype), self.page_axes, self.path)
        _, y, x, c = probe.shape
        self.shape: Shape3 = (x, y, self.pages)
        self.num_channels = c

    def read(self, z0: int, z1: int) -> np.ndarray:
        x, y, _ = self.shape
        return self.read_region((0, 0, z0), (x, y, z1))

    def read_region(self, start: Shape3, stop: Shape3) -> np.ndarray:
        (x0, y0, z0), (x1, y1, z1) = start, stop
        ys, xs = slice(y0, y1), slice(x0, x1)
        planes = [
            _read_tiff_region(self.path, z, self.page_shape, self.page_axes, ys, xs)
            for z in range(z0, z1)
        ]
        return np.ascontiguousarray(_as_zyxc(np.stack(planes), "Z" + self.page_axes, self.path))


def _open_tiff(path: str) -> Volume:
    import tifffile

    shape, dtype, axes, pages = _tiff_info(path)
    try:
        with _tifffile_checked(path):
            mapped = tifffile.memmap(path, mode="r")
    except SourceError:
        raise
    except (ValueError, tifffile.TiffFileError):
        mapped = None  # compressed or tiled: read page by page instead
    if mapped is not None and mapped.shape == shape:
        # Mapped again for each read (MappedVolume): only its place in the file is kept.
        offset, dtype = int(mapped.offset), mapped.dtype
        del mapped
        return MappedVolume(path, offset, shape, dtype, axes)
    plane_axes = axes[-3:] if axes.endswith("S") else axes[-2:]
    lead = axes[: len(axes) - len(plane_axes)]
    lead_shape = shape[: len(lead)]
    stacked = [a for a, n in zip(lead, lead_shape, strict=True) if n != 1]
    if pages == int(np.prod(lead_shape)) and (
        not stacked or stacked == [stacked[0]] and stacked[0] in "ZIQ"
    ):
        return PagedTiff(path, shape[len(lead) :], plane_axes, pages, dtype)
    # Any other arrangement (e.g. OME with C outside Z): read it whole, once.
    return ArrayVolume(_as_zyxc(_read_tiff(path), axes, path))


def _open_npy(path: str, axes: str) -> Volume:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SourceError(f"{path}: not a readable .npy array ({e})") from None
    if arr.ndim != len(axes):
        raise SourceError(f"{path}: array has {arr.ndim} dimensions, axes {axes!r} expected")
    if isinstance(arr, np.memmap) and (arr.flags.c_contiguous or arr.flags.f_contiguous):
        # Mapped again for each read (MappedVolume), so the pages read do not stay mapped
        # (and counted in our RSS) for the whole build.
        order: Literal["C", "F"] = "C" if arr.flags.c_contiguous else "F"
        _as_zyxc(arr, axes, path)  # the axes are checked at open
        return MappedVolume(path, int(arr.offset), tuple(arr.shape), arr.dtype, axes, order)
    return ArrayVolume(_as_zyxc(arr, axes, path))


_TIFF_SUFFIXES = (".tif", ".tiff")


def open_volume(source: str | os.PathLike[str], *, npy_axes: str | None = None) -> Volume:
    """Open ``source`` (folder, glob, TIFF or .npy) as a lazily read :class:`Volume`.

    ``npy_axes`` names the axes of a ``.npy`` array in tifffile's letters, default ``ZYX`` for
    3D and ``ZYXC`` for 4D arrays (numpy's usual C order of an image stack).
    """
    src = os.fspath(source)
    if any(ch in src for ch in "*?[") and not os.path.exists(src):
        files = sorted(glob.glob(src), key=natural_key)
        if not files:
            raise SourceError(f"{src}: no file matches this pattern")
        return _stack(files)
    if os.path.isdir(src) and os.path.isfile(os.path.join(src, "info")):
        return _open_tiff_tiles(src)
    if os.path.isdir(src):
        names = sorted((n for n in os.listdir(src) if not n.startswith(".")), key=natural_key)
        # Every entry but folders: a FIFO or device among the slices is refused, not skipped.
        files = [os.path.join(src, n) for n in names if not os.path.isdir(os.path.join(src, n))]
        if not files:
            raise SourceError(f"{src}: folder has no image slices")
        return _stack(files)
    if not os.path.exists(src):
        raise SourceError(f"{src}: no such file or folder")
    _check_regular(src)
    if os.path.getsize(src) == 0:
        raise SourceError(f"{src}: file is empty")
    if src.lower().endswith(".npy"):
        arr_ndim = _npy_ndim(src)
        return _open_npy(src, npy_axes or ("ZYX" if arr_ndim == 3 else "ZYXC"))
    return _open_tiff(src)


def _open_tiff_tiles(folder: str) -> Volume:
    # A precomputed-tif dataset (info + one 3D TIFF per chunk, issue #15); imported here, as
    # its module reports its own errors and needs nothing of this one.
    from .tiff_tiles import TiffTileError, TiffTileVolume

    try:
        return TiffTileVolume(folder)
    except TiffTileError as e:
        raise SourceError(str(e)) from None


def _npy_ndim(path: str) -> int:
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).ndim)
    except (ValueError, OSError, EOFError) as e:
        # np.load raises EOFError for a file that ends before its header does.
        raise SourceError(f"{path}: not a readable .npy array ({e})") from None


_NOT_REGULAR = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                stat.S_IFSOCK: "a socket"}  # fmt: skip


def _check_regular(path: str) -> None:
    """Refuse what is not a regular file (a FIFO would block the build forever, a device has
    no end), before opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
        raise SourceError(f"{path}: is {kind}, not an image file")


def _stack(files: list[str]) -> Volume:
    for f in files:
        _check_regular(f)
        if not f.lower().endswith(_TIFF_SUFFIXES):
            raise SourceError(f"{f}: not a TIFF slice (expected .tif or .tiff among the slices)")
    if len(files) == 1:
        return _open_tiff(files[0])
    return SliceStack(files)


def volume_from_array(array: np.ndarray, axes: str = "ZYX") -> Volume:
    """Wrap an in-memory array (e.g. the embedded sample) as a :class:`Volume`."""
    return ArrayVolume(_as_zyxc(array, axes, "<array>"))
