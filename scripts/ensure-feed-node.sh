#!/usr/bin/env bash
# The feed bridge must bind NDFEX's multicast ports beside the exchange's own
# consumers, which use SO_REUSEPORT; Node offers that (dgram reusePort) from
# 22.12. When the Node running the project is older, this puts the official
# Node 22 build from the npm registry in .runtime/node22 (scripts/ensure-node.sh),
# for the bridge alone: the rest (uWebSockets.js) stays on the project's Node.
# Prints the binary's path.
set -euo pipefail
exec bash "$(dirname "$0")/ensure-node.sh" 22
