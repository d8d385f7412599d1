import { readFileSync, existsSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { conversionRulesSchema } from '../../proto/rules.js';
import { MAX_SHARDS } from '../../proto/shards.js';

/**
 * Project root (the folder with package.json): config paths are relative to
 * it, so the system runs from any working directory, compiled or not.
 */
export const PROJECT_ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(resolve(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the project root (package.json)');
    dir = up;
  }
  return dir;
})();

/** A token bucket: `burst` at once, refilled at `perMinute`. */
const throttleLimitSchema = z.object({ burst: z.number().int().min(1), perMinute: z.number().min(0) });
export type ThrottleLimit = z.infer<typeof throttleLimitSchema>;

const throttleSchema = z.object({
  enabled: z.boolean(),
  /** Every API request, per client address. */
  address: throttleLimitSchema.optional(),
  /** Every authenticated request, per team. */
  team: throttleLimitSchema.optional(),
  /** Creates and redeems, per team. */
  conversions: throttleLimitSchema.optional(),
  /** Registrations, per client address. */
  registrations: throttleLimitSchema.optional(),
  /** Failed logins per username: past `burst`, 429 until tokens come back. */
  loginFailuresPerUser: throttleLimitSchema.optional(),
  /** Failed logins per client address. */
  loginFailuresPerAddress: throttleLimitSchema.optional(),
  /** Per-address limits: 'one' (default) counts all of loopback as one host, 'each' every 127.x and ::1 apart (tests, benches). */
  loopback: z.enum(['one', 'each']).optional(),
  /** Per-address limits count an IPv6 client by this prefix (default 64). */
  ipv6Prefix: z.number().int().min(1).max(128).optional(),
  /** How long a (username, host) that proved its password stays exempt from its username's failure bucket (default 12 h). */
  provenLoginMs: z.number().int().min(0).optional(),
});
export type ThrottleConfig = z.infer<typeof throttleSchema>;

/**
 * The limits config/default.json ships, and what THROTTLE=on applies to a
 * config without a `throttle` section. A config without one runs unthrottled
 * (the benchmarks' and tests' systems, which measure or exercise other things).
 */
export const THROTTLE_DEFAULTS: ThrottleConfig = {
  enabled: true,
  address: { burst: 2000, perMinute: 60_000 },
  team: { burst: 600, perMinute: 30_000 },
  conversions: { burst: 60, perMinute: 1200 },
  // A class of 60 behind one NAT registers at once; after that 10 a minute, so a flood
  // from one host gets 60 accounts, then one every 6 s (each costs a bcrypt and an account forever).
  registrations: { burst: 60, perMinute: 10 },
  loginFailuresPerUser: { burst: 5, perMinute: 5 },
  loginFailuresPerAddress: { burst: 20, perMinute: 20 },
};

