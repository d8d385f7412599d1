import { z } from 'zod';
import { ConfigError, oneLine } from './config.js';
import { feedAddrSchema, presentVars } from './feed.js';
import { parseGroupAddr, type GroupAddr } from '../feed/multicast.js';

/** A multicast group and port. */
export type Endpoint = GroupAddr;

/** The simulator's settings (src/sim/main.ts parses them once and passes them down). */
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

const DEFAULT_RATE = 20;

/** Parses `group:port`, naming the variable in the error. */
export function parseEndpoint(name: string, value: string): Endpoint {
  try {
    return parseGroupAddr(value);
  } catch (err) {
    throw new ConfigError(`${name}=${JSON.stringify(value)}: ${(err as Error).message}`);
  }
}

/** The feed addresses and interface are the bridge's variables (docs/ndfex-protocol.md's groups by default). */
const envSchema = z.object({
  ...feedAddrSchema,
  NDFEX_SIM_RATE: z.coerce.number({ error: 'expected events per second, above 0' }).gt(0).max(10_000_000).default(DEFAULT_RATE),
  // Default random: each run its own market; the same seed replays the same one.
  NDFEX_SIM_SEED: z
    .string()
    .regex(/^\d{1,10}$/, 'expected a whole number')
    .transform((s) => Number(s) >>> 0)
    .optional(),
});

/** Reads the simulator's settings from `env` (its entry point passes process.env; the launcher checks them before it starts anything). */
export function simSettingsFromEnv(env: NodeJS.ProcessEnv): SimSettings {
  const parsed = envSchema.safeParse(presentVars(env));
  if (!parsed.success) throw new ConfigError(`simulator config: ${oneLine(z.prettifyError(parsed.error))}`);
  const e = parsed.data;
  return {
    clearing: e.NDFEX_CLEARING_ADDR,
    md: e.NDFEX_MD_ADDR,
    snapshot: e.NDFEX_SNAPSHOT_ADDR,
    iface: e.NDFEX_INTERFACE,
    rate: e.NDFEX_SIM_RATE,
    seed: e.NDFEX_SIM_SEED ?? Math.floor(Math.random() * 0xffffffff),
  };
}
