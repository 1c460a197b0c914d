"""Each input format, written with its own library, built and read back voxel-exact by tensorstore.

The voxel size and offset are never passed in: they must come from the file (issue #18).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import brotli
import numpy as np
import pytest

from precomp_host.build.builder import BuildOptions, build_dataset
from precomp_host.build.inputs import open_source, resolve_grid
from precomp_host.build.inputs.base import AxesVolume
from precomp_host.build.sources import SourceError

from .precomputed_reader import assert_all_chunks_present, flat_copy, read_scale

if TYPE_CHECKING:
    from precomp_host.core.model import Res3, Vec3, VolumeType

SHAPE = (37, 29, 21)  # x, y, z: not multiples of the 16-voxel chunks


def pattern(shape_xyz: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    """A volume [x, y, z] whose every voxel differs from its neighbours, never zero."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape_xyz), indexing="ij")
    out: np.ndarray = (1 + x + 41 * y + 1237 * z).astype(dtype)
    return out


def build_from(
    source: str | Path, out: Path, *, resolution: Res3 | None = None, **open_kw: Any
) -> dict[str, Any]:
    """open_source -> resolve_grid (the file's grid) -> build_dataset, as the CLI does."""
    volume = open_source(source, **open_kw)
    res, offset = resolve_grid(volume, resolution, None, str(source))
    kind: VolumeType = (
        "segmentation" if getattr(volume, "volume_type", None) == "segmentation" else "image"
    )
    options = BuildOptions(
        resolution=res, voxel_offset=offset, chunk_size=(16, 16, 16), volume_type=kind
    )
    build_dataset(volume, out, options)
    info: dict[str, Any] = json.loads((out / "info").read_text())
    return info


def scale0(out: Path, tmp: Path) -> np.ndarray:
    """Scale 0 as [x, y, z, c], through a flat uncompressed copy that tensorstore reads."""
    flat = flat_copy(out, tmp / "flat")
    assert_all_chunks_present(flat)
    got = read_scale(flat, 0)
    assert np.any(got != 0), "read as zeros"
    return got


def assert_grid(info: dict[str, Any], resolution: Res3, offset: Vec3) -> None:
    s0 = info["scales"][0]
    assert s0["resolution"] == pytest.approx(list(resolution))
    assert s0["voxel_offset"] == list(offset)


# -- NIfTI ---------------------------------------------------------------------------------------


def test_nifti_grid_and_orientation_from_the_affine(tmp_path: Path) -> None:
    """LAS (x runs right to left, as radiological files do): x is read reversed so the world
    axes are kept, voxel size from the affine in mm, origin at the lowest corner."""
    nib = pytest.importorskip("nibabel")
    data = pattern(SHAPE, "int16")
    affine = np.array([[-0.5, 0, 0, 10.0], [0, 0.5, 0, -7.5], [0, 0, 1.0, 3.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp_path / "brain.nii.gz")
    info = build_from(tmp_path / "brain.nii.gz", tmp_path / "ds")
    # x: 10 - 0.5 * 36 = -8 mm at the lowest voxel = -16 voxels of 0.5 mm.
    assert_grid(info, (5e5, 5e5, 1e6), (-16, -15, 3))
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path)[..., 0], data[::-1])


def test_nifti_4d_needs_a_timepoint(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    data = np.stack([pattern(SHAPE, "int16"), 2 * pattern(SHAPE, "int16")], axis=-1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "bold.nii")
    with pytest.raises(
        SourceError, match=r"bold.nii: 2 time points: choose one with --timepoint 0\.\.1$"
    ):
        open_source(tmp_path / "bold.nii")
    build_from(tmp_path / "bold.nii", tmp_path / "ds", timepoint=1)
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path)[..., 0], data[..., 1])


def test_nifti_rotation_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nib = pytest.importorskip("nibabel")
    c, s = math.cos(0.3), math.sin(0.3)
    affine = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(pattern(SHAPE, "uint8"), affine), tmp_path / "tilted.nii")
    with caplog.at_level(logging.WARNING):
        volume = open_source(tmp_path / "tilted.nii")
    assert "rotates or shears" in caplog.text
    assert isinstance(volume, AxesVolume)
    assert volume.shape == SHAPE  # stored in voxel order, not dropped
    assert volume.resolution == pytest.approx((1e6, 1e6, 1e6))