const configSchema = z.object({
  http: z.object({
    host: z.string(),
    port: z.number().int().min(0).max(65535),
    maxBodyBytes: z.number().int().positive(),
    /**
     * The HTTP/WebSocket server (HTTP_SERVER; absent: auto). uws: uWebSockets.js (the fast path; its
     * builds load on some Nodes only); node: node:http with ws (every Node); auto: uWS where it loads.
     */
    server: z.enum(['auto', 'uws', 'node']).optional(),
    /** Origins (scheme://host[:port]) besides the gateway's own whose browsers may POST/PUT/DELETE and open /ws (HTTP_ALLOWED_ORIGINS, comma-separated). */
    allowedOrigins: z.array(z.string().url()).optional(),
  }),
  nats: z.object({
    /** Empty: the launcher starts a local nats-server on `port` with its store under dataDir. */
    url: z.string(),
    port: z.number().int().min(0).max(65535),
    /** NATS credentials file (NATS_CREDS): a .creds file or {"user","password"} JSON; the launcher sets each role's. */
    creds: z.string().optional(),
    /** Copies of every stream and KV bucket (NATS_REPLICAS): 1 on one server, 3 on a three-node cluster. */
    replicas: z.number().int().min(1).max(5).optional(),
    /** Nodes of the local cluster the launcher starts (NATS_CLUSTER): absent or 1, one nats-server. */
    cluster: z.number().int().min(1).max(7).optional(),
  }),
  dataDir: z.string(),
  accountsFile: z.string(),
  /** Empty: UNDY alone (one of each of symbols 3..12). */
  basketsFile: z.string(),
  maxAmount: z.number().int().positive().max(1e9),
  bcryptRounds: z.number().int().min(4).max(15),
  requestTimeoutMs: z.number().int().positive(),
  /** Journaled events between engine snapshots (0: only at a clean stop). */
  snapshotEvery: z.number().int().min(0).optional(),
  /** How often the engine looks at the accounts file for changes, ms (default 1000): a changed file is read again without a restart. */
  rosterPollMs: z.number().int().min(10).max(60_000).optional(),
  /** NDFEX scoreboard file that gets a line per conversion leg (empty: <dataDir>/conversions.log). */
  scoreboardFile: z.string().optional(),
  logLevel: z.string(),
  /** The pricing service's desk sampling for the charts (GET /charts reads it): a point every this many ms at first (default proto/http.ts CHART_LIMITS.sampleMs). */
  chartSampleMs: z.number().int().min(50).max(60_000).optional(),
  /** Who may open the operator page and /operator/api. Unset: the gateway keeps a generated one in <dataDir>/operator.json. */
  operator: z.object({ username: z.string().min(1), password: z.string().min(8, 'operator password must be at least 8 characters') }).optional(),
  /**
   * Whether this system runs the pricing service (EXPECT_PRICING=on|off; the launcher sets on for its gateway): /health then
   * counts it missing from the gateway's start. Off (default): only once it has reported, so a gateway run without one is not degraded.
   */
  expectPricing: z.boolean().optional(),
  /**
   * How long the gateway gives the pricing service to start (PRICING_START_GRACE_MS, default 30000): never heard that long
   * after the gateway's start (with expectPricing), or heard starting for that long, is a problem on /health; a start within it is `starting`.
   */
  pricingStartGraceMs: z.number().int().min(0).optional(),
  /** How long a symbol's Bbos must all have been bad (unusable, or not of the Bbo shape) before the pricing service reports it (PRICING_BAD_BBO_MS, default 3000). */
  pricingBadBboMs: z.number().int().min(0).optional(),
  /** open (default): anyone may POST /register; closed: 403 (beside a real exchange, whose client_ids come from its roster). */
  registration: z.enum(['open', 'closed']).optional(),
  /** How long the gateway trusts a team's cached password hash before asking the engine again (default 30000 ms). */
  credentialsCacheMs: z.number().int().min(0).optional(),
  /** The key sealing password hashes (src/shared/credentials-key.ts); empty: <dataDir>/credentials.key. */
  credentialsKeyFile: z.string().optional(),
  /** Rate limits of the gateway (429 with Retry-After). */
  throttle: throttleSchema.optional(),
  /** Conversion rules; every one off when absent. */
  rules: conversionRulesSchema.optional(),
  /**
   * Engine shards (proto/shards.ts): `shards` engines each own the client_ids equal to their `shard` modulo
   * `shards`. Absent: one engine. Every process takes `shards`; an engine process takes its `shard` too.
   */
  engine: z
    .object({ shards: z.number().int().min(1).max(MAX_SHARDS), shard: z.number().int().min(0).optional() })
    .refine((e) => e.shard === undefined || e.shard < e.shards, { message: 'engine.shard must be below engine.shards' })
    .optional(),
});

export type Config = z.infer<typeof configSchema>;

/**
 * Something only the operator can fix (a configuration mistake, a journal
 * record the engine cannot replay): the process says so in one line and exits
 * with CONFIG_EXIT_CODE, and the launcher does not restart it into the same.
 */
