#!/usr/bin/env bash
# Serve DATASET_DIR (a dataset or a folder of datasets) with the emitted nginx config on
# http://127.0.0.1:PORT/data/ (default port 8080), in the foreground; Ctrl-C stops it.
# Writes DATASET_DIR/index.html (the site index). Needs Debian's nginx; with
# libnginx-mod-http-brotli-static installed, .br files are sent too (--brotli).
# Runs the precomp-host of the repository's .venv (made by the README's first command), else
# the one on PATH; PRECOMP_HOST=/path/to/precomp-host overrides both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
data=$(realpath "${1:?usage: deploy/nginx/run.sh DATASET_DIR [PORT]}")
port=${2:-8080}
precomp=${PRECOMP_HOST:-$( [ -x "$repo/.venv/bin/precomp-host" ] && echo "$repo/.venv/bin/precomp-host" || command -v precomp-host || true)}
[ -n "$precomp" ] || { echo "precomp-host not found: run the README's first command" >&2; exit 2; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
brotli_module=/usr/lib/nginx/modules/ngx_http_brotli_static_module.so
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

load="" brotli=""
if [ -f "$brotli_module" ]; then load="load_module $brotli_module;" brotli=--brotli; fi
"$precomp" deploy nginx "$data" --url-prefix /data --out "$work" \
  --listen "127.0.0.1:$port" $brotli >&2

user=""
[ "$(id -u)" = 0 ] && user="user root;"
cat > "$work/main.conf" <<CONF
$load
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