def _mni_template() -> Path:
    """The MNI152 2009 template nilearn ships (found without importing nilearn, which is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nilearn (test extra) not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def test_mni_template_gets_1mm_voxels_and_its_origin(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    path = _mni_template()
    info = build_from(path, tmp_path / "mni")
    # The template's affine: 1 mm voxels, voxel (0, 0, 0) at (-98, -134, -72) mm.
    assert_grid(info, (1e6, 1e6, 1e6), (-98, -134, -72))
    want = np.asarray(nib.load(path).dataobj)
    np.testing.assert_array_equal(scale0(tmp_path / "mni", tmp_path)[..., 0], want)


# -- Zarr, OME-Zarr, N5 --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_grid_from_multiscales(tmp_path: Path, version: str) -> None:
    """ome-zarr writes the image (Zarr v2 for NGFF 0.4, v3 for 0.5); the level's translation
    and the multiscale's own scale are composed as NGFF says."""
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    ome_format = pytest.importorskip("ome_zarr.format")
    fmt = ome_format.FormatV04() if version == "0.4" else ome_format.FormatV05()
    data = pattern(SHAPE)
    czyx = np.stack([data.T, (data // 2).T])
    group = zarr.open_group(tmp_path / "img.zarr", mode="w", zarr_format=fmt.zarr_format)
    ome_writer.write_image(
        czyx, group, axes="czyx", fmt=fmt, scale_factors=[2],
        scale={"c": 1.0, "z": 2.0, "y": 0.5, "x": 0.25},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "nanometer"},
    )  # fmt: skip
    attrs = dict(group.attrs)
    ms = attrs["ome"]["multiscales"] if version == "0.5" else attrs["multiscales"]
    ms[0]["datasets"][0]["coordinateTransformations"][1]["translation"] = [0, 8.0, 1.5, -0.5]
    group.attrs.update(attrs)
    info = build_from(tmp_path / "img.zarr", tmp_path / "ds")
    assert_grid(info, (0.25, 500.0, 2000.0), (-2, 3, 4))
    assert info["num_channels"] == 2
    got = scale0(tmp_path / "ds", tmp_path)
    np.testing.assert_array_equal(got, np.stack([data, data // 2], axis=-1))


def test_plain_zarr_v3_array_with_dimension_names(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    data = pattern(SHAPE)
    arr = zarr.create_array(
        tmp_path / "raw.zarr", shape=data.shape, chunks=(16, 8, 8), dtype="uint16",
        dimension_names=["x", "y", "z"],
    )  # fmt: skip
    arr[:] = data
    with pytest.raises(SourceError, match="no voxel size; pass --resolution"):
        build_from(tmp_path / "raw.zarr", tmp_path / "ds")
    info = build_from(tmp_path / "raw.zarr", tmp_path / "ds", resolution=(4.0, 4.0, 40.0))
    assert_grid(info, (4.0, 4.0, 40.0), (0, 0, 0))
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path)[..., 0], data)


def test_zarr_without_the_array(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=2)
    group.create_array("raw", shape=(4, 4, 4), dtype="uint8")
    with pytest.raises(SourceError, match=r"g.zarr:labels: no such array.*arrays here: raw"):
        open_source(tmp_path / "g.zarr", dataset="labels")
    with pytest.raises(SourceError, match=r"a Zarr group, not an array.*arrays here: raw"):
        open_source(tmp_path / "g.zarr")


def test_n5_grid_from_pixel_resolution(tmp_path: Path) -> None:
    ts = pytest.importorskip("tensorstore")
    data = pattern(SHAPE)
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "vol.n5")},
            "path": "setup0/timepoint0/s0",
            "metadata": {
                "dimensions": list(SHAPE), "blockSize": [16, 16, 16], "dataType": "uint16",
                "compression": {"type": "gzip"},
            },
            "create": True,
        }
    ).result()  # fmt: skip
    store.write(data).result()
    attrs_path = tmp_path / "vol.n5" / "setup0" / "timepoint0" / "s0" / "attributes.json"
    attrs = json.loads(attrs_path.read_text())
    attrs["pixelResolution"] = {"unit": "um", "dimensions": [0.5, 0.5, 2.0]}
    attrs_path.write_text(json.dumps(attrs))
    info = build_from(tmp_path / "vol.n5", tmp_path / "ds", dataset="setup0/timepoint0/s0")
    assert_grid(info, (500.0, 500.0, 2000.0), (0, 0, 0))
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path)[..., 0], data)


