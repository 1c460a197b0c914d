"""tensorstore: scale 0 of a ``neuroglancer_precomputed`` volume, raw, no compression.

Run by the peers' venv: ``python tensorstore_scale0.py STACK OUT --resolution 8 8 40 ...``.
Reads the stack one chunk-deep z-slab at a time and writes each slab with one transaction-free
``write``; tensorstore has no downsampling pyramid builder, so this is a floor, not a peer.

``--sharding JSON --slab-depth N`` writes a sharded scale 0 instead (sharded.md), with gzip as
the spec says, in slabs of N slices: N is the shards' depth, so every shard is written once
(a slab cutting through shards would make tensorstore read, merge and rewrite them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorstore as ts
import tifffile


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stack", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--resolution", type=float, nargs=3, required=True)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--sharding", type=json.loads, default=None)
    p.add_argument("--slab-depth", type=int, default=None)
    args = p.parse_args()

    slices = sorted(args.stack.iterdir())
    first = tifffile.imread(slices[0])
    size = [first.shape[1], first.shape[0], len(slices)]
    c = args.chunk_size
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(args.out.resolve())},
            "multiscale_metadata": {
                "type": "image",
                "data_type": str(first.dtype),
                "num_channels": 1,
            },
            "scale_metadata": {
                "size": size,
                "resolution": args.resolution,
                "chunk_size": [c, c, c],
                "encoding": "raw",
                "voxel_offset": [0, 0, 0],
                **({"sharding": args.sharding} if args.sharding else {}),
            },
            "context": {
                "data_copy_concurrency": {"limit": args.cores},
                "file_io_concurrency": {"limit": args.cores},
            },
        },
        create=True,
    ).result()
    depth = args.slab_depth or c
    for z0 in range(0, len(slices), depth):
        z1 = min(z0 + depth, len(slices))
        slab = np.stack([tifffile.imread(s) for s in slices[z0:z1]], axis=0)  # (z, y, x)
        store[:, :, z0:z1, 0].write(slab.transpose(2, 1, 0)).result()


if __name__ == "__main__":
    main()
