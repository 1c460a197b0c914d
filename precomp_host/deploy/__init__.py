"""Deployment files: nginx and Apache configs, S3 and GCS settings and uploads, the index page.

``site`` renders a target's files from ``templates/`` and the site's ``index.html``;
``objectstores`` lays a tree out as S3/GCS objects and uploads it; ``targets`` names the
targets (light, for ``--help``). Imports the core only.
"""
