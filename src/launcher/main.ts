import { join } from 'node:path';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { CONFIG_EXIT_CODE, ConfigError, engineShardsFile, natsAuthDir, natsUrlFile, PROJECT_ROOT } from '../config/config.js';
import { connectNats } from '../shared/nats.js';
import { provisionStreams } from '../shared/streams.js';
import { prepareNatsAuth, routeCredentials, type NatsAuth } from './nats-auth.js';
import type { Role } from '../../proto/roles.js';
import { processLogger } from '../shared/log.js';
import { processSettings } from '../config/process.js';
import { startNatsServer, stopOrphanNats, type NatsServer } from './nats-server.js';
import { planCluster, startClusterNode, whenJetStreamReady } from './nats-cluster.js';
import { Supervisor, serviceNodeFlags, type ServiceKind } from '../shared/service-process.js';
import { exchangeIsLive } from './exchange-probe.js';
import { checkPorts, preflight } from './preflight.js';
import { feedNodeBinary } from './feed-runtime.js';
import { freePort, portIsFree } from '../shared/ports.js';
import { takeLauncherLock } from './lock.js';

/**
 * `npm start`: the whole system on one machine. Starts a local nats-server
 * (unless NATS_URL names one or several; NATS_CLUSTER=3: a local cluster of
 * three, every stream and bucket in 3 replicas) and keeps it running, then as supervised child
 * processes: the engine, the gateway, the pricing actor, the feed bridge and
 * its standby (NDFEX_STANDBY=off: none), and the built-in NDFEX simulator when no exchange is heard on the market-data
 * group (NDFEX_SIMULATOR=on|off forces it). Ctrl-C stops everything it started.
 *
 * Order: nats-server first up and last down; the feed bridge joined before the
 * simulator sends; at a stop, the services in reverse order (the engine saves
 * its snapshot while NATS is still there), then nats-server. Every child runs
 * in its own process group, so a terminal's Ctrl-C reaches the launcher alone.
 */
