"""cloud-volume + igneous: scale 0 with CloudVolume, the pyramid with igneous downsample tasks,
and for a segmentation, legacy or sharded multi-resolution meshes.

Run by the peers' venv: ``python cloudvolume_igneous.py STACK OUT --resolution 8 8 40 ...
[--layer-type segmentation]``. This is igneous' documented path: load the stack into memory
(cloud-volume has no TIFF reader and writes from a numpy array), ``vol[:, :, :] = image`` with
gzip (``raw`` for an image; ``compressed_segmentation`` for a segmentation), then
``create_downsampling_tasks`` per run of equal factors (its AUTO method is the mean for images,
the mode for segmentations; it cannot do a z-only label level, see below), and for a
segmentation ``create_meshing_tasks`` at mip 0 with its defaults (448^3 tasks, simplification
factor 100, max error 40 nm, unsharded legacy meshes, gzip) and ``create_mesh_manifest_tasks``,
all executed by a ``LocalTaskQueue`` on ``--cores`` processes. With ``--mesh multires``, igneous'
sharded multi-resolution path instead: ``create_meshing_tasks(sharded=True)`` (fragments kept
per task, with a spatial index) then ``create_sharded_multires_mesh_tasks`` (murmurhash
shards, Draco, pyfqmr levels of detail) with precomp_host's octree settings, as its README
documents.

With ``--sharded DIR`` (an image), igneous' sharded image path: the stack goes to an unsharded
raw layer at DIR (igneous shards from a source layer, it has no TIFF reader either), then
``create_image_shard_transfer_tasks`` writes scale 0 sharded and
``create_image_shard_downsample_tasks`` one scale per call (its own sharding specs: one shard up
to 3.5 GB uncompressed, gzip data and minishard indices). Each phase's wall time is printed.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import igneous.task_creation as tc
import numpy as np
import tifffile
from cloudvolume import CloudVolume
from taskqueue import LocalTaskQueue


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stack", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--resolution", type=float, nargs=3, required=True)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--factors", default="", help="downsampling factors, e.g. 2,2,1;2,2,2")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--layer-type", choices=("image", "segmentation"), default="image")
    p.add_argument("--mesh", choices=("legacy", "multires"), default="legacy")
    p.add_argument("--sharded", type=Path, metavar="DIR", help="source layer of a sharded image")
    args = p.parse_args()
    labels = args.layer_type == "segmentation"
    started = time.perf_counter()

    slices = sorted(args.stack.iterdir())
    first = tifffile.imread(slices[0])
    # (x, y, z) Fortran order, the axis order CloudVolume indexes by.
    image = np.empty((first.shape[1], first.shape[0], len(slices)), dtype=first.dtype, order="F")
    for z, path in enumerate(slices):
        image[:, :, z] = tifffile.imread(path).T

    # Not Path.as_uri(): cloud-volume does not percent-decode file:// paths.
    path = "file://" + str(args.out.resolve())
    final = path
    if args.sharded is not None:
        # The source layer: raw and uncompressed, the cheapest for igneous to write and read.
        path = "file://" + str(args.sharded.resolve())
    encoding: dict[str, object] = {"encoding": "raw"}
    if labels:
        encoding = {"encoding": "compressed_segmentation", "mesh": "mesh",
                    "compressed_segmentation_block_size": (8, 8, 8)}  # fmt: skip
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type=args.layer_type,
        data_type=str(image.dtype),
        resolution=args.resolution,
        voxel_offset=[0, 0, 0],
        chunk_size=[args.chunk_size] * 3,
        volume_size=list(image.shape),
        **encoding,
    )
    # parallel=1 (its default, threaded uploads): with parallel=2, cloud-volume 12.15.2 wrote
    # the z 0-64 slab's data into the z 64-128 chunks of a 256x256x128 volume (caught by
    # benchmarks/verify.py), so only igneous' task queue runs on several processes.
    vol = CloudVolume(path, info=info, compress=False if args.sharded else "gzip", progress=False)
    vol.commit_info()
    vol[:, :, :] = image
    del image, vol
    print(f"scale 0 written by cloud-volume: {time.perf_counter() - started:.1f} s", flush=True)

    factors = [tuple(int(v) for v in f.split(",")) for f in args.factors.split(";") if f]
    mip = 0
    tq = LocalTaskQueue(parallel=args.cores, progress=False)
    if args.sharded is not None:
        _sharded(tq, path, final, factors, started)
        return
    for factor, run in itertools.groupby(factors):
        n = len(list(run))
        if labels and sorted(factor) == [1, 1, 2]:
            # tinybrain's mode (countless) fails on a one-axis factor ("Factor: [1 0 1]"),
            # and DownsampleTask passes AUTO whatever method it is given (igneous 4.37), so
            # igneous cannot build this level: it stops one level early (the z-only top
            # level of a 1024x1024x512 volume, two chunks in, one out).
            break
        tasks = tc.create_downsampling_tasks(
            path, mip=mip, num_mips=n, factor=factor, compress="gzip", fill_missing=False
        )
        tq.insert(tasks)
        tq.execute(progress=False)
        mip += n

    if labels and args.mesh == "multires":
        tq.insert(tc.create_meshing_tasks(path, mip=0, mesh_dir="mesh", sharded=True))
        tq.execute(progress=False)
        # precomp_host's octree settings (LOD 0 cells of 64 voxels, up to 8 LODs), not
        # igneous' defaults (num_lod=0: LOD 0 alone, 256-voxel cells), so both do the same work.
        tasks = tc.create_sharded_multires_mesh_tasks(
            path, mesh_dir="mesh", num_lod=8, min_chunk_size=(64, 64, 64), progress=False
        )
        tq.insert(tasks)
        tq.execute(progress=False)
    elif labels:
        tq.insert(tc.create_meshing_tasks(path, mip=0, mesh_dir="mesh", compress="gzip"))
        tq.execute(progress=False)
        tq.insert(tc.create_mesh_manifest_tasks(path, mesh_dir="mesh"))
        tq.execute(progress=False)


def _sharded(
    tq: LocalTaskQueue,
    source: str,
    path: str,
    factors: list[tuple[int, ...]],
    started: float,
) -> None:
    # gzip data (compress=True) and minishard indices (its default), like precomp_host's.
    tq.insert(tc.create_image_shard_transfer_tasks(source, path, mip=0, compress=True))
    tq.execute(progress=False)
    print(f"scale 0 sharded: {time.perf_counter() - started:.1f} s", flush=True)
    for mip, factor in enumerate(factors):
        # One scale a call: num_mips > 1 makes a task read a region 2^n times larger.
        tasks = tc.create_image_shard_downsample_tasks(path, mip=mip, factor=factor, num_mips=1)
        tq.insert(tasks)
        tq.execute(progress=False)
        print(f"scale {mip + 1} ({factor}): {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
