"""The shared vocabulary of the format, of HTTP and of the viewer: every wing reads it from here.

``model`` (the ``info`` file, scales, chunk names), ``sharding`` (the sharded format's spec,
chunk ids, shard files), ``shard_grid`` (shards as grid boxes, and their size), ``layout`` (flat
and nested chunk paths), ``encodings`` (HTTP content codings and their sibling files),
``media_types``, ``headers`` (CORS and cache policies), ``progress`` and ``templates`` (the
jinja2 environment). Stdlib-only apart
from the codecs, jinja2 and (lazily) mmh3; never imports another wing.
"""
