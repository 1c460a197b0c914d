"""Write the peers' own trees into ARGV[1]: cloud-volume ``compress="br"`` (cv-br) and
``compress="gzip"`` (cv-gz), neuroglancer-scripts with gzip (ngs): flat chunk names, each chunk
stored only compressed. Run by tests/test_deploy_peers.py in the peers' venv (cloud-volume and
neuroglancer-scripts are never dependencies of precomp_host)."""

from __future__ import annotations

import sys

import numpy as np
from cloudvolume import CloudVolume
from neuroglancer_scripts import accessor, precomputed_io

SIZE, CHUNK = 64, 32


def main(out: str) -> None:
    data = (np.arange(SIZE**3) % 251).astype("uint8").reshape(SIZE, SIZE, SIZE)  # x, y, z
    info = CloudVolume.create_new_info(
        num_channels=1, layer_type="image", data_type="uint8", encoding="raw",
        resolution=[8, 8, 8], voxel_offset=[0, 0, 0], chunk_size=[CHUNK] * 3,
        volume_size=[SIZE] * 3,
    )  # fmt: skip
    for name, compress in (("cv-br", "br"), ("cv-gz", "gzip")):
        vol = CloudVolume(f"file://{out}/{name}", info=info, compress=compress, progress=False)
        vol.commit_info()
        vol[:, :, :] = data[..., None]
    scale = {"key": "8_8_8", "size": [SIZE] * 3, "resolution": [8, 8, 8], "encoding": "raw",
             "voxel_offset": [0, 0, 0], "chunk_sizes": [[CHUNK] * 3]}  # fmt: skip
    ngs_info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [scale]}
    io = precomputed_io.get_IO_for_new_dataset(
        ngs_info, accessor.get_accessor_for_url(f"{out}/ngs", {"gzip": True, "flat": True})
    )
    for x in range(0, SIZE, CHUNK):
        for y in range(0, SIZE, CHUNK):
            for z in range(0, SIZE, CHUNK):
                block = data[x : x + CHUNK, y : y + CHUNK, z : z + CHUNK]
                chunk = np.ascontiguousarray(block.transpose(2, 1, 0)[None])  # C, Z, Y, X
                io.write_chunk(chunk, "8_8_8", (x, x + CHUNK, y, y + CHUNK, z, z + CHUNK))


if __name__ == "__main__":
    main(sys.argv[1])
