#!/usr/bin/env bash
# Installs Debian's chromium package when /usr/bin/chromium is missing, for the
# web page tests (playwright-core drives the installed browser; nothing downloads
# a browser build). Exits non-zero when it cannot be installed (no root/sudo, no apt).
set -euo pipefail
BIN="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$BIN" ]; then exit 0; fi
command -v apt-get >/dev/null 2>&1 || { echo "chromium not found and apt-get is unavailable" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else echo "chromium not found and no root or passwordless sudo to install it" >&2; exit 1; fi
fi
echo "chromium not found: installing Debian's chromium package (one time, a few minutes)" >&2
$SUDO apt-get update -qq || { echo "apt-get update failed: cannot install chromium" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || { echo "apt-get install chromium failed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "chromium package installed, but no browser at $BIN" >&2; exit 1; }
