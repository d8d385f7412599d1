import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { loadConfig, recordedEngineShards, ConfigError, type Config } from '../config/config.js';
import { rosterForShard } from '../engine/roster.js';
import { loadBaskets } from '../config/baskets.js';
import { loadAccountsFile, refusalText } from '../config/accounts.js';
import { loadBridgeConfig, type BridgeConfig } from '../config/feed.js';
import { simSettingsFromEnv } from '../config/sim.js';

export type SimulatorSetting = 'auto' | 'on' | 'off';

/**
 * Everything the services will read, checked before any of them starts: a
 * mistake is one ConfigError naming the file and line or the variable, rather
 * than a child that dies at start and is restarted forever while the rest serves.
 */
export function preflight(env: NodeJS.ProcessEnv): { cfg: Config; simulator: SimulatorSetting; standby: boolean; exchange: Pick<BridgeConfig, 'marketData' | 'iface'> } {
  const cfg = loadConfig(env);
  prepareDataDir(cfg.dataDir, env.DATA_DIR ? 'DATA_DIR' : 'dataDir (config file)');
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const shards = cfg.engine?.shards ?? 1;
  // Strictly, at a start: a line a running engine would refuse alone is an error here, while the operator is at hand.
  if (cfg.accountsFile) {
    const refused = rosterForShard(loadAccountsFile(cfg.accountsFile, instruments), 0, shards).refused[0];
    if (refused) throw new ConfigError(refusalText(cfg.accountsFile, refused));
  }
  const recorded = shardsOnDisk(cfg);
  if (recorded !== null && recorded !== shards) {
    throw new ConfigError(
      `DATA_DIR ${cfg.dataDir} holds the journals of ${recorded} engine shard(s): ENGINE_SHARDS=${shards} would leave accounts in journals no engine reads (set ENGINE_SHARDS=${recorded}; moving accounts between shards is not supported)`,
    );
  }
  // The bridge needs NATS_URL, which the launcher itself provides.
  const feed = loadBridgeConfig({ ...env, NATS_URL: env.NATS_URL || 'nats://127.0.0.1:4222' });
  const simulator = (env.NDFEX_SIMULATOR || 'auto').toLowerCase();
  if (simulator !== 'auto' && simulator !== 'on' && simulator !== 'off') {
    throw new ConfigError(`NDFEX_SIMULATOR=${JSON.stringify(env.NDFEX_SIMULATOR)}: expected auto, on or off`);
  }
  if (simulator !== 'off') simSettingsFromEnv(env);
  // The standby bridge (src/feed/standby.ts) beside the bridge, unless turned off.
  const standby = (env.NDFEX_STANDBY || 'on').toLowerCase();
  if (standby !== 'on' && standby !== 'off') throw new ConfigError(`NDFEX_STANDBY=${JSON.stringify(env.NDFEX_STANDBY)}: expected on or off`);
  // Where the launcher listens for a live exchange: the bridge's market-data group.
  return { cfg, simulator, standby: standby === 'on', exchange: { marketData: feed.marketData, iface: feed.iface } };
}

/** How many engine shards last ran on this DATA_DIR: what the launcher recorded, 1 for a store from before shards, null for a fresh one. */
function shardsOnDisk(cfg: Config): number | null {
  return recordedEngineShards(cfg) ?? (existsSync(join(cfg.dataDir, 'nats')) || existsSync(join(cfg.dataDir, 'nats-cluster')) ? 1 : null);
}

/**
 * Creates DATA_DIR (and its missing parents) and checks it can be written, as
 * a ConfigError naming it. One level at a time: Node 20's recursive mkdirSync
 * never returns for a path under /proc (it retries ENOENT forever).
 */
function prepareDataDir(dir: string, name: string): void {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d); d = dirname(d)) missing.unshift(d);
  try {
    for (const d of missing) mkdirSync(d);
    if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new ConfigError(`${name}=${dir} cannot be used as the data directory: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * The ports the launcher will listen on, free before anything starts: a port
 * in use is a mistake in the environment like any other (a ConfigError naming
 * the variable), not a service that dies at start and is restarted forever.
 * A busy default NATS port is not checked: the launcher then takes another.
 */
export async function checkPorts(cfg: Config, env: NodeJS.ProcessEnv): Promise<void> {
  const http = await listenProblem(cfg.http.host, cfg.http.port);
  if (http) throw new ConfigError(`HTTP_PORT=${cfg.http.port} on ${cfg.http.host}: ${http} (another gateway running? set HTTP_PORT or HTTP_HOST)`);
  if (!cfg.nats.url && env.NATS_PORT) {
    const nats = await listenProblem('127.0.0.1', cfg.nats.port);
    if (nats) throw new ConfigError(`NATS_PORT=${cfg.nats.port}: ${nats} (another nats-server running? set another NATS_PORT, or NATS_URL to use that server)`);
  }
}

/** Why `port` cannot be listened on exclusively (null: it can), e.g. "port in use". */
function listenProblem(host: string, port: number): Promise<string | null> {
  if (port === 0) return Promise.resolve(null);
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE' ? 'port in use' : `cannot listen (${err.code ?? err.message})`));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(null)));
  });
}
