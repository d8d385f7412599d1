import { loadConfig, ConfigError, type Config } from '../config/config.js';
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
  if (cfg.accountsFile) loadAccountsFile(cfg.accountsFile, instruments);
  // The bridge needs NATS_URL, which the launcher itself provides.
  loadBridgeConfig({ ...env, NATS_URL: env.NATS_URL || 'nats://127.0.0.1:4222' });
  const simulator = (env.NDFEX_SIMULATOR || 'auto').toLowerCase();
  if (simulator !== 'auto' && simulator !== 'on' && simulator !== 'off') {
    throw new ConfigError(`NDFEX_SIMULATOR=${JSON.stringify(env.NDFEX_SIMULATOR)}: expected auto, on or off`);
  }
  if (simulator !== 'off') simSettingsFromEnv(env);
  return { cfg, simulator };
}
