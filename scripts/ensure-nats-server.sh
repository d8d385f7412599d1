#!/usr/bin/env bash
# Installs nats-server from Debian's package when it is not on the PATH.
# No npm package ships the binary, and Debian's 2.9 includes JetStream.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then exit 0; fi
if [ -x /usr/sbin/nats-server ]; then exit 0; fi
echo "nats-server not found: installing Debian's nats-server package" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]