def test_zarr_region_read_touches_only_its_chunks(tmp_path: Path) -> None:
    """A region read decodes the chunks it needs and no other (never the whole plane): every
    other chunk of the plane is corrupt, so reading it would raise."""
    zarr = pytest.importorskip("zarr")
    arr = zarr.create_array(
        tmp_path / "big.zarr", shape=(4, 64, 64), chunks=(1, 16, 16), dtype="uint8",
        zarr_format=2,
    )  # fmt: skip
    arr[:] = 1
    volume = open_source(tmp_path / "big.zarr")
    assert isinstance(volume, AxesVolume)
    for chunk in (tmp_path / "big.zarr").glob("*.*.*"):
        if chunk.name not in ("1.1.2", "1.1.3"):
            chunk.write_bytes(b"not a zstd stream")  # zarr 3 default codec
    region = volume.read_region((32, 16, 1), (64, 32, 2))
    assert region.shape == (1, 16, 32, 1)
    assert np.all(region == 1)
    with pytest.raises(RuntimeError, match="decompression error"):
        volume.read(1, 2)  # the guard works: the whole plane meets a corrupt chunk


# -- HDF5 and Imaris -----------------------------------------------------------------------------


def test_hdf5_dataset_with_element_size(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    data = pattern(SHAPE)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        d = f.create_dataset("volumes/raw", data=data.T, chunks=(8, 8, 8))
        d.attrs["element_size_um"] = [0.04, 0.004, 0.004]  # z, y, x (Fiji, ilastik)
        f.create_dataset("volumes/other", data=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(SourceError, match=r"stack.h5:/volumes: is a group, not a dataset"):
        open_source(tmp_path / "stack.h5", dataset="/volumes")
    with pytest.raises(SourceError, match=r"choose a dataset with --dataset"):
        open_source(tmp_path / "stack.h5")
    info = build_from(tmp_path / "stack.h5", tmp_path / "ds", dataset="/volumes/raw")
    assert_grid(info, (4.0, 4.0, 40.0), (0, 0, 0))
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path)[..., 0], data)


def _ims_attr(text: str) -> np.ndarray:
    """Imaris stores attribute values as arrays of one-character byte strings."""
    return np.array([c.encode() for c in text], dtype="S1")


def write_imaris(path: Path, channels: list[np.ndarray], voxel_um: Res3, origin_um: Res3) -> None:
    """An ``.ims``-shaped HDF5 file: data padded to whole chunks, real size in DataSetInfo."""
    import h5py

    x, y, z = channels[0].shape
    with h5py.File(path, "w") as f:
        image = f.create_group("DataSetInfo/Image")
        for name, value in (("X", x), ("Y", y), ("Z", z)):
            image.attrs[name] = _ims_attr(str(value))
        for i, n in enumerate((x, y, z)):
            image.attrs[f"ExtMin{i}"] = _ims_attr(f"{origin_um[i]:g}")
            image.attrs[f"ExtMax{i}"] = _ims_attr(f"{origin_um[i] + n * voxel_um[i]:g}")
        image.attrs["Unit"] = _ims_attr("um")
        for c, data in enumerate(channels):
            padded = np.zeros((32, 32, 48), data.dtype)  # z, y, x rounded up to chunks of 16
            padded[:z, :y, :x] = data.T
            group = f.create_group(f"DataSet/ResolutionLevel 0/TimePoint 0/Channel {c}")
            group.create_dataset("Data", data=padded, chunks=(16, 16, 16))
            for a, n in zip("XYZ", (x, y, z), strict=True):
                group.attrs[f"ImageSize{a}"] = _ims_attr(str(n))


