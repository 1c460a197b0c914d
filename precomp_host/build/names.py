"""The names in the build's registries, standard library only: what ``precomp-host build
--help`` offers without importing numpy. ``tests/test_vocabulary.py`` checks each tuple against
its registry (:data:`~precomp_host.build.chunk_codecs.CODECS`,
:data:`~precomp_host.build.pyramid.DOWNSAMPLERS`, :data:`~precomp_host.build.meshes.PRESETS`)."""

from __future__ import annotations

#: Chunk ``encoding`` values we can write (``CODECS``).
CODEC_NAMES = ("raw", "jpeg", "png", "compressed_segmentation")
#: Downsamplers (``DOWNSAMPLERS``): mean for images, the others keep labels.
DOWNSAMPLER_NAMES = ("mean", "stride", "mode", "mode_sparse")
#: The label downsamplers a user names (``--downsample``); ``mode_sparse`` is ``--sparse``.
LABEL_DOWNSAMPLER_NAMES = ("mode", "stride")
#: Mesh simplification presets (``PRESETS``), the default first.
PRESET_NAMES = ("fqmr", "quadric", "none")
