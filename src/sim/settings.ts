import { isIPv4 } from 'node:net';

/** A multicast group and port. */
export interface Endpoint {
  group: string;
  port: number;
}

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

/** The exchange's groups (../shared/ndfex/PROTOCOL.md); the feed bridge reads the same variables. */
export const DEFAULT_CLEARING = '239.0.0.2:12346';
export const DEFAULT_MD = '239.0.0.1:12345';
export const DEFAULT_SNAPSHOT = '239.0.0.3:12345';
export const DEFAULT_INTERFACE = '127.0.0.1';
export const DEFAULT_RATE = 20;

/** Parses `group:port`, naming the variable in the error. */
export function parseEndpoint(name: string, value: string): Endpoint {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !isIPv4(m[1]!) || port < 1 || port > 65535) throw new Error(`${name}=${JSON.stringify(value)}: expected group:port, e.g. 239.0.0.1:12345`);
  const first = Number(m[1]!.split('.')[0]);
  if (first < 224 || first > 239) throw new Error(`${name}=${value}: ${m[1]} is not a multicast group (224.0.0.0-239.255.255.255)`);
  return { group: m[1]!, port };
}

export function simSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): SimSettings {
  const iface = env.NDFEX_INTERFACE || DEFAULT_INTERFACE;
  if (!isIPv4(iface)) throw new Error(`NDFEX_INTERFACE=${JSON.stringify(iface)}: expected the IPv4 address of an interface`);
  const rate = env.NDFEX_SIM_RATE ? Number(env.NDFEX_SIM_RATE) : DEFAULT_RATE;
  if (!Number.isFinite(rate) || rate <= 0 || rate > 10_000_000) throw new Error(`NDFEX_SIM_RATE=${env.NDFEX_SIM_RATE}: expected events per second, above 0`);
  const seedText = env.NDFEX_SIM_SEED;
  if (seedText && !/^\d{1,10}$/.test(seedText)) throw new Error(`NDFEX_SIM_SEED=${seedText}: expected a whole number`);
  return {
    clearing: parseEndpoint('NDFEX_CLEARING_ADDR', env.NDFEX_CLEARING_ADDR || DEFAULT_CLEARING),
    md: parseEndpoint('NDFEX_MD_ADDR', env.NDFEX_MD_ADDR || DEFAULT_MD),
    snapshot: parseEndpoint('NDFEX_SNAPSHOT_ADDR', env.NDFEX_SNAPSHOT_ADDR || DEFAULT_SNAPSHOT),
    iface,
    rate,
    seed: seedText ? Number(seedText) >>> 0 : Math.floor(Math.random() * 0xffffffff),
  };
}
