"""The names in the build's registries, standard library only: what ``precomp-host build
--help`` offers without importing numpy. ``tests/test_vocabulary.py`` checks each tuple against
its registry (:data:`~precomp_host.build.chunk_codecs.CODECS`,
:data:`~precomp_host.build.pyramid.DOWNSAMPLERS`, :data:`~precomp_host.build.meshes.PRESETS`)."""

from __future__ import annotations

#: Chunk ``encoding`` values we can write (``CODECS``).
CODEC_NAMES = ("raw", "jpeg", "png", "compressed_segmentation")
#: The label downsamplers (``DOWNSAMPLERS``) a user names with ``--downsample``; ``mean`` is
#: for images only and ``mode_sparse`` is ``--sparse``.
LABEL_DOWNSAMPLER_NAMES = ("mode", "stride")
#: Mesh simplification presets (``PRESETS``), the default first.
PRESET_NAMES = ("fqmr", "quadric", "none")
#: ``--mesh`` formats, the default first (``segmentation.MeshFormat``).
MESH_FORMAT_NAMES = ("legacy", "multires")
