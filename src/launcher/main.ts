import { join } from 'node:path';
import { loadConfig, PROJECT_ROOT } from '../config/config.js';
import { createLogger } from '../shared/log.js';
import { startNatsServer, type NatsServer } from './nats-server.js';
import { Supervisor } from './supervisor.js';
import { exchangeIsLive } from './exchange-probe.js';

/**
 * `npm start`: the whole system on one machine. Starts a local nats-server
 * (unless NATS_URL names one), then as supervised child processes: the
 * engine, the gateway, the pricing actor, the feed bridge, and the built-in
 * NDFEX simulator when no exchange is heard on the market-data group
 * (NDFEX_SIMULATOR=on|off forces it). Ctrl-C stops everything it started.
 */
const cfg = loadConfig();
const log = createLogger('launcher', cfg.logLevel);
const dist = join(PROJECT_ROOT, 'dist/src');

let nats: NatsServer | null = null;
let natsUrl = cfg.nats.url;
try {
  if (!natsUrl) {
    nats = await startNatsServer({ port: cfg.nats.port, storeDir: join(cfg.dataDir, 'nats') });
    natsUrl = nats.url;
    log.info({ url: natsUrl, store: join(cfg.dataDir, 'nats') }, 'started nats-server');
  } else {
    log.info({ url: natsUrl }, 'using NATS_URL');
  }
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : err }, `cannot start nats-server on port ${cfg.nats.port} (set NATS_PORT, or NATS_URL for an existing server)`);
  process.exit(1);
}

const simulatorSetting = (process.env.NDFEX_SIMULATOR ?? 'auto').toLowerCase();
if (!['auto', 'on', 'off'].includes(simulatorSetting)) {
  log.fatal(`NDFEX_SIMULATOR must be auto, on or off, not ${simulatorSetting}`);
  process.exit(2);
}
const simulate = simulatorSetting === 'on' || (simulatorSetting === 'auto' && !(await exchangeIsLive(process.env)));

const env = { ...process.env, NATS_URL: natsUrl };
const supervisor = new Supervisor(log);
supervisor.start({ name: 'engine', script: join(dist, 'engine/main.js'), env });
supervisor.start({ name: 'gateway', script: join(dist, 'gateway/main.js'), env });
supervisor.start({ name: 'pricing', script: join(dist, 'pricing/main.js'), env });
supervisor.start({ name: 'feed', script: join(dist, 'feed/main.js'), env });
if (simulate) supervisor.start({ name: 'simulator', script: join(dist, 'sim/main.js'), env });
log.info(
  { http: `http://localhost:${cfg.http.port}`, exchange: simulate ? 'built-in simulator' : 'NDFEX on the multicast feeds' },
  'system starting: Ctrl-C stops it',
);

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping');
  await supervisor.stopAll();
  await nats?.stop();
  process.exit(0);
};
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
