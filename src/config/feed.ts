import { z } from 'zod';
import { ConfigError, oneLine } from './config.js';
import { NDFEX_DEFAULT_FEEDS } from '../../proto/ndfex.js';
import { parseGroupAddr, type GroupAddr } from '../feed/multicast.js';
import type { RestartPolicy } from '../feed/clearing.js';

/** The feed bridge's settings (src/feed/main.ts parses them once and passes them down). */
export interface BridgeConfig {
  natsUrl: string;
  /** NATS credentials file (NATS_CREDS; the launcher sets the feed role's); absent: connect without. */
  natsCreds?: string;
  /** Copies of each stream and bucket the bridge creates (NATS_REPLICAS); absent: 1. */
  natsReplicas?: number;
  clearing: GroupAddr;
  marketData: GroupAddr;
  snapshot: GroupAddr;
  iface: string;
  /** Operator's session name ('' = none): a change begins a new exchange session. */
  sessionName: string;
  restartPolicy: RestartPolicy;
  /** Sender addresses the feeds are accepted from (NDFEX_SOURCE); empty: any. */
  sources: string[];
  statusIntervalMs: number;
  maxInFlight: number;
  /** Wall-clock ms a new exchange session must show on market data, the old one silent, before it is believed (src/feed/verdict.ts). */
  verdictWindowMs: number;
  logLevel: string;
  /** NDFEX_FEED_ROLE: `bridge` (default), or `standby`: a second listener that publishes the bridge's fills while it is down (src/feed/standby.ts). */
  role: 'bridge' | 'standby';
}

/** A `group:port` variable, its error naming the group rule broken. */
export const groupAddr = z.string().transform((s, ctx) => {
  try {
    return parseGroupAddr(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** The exchange's feeds, shared by the bridge and the simulator (docs/ndfex-protocol.md). */
export const feedAddrSchema = {
  NDFEX_CLEARING_ADDR: groupAddr.default(parseGroupAddr(NDFEX_DEFAULT_FEEDS.clearing)),
  NDFEX_MD_ADDR: groupAddr.default(parseGroupAddr(NDFEX_DEFAULT_FEEDS.marketData)),
  NDFEX_SNAPSHOT_ADDR: groupAddr.default(parseGroupAddr(NDFEX_DEFAULT_FEEDS.snapshot)),
  NDFEX_INTERFACE: z.ipv4({ error: 'expected the IPv4 address of an interface' }).default(NDFEX_DEFAULT_FEEDS.iface),
};

const envSchema = z.object({
  NATS_URL: z.string({ error: 'NATS_URL is required' }).min(1, 'NATS_URL is required'),
  NATS_CREDS: z.string().optional(),
  NATS_REPLICAS: z.coerce.number().int().min(1).max(5).optional(),
  ...feedAddrSchema,
  NDFEX_SESSION: z.string().max(64).default(''),
  NDFEX_RESTART_POLICY: z.enum(['reset', 'keep']).default('reset'),
  NDFEX_STATUS_INTERVAL_MS: z.coerce.number().int().min(50).max(60_000).default(1000),
  NDFEX_MAX_IN_FLIGHT: z.coerce.number().int().min(1).max(65_536).default(512),
  // Below 2 s a forger needs only a few heartbeats' worth of silence from the exchange; above a minute fills wait too long.
  NDFEX_VERDICT_WINDOW_MS: z.coerce.number().int().min(2000).max(60_000).default(5000),
  NDFEX_SOURCE: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((a) => a.trim()).filter(Boolean))
    .pipe(z.array(z.ipv4({ error: 'NDFEX_SOURCE: a comma-separated list of IPv4 addresses' }))),
  LOG_LEVEL: z.string().default('info'),
  NDFEX_FEED_ROLE: z.enum(['bridge', 'standby']).default('bridge'),
});

/** The variables that are set: an empty one counts as unset. */
export const presentVars = (env: NodeJS.ProcessEnv): Record<string, string> =>
  Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''));

/** Reads the bridge's settings from `env` (its entry point passes process.env); empty variables count as unset. */
export function loadBridgeConfig(env: NodeJS.ProcessEnv): BridgeConfig {
  const parsed = envSchema.safeParse(presentVars(env));
  if (!parsed.success) throw new ConfigError(`feed bridge config: ${oneLine(z.prettifyError(parsed.error))}`);
  const e = parsed.data;
  return {
    natsUrl: e.NATS_URL,
    ...(e.NATS_CREDS ? { natsCreds: e.NATS_CREDS } : {}),
    ...(e.NATS_REPLICAS ? { natsReplicas: e.NATS_REPLICAS } : {}),
    clearing: e.NDFEX_CLEARING_ADDR,
    marketData: e.NDFEX_MD_ADDR,
    snapshot: e.NDFEX_SNAPSHOT_ADDR,
    iface: e.NDFEX_INTERFACE,
    sessionName: e.NDFEX_SESSION,
    restartPolicy: e.NDFEX_RESTART_POLICY,
    sources: e.NDFEX_SOURCE,
    statusIntervalMs: e.NDFEX_STATUS_INTERVAL_MS,
    maxInFlight: e.NDFEX_MAX_IN_FLIGHT,
    verdictWindowMs: e.NDFEX_VERDICT_WINDOW_MS,
    logLevel: e.LOG_LEVEL,
    role: e.NDFEX_FEED_ROLE,
  };
}