const proc = processSettings(process.env);
let log = processLogger('launcher', proc);
let checked: ReturnType<typeof preflight>;
try {
  checked = preflight(process.env);
  // Before the orphan reaping below: a running launcher's nats-server is no orphan.
  process.on('exit', takeLauncherLock(checked.cfg.dataDir));
  // Before the ports are checked: an orphan holds its port.
  if (!checked.cfg.nats.url) {
    await reapOrphan(join(checked.cfg.dataDir, 'nats'));
    for (let i = 1; i <= 7; i++) await reapOrphan(join(checked.cfg.dataDir, 'nats-cluster', `n${i}`));
  }
  await checkPorts(checked.cfg, process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  log.fatal(`configuration error: ${err.message}`);
  process.exit(CONFIG_EXIT_CODE);
}
const { cfg, simulator, standby, exchange } = checked;
log = processLogger('launcher', proc, cfg.logLevel);
const dist = join(PROJECT_ROOT, 'dist/src');
/** The services' TMPDIR: emptied at each start and stop, so nothing a service left there (after a crash too) outlives the run. */
const tmpDir = join(cfg.dataDir, 'tmp');
rmSync(tmpDir, { recursive: true, force: true });
mkdirSync(tmpDir);

// From here on, every way out stops what was started: signals (any time, start-up included), and npm going away.
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGHUP', () => void stop('SIGHUP'));
if (process.env.npm_lifecycle_event) {
  // Under `npm start`: npm passes SIGINT and SIGTERM on, but not when it is killed outright; then this process is reparented.
  const npm = process.ppid;
  setInterval(() => process.ppid !== npm && void stop('npm exited'), 500).unref();
}
// A crash of the launcher itself (no clean stop) still takes its children down: the services watch for it too.
process.on('exit', () => {
  supervisor.killAll();
  for (const s of servers) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGTERM');
});

let stopping = false;
const supervisor = new Supervisor(log, () => void stop('configuration error', CONFIG_EXIT_CODE));
/** Settles once the nats-server(s) being started are up or failed: a stop during start-up waits for them, to stop them too. */
let natsStarting: Promise<unknown> = Promise.resolve();
/** The nats-server we started, or the nodes of the local cluster (NATS_CLUSTER). */
const servers: NatsServer[] = [];
let natsUrl = cfg.nats.url;
const storeDir = join(cfg.dataDir, 'nats');
const clusterSize = cfg.nats.cluster ?? 1;
const shards = cfg.engine?.shards ?? 1;
/** Copies of each stream and bucket: NATS_REPLICAS, else 3 on a local cluster (fewer on a smaller one), else 1. */
const replicas = cfg.nats.replicas ?? (clusterSize > 1 && !natsUrl ? Math.min(3, clusterSize) : 1);
/** Our own nats-server requires each role's credentials; an external one (NATS_URL) takes NATS_CREDS as given. */
let auth: NatsAuth | null = null;

/**
 * Restarts a nats-server (alone, or one node of the local cluster) on the same
 * port and store when it dies, so the services (which reconnect endlessly)
 * come back on their own. `slot` is its place in `servers`.
 */
function superviseNats(slot: number, label: string, start: (onExit: (code: number | null) => void) => Promise<NatsServer>, restarts = 0): Promise<NatsServer> {
  const startedAt = Date.now();
  return start((code) => {
    if (stopping) return;
    const n = Date.now() - startedAt > 60_000 ? 0 : restarts + 1;
    const pause = Math.min(10_000, 250 * 2 ** n);
    log.error({ server: label, code, restartInMs: pause }, 'nats-server exited: restarting it');
    const again = () => {
      if (stopping) return;
      superviseNats(slot, label, start, n).then(
        (s) => {
          servers[slot] = s;
          log.info({ server: label, url: s.url }, 'nats-server restarted');
        },
        (err: unknown) => {
          log.error({ server: label, err: err instanceof Error ? err.message.split('\n')[0] : err }, 'nats-server did not restart: trying again');
          setTimeout(again, Math.min(10_000, pause * 2));
        },
      );
    };
    setTimeout(again, pause);
  }).then((s) => (servers[slot] = s));
}

/** Stops a nats-server left on `store` by a launcher killed outright, before a new one is started on it. */
async function reapOrphan(store: string): Promise<void> {
  const pid = await stopOrphanNats(store);
  if (pid !== null) log.warn({ pid, store }, 'stopped a nats-server left running by a launcher that was killed');
}

/** A free port for node `i` of the cluster: NATS_PORT (or the default) for the first when free. */
async function clusterClientPort(i: number): Promise<number> {
  if (i === 0 && (process.env.NATS_PORT || (await portIsFree('127.0.0.1', cfg.nats.port)))) return cfg.nats.port;
  return freePort();
}

try {
  if (!natsUrl && clusterSize > 1) {
    auth = prepareNatsAuth(natsAuthDir(cfg), shards);
    const ports: number[] = [];
    for (let i = 0; i < clusterSize; i++) ports.push(await clusterClientPort(i));
    const clusterPorts: number[] = [];
    for (let i = 0; i < clusterSize; i++) clusterPorts.push(await freePort());
    const plan = planCluster({
      ports,
      clusterPorts,
      storeRoot: join(cfg.dataDir, 'nats-cluster'),
      configDir: natsAuthDir(cfg),
      authConfigFile: auth.configFile,
      routes: routeCredentials(natsAuthDir(cfg)),
    });
    await (natsStarting = Promise.all(plan.nodes.map((node, i) => superviseNats(i, node.name, (onExit) => startClusterNode(node, onExit, true)))));
    natsUrl = plan.url;
    writeFileSync(natsUrlFile(cfg), `${natsUrl}\n`);
    log.info({ url: natsUrl, nodes: plan.nodes.map((n) => n.name), replicas, store: join(cfg.dataDir, 'nats-cluster') }, 'started a local NATS cluster');
  } else if (!natsUrl) {
    let port = cfg.nats.port;
    // A nats-server already on the default port (Debian's package can start one as a service) is not ours: take another.
    if (!process.env.NATS_PORT && !(await portIsFree('127.0.0.1', port))) {
      port = await freePort();
      log.warn({ port, busy: cfg.nats.port }, 'NATS port in use: starting the local nats-server on another port');
    }
    auth = prepareNatsAuth(natsAuthDir(cfg), shards);
    const configFile = auth.configFile;
    const nats = await (natsStarting = superviseNats(0, 'nats-server', (onExit) => startNatsServer({ port, storeDir, configFile, onExit, ownProcessGroup: true })));
    natsUrl = nats.url;
    writeFileSync(natsUrlFile(cfg), `${natsUrl}\n`);
    log.info({ url: natsUrl, store: storeDir }, 'started nats-server');
  } else {
    log.info({ url: natsUrl }, 'using NATS_URL');
  }
} catch (err) {
  if (err instanceof ConfigError) {
    // A credentials file under DATA_DIR/nats-auth that is not what the launcher writes.
    log.fatal(`configuration error: ${err.message}`);
    await stop('configuration error', CONFIG_EXIT_CODE);
  }
  // The error carries nats-server's last lines (its banner first): the last one says why.
  const lines = err instanceof Error ? err.message.split('\n').filter((l) => l.trim() !== '') : [String(err)];
  const why = lines.length > 1 ? `${lines[0]} ${lines[lines.length - 1]}` : lines[0];
  log.fatal({ err: why }, `cannot start nats-server on port ${cfg.nats.port} (set NATS_PORT, or NATS_URL for an existing server)`);
  await stop('start-up failed', 1);
}

// Streams and buckets are created here, as the operator: no service role may administer them.
try {
  const nc = await connectNats(natsUrl!, 'etf-launcher', { waitForServer: false, role: 'operator', credsFile: auth?.credsFile('operator'), log });
  if (auth && clusterSize > 1) {
    // Our cluster answers JetStream once it has elected a meta leader; the services start after that.
    await whenJetStreamReady(nc, () => provisionStreams(nc, replicas, shards), 60_000, log);
    log.info({ replicas }, 'JetStream ready on the cluster: streams and buckets provisioned');
  } else {
    await provisionStreams(nc, replicas, shards);
  }
  await nc.close();
} catch (err) {
  if (auth) {
    log.fatal({ err: err instanceof Error ? err.message : err }, 'cannot create the streams on the local nats-server');
    await stop('start-up failed', 1);
  }
  // An external server may not let these credentials create streams; the services create what they may.
  log.warn({ err: err instanceof Error ? err.message : err }, 'streams not provisioned with NATS_CREDS: the services create them if allowed');
}

const simulate = simulator === 'on' || (simulator === 'auto' && !(await exchangeIsLive(exchange.marketData, exchange.iface)));
// Beside a real exchange (heard on the feeds, or the simulator turned off for one), a client_id /register hands out is
// one the exchange knows nothing of, or, worse, one it gives a team added to its users.txt later: that team's fills
// would credit a stranger. Closed unless asked for.
const closeRegistration = !simulate && cfg.registration === undefined;
if (closeRegistration) {
  log.warn('beside a real exchange (no simulator): POST /register is closed (REGISTRATION=open opens it), since a client_id it handed out could be one the exchange gives a team later; teams come from the roster');
}

/** A service's environment: the server, and the credentials of its role (a file path: no secret in the environment). */
const envFor = (role: Role | null): NodeJS.ProcessEnv => ({
  ...process.env,
  NATS_URL: natsUrl,
  NATS_REPLICAS: String(replicas),
  TMPDIR: tmpDir,
  ...(auth ? { NATS_CREDS: role ? auth.credsFile(role) : '' } : {}),
});
// One engine per shard (ENGINE_SHARDS, proto/shards.ts), each supervised on its own; the tools read how many from DATA_DIR.
writeFileSync(engineShardsFile(cfg), `${shards}\n`);
/** A supervised service: a built entry point on this Node (or `execPath`), ready once it says so over its IPC channel. */
const service = (name: string, kind: ServiceKind, env: NodeJS.ProcessEnv, execPath = process.execPath) =>
  supervisor.start({ name, command: execPath, args: [...serviceNodeFlags(kind), '--enable-source-maps', join(dist, kind, 'main.js')], env, ready: 'message' });
for (let shard = 0; shard < shards; shard++) {
  const name = shards === 1 ? 'engine' : `engine-${shard}`;
  service(name, 'engine', { ...envFor('engine'), ...(shards > 1 ? { ENGINE_SHARDS: String(shards), ENGINE_SHARD: String(shard) } : {}) });
}
// Pricing runs below: a pricing that never comes up is a problem on /health, not only one that stops reporting.
service('gateway', 'gateway', { ...envFor('gateway'), EXPECT_PRICING: 'on', ...(closeRegistration ? { REGISTRATION: 'closed' } : {}) });
service('pricing', 'pricing', envFor('pricing'));
const feedNode = feedNodeBinary(log);
service('feed', 'feed', { ...envFor('feed'), NDFEX_FEED_ROLE: 'bridge' }, feedNode);
// NDFEX never retransmits: while the bridge restarts, only a second listener keeps what the exchange sends (NDFEX_STANDBY=off: none).
if (standby) service('feed-standby', 'feed', { ...envFor('feed'), NDFEX_FEED_ROLE: 'standby' }, feedNode);
if (simulate) {
  // Whatever the simulator sends before the bridge has joined the groups is lost for good: a gap at every start.
  await supervisor.whenReady('feed');
  // The simulator only speaks multicast: it gets no NATS credentials at all.
  service('simulator', 'sim', envFor(null));
}
log.info(
  {
    http: `http://localhost:${cfg.http.port}`,
    operator: `http://localhost:${cfg.http.port}/operator`,
    exchange: simulate ? 'built-in simulator' : 'NDFEX on the multicast feeds',
  },
  'system starting: Ctrl-C stops it',
);

async function stop(reason: string, exitCode = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ reason }, 'stopping');
  await supervisor.stopAll();
  // Only waited for, so that what it started is stopped below; a failure to start was logged where it happened.
  await natsStarting.catch(() => {});
  await Promise.all(servers.map((s) => s.stop()));
  rmSync(tmpDir, { recursive: true, force: true });
  process.exit(exitCode);
}
