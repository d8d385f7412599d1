import { natsServerBinary } from '../src/launcher/nats-server.js';
import { CHROMIUM_PATH, ensureChromium } from './helpers/browser.js';

/**
 * Installs nats-server and Chromium once, before any worker tries to (parallel
 * apt-get runs would fight over its lock). A machine where Chromium cannot be
 * installed still runs every other test; the browser tests say why they skip.
 */
export default function setup(): void {
  natsServerBinary();
  const why = ensureChromium();
  if (why) console.warn(`\n*** Chromium could not be installed (${why}): the web page tests (test/web.test.ts) will be SKIPPED. Install Debian's chromium package (${CHROMIUM_PATH}) to run them. ***\n`);
}