def test_imaris_channels_and_grid(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    data = pattern(SHAPE)
    write_imaris(tmp_path / "scan.ims", [data, data // 3], (0.2, 0.2, 1.0), (2.0, -1.0, 5.0))
    with pytest.raises(SourceError, match=r"scan.ims: channel 2 is outside 0\.\.1"):
        open_source(tmp_path / "scan.ims", channel=2)
    info = build_from(tmp_path / "scan.ims", tmp_path / "ds")
    assert_grid(info, (200.0, 200.0, 1000.0), (10, -5, 5))
    got = scale0(tmp_path / "ds", tmp_path)
    np.testing.assert_array_equal(got, np.stack([data, data // 3], axis=-1))
    build_from(tmp_path / "scan.ims", tmp_path / "one", channel=1)
    np.testing.assert_array_equal(scale0(tmp_path / "one", tmp_path)[..., 0], data // 3)


def test_container_options_apply_only_where_they_mean_something(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((2, 3, 4), np.uint8))
    with pytest.raises(SourceError, match=r"v.npy: --dataset does not apply to a TIFF or .npy"):
        open_source(tmp_path / "v.npy", dataset="/raw")
    with pytest.raises(SourceError, match=r"x.nii.gz: no such file or folder"):
        open_source(tmp_path / "x.nii.gz")


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from precomp_host.build.inputs.base import require

    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(SourceError, match=r"^reading HDF5 needs the h5py package: "
                       r"pip install 'precomp-host\[hdf5\]'$"):  # fmt: skip
        require("h5py", "hdf5", "HDF5")


# -- existing precomputed trees ------------------------------------------------------------------
# The trees are written here with the layouts the peers write (checked once against the real
# tools: cloud-volume 12.15 with compress="gzip" writes flat ``<name>.gz`` files only, image and
# compressed_segmentation alike; neuroglancer-scripts 1.2's volume-to-precomputed writes nested
# ``<key>/<x>/<y>/<z>.gz``), with numpy, gzip, brotli and compressed_segmentation directly.


def write_tree(
    root: Path,
    vol: np.ndarray,
    *,
    layout: str,
    store: str,
    offset: Vec3 = (3, 5, 7),
    chunk: Vec3 = (16, 16, 8),
    volume_type: str = "image",
) -> None:
    """A one-scale precomputed tree of ``vol`` [x, y, z, c], chunks stored as ``store`` says."""
    encoding = "compressed_segmentation" if volume_type == "segmentation" else "raw"
    scale: dict[str, Any] = {
        "key": "s0", "size": list(vol.shape[:3]), "resolution": [4, 4, 40],
        "voxel_offset": list(offset), "chunk_sizes": [list(chunk)], "encoding": encoding,
    }  # fmt: skip
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [8, 8, 8]
    info = {"type": volume_type, "data_type": str(vol.dtype), "num_channels": vol.shape[3],
            "scales": [scale]}  # fmt: skip
    root.mkdir(parents=True)
    (root / "info").write_text(json.dumps(info))
    for gz in range(math.ceil(vol.shape[2] / chunk[2])):
        for gy in range(math.ceil(vol.shape[1] / chunk[1])):
            for gx in range(math.ceil(vol.shape[0] / chunk[0])):
                a = (gx * chunk[0], gy * chunk[1], gz * chunk[2])
                b = tuple(min(a[i] + chunk[i], vol.shape[i]) for i in range(3))
                block = vol[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
                if encoding == "raw":
                    data = block.astype(block.dtype.newbyteorder("<")).tobytes(order="F")
                else:
                    import compressed_segmentation as cseg

                    data = cseg.compress(np.asfortranarray(block), block_size=(8, 8, 8), order="F")
                ranges = [f"{offset[i] + a[i]}-{offset[i] + b[i]}" for i in range(3)]
                name = "_".join(ranges) if layout == "flat" else "/".join(ranges)
                path = root / "s0" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if store == "gz":
                    path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
                elif store == "br":
                    path.with_name(path.name + ".br").write_bytes(brotli.compress(data))
                else:
                    path.write_bytes(data)


@pytest.mark.parametrize(
    ("layout", "store"),
    [("flat", "gz"), ("nested", "gz"), ("flat", "br")],
    ids=["cloud-volume-gz-flat", "neuroglancer-scripts-nested-gz", "br-only"],
)
def test_precomputed_tree_converts_voxel_exact(tmp_path: Path, layout: str, store: str) -> None:
    vol = pattern(SHAPE)[..., None]
    write_tree(tmp_path / "src", vol, layout=layout, store=store)
    info = build_from(tmp_path / "src", tmp_path / "ds")
    assert_grid(info, (4.0, 4.0, 40.0), (3, 5, 7))
    assert len(info["scales"]) >= 2, "the pyramid is recomputed"
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path), vol)


def test_precomputed_missing_chunk_is_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", pattern(SHAPE)[..., None], layout="flat", store="gz")
    next((tmp_path / "src" / "s0").glob("*.gz")).unlink()
    with pytest.raises(Exception, match=r"chunk missing \(no plain, .gz or .br file\)"):
        build_from(tmp_path / "src", tmp_path / "ds")


def _legacy_fragment(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """meshes.md legacy fragment: uint32 vertex count, float32 xyz, uint32 triangles."""
    head = np.uint32(len(vertices)).tobytes()
    return head + vertices.astype("<f4").tobytes() + faces.astype("<u4").tobytes()


def test_segmentation_tree_carries_meshes_and_properties(tmp_path: Path) -> None:
    from precomp_host.build.inputs.precomputed import PrecomputedVolume, carry_over

    x, y, _ = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    labels = ((x // 9) + 5 * (y // 10) + 1).astype(np.uint32)[..., None]
    src = tmp_path / "src"
    write_tree(src, labels, layout="flat", store="gz", volume_type="segmentation")
    info = json.loads((src / "info").read_text())
    info.update(mesh="meshes", segment_properties="props")
    (src / "info").write_text(json.dumps(info))
    fragment = _legacy_fragment(np.eye(3) * 40, np.array([[0, 1, 2]]))
    (src / "meshes").mkdir()
    (src / "meshes" / "info").write_text('{"@type": "neuroglancer_legacy_mesh"}')
    (src / "meshes" / "1:0").write_text('{"fragments": ["1:0:0-16_0-16_0-8"]}')
    (src / "meshes" / "1:0:0-16_0-16_0-8.gz").write_bytes(gzip.compress(fragment))
    props = {"@type": "neuroglancer_segment_properties",
             "inline": {"ids": ["1"], "properties": [{"id": "label", "type": "label",
                                                      "values": ["soma"]}]}}  # fmt: skip
    (src / "props").mkdir()
    (src / "props" / "info").write_text(json.dumps(props))

    out = tmp_path / "ds"
    built = build_from(src, out)
    assert built["type"] == "segmentation"
    assert carry_over(PrecomputedVolume(str(src)), out) == ["mesh", "segment_properties"]
    flat = flat_copy(out, tmp_path / "flat")
    final = json.loads((flat / "info").read_text())
    assert (final["mesh"], final["segment_properties"]) == ("mesh", "segment_properties")
    assert (flat / "mesh" / "1:0:0-16_0-16_0-8").read_bytes() == fragment
    assert json.loads((flat / "mesh" / "1:0").read_text())["fragments"] == ["1:0:0-16_0-16_0-8"]
    assert json.loads((flat / "segment_properties" / "info").read_text()) == props
    assert (out / "mesh" / "1:0:0-16_0-16_0-8.gz").is_file(), "stored by our rules"
    np.testing.assert_array_equal(scale0(out, tmp_path), labels)


def test_precomputed_tree_over_http(tmp_path: Path) -> None:
    """A gz-only tree served by a plain static server (no Content-Encoding): the .gz URL."""
    import functools
    import http.server
    import threading

    vol = pattern(SHAPE)[..., None]
    write_tree(tmp_path / "src", vol, layout="flat", store="gz")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "src"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        info = build_from(url, tmp_path / "ds")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert_grid(info, (4.0, 4.0, 40.0), (3, 5, 7))
    np.testing.assert_array_equal(scale0(tmp_path / "ds", tmp_path), vol)


def test_ome_zarr_source_pyramid_is_reused(tmp_path: Path) -> None:
    """--use-source-pyramid: each OME level becomes a scale as stored, not downsampled again."""
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    from precomp_host.build.inputs.source_pyramid import build_source_pyramid
    from precomp_host.build.inputs.zarr import open_ome_levels

    data = pattern(SHAPE)
    group = zarr.open_group(tmp_path / "img.zarr", mode="w")
    ome_writer.write_image(
        data.T, group, axes="zyx", scale_factors=[2],
        scale={"z": 2.0, "y": 0.5, "x": 0.5},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
    )  # fmt: skip
    levels = open_ome_levels(str(tmp_path / "img.zarr"))
    assert len(levels) == 2
    res, offset = resolve_grid(levels[0], None, None, "img.zarr")
    options = BuildOptions(resolution=res, voxel_offset=offset, chunk_size=(16, 16, 16))
    build_source_pyramid(levels, tmp_path / "ds", options)
    info = json.loads((tmp_path / "ds" / "info").read_text())
    # ome-zarr records level 1's true voxel size (0.5 um x 37/18 along x, not 1 um): kept.
    ms = group.attrs["ome"]["multiscales"][0]
    level1_um = ms["datasets"][1]["coordinateTransformations"][0]["scale"][::-1]
    assert info["scales"][0]["resolution"] == [500, 500, 2000]
    assert info["scales"][1]["resolution"] == pytest.approx([1000 * v for v in level1_um])
    assert [s["voxel_offset"] for s in info["scales"]] == [[0, 0, 0], [0, 0, 0]]
    flat = flat_copy(tmp_path / "ds", tmp_path / "flat")
    assert_all_chunks_present(flat)
    # ome-zarr's level 1 (its own resize, not a mean) is what scale 1 holds, voxel for voxel.
    want = np.asarray(group["s1"][:]).T
    got = read_scale(flat, 1)[..., 0]
    assert np.any(got != 0)
    np.testing.assert_array_equal(got, want)
    assert not list((tmp_path / "ds").glob(".precomp-source-level*")), "no leftovers"


# -- the command line: one line and exit 2 per bad input; the grid from the file --------------


def _bad_zarr(tmp: Path) -> tuple[list[str], str]:
    import zarr

    zarr.open_group(tmp / "g.zarr", mode="w").create_array("raw", shape=(4, 4, 4), dtype="u1")
    return [str(tmp / "g.zarr"), "--dataset", "labels"], "g.zarr:labels: no such array"


def _h5_group(tmp: Path) -> tuple[list[str], str]:
    import h5py

    with h5py.File(tmp / "f.h5", "w") as f:
        f.create_dataset("g/raw", data=np.ones((4, 4, 4), np.uint8))
    return [str(tmp / "f.h5"), "--dataset", "/g"], "f.h5:/g: is a group, not a dataset"


def _ims_channel(tmp: Path) -> tuple[list[str], str]:
    write_imaris(tmp / "s.ims", [pattern(SHAPE)], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    return [str(tmp / "s.ims"), "--channel", "3"], "s.ims: channel 3 is outside 0..0"


def _nifti_4d(tmp: Path) -> tuple[list[str], str]:
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.int16), np.eye(4)), tmp / "b.nii.gz")
    return [str(tmp / "b.nii.gz")], "--timepoint 0..2"


@pytest.mark.slow  # real processes
@pytest.mark.parametrize(
    "case",
    [_bad_zarr, _h5_group, _ims_channel, _nifti_4d],
    ids=["zarr without the array", "hdf5 path is a group", "ims channel", "nifti 4d"],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, case: Any) -> None:
    from .test_cli import assert_bad_input, assert_nothing_written, run_cli

    args, mention = case(tmp_path)
    result = run_cli("build", *args, tmp_path / "out")
    assert_bad_input(result, mention)
    assert_nothing_written(tmp_path / "out")


@pytest.mark.slow  # real processes
def test_missing_extra_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    pytest.importorskip("h5py")
    with open(tmp_path / "f.h5", "wb"):
        pass
    code = (
        "import sys; sys.modules['h5py'] = None; from precomp_host.cli import main;"
        f" raise SystemExit(main(['build', {str(tmp_path / 'f.h5')!r}, {str(tmp_path / 'o')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "precomp-host: error: reading HDF5 needs the h5py package: pip install 'precomp-host[hdf5]'"
    ]


@pytest.mark.slow  # real processes
def test_cli_takes_the_grid_from_the_file_and_notes_an_override(tmp_path: Path) -> None:
    from .test_cli import run_cli

    nib = pytest.importorskip("nibabel")
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-20.0, 10.0, 6.0)
    nib.save(nib.Nifti1Image(pattern(SHAPE, "int16"), affine), tmp_path / "v.nii")
    result = run_cli("build", tmp_path / "v.nii", tmp_path / "a", "-q")
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "a" / "info").read_text())
    assert_grid(info, (2e6, 2e6, 3e6), (-10, 5, 2))
    result = run_cli(
        "build", tmp_path / "v.nii", tmp_path / "b", "-q", "--resolution", "1", "1", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "--resolution 1 1 1 nm overrides the file's voxel size 2e+06 2e+06 3e+06 nm" in (
        result.stderr
    )
    info = json.loads((tmp_path / "b" / "info").read_text())
    assert_grid(info, (1.0, 1.0, 1.0), (-10, 5, 2))
