"""Jinja2 templates shipped with precomp_host (deployment configs, index pages)."""
