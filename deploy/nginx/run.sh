#!/usr/bin/env bash
# Serve DATASET_DIR (a dataset or a folder of datasets) with the emitted nginx config on
# http://127.0.0.1:PORT/data/ (default port 8080), in the foreground; Ctrl-C stops it.
# Writes DATASET_DIR/index.html (the site index). Needs Debian's nginx; PYTHON (default
# python3) must import precomp_host and jinja2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
data=$(realpath "${1:?usage: deploy/nginx/run.sh DATASET_DIR [PORT]}")
port=${2:-8080}
nginx=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" - "$data" "$work" "$port" <<'PY'
import sys
from precomp_host.deploy import site as deploy
data, work, port = sys.argv[1:]
deploy.write_files("nginx", data, work, url_prefix="/data", listen=f"127.0.0.1:{port}",
                   brotli=True)
PY

user=""
[ "$(id -u)" = 0 ] && user="user root;"
cat > "$work/main.conf" <<CONF
daemon off;
$user
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $work/client_body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    include $work/nginx.conf;
}
CONF
"$nginx" -t -q -p "$work" -e "$work/error.log" -c "$work/main.conf"
echo "serving $data at http://127.0.0.1:$port/data/ (config: $work/nginx.conf)"
"$nginx" -p "$work" -e "$work/error.log" -c "$work/main.conf"
