"""The data tree the HTTP contract is checked on: :class:`ContractTree` and its writer.

:func:`build_tree` describes, in memory, every file a server under test must serve and what a
client must get back (:class:`Resource`); :func:`write_contract_tree` writes it into a folder
that the server then serves as its root. The tree holds

* ``img/``: a nested-layout image dataset whose six chunks cover every combination of stored
  variants (plain only, ``.gz`` only, ``.gz`` + ``.br``, plain + ``.gz``, ``.br`` only, all three);
* ``neg/``: a nested dataset whose ``voxel_offset`` is negative (chunk ``-16-0_0-16_-32--16``);
* ``flat/``: a flat-layout dataset, its ``info`` with a ``.gz`` sibling;
* ``ngs/``: a gz-only flat tree as neuroglancer-scripts and cloud-volume write it (``X.gz`` and
  no ``X``), one 256 KiB chunk;
* ``seg/``: a segmentation with a ``.shard`` file (plain, read with Range), legacy mesh
  manifests ``<id>:0`` on disk, the colon-free fallbacks ``<id>`` and ``<id>.json``, a mesh
  fragment and ``segment_properties/info``;
* a secret file *outside* the root and symlinks inside the root that point at it, for the
  traversal checks.

Every file gets the same modification time (:data:`MTIME`) so ``Last-Modified`` can be compared
exactly. Data is generated from fixed seeds: two calls give byte-identical trees.
"""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from precomp_host.core.encodings import BROTLI, GZIP
from precomp_host.core.media_types import JSON, OCTET_STREAM

#: 2023-11-14T22:13:20Z, set on every file (identity and siblings alike).
MTIME = 1_700_000_000
#: Bytes that must never appear in any response: the content of the file outside the root.
SECRET = b"contract-secret-outside-the-served-root-7f3a"
#: Name of the folder beside the root that holds the secret (``<root>-outside/secret.txt``).
OUTSIDE_SUFFIX = "-outside"

#: Stored variant -> suffix on disk (None is the plain, identity file).
_SUFFIX: dict[str | None, str] = {None: "", GZIP.name: GZIP.suffix, BROTLI.name: BROTLI.suffix}
_COMPRESS = {GZIP.name: GZIP.compress, BROTLI.name: BROTLI.compress}


@dataclass(frozen=True)
class Resource:
    """One URL of the contract tree and the files behind it.

    ``stored`` maps each variant stored on disk (None = plain file, ``"gzip"``, ``"br"``) to its
    exact bytes; ``identity`` is the decoded content every variant stands for.
    """

    name: str  # short, stable, used in check ids
    url: str  # path relative to the base URL, exactly as sent (may hold %3A)
    disk: str  # path relative to the root of the plain file (siblings add their suffix)
    identity: bytes
    stored: dict[str | None, bytes]
    media_type: str

    @property
    def has_variants(self) -> bool:
        """Whether more than one representation exists (a sibling, or a decoded identity)."""
        return any(k is not None for k in self.stored)

    def sizes(self) -> dict[str | None, float]:
        """Every representation a complete server can send -> its size (for ``choose``)."""
        out: dict[str | None, float] = {k: len(v) for k, v in self.stored.items()}
        out.setdefault(None, len(self.identity))
        return out

    def body(self, encoding: str | None) -> bytes:
        return self.identity if encoding is None else self.stored[encoding]


@dataclass(frozen=True)
class ContractTree:
    """The whole tree: resources by name, raw files and links to write, and missing URLs."""

    resources: dict[str, Resource]
    files: dict[str, bytes] = field(default_factory=dict)  # rel path -> bytes, all written
    symlinks: dict[str, str] = field(default_factory=dict)  # rel path -> link target


def _pattern_bytes(seed: int, n: int) -> bytes:
    """Compressible bytes: short runs of skewed values, like a dim image chunk.

    (This distribution compresses better with brotli than with gzip, as real chunks do, so the
    "smallest variant wins" checks can tell the two apart.)
    """
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += bytes([min(255, int(rng.expovariate(0.2)))]) * rng.randrange(1, 6)
    return bytes(out[:n])


