#!/usr/bin/env bash
# The test command (README, second command; .ci/run calls exactly this).
# Sets up what the tests need on a fresh Debian machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers and a real browser come from Debian's packages (tests start them on loopback).
need=()
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/share/nginx/modules-available/mod-http-brotli-static.conf ] \
  || [ -e /usr/lib/nginx/modules/ngx_http_brotli_static_module.so ] \
  || need+=(libnginx-mod-http-brotli-static)
command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ] || need+=(apache2)
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,test-peers]'

.venv/bin/python -m pytest "$@"