export class NeedsOperator extends Error {}
/** A configuration mistake (a file, a line, a variable). */
export class ConfigError extends NeedsOperator {}
export const CONFIG_EXIT_CODE = 2;

/** A whole number from an environment variable, or a ConfigError naming the variable. */
function intFromEnv(name: string, v: string): number {
  if (!/^-?\d+$/.test(v.trim())) throw new ConfigError(`${name}=${JSON.stringify(v)} is not a whole number`);
  return Number(v);
}

/** Copies JetStream keeps of each stream and bucket (NATS_REPLICAS): 1 to 5. */
function natsReplicas(v: string): number {
  const n = intFromEnv('NATS_REPLICAS', v);
  if (n < 1 || n > 5) throw new ConfigError(`NATS_REPLICAS=${JSON.stringify(v)}: expected 1 to 5 (JetStream's limit)`);
  return n;
}

/** Environment variables that override the config file, and where they go. */
const ENV: Record<string, (c: Config, v: string) => void> = {
  HTTP_HOST: (c, v) => (c.http.host = v),
  HTTP_PORT: (c, v) => (c.http.port = intFromEnv('HTTP_PORT', v)),
  ENGINE_SHARDS: (c, v) => (c.engine = { ...c.engine, shards: intFromEnv('ENGINE_SHARDS', v) }),
  ENGINE_SHARD: (c, v) => (c.engine = { shards: c.engine?.shards ?? 1, shard: intFromEnv('ENGINE_SHARD', v) }),
  HTTP_ALLOWED_ORIGINS: (c, v) => (c.http.allowedOrigins = v.split(',').map((o) => o.trim()).filter((o) => o !== '')),
  HTTP_SERVER: (c, v) => {
    if (v !== 'auto' && v !== 'uws' && v !== 'node') throw new ConfigError(`HTTP_SERVER=${JSON.stringify(v)} must be auto, uws or node`);
    c.http.server = v;
  },
  NATS_URL: (c, v) => (c.nats.url = v),
  NATS_PORT: (c, v) => (c.nats.port = intFromEnv('NATS_PORT', v)),
  NATS_CREDS: (c, v) => (c.nats.creds = v),
  NATS_REPLICAS: (c, v) => (c.nats.replicas = natsReplicas(v)),
  NATS_CLUSTER: (c, v) => {
    const n = v.trim() === '' ? 1 : intFromEnv('NATS_CLUSTER', v);
    if (n !== 1 && (n < 3 || n > 7 || n % 2 === 0)) throw new ConfigError(`NATS_CLUSTER=${JSON.stringify(v)}: expected 3, 5 or 7 nodes (or 1: one server)`);
    c.nats.cluster = n;
  },
  DATA_DIR: (c, v) => (c.dataDir = v),
  ACCOUNTS_FILE: (c, v) => (c.accountsFile = v),
  BASKETS_FILE: (c, v) => (c.basketsFile = v),
  MAX_AMOUNT: (c, v) => (c.maxAmount = intFromEnv('MAX_AMOUNT', v)),
  BCRYPT_ROUNDS: (c, v) => (c.bcryptRounds = intFromEnv('BCRYPT_ROUNDS', v)),
  REQUEST_TIMEOUT_MS: (c, v) => (c.requestTimeoutMs = intFromEnv('REQUEST_TIMEOUT_MS', v)),
  SNAPSHOT_EVERY: (c, v) => (c.snapshotEvery = intFromEnv('SNAPSHOT_EVERY', v)),
  SCOREBOARD_FILE: (c, v) => (c.scoreboardFile = v),
  LOG_LEVEL: (c, v) => (c.logLevel = v),
  CHART_SAMPLE_MS: (c, v) => (c.chartSampleMs = intFromEnv('CHART_SAMPLE_MS', v)),
  OPERATOR_USER: (c, v) => (c.operator = { username: v, password: c.operator?.password ?? '' }),
  OPERATOR_PASSWORD: (c, v) => (c.operator = { username: c.operator?.username ?? 'operator', password: v }),
  CREDENTIALS_KEY_FILE: (c, v) => (c.credentialsKeyFile = v),
  CREDENTIALS_CACHE_MS: (c, v) => (c.credentialsCacheMs = intFromEnv('CREDENTIALS_CACHE_MS', v)),
  REGISTRATION: (c, v) => {
    if (v !== 'open' && v !== 'closed') throw new ConfigError(`REGISTRATION=${JSON.stringify(v)} must be open or closed`);
    c.registration = v;
  },
  EXPECT_PRICING: (c, v) => {
    if (v !== 'on' && v !== 'off') throw new ConfigError(`EXPECT_PRICING=${JSON.stringify(v)} must be on or off`);
    c.expectPricing = v === 'on';
  },
  PRICING_START_GRACE_MS: (c, v) => (c.pricingStartGraceMs = intFromEnv('PRICING_START_GRACE_MS', v)),
  PRICING_BAD_BBO_MS: (c, v) => (c.pricingBadBboMs = intFromEnv('PRICING_BAD_BBO_MS', v)),
  THROTTLE: (c, v) => {
    if (v !== 'on' && v !== 'off') throw new ConfigError(`THROTTLE=${JSON.stringify(v)} must be on or off`);
    c.throttle = { ...THROTTLE_DEFAULTS, ...c.throttle, enabled: v === 'on' };
  },
  LOGIN_MAX_FAILURES: (c, v) => {
    const t = (c.throttle ??= { ...THROTTLE_DEFAULTS });
    t.loginFailuresPerUser = { ...(t.loginFailuresPerUser ?? THROTTLE_DEFAULTS.loginFailuresPerUser!), burst: intFromEnv('LOGIN_MAX_FAILURES', v) };
  },
  REGISTRATIONS_PER_MINUTE: (c, v) => {
    const t = (c.throttle ??= { ...THROTTLE_DEFAULTS });
    t.registrations = { ...(t.registrations ?? THROTTLE_DEFAULTS.registrations!), perMinute: intFromEnv('REGISTRATIONS_PER_MINUTE', v) };
  },
};

