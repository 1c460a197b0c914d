"""Real nginx and Apache processes on loopback, each with a generated minimal main config.

:class:`RealServer` starts Debian's ``nginx`` or ``apache2`` in the foreground with a main config
written under a temporary folder (pid, logs and temp paths there) that includes the file emitted
by :mod:`precomp_host.deploy.site`. Also used by ``deploy/*/run.sh`` through ``python -m``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
#: Debian's libnginx-mod-http-brotli-static (what ``deploy nginx --brotli`` needs).
NGINX_BROTLI = Path("/usr/lib/nginx/modules/ngx_http_brotli_static_module.so")
#: moto's S3 API server (the ``moto[server]`` test dependency), beside this Python.
MOTO = Path(sys.executable).with_name("moto_server")
#: The credentials moto accepts (any), for the server and its clients.
MOTO_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
#: Modules our Apache configs use (mpm and authz for any server at all).
APACHE_MODULE_NAMES = (
    "mpm_event", "authz_core", "mime", "rewrite", "headers", "deflate", "buffer", "filter", "dir",
    "alias",
)  # fmt: skip


def require(path: str | Path, what: str) -> None:
    """Skip loudly when ``path`` is missing; in CI (``CI`` set) fail instead."""
    if Path(path).exists():
        return
    message = f"{what} not installed ({path}); apt-get install it (tests/run.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(f"!!! SKIPPED: {message}")


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Block until ``proc`` accepts TCP connections on loopback ``port``; fail if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM (nginx, apache2, gunicorn and our dev server all stop their workers on it),
    then SIGKILL if the process is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_process(
    argv: list[str], port: int, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` started (output discarded), once it listens on ``port``; stopped afterwards."""
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        stop_process(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: A server whose administrator compresses every response on the fly: the emitted configs
#: must still send shards as stored (they are read with Range).
NGINX_COMPRESS_ALL = "gzip on; gzip_types *; gzip_min_length 1;"
APACHE_COMPRESS_ALL = "AddOutputFilterByType DEFLATE application/octet-stream application/json"


def nginx_main(
    workdir: Path,
    include: Path,
    listen: str | None,
    brotli: bool = False,
    compress_all: bool = False,
) -> str:
    """A main nginx.conf: the emitted snippet inside a server, or the emitted server block
    (``brotli``: with the brotli_static module loaded; ``compress_all``: gzip on for every
    type at the http level)."""
    body = f"include {include};"
    if listen is not None:
        body = f"server {{\n    listen {listen};\n    {body}\n}}"
    temps = " ".join(f"{k}_temp_path {workdir / k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    user = "user root;\n" if os.geteuid() == 0 else ""
    load = f"load_module {NGINX_BROTLI};\n" if brotli else ""
    return (
        f"{load}daemon off;\n{user}worker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n    access_log off;\n    sendfile on;\n    {temps}\n"
        f"    {NGINX_COMPRESS_ALL if compress_all else ''}\n    {body}\n}}\n"
    )


def apache_main(
    workdir: Path, include: Path, listen: str, wrap_vhost: bool, compress_all: bool = False
) -> str:
    """A main apache2.conf that listens on ``listen`` and includes the emitted file
    (``compress_all``: mod_deflate on for the dataset files' types, server-wide)."""
    loads = "\n".join(
        f"LoadModule {m}_module {APACHE_MODULES / f'mod_{m}.so'}" for m in APACHE_MODULE_NAMES
    )
    body = f"Include {include}"
    if wrap_vhost:
        body = f"<VirtualHost {listen}>\n    {body}\n</VirtualHost>"
    return (
        f"ServerRoot {workdir}\nDefaultRuntimeDir {workdir}\nPidFile {workdir / 'httpd.pid'}\n"
        f"ErrorLog {workdir / 'error.log'}\nLogLevel warn\nServerName 127.0.0.1\n"
        "TypesConfig /etc/mime.types\n"
        f"Listen {listen}\n{loads}\nUser www-data\nGroup www-data\n"
        f"{APACHE_COMPRESS_ALL if compress_all else ''}\n"
        "<Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n"
        f"{body}\n"
    )


@dataclass
class RealServer:
    """One server process; ``start()`` writes the main config, checks it (-t) and waits."""

    kind: str  # "nginx" | "apache"
    workdir: Path
    emitted: Path  # the file precomp_host.deploy.site wrote
    listen_in_emitted: bool = False  # the emitted file holds its own server/VirtualHost
    brotli: bool = False  # nginx: load the brotli_static module
    compress_all: bool = False  # the main config compresses every response on the fly
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.listen}"

    def main_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "nginx":
            listen = None if self.listen_in_emitted else self.listen
            text = nginx_main(self.workdir, self.emitted, listen, self.brotli, self.compress_all)
        else:
            text = apache_main(self.workdir, self.emitted, self.listen,
                               wrap_vhost=not self.listen_in_emitted,
                               compress_all=self.compress_all)  # fmt: skip
        path = self.workdir / f"{self.kind}-main.conf"
        path.write_text(text)
        return path

    def command(self, *extra: str) -> list[str]:
        conf = str(self.main_config())
        if self.kind == "nginx":
            return [NGINX, "-p", str(self.workdir), "-e", str(self.workdir / "error.log"),
                    "-c", conf, *extra]  # fmt: skip
        return [APACHE, "-d", str(self.workdir), "-f", conf, *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` / ``apache2 -t`` on the main config including the emitted file."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self, timeout: float = 10.0) -> RealServer:
        checked = self.check()
        if checked.returncode != 0:
            raise RuntimeError(f"{self.kind} -t failed:\n{checked.stderr}")
        extra = () if self.kind == "nginx" else ("-DFOREGROUND",)
        self.proc = subprocess.Popen(self.command(*extra), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip
        try:
            wait_for_port(self.port, self.proc, timeout)
        except (RuntimeError, TimeoutError) as e:
            exited = self.proc.poll() is not None
            err = self.proc.stderr.read().decode() if exited and self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"{self.kind}: {e}\n{err}{self.error_log()}") from None
        return self

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> RealServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """An S3 API server on a loopback port; yields its endpoint URL."""
    require(MOTO, "moto[server] (moto_server)")
    port = free_port()
    with running_process([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], port, env=MOTO_ENV):
        yield f"http://127.0.0.1:{port}"


def moto_client(endpoint: str) -> Any:
    """Our boto3 client (:func:`~precomp_host.deploy.objectstores.s3_client`) for a moto server."""
    from precomp_host.deploy import objectstores as upload

    return upload.s3_client(
        endpoint,
        region_name=MOTO_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=MOTO_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def sharded_tree() -> Path:
    """A world-readable folder (Apache's workers run as www-data) holding ``ds``: a small
    sharded image built by precomp_host, its shards compressible (a smooth ramp)."""
    import numpy as np

    from precomp_host.build.builder import BuildOptions, build_dataset
    from precomp_host.build.sources import volume_from_array

    base = Path(tempfile.mkdtemp(prefix="precomp-shards-"))
    os.chmod(base, 0o755)
    ramp = (np.arange(32 * 32 * 32) // 7 % 200 + 1).astype(np.uint8).reshape(32, 32, 32)
    options = BuildOptions(resolution=(8.0, 8.0, 8.0), chunk_size=(16, 16, 16), shard_size=1 << 20)
    build_dataset(volume_from_array(ramp), base / "root" / "ds", options)
    return base


def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """``GET url``: status, headers (lowercase names) and the body as sent (not decoded)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("GET", parts.path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_shard_sent_as_stored(base_url: str, root: Path) -> None:
    """A shard of ``sharded_tree()``, fetched by a browser that takes gzip and br, whole and
    by Range: the stored bytes, no Content-Encoding (sharded.md)."""
    shard = next((root / "ds").rglob("*.shard"))
    data = shard.read_bytes()
    url = f"{base_url}/{shard.relative_to(root).as_posix()}"
    browser = {"Accept-Encoding": "gzip, deflate, br"}
    status, headers, body = get(url, browser)
    assert (status, headers.get("content-encoding"), body) == (200, None, data)
    status, headers, body = get(url, {**browser, "Range": "bytes=16-47"})
    assert (status, headers.get("content-encoding"), body) == (206, None, data[16:48])


def shard_compressed_on_the_fly(base_url: str, root: Path) -> bool:
    """Whether the server gzips a shard it sends whole (the negative control)."""
    shard = next((root / "ds").rglob("*.shard"))
    url = f"{base_url}/{shard.relative_to(root).as_posix()}"
    return get(url, {"Accept-Encoding": "gzip"})[1].get("content-encoding") == "gzip"
