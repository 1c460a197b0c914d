"""Deployment files: nginx and Apache configs, S3 and GCS settings and uploads, the index page.

``site`` renders a target's files from ``templates/``; ``upload`` puts a tree into a bucket.
Imports the core only.
"""
