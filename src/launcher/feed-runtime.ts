import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../config/config.js';
import { UDP_REUSEPORT } from '../feed/multicast.js';
import type { Logger } from '../shared/log.js';

/**
 * The Node binary the feed bridge runs on: this one when it binds with
 * SO_REUSEPORT (Node 22.12+), else the Node 22 that scripts/ensure-feed-node.sh
 * provides, so the bridge can share the feed ports with NDFEX's own consumers.
 * When that cannot be had, this Node, with a warning: the bridge then works
 * only while nothing else holds the ports.
 */
export function feedNodeBinary(log: Logger): string {
  if (UDP_REUSEPORT) return process.execPath;
  const r = spawnSync('bash', [join(PROJECT_ROOT, 'scripts/ensure-feed-node.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const bin = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status === 0 && bin) return bin;
  log.warn(
    { reason: r.stderr.trim().split('\n').pop() },
    `no Node with SO_REUSEPORT for the feed bridge: it runs on Node ${process.versions.node} and cannot bind the feed ports beside NDFEX's own consumers`,
  );
  return process.execPath;
}
