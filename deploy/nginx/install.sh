#!/usr/bin/env bash
# Install NGINX from Debian's packages when it is missing (the enforcement tests run a real NGINX).
# The Debian service is not started: tests run their own nginx with their own config on loopback.
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "nginx is not installed; run as root or install it: sudo apt-get install -y nginx" >&2
  exit 1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx >/dev/null
# Debian's postinst may start the packaged service; the tests need port 80 free of it.
if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
nginx -v
