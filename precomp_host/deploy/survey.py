"""What a dataset tree holds, as far as a server config cares: :func:`survey`.

The deploy command reads the tree before writing anything (issue 12): :func:`survey` samples
each scale folder of each dataset (a few entries each, never a walk of millions of chunks) into
a :class:`TreeSurvey`; the config renderers in :mod:`~precomp_host.deploy.servers` emit the
flat->nested rewrite and the legacy mesh-manifest fallback only when the tree needs them, and
:func:`findings` says what the chosen target will do with the tree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import layout
from ..core.datasets import find_datasets, read_dataset
from ..core.encodings import BROTLI, GZIP

if TYPE_CHECKING:
    from .targets import Target

#: Entries looked at per folder: enough to see the layout and the stored variants.
SAMPLE = 64
_RANGE_DIR = re.compile(r"^-?\d+--?\d+$")
_LEGACY_MANIFEST = re.compile(r"^\d+(\.json)?$")


@dataclass
class TreeSurvey:
    """What the sampled files of a tree look like (``exists`` False: nothing was read, and
    the renderers assume every case)."""

    exists: bool = True
    datasets: int = 0
    flat: bool = False
    nested: bool = False
    legacy_manifests: bool = False
    shards: bool = False
    #: Sampled files stored only as ``.br`` / only as ``.gz`` / plain.
    br_only: int = 0
    gz_only: int = 0
    plain: int = 0
    symlinks: list[str] = field(default_factory=list)

    @classmethod
    def unknown(cls) -> TreeSurvey:
        return cls(exists=False, nested=True, legacy_manifests=True)


def _sample(folder: Path) -> list[os.DirEntry[str]]:
    out: list[os.DirEntry[str]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                out.append(entry)
                if len(out) >= SAMPLE:
                    break
    except OSError:
        pass
    return out


def _count_files(s: TreeSurvey, entries: list[os.DirEntry[str]]) -> None:
    names = {e.name for e in entries if e.is_file(follow_symlinks=False)}
    for name in names:
        if name.endswith(BROTLI.suffix):
            base = name[: -len(BROTLI.suffix)]
            s.br_only += base not in names and base + GZIP.suffix not in names
        elif name.endswith(GZIP.suffix):
            s.gz_only += name[: -len(GZIP.suffix)] not in names
        else:
            s.plain += 1
            s.shards = s.shards or name.endswith(".shard")


def survey(root: str | Path) -> TreeSurvey:
    """Sample the datasets under ``root`` (:func:`~precomp_host.core.datasets.find_datasets`;
    one whose ``info`` cannot be read is left out, as the site index leaves it out)."""
    root = Path(root)
    if not root.is_dir():
        return TreeSurvey.unknown()
    s = TreeSurvey()
    s.symlinks += [e.name for e in _sample(root) if e.is_symlink()]
    for rel in find_datasets(root):
        try:
            dataset = read_dataset(root / rel)
        except (OSError, ValueError):
            continue
        s.datasets += 1
        folder = root / rel
        for entry in _sample(folder):
            if entry.is_symlink():
                s.symlinks.append(f"{rel}/{entry.name}".lstrip("/"))
        for scale in dataset.scales:
            entries = _sample(folder / scale.key)
            if any(e.is_symlink() for e in entries):
                s.symlinks.append(f"{rel}/{scale.key}".lstrip("/"))
            dirs = [e for e in entries if e.is_dir(follow_symlinks=False)]
            if any(_RANGE_DIR.match(d.name) for d in dirs):
                s.nested = True
                x = next(d for d in dirs if _RANGE_DIR.match(d.name))
                y = next((d for d in _sample(Path(x.path)) if d.is_dir()), None)
                _count_files(s, _sample(Path(y.path)) if y else [])
            if any(re.match(layout.CHUNK_NAME_PATTERN, e.name.split(".")[0]) for e in entries):
                s.flat = True
            _count_files(s, entries)
        if dataset.mesh:
            entries = _sample(folder / dataset.mesh)
            stems = {e.name.removesuffix(GZIP.suffix).removesuffix(BROTLI.suffix) for e in entries}
            s.legacy_manifests |= any(_LEGACY_MANIFEST.match(n) for n in stems)
    return s


@dataclass(frozen=True)
class Finding:
    """One line the deploy command shows; ``error`` ones stop it (exit 2) before writing."""

    message: str
    error: bool = False


def findings(target: Target, s: TreeSurvey, *, brotli: bool = False) -> list[Finding]:
    """What ``target`` will do with the surveyed tree, one line each."""
    if not s.exists:
        return [Finding("the root does not exist here: the config covers every layout")]
    out: list[Finding] = []
    layout_word = "flat and nested" if s.flat and s.nested else "nested" if s.nested else "flat"
    out.append(
        Finding(
            f"{s.datasets} dataset(s), {layout_word} chunk names"
            + (", sharded scales (served plain, with Range)" if s.shards else "")
        )
    )
    if target == "nginx" and s.br_only and not brotli:
        out.append(
            Finding(
                f"{s.br_only} sampled chunk(s) are stored only as .br: nginx sends them only with "
                "the brotli_static module; pass --brotli (apt-get install "
                "libnginx-mod-http-brotli-static)",
                error=True,
            )
        )
    if target in ("nginx", "apache") and s.br_only:
        out.append(
            Finding(
                f"{s.br_only} sampled chunk(s) stored only as .br: clients without "
                "br get 406 (no server decodes brotli)"
            )
        )
    if target == "apache" and s.gz_only:
        out.append(
            Finding(
                f"{s.gz_only} sampled chunk(s) stored only as .gz: the vhost inflates "
                "them for clients without gzip; behind .htaccess those get 406"
            )
        )
    if target in ("nginx", "apache") and s.symlinks:
        shown = ", ".join(s.symlinks[:3]) + (" ..." if len(s.symlinks) > 3 else "")
        out.append(Finding(f"symlinks will not be followed (404): {shown}"))
    return out


#: Options of ``deploy`` -> the targets they mean something for.
OPTION_TARGETS: dict[str, tuple[Target, ...]] = {
    "listen": ("nginx", "apache"),
    "brotli": ("nginx",),
    "bucket": ("s3", "gcs"),
    "endpoint_url": ("s3",),
    "public": ("s3", "gcs"),
}


def refused_options(target: Target, given: dict[str, object]) -> list[str]:
    """One line per option in ``given`` (name -> value, falsy when not given) that ``target``
    would ignore: refused rather than silently dropped."""
    return [
        f"--{name.replace('_', '-')} does not apply to {target} (only to {', '.join(targets)})"
        for name, targets in OPTION_TARGETS.items()
        if given.get(name) and target not in targets
    ]
