import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errors, nuid, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { z } from 'zod';
import { decode, encode } from '../../proto/codec.js';
import { FEED_CONTROL_REPLY_PREFIX, FEED_CONTROL_SUBJECT, type FeedControlReply, type FeedControlRequest } from '../../proto/feed.js';
import type { EngineCommand, EngineReply } from '../../proto/engine.js';
import { entryWords, refusalWords } from '../../proto/messages.js';
import { FEED_ALERT_SUBJECT, type FeedAlert } from '../../proto/marketdata.js';
import {
  OPERATOR_ALERTS_KEPT,
  OPERATOR_CONVERSIONS_SHOWN,
  OPERATOR_ROUTES,
  type OperatorAccounts,
  type OperatorOverview,
} from '../../proto/operator.js';
import type { Config } from '../config/config.js';
import { conversionRulesSchema } from '../../proto/rules.js';
import { loadBaskets } from '../config/baskets.js';
import type { Logger } from '../shared/log.js';
import type { EngineClient } from './engine-client.js';
import type { FeedStatusView } from './feed-status.js';
import { guarded, type Exchange, type RequestInfo } from './http.js';
import { tooMany, type Throttle } from './throttle.js';
import type { GatewayMetrics } from './metrics.js';
import { gatherParams, parseBasic, type Params } from './params.js';
import type { HubStats } from './ws/hub.js';
import type { Marks } from './marks.js';

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

export interface OperatorDeps {
  nc: NatsConnection;
  engine: EngineClient;
  feed: FeedStatusView;
  ws: () => HubStats;
  metrics: GatewayMetrics;
  /** Mid prices, for each team's P&L. */
  marks: Marks;
  /** Failed operator sign-ins count like failed team logins (per host, per username). */
  throttle?: Throttle;
}

/** The operator's throttle key: never a team's username (those have no colon). */
const operatorLoginKey = (username: string) => `operator:${username}`;


/**
 * The operator's read-only API (proto/operator.ts). Every figure comes from
 * an engine read (dump, history) or from state the gateway already follows
 * (the bridge's status, its alerts, the hub's counters): the engine alone
 * writes state.
 */
