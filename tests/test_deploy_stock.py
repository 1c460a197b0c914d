"""The recipes on a stock Debian server (issue 12): Debian's own nginx and Apache configuration
trees, default sites included, copied to a temporary prefix; ``deploy --listen`` output and the
printed steps added as a root user without systemd runs them (the port changed from 80 to a free
one everywhere); a chunk fetched through the result: 200, not the stock site's 404.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from precomp_host.deploy import site as deploy
from tests.contract.fixtures import write_contract_tree
from tests.realservers import APACHE, NGINX, free_port, require, stop_process, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.slow

ROOT_HOST = deploy.Host(root=True, systemd=False)
#: A nested chunk stored .gz only, by its flat URL (the default build's case), and an info.
URLS = ("/data/img/8_8_8/16-32_0-16_0-16", "/data/img/info")


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="precomp-stock-"))
    os.chmod(path, 0o755)  # the stock configs run workers as www-data
    try:
        write_contract_tree(path / "root")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def edit_configs(prefix: Path, edit: Callable[[str], str]) -> None:
    """Every text file under ``prefix`` rewritten by ``edit``."""
    for path in prefix.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            path.write_text(edit(text))


def copy_tree(etc: str, prefix: Path) -> None:
    """``etc`` copied to ``prefix``, links resolved, every mention of ``etc`` moved there."""
    shutil.copytree(etc, prefix, symlinks=False)
    edit_configs(prefix, lambda text: text.replace(etc, str(prefix)))


def run_steps(steps: list[str], etc: str, prefix: Path, env: dict[str, str]) -> None:
    """The printed shell lines, on the copy; the reload is the caller's (a fresh start)."""
    for step in steps:
        command = step.split("  #")[0].strip()
        if not command or command.startswith(("#", "apt-get")) or " -t && " in command:
            continue
        subprocess.run(["bash", "-c", command.replace(etc, str(prefix))], check=True,
                       env={**os.environ, **env}, capture_output=True)  # fmt: skip


def move_port(prefix: Path, port: int, patterns: tuple[str, ...]) -> None:
    """Port 80 -> ``port`` in every config file (``patterns``: regexes around the 80)."""

    def edit(text: str) -> str:
        for pattern in patterns:
            text = re.sub(pattern, lambda m: m.group(1) + str(port), text)
        return text

    edit_configs(prefix, edit)


def fetch_all(port: int) -> list[int]:
    statuses = []
    for url in URLS:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{url}",
                                         headers={"Accept-Encoding": "gzip"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                statuses.append(resp.status)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)
    return statuses


def serve(argv: list[str], port: int, env: dict[str, str]) -> list[int]:
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for_port(port, proc)
        return fetch_all(port)
    finally:
        stop_process(proc)
        if proc.stderr:
            proc.stderr.close()


def nginx_site(
    base: Path, *, apply_steps: bool = True
) -> tuple[list[int], subprocess.CompletedProcess[str]]:
    etc, prefix, port = "/etc/nginx", base / "etc-nginx", free_port()
    copy_tree(etc, prefix)
    # Debian's nginx was built with --prefix=/usr/share/nginx: modules/ is relative to it.
    (prefix / "modules").symlink_to("/usr/lib/nginx/modules")
    main = prefix / "nginx.conf"
    main.write_text(main.read_text().replace("/run/nginx.pid", str(base / "nginx.pid"))
                    .replace("/var/log/nginx", str(base)))  # fmt: skip
    out = base / "out"
    deploy.write_files("nginx", base / "root", out, "/data", listen="80", brotli=True)
    steps = deploy.next_steps("nginx", out, base / "root", "/data", "80", True, ROOT_HOST)
    if apply_steps:
        run_steps(steps, etc, prefix, {})
    else:  # only the file copied: what the issue measured
        shutil.copy(out / "nginx.conf", prefix / "conf.d" / "precomputed.conf")
    move_port(prefix, port, (r"(listen )80\b", r"(listen \[::\]:)80\b"))
    argv = [NGINX, "-p", str(prefix), "-c", str(main)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if checked.returncode != 0:
        return [], checked
    return serve([*argv, "-g", "daemon off;"], port, {}), checked


def test_stock_nginx_with_the_printed_steps(base: Path) -> None:
    require(NGINX, "nginx")
    statuses, checked = nginx_site(base)
    assert checked.returncode == 0, checked.stderr
    assert statuses == [200, 200]


def test_stock_nginx_without_the_steps_fails_loudly(base: Path) -> None:
    """Our default_server beside Debian's: nginx -t fails (not 404s on every URL)."""
    require(NGINX, "nginx")
    _, checked = nginx_site(base, apply_steps=False)
    assert checked.returncode != 0
    assert "duplicate default server" in checked.stderr


def apache_env(base: Path, prefix: Path) -> dict[str, str]:
    """What Debian's envvars sets (apache2ctl reads it), moved under ``base``."""
    return {"APACHE_CONFDIR": str(prefix), "APACHE_RUN_USER": "www-data",
            "APACHE_RUN_GROUP": "www-data", "APACHE_PID_FILE": str(base / "apache2.pid"),
            "APACHE_RUN_DIR": str(base), "APACHE_LOCK_DIR": str(base),
            "APACHE_LOG_DIR": str(base)}  # fmt: skip


@pytest.mark.parametrize("apply_steps", [True, False], ids=["steps", "file-only"])
def test_stock_apache_with_the_printed_steps(base: Path, apply_steps: bool) -> None:
    """With the steps: 200. With only the file enabled (no a2dissite 000-default): the stock
    site answers first, 404 on every URL, as the issue measured."""
    require(APACHE, "apache2")
    etc, prefix, port = "/etc/apache2", base / "etc-apache2", free_port()
    shutil.copytree(etc, prefix, symlinks=True)  # relative links: a2ensite's own kind
    env = apache_env(base, prefix)
    out = base / "out"
    deploy.write_files("apache", base / "root", out, "/data", listen="*:80")
    steps = deploy.next_steps("apache", out, base / "root", "/data", "*:80", host=ROOT_HOST)
    if not apply_steps:
        steps = [s for s in steps if "a2dissite" not in s]
    run_steps(steps, etc, prefix, env)
    move_port(prefix, port, (r"(Listen )80\b", r"(<VirtualHost \*:)80\b"))
    argv = [APACHE, "-d", str(prefix), "-f", str(prefix / "apache2.conf")]
    checked = subprocess.run(
        [*argv, "-t"], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert checked.returncode == 0, checked.stderr
    statuses = serve([*argv, "-DFOREGROUND"], port, env)
    assert statuses == ([200, 200] if apply_steps else [404, 404])
