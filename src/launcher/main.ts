import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { loadConfig, natsUrlFile, PROJECT_ROOT } from '../config/config.js';
import { createLogger } from '../shared/log.js';
import { startNatsServer, type NatsServer } from './nats-server.js';
import { Supervisor } from './supervisor.js';
import { exchangeIsLive } from './exchange-probe.js';
import { assertPortFree, freePort, portIsFree } from '../shared/ports.js';

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

try {
  await assertPortFree(cfg.http.host, cfg.http.port, 'gateway');
} catch (err) {
  log.fatal((err as Error).message);
  process.exit(1);
}

let nats: NatsServer | null = null;
let natsUrl = cfg.nats.url;
try {
  if (!natsUrl) {
    let port = cfg.nats.port;
    // A nats-server already on the default port (Debian's package can start one as a service) is not ours: take another.
    if (!process.env.NATS_PORT && !(await portIsFree('127.0.0.1', port))) {
      port = await freePort();
      log.warn({ port, busy: cfg.nats.port }, 'NATS port in use: starting the local nats-server on another port');
    }
    nats = await startNatsServer({ port, storeDir: join(cfg.dataDir, 'nats') });
    natsUrl = nats.url;
    writeFileSync(natsUrlFile(cfg), `${natsUrl}\n`);
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
  { http: `http://localhost:${cfg.http.port}`, operator: `http://localhost:${cfg.http.port}/operator`, exchange: simulate ? 'built-in simulator' : 'NDFEX on the multicast feeds' },
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
