import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { Config } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';
import type { Logger } from '../shared/log.js';
import { guarded, type HttpCall, type RequestInfo } from './http.js';
import { tooMany, type Throttle } from './throttle.js';
import { gatherParams, parseBasic } from './params.js';
import { routeMethods, type OperatorContext, type OperatorDeps, type OperatorRoutes } from './operator-routes.js';
import { teamRoutes } from './operator-teams.js';
import { basketRoutes, rulesRoutes } from './operator-rules.js';
import { feedAlerts, feedRoutes } from './operator-feed.js';

export type { OperatorDeps } from './operator-routes.js';

export interface OperatorCredentials {
  username: string;
  password: string;
}

/** Where the gateway keeps the operator's generated credentials when the config names none. */
export const operatorFile = (cfg: Config): string => join(cfg.dataDir, 'operator.json');

const credentialsFile = z.object({ username: z.string().min(1), password: z.string().min(8) });

/**
 * The operator's credentials: from config (or OPERATOR_USER / OPERATOR_PASSWORD),
 * else from <dataDir>/operator.json, written once with a random password
 * (mode 0600) on the first start, so the instructor of a fresh demo has a way
 * in. Only the file's path is logged, never the password.
 */
export function operatorCredentials(cfg: Config, log: Logger): OperatorCredentials {
  if (cfg.operator) return cfg.operator;
  const file = operatorFile(cfg);
  mkdirSync(cfg.dataDir, { recursive: true });
  try {
    writeFileSync(file, `${JSON.stringify({ username: 'operator', password: randomBytes(18).toString('base64url') }, null, 2)}\n`, {
      mode: 0o600,
      flag: 'wx', // a second gateway starting at the same time reads the first one's
    });
    log.info({ file }, 'operator credentials generated: sign in at /operator with the username and password in this file');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    log.info({ file }, 'operator credentials: see this file');
  }
  const parsed = credentialsFile.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new Error(`${file}: expected {"username", "password" (8+ characters)}`);
  return parsed.data;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time check of an Authorization header against the operator's credentials. */
export function operatorCheck(creds: OperatorCredentials): (authorization: string) => boolean {
  const user = digest(creds.username);
  const pass = digest(creds.password);
  return (authorization) => {
    const basic = parseBasic(authorization);
    if (!basic) return false;
    // Both compared, always: the time taken says nothing about which one was wrong.
    const u = timingSafeEqual(digest(basic.username), user);
    const p = timingSafeEqual(digest(basic.password), pass);
    return u && p;
  };
}

/** The operator's throttle key: never a team's username (those have no colon). */
const operatorLoginKey = (username: string) => `operator:${username}`;

/**
 * The operator's password is checked like a team's (throttle.ts): a host or
 * a username past its failures gets 429 with Retry-After before any check,
 * and a host that signed in keeps its own bucket while the name is attacked.
 * A request without credentials is a page asking for its form, not a guess.
 */
function signIn(allowed: (authorization: string) => boolean, throttle: Throttle | undefined, ex: HttpCall, authorization: string): boolean {
  const basic = parseBasic(authorization);
  if (!basic || !throttle) return allowed(authorization);
  const key = operatorLoginKey(basic.username);
  const refused = throttle.loginLocked(ex.address) ?? throttle.beginSlowLogin(ex.address, key);
  if (refused) {
    tooMany(ex, refused);
    return false;
  }
  if (!allowed(authorization)) return false;
  throttle.loginSucceeded(ex.address, key);
  return true;
}

/**
 * The operator's API (proto/operator.ts). Every figure comes from an engine
 * read (dump, history) or from state the gateway already follows (the
 * bridge's status, its alerts, the hub's counters), and every write is an
 * engine command or a feed-bridge decision: the engine alone writes state.
 */
export function mountOperator(cfg: Config, deps: OperatorDeps, log: Logger): { prefix: string; handle(ex: HttpCall, info: RequestInfo): void; close(): void } {
  const operator = operatorCredentials(cfg, log);
  const allowed = operatorCheck(operator);
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const ctx: OperatorContext = { deps, log, by: operator.username, tickerOf: instruments.tickerOf, symbolOf: instruments.symbolOf };
  const alerts = feedAlerts(deps.nc);
  const routes: OperatorRoutes = { ...teamRoutes(ctx, alerts.list), ...rulesRoutes(ctx), ...basketRoutes(ctx), ...feedRoutes(ctx, alerts.list) };

  const handle = (ex: HttpCall, info: RequestInfo) => {
    const route = routes[info.path];
    const methods = routeMethods(route);
    // HEAD is a GET without the body (HttpCall drops it), on every GET route.
    const handler = info.method === 'GET' || ex.head ? route?.GET : undefined;
    const write = info.method === 'PUT' ? route?.PUT : info.method === 'POST' ? route?.POST : undefined;
    deps.metrics.track(ex, info.method, methods.length > 0 ? info.path : '/operator/api/*');
    if (methods.length === 0) return ex.error('not_found', `no route ${info.path}`);
    if (!handler && !write) {
      return ex.json(405, { error: { code: 'method_not_allowed', message: `${info.path} takes ${methods.join(' or ')}` } }, { allow: methods.join(', ') });
    }
    // No WWW-Authenticate challenge: the operator page signs in with its own form, and a browser dialog would get in its way.
    if (!signIn(allowed, deps.throttle, ex, info.authorization)) {
      if (ex.done) return;
      return ex.json(401, { error: { code: 'unauthorized', message: 'operator credentials required (HTTP Basic)' } });
    }
    guarded(ex, log, info.path, () =>
      write
        ? ex.readBody(cfg.http.maxBodyBytes, info.contentLength).then((body) => {
            if (ex.done || ex.aborted) return;
            const params = gatherParams(info, body);
            if (!params.ok) return ex.error(params.code, params.message);
            return write(ex, params.params);
          })
        : handler!(ex),
    );
  };

  return { prefix: '/operator/api/', handle, close: () => alerts.close() };
}
