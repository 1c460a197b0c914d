"""The generator: a source volume becomes a complete precomputed dataset on disk.

``builder`` runs a build (``build_dataset``); ``kinds`` holds what differs between an image and
a segmentation; ``regions`` cuts the pyramid into region tasks and ``executor`` runs them on
the worker pool; ``sources`` read the input by region, ``plan`` lays out the scales,
``pyramid`` downsamples, ``chunk_codecs`` encode chunks, ``writer`` stores files atomically,
and ``segmentation``, ``meshes`` and ``segment_properties`` add what a label volume needs.
Imports the core only; this ``__init__`` imports nothing, so the CLI stays light.
"""