/**
 * Loads `CONFIG_FILE` (default config/default.json), applies environment
 * overrides, validates, and resolves relative paths against the project root.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const file = resolve(PROJECT_ROOT, env.CONFIG_FILE ?? 'config/default.json');
  const raw = readJsonFile(file, 'config file') as Config;
  /** Which variable set each setting, so a bad value blames the variable rather than the file. */
  const setBy = new Map<string, string>();
  for (const [name, set] of Object.entries(ENV)) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    const before = leaves(raw);
    set(raw, v);
    for (const [path, value] of leaves(raw)) if (before.get(path) !== value) setBy.set(path, name);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => blame(i, file, setBy, env)).join('; '));
  const c = parsed.data;
  if (env.LOG_FORMAT && !['json', 'pretty'].includes(env.LOG_FORMAT.toLowerCase())) {
    throw new ConfigError(`LOG_FORMAT=${JSON.stringify(env.LOG_FORMAT)}: expected json or pretty (unset: pretty at a terminal, JSON otherwise)`);
  }
  const abs = (p: string) => (p === '' ? '' : resolve(PROJECT_ROOT, p));
  c.dataDir = abs(c.dataDir);
  c.accountsFile = abs(c.accountsFile);
  c.basketsFile = abs(c.basketsFile);
  if (c.scoreboardFile) c.scoreboardFile = abs(c.scoreboardFile);
  if (c.credentialsKeyFile) c.credentialsKeyFile = abs(c.credentialsKeyFile);
  if (c.accountsFile && !existsSync(c.accountsFile)) throw new ConfigError(`accounts file ${c.accountsFile} does not exist (ACCOUNTS_FILE)`);
  return c;
}

/** Every leaf setting of a config as path -> JSON text. */
function leaves(value: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}

