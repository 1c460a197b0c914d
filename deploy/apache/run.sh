#!/usr/bin/env bash
# Serve DATASET_DIR (a dataset or a folder of datasets) with the emitted Apache vhost on
# http://127.0.0.1:PORT/data/ (default port 8080), in the foreground; Ctrl-C stops it.
# Writes DATASET_DIR/index.html (the site index). Needs Debian's apache2; its workers run as
# www-data, so DATASET_DIR must be readable by that user.
# Runs the precomp-host of the repository's .venv (made by the README's first command), else
# the one on PATH; PRECOMP_HOST=/path/to/precomp-host overrides both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
data=$(realpath "${1:?usage: deploy/apache/run.sh DATASET_DIR [PORT]}")
port=${2:-8080}
precomp=${PRECOMP_HOST:-$( [ -x "$repo/.venv/bin/precomp-host" ] && echo "$repo/.venv/bin/precomp-host" || command -v precomp-host || true)}
[ -n "$precomp" ] || { echo "precomp-host not found: run the README's first command" >&2; exit 2; }
apache=$(command -v apache2 || echo /usr/sbin/apache2)
modules=/usr/lib/apache2/modules
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

"$precomp" deploy apache "$data" --url-prefix /data --out "$work" \
  --listen "127.0.0.1:$port" >&2

{
  echo "ServerRoot $work"
  echo "DefaultRuntimeDir $work"
  echo "PidFile $work/httpd.pid"
  echo "ErrorLog $work/error.log"
  echo "LogLevel warn"
  echo "ServerName 127.0.0.1"
  echo "TypesConfig /etc/mime.types"
  echo "Listen 127.0.0.1:$port"
  for m in mpm_event authz_core mime rewrite headers deflate filter dir alias; do
    echo "LoadModule ${m}_module $modules/mod_${m}.so"
  done
  echo "User www-data"
  echo "Group www-data"
  echo "<Directory />"
  echo "    AllowOverride None"
  echo "    Require all denied"
  echo "</Directory>"
  echo "Include $work/apache.conf"
} > "$work/main.conf"
"$apache" -d "$work" -f "$work/main.conf" -t
echo "serving $data at http://127.0.0.1:$port/data/ (config: $work/apache.conf)"
"$apache" -d "$work" -f "$work/main.conf" -DFOREGROUND
