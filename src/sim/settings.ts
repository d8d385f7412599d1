import { isIPv4 } from 'node:net';
import { ConfigError } from '../config/config.js';
import { NDFEX_DEFAULT_FEEDS } from '../../proto/ndfex.js';
import { parseGroupAddr, type GroupAddr } from '../feed/multicast.js';

/** A multicast group and port. */
export type Endpoint = GroupAddr;

export interface SimSettings {
  clearing: Endpoint;
  md: Endpoint;
  snapshot: Endpoint;
  /** Address of the interface the datagrams leave on. */
  iface: string;
  /** Market events per second. */
  rate: number;
  seed: number;
}

/** The exchange's groups (docs/ndfex-protocol.md); the feed bridge reads the same variables. */
export const DEFAULT_CLEARING = NDFEX_DEFAULT_FEEDS.clearing;
export const DEFAULT_MD = NDFEX_DEFAULT_FEEDS.marketData;
export const DEFAULT_SNAPSHOT = NDFEX_DEFAULT_FEEDS.snapshot;
export const DEFAULT_INTERFACE = NDFEX_DEFAULT_FEEDS.iface;
export const DEFAULT_RATE = 20;

/** Parses `group:port`, naming the variable in the error. */
export function parseEndpoint(name: string, value: string): Endpoint {
  try {
    return parseGroupAddr(value);
  } catch (err) {
    throw new ConfigError(`${name}=${JSON.stringify(value)}: ${(err as Error).message}`);
  }
}

export function simSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): SimSettings {
  const iface = env.NDFEX_INTERFACE || DEFAULT_INTERFACE;
  if (!isIPv4(iface)) throw new ConfigError(`NDFEX_INTERFACE=${JSON.stringify(iface)}: expected the IPv4 address of an interface`);
  const rate = env.NDFEX_SIM_RATE ? Number(env.NDFEX_SIM_RATE) : DEFAULT_RATE;
  if (!Number.isFinite(rate) || rate <= 0 || rate > 10_000_000) throw new ConfigError(`NDFEX_SIM_RATE=${env.NDFEX_SIM_RATE}: expected events per second, above 0`);
  const seedText = env.NDFEX_SIM_SEED;
  if (seedText && !/^\d{1,10}$/.test(seedText)) throw new ConfigError(`NDFEX_SIM_SEED=${seedText}: expected a whole number`);
  return {
    clearing: parseEndpoint('NDFEX_CLEARING_ADDR', env.NDFEX_CLEARING_ADDR || DEFAULT_CLEARING),
    md: parseEndpoint('NDFEX_MD_ADDR', env.NDFEX_MD_ADDR || DEFAULT_MD),
    snapshot: parseEndpoint('NDFEX_SNAPSHOT_ADDR', env.NDFEX_SNAPSHOT_ADDR || DEFAULT_SNAPSHOT),
    iface,
    rate,
    seed: seedText ? Number(seedText) >>> 0 : Math.floor(Math.random() * 0xffffffff),
  };
}
