import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { engineShardsFile, loadConfig, localEngineShards, ConfigError, type Config } from '../config/config.js';
import { rosterForShard } from '../engine/roster.js';
import { loadBaskets } from '../config/baskets.js';
import { loadAccountsFile } from '../config/accounts.js';
import { loadBridgeConfig } from '../feed/config.js';
import { simSettingsFromEnv } from '../sim/settings.js';

export type SimulatorSetting = 'auto' | 'on' | 'off';

/**
 * Everything the services will read, checked before any of them starts: a
 * mistake is one ConfigError naming the file and line or the variable, rather
 * than a child that dies at start and is restarted forever while the rest serves.
 */
export function preflight(env: NodeJS.ProcessEnv): { cfg: Config; simulator: SimulatorSetting } {
  const cfg = loadConfig(env);
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const shards = cfg.engine?.shards ?? 1;
  if (cfg.accountsFile) rosterForShard(loadAccountsFile(cfg.accountsFile, instruments), 0, shards, cfg.accountsFile);
  const recorded = recordedEngineShards(cfg);
  if (recorded !== null && recorded !== shards) {
    throw new ConfigError(
      `DATA_DIR ${cfg.dataDir} holds the journals of ${recorded} engine shard(s): ENGINE_SHARDS=${shards} would leave accounts in journals no engine reads (set ENGINE_SHARDS=${recorded}; moving accounts between shards is not supported)`,
    );
  }
  // The bridge needs NATS_URL, which the launcher itself provides.
  loadBridgeConfig({ ...env, NATS_URL: env.NATS_URL || 'nats://127.0.0.1:4222' });
  const simulator = (env.NDFEX_SIMULATOR || 'auto').toLowerCase();
  if (simulator !== 'auto' && simulator !== 'on' && simulator !== 'off') {
    throw new ConfigError(`NDFEX_SIMULATOR=${JSON.stringify(env.NDFEX_SIMULATOR)}: expected auto, on or off`);
  }
  if (simulator !== 'off') simSettingsFromEnv(env);
  return { cfg, simulator };
}

/** How many engine shards last ran on this DATA_DIR: what the launcher recorded, 1 for a store from before shards, null for a fresh one. */
function recordedEngineShards(cfg: Config): number | null {
  if (existsSync(engineShardsFile(cfg))) return localEngineShards(cfg);
  return existsSync(join(cfg.dataDir, 'nats')) || existsSync(join(cfg.dataDir, 'nats-cluster')) ? 1 : null;
}
