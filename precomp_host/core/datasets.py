"""Which folders under a root are datasets: :func:`find_datasets`, one rule for every index.

A dataset is a folder holding an ``info`` file (:data:`~precomp_host.core.model.INFO_NAME`). The
dev server's index, its watcher and the deployed ``index.html`` all list datasets with
:func:`find_datasets`, so a dataset shows on all of them or on none. :func:`read_dataset` reads
one ``info`` into a :class:`~precomp_host.core.model.Dataset`.

An annotation collection (annotations.md) has an ``info`` too, with ``@type``
:data:`ANNOTATION_INFO_TYPE`: one found by :func:`find_datasets` is a layer of its own
(:func:`is_annotation_layer`), and the collections in a dataset's :data:`ANNOTATIONS` folder
(:func:`find_annotation_layers`) are listed, and opened, beside that dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .model import INFO_NAME, Dataset

#: How many folders below the root a dataset may sit (``root/group/sub/ds/info`` is 3). The
#: walk never enters a dataset's own folders, so its cost does not grow with the chunk count,
#: but every other folder down to this depth is listed.
MAX_DEPTH = 3

#: The ``@type`` of an annotation collection's ``info`` (annotations.md).
ANNOTATION_INFO_TYPE = "neuroglancer_annotations_v1"
#: A dataset's folder of annotations: NeuroTrALE's JSON store (``<block>/<leaf>.json``, issue
#: #15) and the annotation collections that belong to the dataset (``<name>/info``). Block
#: folders never hold an ``info``, collections never a ``.json`` file, so the two coexist.
ANNOTATIONS = "annotations"


def find_datasets(root: str | os.PathLike[str], max_depth: int = MAX_DEPTH) -> list[str]:
    """Relative POSIX paths of the folders under ``root`` that hold an ``info`` (``""``: root).

    Sorted depth-first by name. Hidden folders (``.precomp-tmp``, ``.git``) are skipped, and a
    dataset's subfolders (``mesh/``, ``segment_properties/``, which have an ``info`` too) are
    parts of it, not datasets.

    :param root: the folder to list.
    :param max_depth: the deepest level looked at (0: the root only).
    """
    return [rel for rel, is_dataset in walk_folders(root, max_depth) if is_dataset]


def walk_folders(
    root: str | os.PathLike[str], max_depth: int = MAX_DEPTH
) -> list[tuple[str, bool]]:
    """Every folder :func:`find_datasets` looks at, as ``(rel, is_dataset)``, depth-first.

    The folders that are not datasets are the ones a watcher must watch to see new datasets.
    """
    found: list[tuple[str, bool]] = []

    def walk(path: str, rel: str, depth: int) -> None:
        if os.path.isfile(os.path.join(path, INFO_NAME)):
            found.append((rel, True))
            return
        found.append((rel, False))
        if depth >= max_depth:
            return
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                walk(entry.path, f"{rel}/{entry.name}" if rel else entry.name, depth + 1)

    walk(os.fspath(root), "", 0)
    return found


def dataset_name(root: str | os.PathLike[str], rel: str) -> str:
    """A short name for the dataset at ``root/rel``: its folder's name (the root's for ``""``)."""
    return rel.rsplit("/", 1)[-1] or Path(root).resolve().name


def read_dataset(folder: str | os.PathLike[str]) -> Dataset:
    """The :class:`Dataset` of ``folder/info``.

    :raises OSError: the file cannot be read.
    :raises ValueError: it is not JSON, or (:class:`~precomp_host.core.model.InvalidInfoError`)
        not a valid ``info``.
    """
    return Dataset.from_json(json.loads(Path(folder, INFO_NAME).read_bytes()))


def is_annotation_layer(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds an annotation collection (its ``info`` says so)."""
    try:
        info = json.loads(Path(folder, INFO_NAME).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("@type") == ANNOTATION_INFO_TYPE


def find_annotation_layers(root: str | os.PathLike[str], rel: str) -> list[str]:
    """The annotation collections of the dataset at ``root/rel``: relative POSIX paths (from
    ``root``) of the folders ``rel/annotations/<name>`` that hold one, sorted by name.

    One folder is listed (the dataset's :data:`ANNOTATIONS`), never a scale's chunks.
    """
    folder = Path(root, rel, ANNOTATIONS)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    prefix = f"{rel}/{ANNOTATIONS}" if rel else ANNOTATIONS
    return [
        f"{prefix}/{e.name}"
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and is_annotation_layer(e.path)
    ]
