import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/config/config.js';
import { natsServerBinary } from '../src/launcher/nats-server.js';
import { CHROMIUM_PATH, ensureChromium } from './helpers/browser.js';

/**
 * Installs nats-server and Chromium once, before any worker tries to (parallel
 * apt-get runs would fight over its lock). A machine where Chromium cannot be
 * installed still runs every other test; the browser tests say why they skip.
 */
export default function setup(): void {
  natsServerBinary();
  // The feed bridge's Node 22 (SO_REUSEPORT): once here, so test files do not install it side by side.
  spawnSync('bash', [join(PROJECT_ROOT, 'scripts/ensure-feed-node.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const why = ensureChromium();
  if (why) console.warn(`\n*** Chromium could not be installed (${why}): the web page tests (test/web.test.ts) will be SKIPPED. Install Debian's chromium package (${CHROMIUM_PATH}) to run them. ***\n`);
}