/** One validation problem in one phrase: the variable(s) that set the value, else the file and the setting's path. */
function blame(issue: z.core.$ZodIssue, file: string, setBy: Map<string, string>, env: NodeJS.ProcessEnv): string {
  const path = issue.path.join('.');
  const vars = new Set<string>();
  // A refinement of a section (engine.shard below engine.shards) is about every variable inside it.
  for (const [p, name] of setBy) if (p === path || p.startsWith(`${path}.`) || (path !== '' && path.startsWith(`${p}.`))) vars.add(name);
  const message = oneLine(issue.message);
  const shown = (n: string) => (/PASSWORD/.test(n) ? `${n} (value hidden)` : `${n}=${JSON.stringify(env[n])}`);
  if (vars.size > 0) return `${[...vars].map(shown).join(', ')}: ${message}`;
  return `config file ${file}: ${path || '(top level)'}: ${message}`;
}

/** Reads a JSON file, or a ConfigError naming it (missing, unreadable, not JSON). */
export function readJsonFile(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${what} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${what} ${path}: not valid JSON (${(err as Error).message})`);
  }
}

/** zod's multi-line report folded into one line, for a one-line error. */
export const oneLine = (s: string): string => s.replace(/\s*\n\s*(→\s*)?/g, '; ').replace(/^✖\s*/, '').replace(/;\s*✖\s*/g, '; ');

/** Where the launcher records the URL of the nats-server it started, for the operator tools. */
export const natsUrlFile = (cfg: Config): string => resolve(cfg.dataDir, 'nats.url');

/** Where the launcher keeps each NATS role's generated credentials (mode 0600). */
export const natsAuthDir = (cfg: Config): string => resolve(cfg.dataDir, 'nats-auth');

/** Credentials for an operator tool: the config's (NATS_CREDS), else the launcher's file for `role`, else none (an open server). */
export function localNatsCreds(cfg: Config, role: string): string | undefined {
  if (cfg.nats.creds) return cfg.nats.creds;
  const file = resolve(natsAuthDir(cfg), `${role}.json`);
  return existsSync(file) ? file : undefined;
}

/** Where the launcher records how many engine shards it runs, for the operator tools. */
export const engineShardsFile = (cfg: Config): string => resolve(cfg.dataDir, 'engine-shards');

/** The engine shards of the system on this DATA_DIR: the config's (ENGINE_SHARDS), else what the launcher recorded, else 1. */
export function localEngineShards(cfg: Config): number {
  return cfg.engine?.shards ?? recordedEngineShards(cfg) ?? 1;
}

/**
 * A file the launcher recorded on DATA_DIR, trimmed; null when there is none
 * (no launcher has run there: the caller's documented default). One that
 * cannot be read is a ConfigError naming it, never guessed past.
 */
function readRecorded(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(`${file}: ${(err as Error).message}`);
  }
}

/** How many engine shards the launcher last ran on this DATA_DIR (its engine-shards file), null when it never recorded any. */
export function recordedEngineShards(cfg: Config): number | null {
  const file = engineShardsFile(cfg);
  const text = readRecorded(file);
  if (text === null) return null;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1) throw new ConfigError(`${file} says ${JSON.stringify(text)}, not a number of engine shards: write the ENGINE_SHARDS this DATA_DIR ran with`);
  return n;
}

/** The NATS server tools should use: NATS_URL, else the one the launcher recorded (its nats.url file), else the default port. */
export function localNatsUrl(cfg: Config): string {
  if (cfg.nats.url) return cfg.nats.url;
  const file = natsUrlFile(cfg);
  const text = readRecorded(file);
  if (text === null) return `nats://127.0.0.1:${cfg.nats.port}`;
  const urls = text.split(',').map((u) => u.trim());
  if (urls.some((u) => !/^nats:\/\/[^\s/]+:\d+$/.test(u))) {
    throw new ConfigError(`${file} says ${JSON.stringify(text)}, not the nats://host:port URL(s) the launcher writes: set NATS_URL, or delete the file to use port ${cfg.nats.port}`);
  }
  return text;
}
