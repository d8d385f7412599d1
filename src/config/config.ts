import { readFileSync, existsSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

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

const configSchema = z.object({
  http: z.object({ host: z.string(), port: z.number().int().min(0).max(65535), maxBodyBytes: z.number().int().positive() }),
  nats: z.object({
    /** Empty: the launcher starts a local nats-server on `port` with its store under dataDir. */
    url: z.string(),
    port: z.number().int().min(0).max(65535),
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
  /** NDFEX scoreboard file that gets a line per conversion leg (empty: <dataDir>/conversions.log). */
  scoreboardFile: z.string().optional(),
  logLevel: z.string(),
  /** Who may open the operator page and /operator/api. Unset: the gateway keeps a generated one in <dataDir>/operator.json. */
  operator: z.object({ username: z.string().min(1), password: z.string().min(8, 'operator password must be at least 8 characters') }).optional(),
});

export type Config = z.infer<typeof configSchema>;

/** Environment variables that override the config file, and where they go. */
const ENV: Record<string, (c: Config, v: string) => void> = {
  HTTP_HOST: (c, v) => (c.http.host = v),
  HTTP_PORT: (c, v) => (c.http.port = Number(v)),
  NATS_URL: (c, v) => (c.nats.url = v),
  NATS_PORT: (c, v) => (c.nats.port = Number(v)),
  DATA_DIR: (c, v) => (c.dataDir = v),
  ACCOUNTS_FILE: (c, v) => (c.accountsFile = v),
  BASKETS_FILE: (c, v) => (c.basketsFile = v),
  MAX_AMOUNT: (c, v) => (c.maxAmount = Number(v)),
  BCRYPT_ROUNDS: (c, v) => (c.bcryptRounds = Number(v)),
  REQUEST_TIMEOUT_MS: (c, v) => (c.requestTimeoutMs = Number(v)),
  SNAPSHOT_EVERY: (c, v) => (c.snapshotEvery = Number(v)),
  SCOREBOARD_FILE: (c, v) => (c.scoreboardFile = v),
  LOG_LEVEL: (c, v) => (c.logLevel = v),
  OPERATOR_USER: (c, v) => (c.operator = { username: v, password: c.operator?.password ?? '' }),
  OPERATOR_PASSWORD: (c, v) => (c.operator = { username: c.operator?.username ?? 'operator', password: v }),
};

/**
 * Loads `CONFIG_FILE` (default config/default.json), applies environment
 * overrides, validates, and resolves relative paths against the project root.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const file = resolve(PROJECT_ROOT, env.CONFIG_FILE ?? 'config/default.json');
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Config;
  for (const [name, set] of Object.entries(ENV)) {
    const v = env[name];
    if (v !== undefined && v !== '') set(raw, v);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`config ${file}: ${z.prettifyError(parsed.error)}`);
  const c = parsed.data;
  const abs = (p: string) => (p === '' ? '' : resolve(PROJECT_ROOT, p));
  c.dataDir = abs(c.dataDir);
  c.accountsFile = abs(c.accountsFile);
  c.basketsFile = abs(c.basketsFile);
  if (c.scoreboardFile) c.scoreboardFile = abs(c.scoreboardFile);
  if (c.accountsFile && !existsSync(c.accountsFile)) throw new Error(`accounts file ${c.accountsFile} does not exist`);
  return c;
}

/** Where the launcher records the URL of the nats-server it started, for the operator tools. */
export const natsUrlFile = (cfg: Config): string => resolve(cfg.dataDir, 'nats.url');

/** The NATS server tools should use: NATS_URL, else the one the launcher started, else the default port. */
export function localNatsUrl(cfg: Config): string {
  if (cfg.nats.url) return cfg.nats.url;
  try {
    return readFileSync(natsUrlFile(cfg), 'utf8').trim();
  } catch {
    return `nats://127.0.0.1:${cfg.nats.port}`;
  }
}
