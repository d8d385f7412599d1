/**
 * The built-in NDFEX simulator: a stand-in exchange on the real multicast
 * groups, for demos and tests without the C++ exchange.
 *
 * Environment:
 *   NDFEX_CLEARING_ADDR  clearing feed group:port      (default 239.0.0.2:12346)
 *   NDFEX_MD_ADDR        market-data feed group:port   (default 239.0.0.1:12345)
 *   NDFEX_SNAPSHOT_ADDR  snapshot feed group:port      (default 239.0.0.3:12345)
 *   NDFEX_INTERFACE      address of the sending interface (default 127.0.0.1)
 *   NDFEX_SIM_RATE       market events per second      (default 20; 100000+ floods for benchmarks)
 *   NDFEX_SIM_SEED       seed: the same seed replays the same market (default random)
 *   CONFIG_FILE, ACCOUNTS_FILE, BASKETS_FILE, LOG_LEVEL: as for every service
 *     (src/config/config.ts); the roster's exchange-format accounts trade too.
 */
import { join } from 'node:path';
import { loadConfig } from '../config/config.js';
import { readAccountsFile } from '../config/accounts.js';
import { loadBaskets } from '../config/baskets.js';
import { processLogger } from '../shared/log.js';
import { announceReady, exitOnStartError, onShutdown } from '../shared/process.js';
import { simSettingsFromEnv } from '../config/sim.js';
import { processSettings } from '../config/process.js';
import { startSimulator } from './service.js';

const proc = processSettings(process.env);
let log = processLogger('ndfex-sim', proc);
try {
  const cfg = loadConfig(process.env);
  log = processLogger('ndfex-sim', proc, cfg.logLevel);
  const settings = simSettingsFromEnv(process.env);
  // The lines the engine takes (it reports the others): a restarted simulator must not stop on one the engine refused.
  const roster = cfg.accountsFile ? readAccountsFile(cfg.accountsFile, loadBaskets(cfg.basketsFile || undefined)).accounts : [];
  // Only exchange-format lines carry a client_id the exchange would fill.
  const rosterIds = roster.flatMap((a) => (a.clientId === undefined ? [] : [a.clientId]));
  const sim = await startSimulator({ ...settings, rosterIds, log, stateFile: join(cfg.dataDir, 'sim-state.json') });
  let last = sim.stats();
  const report = setInterval(() => {
    const now = sim.stats();
    log.info({ events: now.events - last.events, md_messages: now.mdMessages - last.mdMessages, fills: now.fills - last.fills, send_errors: now.sendErrors }, 'last 10 s');
    last = now;
  }, 10_000);
  onShutdown(
    log,
    async () => {
      clearInterval(report);
      await sim.close();
    },
    proc.launcherPid,
  );
  announceReady('simulator');
} catch (err) {
  exitOnStartError(log, 'simulator', err);
}
