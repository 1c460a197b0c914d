"""cloud-volume + igneous on a segmentation: scale 0, a mode pyramid and legacy meshes.

Run by the peers' venv: ``python cloudvolume_igneous_labels.py STACK OUT --resolution 8 8 40 ...``.
igneous' documented path for labels: load the stack into memory (cloud-volume has no TIFF
reader), write it as a ``segmentation`` layer with ``compressed_segmentation`` encoding and
gzip, then ``create_downsampling_tasks`` per run of equal factors (its AUTO method is the mode
for segmentations; it cannot do a z-only level, see below), then ``create_meshing_tasks`` at
mip 0 with its defaults (448^3 tasks, simplification factor 100, max error 40 nm, unsharded
legacy meshes, gzip) and ``create_mesh_manifest_tasks``, all executed by a ``LocalTaskQueue``
on ``--cores`` processes.
"""

from __future__ import annotations

import argparse
import itertools
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
    args = p.parse_args()

    slices = sorted(args.stack.iterdir())
    first = tifffile.imread(slices[0])
    image = np.empty((first.shape[1], first.shape[0], len(slices)), dtype=first.dtype, order="F")
    for z, path in enumerate(slices):
        image[:, :, z] = tifffile.imread(path).T

    path = "file://" + str(args.out.resolve())
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type=str(image.dtype),
        encoding="compressed_segmentation",
        compressed_segmentation_block_size=(8, 8, 8),
        resolution=args.resolution,
        voxel_offset=[0, 0, 0],
        chunk_size=[args.chunk_size] * 3,
        volume_size=list(image.shape),
        mesh="mesh",
    )
    # parallel=1: see cloudvolume_igneous.py (its parallel upload misplaced chunks).
    vol = CloudVolume(path, info=info, compress="gzip", progress=False)
    vol.commit_info()
    vol[:, :, :] = image
    del image, vol

    factors = [tuple(int(v) for v in f.split(",")) for f in args.factors.split(";") if f]
    mip = 0
    tq = LocalTaskQueue(parallel=args.cores, progress=False)
    for factor, run in itertools.groupby(factors):
        n = len(list(run))
        if sorted(factor) == [1, 1, 2]:
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

    tq.insert(tc.create_meshing_tasks(path, mip=0, mesh_dir="mesh", compress="gzip"))
    tq.execute(progress=False)
    tq.insert(tc.create_mesh_manifest_tasks(path, mesh_dir="mesh"))
    tq.execute(progress=False)


if __name__ == "__main__":
    main()
