"""The shared vocabulary of the format, of HTTP and of the viewer: every wing reads it from here.

``model`` (the ``info`` file, scales, chunk names, ``INFO_NAME``, the mesh ``@type`` values),
``sharding`` (the sharded format's spec, chunk ids, shard files), ``shard_grid`` (shards as grid
boxes, and their size), ``datasets`` (which folders are datasets: one ``find_datasets`` for every
index), ``layout`` (flat and nested chunk paths), ``encodings`` (HTTP content codings, their
sibling files and aliases), ``media_types``, ``headers`` (CORS and cache policies), ``viewer``
(the public Neuroglancer app and the state a link opens), ``progress`` and ``templates`` (the
jinja2 environment). Stdlib-only apart from the codecs, jinja2 and (lazily) mmh3; never imports
another wing.
"""
