#!/usr/bin/env bash
# Install NGINX and its njs module from Debian's packages when they are missing.
# The enforcement agent renders token ids with njs (libnginx-mod-http-js), and the
# enforcement tests run a real NGINX. Debian's nginx service is not left running:
# the tests start their own nginx with their own prefix and config on loopback.
set -euo pipefail

NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so
packages=()
command -v nginx >/dev/null 2>&1 || packages+=(nginx)
[ -f "$NJS_MODULE" ] || packages+=(libnginx-mod-http-js)

if [ "${#packages[@]}" -eq 0 ]; then
  nginx -v
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${packages[*]}; run as root or install them: sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# Debian's postinst may start the packaged service; the tests need port 80 free of it.
if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
nginx -v
test -f "$NJS_MODULE" || { echo "libnginx-mod-http-js did not install $NJS_MODULE" >&2; exit 1; }