export function mountOperator(cfg: Config, deps: OperatorDeps, log: Logger): { prefix: string; handle(ex: Exchange, info: RequestInfo): void; close(): void } {
  const operator = operatorCredentials(cfg, log);
  const allowed = operatorCheck(operator);
  const operatorName = operator.username;
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const unavailable = (reply: EngineReply & { ok: false }) => {
    const { code, message } = refusalWords(reply.error, instruments.tickerOf);
    return { code, message };
  };

  const alerts: FeedAlert[] = [];
  const alertSub: Subscription = deps.nc.subscribe(FEED_ALERT_SUBJECT, {
    callback: (err, msg) => {
      if (err) return;
      try {
        const a = decode<FeedAlert>(msg.data);
        if (typeof a?.kind !== 'string') return;
        alerts.unshift(a);
        if (alerts.length > OPERATOR_ALERTS_KEPT) alerts.pop();
      } catch {
        /* an undecodable alert is not worth an alert */
      }
    },
  });

  const accounts = async (): Promise<OperatorAccounts | (EngineReply & { ok: false })> => {
    const reply = await deps.engine.call({ op: 'dump' });
    if (!reply.ok) return reply;
    const d = reply.result;
    return {
      journal_seq: d.journal_seq,
      fill_seq: d.fill_seq,
      accounts: d.accounts.map((a) => ({
        client_id: a.client_id,
        username: a.username,
        holdings: Object.fromEntries(a.positions.filter(([, q]) => q !== 0).map(([s, q]) => [instruments.tickerOf(s), q])),
        cash: a.cash,
        pnl: deps.marks.pnl(a.cash, a.positions.map(([symbol, quantity]) => ({ symbol, ticker: instruments.tickerOf(symbol), quantity }))),
      })),
    };
  };

  const overview = async (): Promise<OperatorOverview | (EngineReply & { ok: false })> => {
    const acc = await accounts();
    if ('ok' in acc) return acc;
    // One history read per team, all in the same engine batch; the newest across teams are kept.
    const histories = await Promise.all(
      acc.accounts.map((a) => deps.engine.call({ op: 'history', clientId: a.client_id, limit: OPERATOR_CONVERSIONS_SHOWN })),
    );
    const conversions = histories
      .flatMap((h, i) => (h.ok ? h.result.entries.map((e) => ({ ...entryWords(e, instruments.tickerOf), username: acc.accounts[i]!.username })) : []))
      .filter((e) => e.kind !== 'register')
      .sort((a, b) => Number(b.request_id.slice(1)) - Number(a.request_id.slice(1)))
      .slice(0, OPERATOR_CONVERSIONS_SHOWN);
    const ws = deps.ws();
    return {
      ...acc,
      conversions,
      feed: deps.feed.view(),
      alerts: alerts.slice(0, 50),
      ws: { connections: ws.connections, accounts: ws.accounts, changes: ws.changes },
      ts: Date.now(),
    };
  };

  /** Writes go through the engine like any command: journaled with the operator's name and the time. */
  const operatorCommand = async (ex: Exchange, cmd: EngineCommand) => {
    const reply = await deps.engine.call(cmd);
    if (!reply.ok) {
      const { code, message, ...extra } = refusalWords(reply.error, instruments.tickerOf);
      return ex.error(code, message, extra);
    }
    ex.json(200, reply.result);
  };
  const haltParams = z.object({
    etf_name: z.string().min(1).max(64).optional(),
    reason: z.string().max(200, 'reason: at most 200 characters').optional(),
  });
  const basketParams = z.object({
    etf_name: z.string().min(1).max(64),
    components: z.record(z.string(), z.number().int().positive()),
    from: z
      .union([z.number().int().min(0), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))])
      .optional(),
  });
  const verdictParams = z.object({
    id: z.string({ error: 'id: the verdict id (a feed problem\'s id) is required' }).min(1).max(100),
    decision: z.enum(['confirm', 'reject'], { error: 'decision: confirm or reject' }),
  });
  const ackParams = z.object({ id: z.string().min(1).max(100).optional() });
  /** The operator's decisions go to the feed bridge, which alone holds the feeds' state (proto/feed.ts). */
  const feedControl = async (ex: Exchange, req: FeedControlRequest) => {
    let reply: FeedControlReply;
    try {
      const m = await deps.nc.request(FEED_CONTROL_SUBJECT, encode(req), { timeout: 3000, noMux: true, reply: `${FEED_CONTROL_REPLY_PREFIX}${nuid.next()}` });
      reply = decode<FeedControlReply>(m.data);
    } catch (err) {
      // No responders or a timeout: the bridge is down or busy; nothing was decided.
      if (err instanceof errors.NoRespondersError || err instanceof errors.TimeoutError || err instanceof errors.RequestError) {
        return ex.json(503, { error: { code: 'feed_unavailable', message: 'the feed bridge did not answer: nothing was decided' } });
      }
      throw err;
    }
    if (!reply.ok) return ex.error(reply.code, reply.message);
    log.warn({ op: req.op, id: req.id, done: reply.done, by: operatorName }, 'operator feed decision');
    ex.json(200, { done: reply.done, problems: reply.problems });
  };
  const writes: Record<string, (ex: Exchange, params: Params) => Promise<void>> = {
    [`PUT ${OPERATOR_ROUTES.rules}`]: async (ex, p) => {
      // Credentials arrive among the parameters (Basic auth): they are not rules.
      const { username: _u, password: _p, request_id: _r, ...body } = p;
      const parsed = conversionRulesSchema.safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        return ex.error('invalid_parameter', `${issue.path.join('.') || 'rules'}: ${issue.message}`, { field: String(issue.path[0] ?? '') });
      }
      await operatorCommand(ex, { op: 'set_rules', rules: parsed.data, by: operatorName });
    },
    [`POST ${OPERATOR_ROUTES.halt}`]: async (ex, p) => {
      const parsed = haltParams.safeParse(p);
      if (!parsed.success) return ex.error('invalid_parameter', parsed.error.issues[0]!.message, { field: String(parsed.error.issues[0]!.path[0] ?? '') });
      await operatorCommand(ex, { op: 'halt', etf: parsed.data.etf_name ?? null, reason: parsed.data.reason ?? '', by: operatorName });
    },
    [`POST ${OPERATOR_ROUTES.basket}`]: async (ex, p) => {
      const parsed = basketParams.safeParse(p);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        return ex.error('invalid_parameter', `${issue.path.join('.')}: ${issue.message}`, { field: String(issue.path[0] ?? '') });
      }
      const { etf_name, components, from } = parsed.data;
      await operatorCommand(ex, { op: 'set_basket', etf: etf_name, components, from: from ?? Date.now(), by: operatorName });
    },
    [`POST ${OPERATOR_ROUTES.feedVerdict}`]: async (ex, p) => {
      const parsed = verdictParams.safeParse(p);
      if (!parsed.success) return ex.error('invalid_parameter', parsed.error.issues[0]!.message, { field: String(parsed.error.issues[0]!.path[0] ?? '') });
      await feedControl(ex, { v: 1, op: 'verdict', id: parsed.data.id, decision: parsed.data.decision, by: operatorName });
    },
    [`POST ${OPERATOR_ROUTES.feedAck}`]: async (ex, p) => {
      const parsed = ackParams.safeParse(p);
      if (!parsed.success) return ex.error('invalid_parameter', parsed.error.issues[0]!.message, { field: String(parsed.error.issues[0]!.path[0] ?? '') });
      await feedControl(ex, { v: 1, op: 'ack', id: parsed.data.id ?? 'all', by: operatorName });
    },
    [`POST ${OPERATOR_ROUTES.resume}`]: async (ex, p) => {
      const parsed = haltParams.safeParse(p);
      if (!parsed.success) return ex.error('invalid_parameter', parsed.error.issues[0]!.message, { field: String(parsed.error.issues[0]!.path[0] ?? '') });
      await operatorCommand(ex, { op: 'resume', etf: parsed.data.etf_name ?? null, by: operatorName });
    },
  };

  const handlers: Record<string, (ex: Exchange) => Promise<void>> = {
    [OPERATOR_ROUTES.rules]: (ex) => operatorCommand(ex, { op: 'rules' }),
    [OPERATOR_ROUTES.overview]: async (ex) => {
      const r = await overview();
      if ('ok' in r) return ex.json(503, { error: unavailable(r) });
      ex.json(200, r);
    },
    [OPERATOR_ROUTES.accounts]: async (ex) => {
      const r = await accounts();
      if ('ok' in r) return ex.json(503, { error: unavailable(r) });
      ex.json(200, r);
    },
    [OPERATOR_ROUTES.alerts]: async (ex) => ex.json(200, { alerts }),
  };

  /**
   * The operator's password is checked like a team's (throttle.ts): a host or
   * a username past its failures gets 429 with Retry-After before any check,
   * and a host that signed in keeps its own bucket while the name is attacked.
   * A request without credentials is a page asking for its form, not a guess.
   */
  const signIn = (ex: Exchange, authorization: string): boolean => {
    const basic = parseBasic(authorization);
    const throttle = deps.throttle;
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
  };

  const handle = (ex: Exchange, info: RequestInfo) => {
    const methods = [...(handlers[info.path] ? ['GET'] : []), ...Object.keys(writes).filter((k) => k.endsWith(` ${info.path}`)).map((k) => k.split(' ')[0]!)];
    const handler = info.method === 'GET' ? handlers[info.path] : undefined;
    const write = writes[`${info.method} ${info.path}`];
    deps.metrics.track(ex, info.method, methods.length > 0 ? info.path : '/operator/api/*');
    if (methods.length === 0) return ex.error('not_found', `no route ${info.path}`);
    if (!handler && !write) {
      return ex.json(405, { error: { code: 'method_not_allowed', message: `${info.path} takes ${methods.join(' or ')}` } }, { allow: methods.join(', ') });
    }
    // No WWW-Authenticate challenge: the operator page signs in with its own form, and a browser dialog would get in its way.
    if (!signIn(ex, info.authorization)) {
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

  return { prefix: '/operator/api/', handle, close: () => alertSub.unsubscribe() };
}