def _random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _info(kind: str, data_type: str, scales: list[dict[str, object]], **extra: object) -> bytes:
    doc: dict[str, object] = {
        "@type": "neuroglancer_multiscale_volume",
        "type": kind,
        "data_type": data_type,
        "num_channels": 1,
        "scales": scales,
        **extra,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _scale(key: str, size: list[int], chunk: list[int], **extra: object) -> dict[str, object]:
    return {
        "key": key,
        "size": size,
        "resolution": [float(v) for v in key.split("_")],
        "chunk_sizes": [chunk],
        "voxel_offset": [0, 0, 0],
        "encoding": "raw",
        **extra,
    }


@functools.cache
def build_tree() -> ContractTree:
    """The contract tree, in memory (cached: tests compare against these exact bytes)."""
    resources: dict[str, Resource] = {}
    files: dict[str, bytes] = {}

    def add(
        name: str,
        url: str,
        identity: bytes,
        variants: tuple[str | None, ...],
        media_type: str,
        disk: str | None = None,
    ) -> None:
        disk = url if disk is None else disk
        stored = {v: identity if v is None else _COMPRESS[v](identity) for v in variants}
        # The choice checks rely on "smallest wins": every sibling is smaller than identity,
        # and br smaller than gzip, as the generator's is_effective rule keeps them.
        if "gzip" in stored:
            assert len(stored["gzip"]) < len(identity), name
        if "br" in stored:
            assert len(stored["br"]) < min(len(identity), len(stored.get("gzip", identity))), name
        resources[name] = Resource(name, url, disk, identity, stored, media_type)
        for v, data in stored.items():
            files[disk + _SUFFIX[v]] = data

    # img: nested layout, 3 x 2 x 1 chunks of 16^3 uint8, one per variant combination.
    img_chunks = [
        ("plain", "0-16_0-16_0-16", (None,)),
        ("gz", "16-32_0-16_0-16", ("gzip",)),
        ("gz-br", "32-48_0-16_0-16", ("gzip", "br")),
        ("plain-gz", "0-16_16-32_0-16", (None, "gzip")),
        ("br", "16-32_16-32_0-16", ("br",)),
        ("plain-gz-br", "32-48_16-32_0-16", (None, "gzip", "br")),
    ]
    add(
        "img-info",
        "img/info",
        _info("image", "uint8", [_scale("8_8_8", [48, 32, 16], [16, 16, 16])]),
        (None,),
        JSON,
    )
    for i, (combo, chunk, variants) in enumerate(img_chunks):
        x, y, z = chunk.split("_")
        data = _random_bytes(i, 4096) if combo == "plain" else _pattern_bytes(i, 4096)
        add(
            f"img-{combo}",
            f"img/8_8_8/{chunk}",
            data,
            variants,
            OCTET_STREAM,
            disk=f"img/8_8_8/{x}/{y}/{z}",
        )

    # neg: a scale with a negative voxel_offset (volume.md allows it): chunk names hold
    # negative numbers, nested folders too.
    add(
        "neg-info",
        "neg/info",
        _info(
            "image",
            "uint8",
            [_scale("8_8_8", [16, 16, 16], [16, 16, 16], voxel_offset=[-16, 0, -32])],
        ),  # fmt: skip
        (None,),
        JSON,
    )
    add(
        "neg-gz-br",
        "neg/8_8_8/-16-0_0-16_-32--16",
        _pattern_bytes(30, 4096),
        ("gzip", "br"),
        OCTET_STREAM,
        disk="neg/8_8_8/-16-0/0-16/-32--16",
    )

    # flat: flat layout, info with a gzip sibling.
    add(
        "flat-info",
        "flat/info",
        _info("image", "uint8", [_scale("4_4_4", [32, 16, 16], [16, 16, 16])]),
        (None, "gzip"),
        JSON,
    )
    add(
        "flat-plain-gz",
        "flat/4_4_4/0-16_0-16_0-16",
        _pattern_bytes(10, 4096),
        (None, "gzip"),
        OCTET_STREAM,
    )
    add("flat-gz", "flat/4_4_4/16-32_0-16_0-16", _pattern_bytes(11, 4096), ("gzip",), OCTET_STREAM)

    # ngs: gz-only tree as neuroglancer-scripts writes it; one 256 KiB chunk (large enough for a
    # server to stream its decompression).
    add(
        "ngs-info",
        "ngs/info",
        _info("image", "uint8", [_scale("1_1_1", [64, 64, 64], [64, 64, 64])]),
        (None,),
        JSON,
    )
    add("ngs-gz", "ngs/1_1_1/0-64_0-64_0-64", _pattern_bytes(20, 64**3), ("gzip",), OCTET_STREAM)

    # seg: segmentation, sharded scale (a plain .shard read with Range), legacy meshes.
    sharding = {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": 0,
        "hash": "identity",
        "minishard_bits": 0,
        "shard_bits": 0,
        "minishard_index_encoding": "raw",
        "data_encoding": "raw",
    }
    add(
        "seg-info",
        "seg/info",
        _info(
            "segmentation",
            "uint64",
            [_scale("8_8_8", [32, 32, 32], [32, 32, 32], sharding=sharding)],
            mesh="mesh",
            segment_properties="segment_properties",
        ),
        (None,),
        JSON,
    )
    add("seg-shard", "seg/8_8_8/0.shard", _random_bytes(30, 3000), (None,), OCTET_STREAM)
    mesh_info = b'{"@type": "neuroglancer_legacy_mesh"}\n'
    add("mesh-info", "seg/mesh/info", mesh_info, (None,), JSON)

    def manifest(seg: int) -> bytes:
        return json.dumps({"fragments": [f"{seg}:0:0-32_0-32_0-32"]}).encode()

    add("mesh-colon", "seg/mesh/1:0", manifest(1), (None,), JSON)
    add("mesh-colon-encoded", "seg/mesh/1%3A0", manifest(1), (None,), JSON, disk="seg/mesh/1:0")
    add("mesh-bare", "seg/mesh/2:0", manifest(2), (None,), JSON, disk="seg/mesh/2")
    add("mesh-json", "seg/mesh/3:0", manifest(3), (None,), JSON, disk="seg/mesh/3.json")
    add("mesh-json-encoded", "seg/mesh/3%3A0", manifest(3), (None,), JSON, disk="seg/mesh/3.json")
    add(
        "mesh-fragment",
        "seg/mesh/1:0:0-32_0-32_0-32",
        _pattern_bytes(31, 2048),
        (None, "gzip"),
        OCTET_STREAM,
    )
    props = {
        "@type": "neuroglancer_segment_properties",
        "inline": {
            "ids": ["1", "2", "3"],
            "properties": [{"id": "label", "type": "label", "values": ["one", "two", "three"]}],
        },
    }
    add("seg-props", "seg/segment_properties/info", json.dumps(props).encode(), (None,), JSON)

    # A secret beside the root and links inside the root pointing at it.
    symlinks = {
        "img/escape-file": "../../{outside}/secret.txt",
        "escape-dir": "../{outside}",
    }
    return ContractTree(resources, files, symlinks)


def outside_dir(root: Path) -> Path:
    """The folder beside ``root`` that holds :data:`SECRET` (written by the tree writer)."""
    return root.parent / (root.name + OUTSIDE_SUFFIX)


def write_contract_tree(root: str | os.PathLike[str]) -> ContractTree:
    """Write the contract tree into ``root`` (created if needed) and return its description.

    Also writes ``<root>-outside/secret.txt`` beside the root, which the symlinks
    ``img/escape-file`` and ``escape-dir`` inside the root point to.
    """
    root = Path(root)
    tree = build_tree()
    outside = outside_dir(root)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_bytes(SECRET)
    for rel, data in tree.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    for rel, target in tree.symlinks.items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target.format(outside=outside.name))
    return tree
