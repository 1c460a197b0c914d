"""cloud-volume + igneous: scale 0 with CloudVolume, the pyramid with igneous downsample tasks.

Run by the peers' venv: ``python cloudvolume_igneous.py STACK OUT --resolution 8 8 40 ...``.
This is igneous' documented path: load the stack into memory (cloud-volume has no TIFF reader
and writes from a numpy array), ``vol[:, :, :] = image`` with gzip, then
``create_downsampling_tasks`` per run of equal factors executed by a ``LocalTaskQueue``.
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
    # (x, y, z) Fortran order, the axis order CloudVolume indexes by.
    image = np.empty((first.shape[1], first.shape[0], len(slices)), dtype=first.dtype, order="F")
    for z, path in enumerate(slices):
        image[:, :, z] = tifffile.imread(path).T

    # Not Path.as_uri(): cloud-volume does not percent-decode file:// paths.
    path = "file://" + str(args.out.resolve())
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="image",
        data_type=str(image.dtype),
        encoding="raw",
        resolution=args.resolution,
        voxel_offset=[0, 0, 0],
        chunk_size=[args.chunk_size] * 3,
        volume_size=list(image.shape),
    )
    # parallel=1 (its default, threaded uploads): with parallel=2, cloud-volume 12.15.2 wrote
    # the z 0-64 slab's data into the z 64-128 chunks of a 256x256x128 volume (caught by
    # benchmarks/verify.py), so only igneous' task queue runs on several processes.
    vol = CloudVolume(path, info=info, compress="gzip", progress=False)
    vol.commit_info()
    vol[:, :, :] = image
    del image, vol

    factors = [tuple(int(v) for v in f.split(",")) for f in args.factors.split(";") if f]
    mip = 0
    tq = LocalTaskQueue(parallel=args.cores, progress=False)
    for factor, run in itertools.groupby(factors):
        n = len(list(run))
        tasks = tc.create_downsampling_tasks(
            path, mip=mip, num_mips=n, factor=factor, compress="gzip", fill_missing=False
        )
        tq.insert(tasks)
        tq.execute(progress=False)
        mip += n


if __name__ == "__main__":
    main()
