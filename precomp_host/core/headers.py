"""The response headers every server we configure sends: CORS and caching, in one place.

Neuroglancer is usually served from another origin than the data, so every response, errors
included, carries CORS headers: a 404 without ``Access-Control-Allow-Origin`` reaches the client
as status 0 and a missing chunk becomes a network error (Fetch standard, "CORS check"). The
middleware sends :func:`cors_headers`; the nginx and Apache templates render the same dicts.
"""

from __future__ import annotations

#: Headers a script on another origin may read (Fetch standard, CORS-safelisted response
#: headers exclude all of these).
EXPOSE_HEADERS = ("Content-Range", "Content-Encoding", "Content-Length", "ETag", "Last-Modified")
ALLOW_METHODS = ("GET", "HEAD", "OPTIONS")
#: Request headers a cross-origin caller may send: Range for shards, the validators for 304s.
ALLOW_HEADERS = ("Range", "If-None-Match", "If-Modified-Since", "Cache-Control")
#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE = 86400

#: Cache-Control of a response that may be stored but must be revalidated before every use
#: (RFC 9111 §5.2.2.4): a cheap 304 with the ETag, and a changed file shows at once.
REVALIDATE = "no-cache"
#: Cache-Control of a file whose name changes with its content (a hashed bundle file): a year
#: (RFC 2616 §14.21's customary ceiling) and no revalidation even on reload (RFC 8246).
IMMUTABLE = "public, max-age=31536000, immutable"

#: Cache-Control for the dev server's data: always revalidate, so a rebuilt dataset shows at
#: once; deployments choose their own (:data:`DEPLOY_CACHE_CONTROL`).
DEV_CACHE_CONTROL = REVALIDATE


def cors_headers() -> dict[str, str]:
    """Headers for every response, whatever its status."""
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": ", ".join(EXPOSE_HEADERS),
    }


def preflight_headers() -> dict[str, str]:
    """Extra headers for the answer (204) to an ``OPTIONS`` preflight."""
    return {
        "Access-Control-Allow-Methods": ", ".join(ALLOW_METHODS),
        "Access-Control-Allow-Headers": ", ".join(ALLOW_HEADERS),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
    }


#: Cache-Control for deployed sites (nginx, Apache, S3, GCS): an hour of freshness, then a cheap
#: revalidation with the ETag, so a rebuilt dataset shows within the hour. Deployments that
#: never rebuild in place can pass a longer one (``deploy --cache-control``).
DEPLOY_CACHE_CONTROL = "public, max-age=3600"
