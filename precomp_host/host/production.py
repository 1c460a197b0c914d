"""``precomp-host serve --workers N``: the files and the NeuroTrALE API in N worker processes.

The central function is :func:`serve_workers`. It runs :func:`make_production_app` under
gunicorn's ``gthread`` worker: N processes (so one slow request or one crash takes down no
other, and the annotation store's ``flock`` really is between processes), each with a few
threads. A ``sync`` worker would give a whole process to each client for as long as it is
slow to send or read (gunicorn's docs ask for a buffering proxy in front of it); a ``gthread``
worker keeps idle keep-alive connections in a selector and spends one thread, not a process,
on a slow one. waitress buffers slow clients well but runs one process, which is what the
NeuroTrALE deployment (uvicorn, 10 workers) is moving away from.

There is no watcher and no live reload here: the resolution cache's one-second TTL (as nginx's
``open_file_cache_valid 1s``) shows rebuilt files, and the TIFF cache is keyed by mtime.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..core.headers import DEPLOY_CACHE_CONTROL
from .api import AnnotationApi, make_api_app
from .middleware import make_app

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from .write_policy import WritePolicy

log = logging.getLogger(__name__)

#: Threads per worker process.
THREADS = 4
#: Seconds a worker may spend on one request before gunicorn replaces it.
TIMEOUT = 60


def make_production_app(
    root: str | os.PathLike[str], policy: WritePolicy | None = None
) -> AnnotationApi:
    """The WSGI application of ``serve --workers``: the API, TIFF tiles and the files."""
    files = make_app(root, cache_control=DEPLOY_CACHE_CONTROL)
    return make_api_app(files, root, policy)


def serve_workers(
    root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    policy: WritePolicy | None = None,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``root`` with ``workers`` processes until interrupted.

    :param ready: called with the base URL once the socket listens (the CLI prints it).
    """
    from gunicorn.app.base import BaseApplication

    app = make_production_app(root, policy)

    def when_ready(server: Any) -> None:
        name = server.LISTENERS[0].sock.getsockname()
        bound = f"[{name[0]}]" if ":" in name[0] else name[0]
        if ready is not None:
            ready(f"http://{bound}:{name[1]}")

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": THREADS,
        "timeout": TIMEOUT,
        # The app is made once, before the fork: a bad root or token file fails at start.
        "preload_app": True,
        "when_ready": when_ready,
        "accesslog": None,
        "loglevel": "warning",
    }

    class Server(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> AnnotationApi:
            return app

    Server().run()
