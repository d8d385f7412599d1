import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import bcrypt from 'bcrypt';
import { z } from 'zod';
import { namedPositions, positionsByTicker, type AuditRecord, type ConversionAnswer, type ConversionOp, type EngineReply, type HoldingsAnswer, type Position, type TickerOf } from '../../proto/engine.js';
import { entryWords, limitWarnings, neverDelivered, refusalWords } from '../../proto/messages.js';
import {
  ENGINE_ABSENT_CONVERSION,
  ENGINE_UNAVAILABLE_CONVERSION,
  GATEWAY_KEY_PREFIX,
  PASSWORD_MAX_BYTES,
  REQUEST_ID_HEADER,
  conversionSchema,
  credentialsSchema,
  historySchema,
  registerSchema,
  type ConversionBody,
  type HoldingsBody,
  type LeaderboardBody,
  type AuditEntryBody,
  type Scorecard,
} from '../../proto/http.js';
import type { Marks } from '../shared/marks.js';
import type { Instruments } from '../config/baskets.js';
import type { Authenticator, AuthResult } from './auth.js';
import type { EngineClient } from '../shared/engine-client.js';
import type { HttpCall } from './http.js';
import type { Params } from './params.js';
import type { FeedStatusView } from './feed-status.js';
import type { PricingStatusView } from './pricing-status.js';
import { tooMany, type Throttle } from './throttle.js';
import type { Config } from '../config/config.js';
import { operatorFile } from './operator.js';
import type { ConversionAnswerWriter } from './answer-json.js';

/** Who may register, and which usernames nobody may take. */
export interface RegistrationPolicy {
  open: boolean;
  /** Lower-cased: `Operator` would pass for the operator in a log or a leaderboard as well. */
  reserved: ReadonlySet<string>;
}

/**
 * REGISTRATION (open unless closed), and the usernames the system uses: the
 * operator's (`operator`, the configured OPERATOR_USER, and the one in the
 * generated operator.json if someone edited it).
 */
export function registrationPolicy(cfg: Config): RegistrationPolicy {
  const reserved = new Set(['operator']);
  if (cfg.operator?.username) reserved.add(cfg.operator.username.toLowerCase());
  if (!cfg.operator) {
    try {
      const name = (JSON.parse(readFileSync(operatorFile(cfg), 'utf8')) as { username?: unknown }).username;
      if (typeof name === 'string') reserved.add(name.toLowerCase());
    } catch {
      // No operator.json yet (it is written with username `operator`), or unreadable: the gateway's operator mount says so.
    }
  }
  return { open: cfg.registration !== 'closed', reserved };
}

export interface RouteDeps {
  engine: EngineClient;
  auth: Authenticator;
  throttle: Throttle;
  /** Absent: open, with `operator` reserved. */
  registration?: RegistrationPolicy;
  bcryptRounds: number;
  /** Built once: constructing a zod schema per request costs more than the whole rest of the request. */
  conversion: ReturnType<typeof conversionSchema>;
  /** Mid prices, for P&L. */
  marks: Marks;
  /** Names the engine's flat positions (proto/engine.ts FlatPositions) in answers. */
  tickerOf: TickerOf;
  /** Writes conversion answers with `tickerOf`'s names, each symbol's fragments made once. */
  answers: ConversionAnswerWriter;
  /** Conversion scorecards (src/gateway/charts.ts), added to /history and /requests entries; request ids are per engine shard, so with the account's id. */
  scorecards?: { scorecard(clientId: number, requestId: string): Scorecard | undefined };
}

/**
 * An audit entry as /history and /requests show it: its refusal worded, its
 * lists (`deltas`, `holdings`, kept for scripts that read them) also as maps
 * by ticker, the shape a conversion's answer has, and the conversion's
 * scorecard when known.
 */
export function entryBody(record: AuditRecord, deps: Pick<RouteDeps, 'scorecards' | 'tickerOf'>): AuditEntryBody {
  const e = entryWords(record, deps.tickerOf);
  const card = e.status === 'accepted' && e.kind !== 'register' && e.client_id !== null ? deps.scorecards?.scorecard(e.client_id, e.request_id) : undefined;
  return {
    ...e,
    ...(e.deltas ? { deltas_by_ticker: byTicker(e.deltas) } : {}),
    ...(e.holdings ? { holdings_by_ticker: byTicker(e.holdings) } : {}),
    ...(card ? { scorecard: card } : {}),
  };
}

/** `{KNAN: 10, UNDY: 2}`: what scripts want to index by ticker. */
function byTicker(positions: readonly { ticker: string; quantity: number }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of positions) out[p.ticker] = p.quantity;
  return out;
}

/** An engine holdings answer as HTTP shows it; `positions`: its positions named. */
export const holdingsBody = (h: HoldingsAnswer, positions: Position[]): HoldingsBody => ({
  client_id: h.client_id,
  username: h.username,
  seq: h.seq,
  holdings: byTicker(positions),
  positions,
  cash: h.cash,
});

function invalid(ex: HttpCall, error: z.ZodError): void {
  const issues = error.issues.map((i) => ({ field: String(i.path[0] ?? ''), message: i.message }));
  const first = issues[0]!;
  ex.error('invalid_parameter', first.message, { field: first.field, issues });
}

/** The engine's refusal as an HTTP error, worded here (proto/messages.ts). */
export function engineError(ex: HttpCall, reply: EngineReply & { ok: false }, tickerOf: TickerOf): void {
  const { code, message, ...extra } = refusalWords(reply.error, tickerOf);
  // A retry refused as its key's first request was: which request, and that nothing was decided now.
  if (reply.replayed !== undefined) Object.assign(extra, { replayed: true, request_id: reply.replayed });
  ex.error(code, message, extra);
}

export { tooMany };

/**
 * Authenticates or answers 401/429/503 itself; returns the client_id on success.
 * An address locked out by failed logins is refused before anything else, and
 * a password that needs bcrypt passes the login throttle first.
 */
export function authenticate(ex: HttpCall, deps: RouteDeps, params: Params): Promise<number | null> | number | null {
  const creds = credentialsSchema.safeParse(params);
  if (!creds.success) {
    const tooLong = creds.error.issues.some((i) => i.path[0] === 'password' && i.code === 'custom');
    ex.error('unauthorized', tooLong ? `no password is over ${PASSWORD_MAX_BYTES} bytes (registration refuses them)` : 'username and password are required (parameters or HTTP Basic auth)');
    return null;
  }
  const locked = deps.throttle.loginLocked(ex.address);
  if (locked) {
    tooMany(ex, locked);
    return null;
  }
  const { username, password } = creds.data;
  const r = deps.auth.verify(username, password, {
    beforeSlow: (u) => deps.throttle.beginSlowLogin(ex.address, u),
    succeeded: (u) => deps.throttle.loginSucceeded(ex.address, u),
  });
  // A cached password is answered in this turn: no promise per request on the hot path (issue 24).
  return r instanceof Promise ? r.then((v) => admitted(ex, deps, username, v)) : admitted(ex, deps, username, r);
}

/** The client_id of a verified login, or null once the refusal is answered. */
function admitted(ex: HttpCall, deps: RouteDeps, username: string, r: AuthResult): number | null {
  if (r.ok) {
    deps.throttle.loginPassed(ex.address, username);
    const busy = deps.throttle.teamRequest(r.clientId);
    if (!busy) return r.clientId;
    tooMany(ex, busy);
  } else if (r.throttled) tooMany(ex, r.throttled);
  else if (r.unavailable) ex.error('engine_unavailable', r.unavailable);
  else ex.error('unauthorized', 'authentication failed');
  return null;
}

const DEFAULT_REGISTRATION: RegistrationPolicy = { open: true, reserved: new Set(['operator']) };

export async function register(ex: HttpCall, deps: RouteDeps, params: Params): Promise<void> {
  const policy = deps.registration ?? DEFAULT_REGISTRATION;
  if (!policy.open) {
    return ex.error('registration_closed', 'registration is closed on this system (REGISTRATION=closed): accounts come from the roster; ask the operator');
  }
  // Before validation and bcrypt: every attempt counts.
  const refused = deps.throttle.registration(ex.address);
  if (refused) return tooMany(ex, refused);
  const parsed = registerSchema.safeParse(params);
  if (!parsed.success) return invalid(ex, parsed.error);
  const { username } = parsed.data;
  if (policy.reserved.has(username.toLowerCase())) {
    return ex.error('invalid_parameter', `username ${username} is reserved for the system`, { field: 'username' });
  }
  // Hashing runs in libuv's pool; the engine only ever sees the hash, sealed (proto/engine.ts SEALED_HASH_PREFIX).
  const passwordHash = deps.auth.seal(await bcrypt.hash(parsed.data.password, deps.bcryptRounds), username);
  const reply = await deps.engine.call({ op: 'register', username, passwordHash });
  if (!reply.ok) return engineError(ex, reply, deps.tickerOf);
  const r = reply.result;
  ex.json(200, { request_id: r.request_id, client_id: r.client_id, username: r.username });
}

export function convert(ex: HttpCall, deps: RouteDeps, params: Params, op: ConversionOp): Promise<void> | void {
  const clientId = authenticate(ex, deps, params);
  return clientId instanceof Promise ? clientId.then((id) => convertAs(ex, deps, params, op, id)) : convertAs(ex, deps, params, op, clientId);
}

async function convertAs(ex: HttpCall, deps: RouteDeps, params: Params, op: ConversionOp, clientId: number | null): Promise<void> {
  if (clientId === null) return;
  const refused = deps.throttle.conversion(clientId);
  if (refused) return tooMany(ex, refused);
  const parsed = deps.conversion.safeParse(params);
  if (!parsed.success) return invalid(ex, parsed.error);
  const { etf_name, amount, request_id, dry_run } = parsed.data;
  // Every conversion carries a key before it leaves: after a 503 the client
  // can still look its outcome up (GET /requests/<key>) or retry it safely.
  // A dry run changes nothing and is never stored: it needs none.
  const key = dry_run ? undefined : (request_id ?? gatewayKey());
  const reply = await deps.engine.call({ op, clientId, etf: etf_name ?? null, amount, ...(key ? { key } : {}), ...(dry_run ? { dryRun: true } : {}) }, () => !ex.aborted);
  if (!reply.ok) {
    if (reply.error.code === 'engine_unavailable') {
      if (!key) return ex.error('engine_unavailable', 'the engine did not answer in time (a dry run changes nothing: ask again)');
      // Every send of it met "no responders" (shared/engine-client.ts): no engine ever had it, so the client may say so for sure.
      const words = neverDelivered(reply.error) ? ENGINE_ABSENT_CONVERSION : ENGINE_UNAVAILABLE_CONVERSION;
      return ex.error('engine_unavailable', words, { request_id: key }, { [REQUEST_ID_HEADER]: key });
    }
    return engineError(ex, reply, deps.tickerOf);
  }
  // Written from the engine's lists straight to JSON; the general path for what that cannot write.
  const text = deps.answers.conversion(reply.result, request_id !== undefined);
  if (text !== null) return ex.send(200, 'application/json', text);
  ex.json(200, conversionBody(reply.result, request_id !== undefined, deps.tickerOf));
}

/** A conversion's answer as HTTP shows it; `clientRequestId`: the request named its own key, which the answer repeats. */
export function conversionBody(r: ConversionAnswer, clientRequestId: boolean, tickerOf: TickerOf): ConversionBody {
  // The holdings part from holdingsBody, the conversion's fields added to it (no spreads: this is every conversion's answer).
  const body: ConversionBody = Object.assign(holdingsBody(r.holdings, namedPositions(r.holdings.positions, tickerOf)), {
    request_id: r.request_id,
    op: r.op,
    etf_name: r.etf,
    amount: r.amount,
    deltas: positionsByTicker(r.deltas, tickerOf),
    fee: r.fee,
    basket_version: r.basket_version,
  });
  if (clientRequestId && r.client_request_id !== undefined) body.client_request_id = r.client_request_id;
  if (r.replayed) body.replayed = true;
  if (r.dry_run) body.dry_run = true;
  if (r.beyond_limit) body.warnings = limitWarnings(r.beyond_limit, tickerOf);
  return body;
}

/** Random bytes drawn 512 keys at a time: one call into the kernel's generator per batch, not per request. */
const KEY_BYTES = 12;
let keyPool = Buffer.alloc(0);
let keyAt = 0;

/** `g-` + 16 random characters of the key alphabet: the gateway's key for a conversion sent without one. */
export function gatewayKey(): string {
  if (keyAt + KEY_BYTES > keyPool.length) {
    keyPool = randomBytes(KEY_BYTES * 512);
    keyAt = 0;
  }
  keyAt += KEY_BYTES;
  return `${GATEWAY_KEY_PREFIX}${keyPool.toString('base64url', keyAt - KEY_BYTES, keyAt)}`;
}

export async function request(ex: HttpCall, deps: RouteDeps, params: Params, id: string): Promise<void> {
  const clientId = await authenticate(ex, deps, params);
  if (clientId === null) return;
  let decoded: string;
  try {
    decoded = decodeURIComponent(id);
  } catch {
    return ex.error('not_found', `no request ${id} for this account`);
  }
  const reply = await deps.engine.call({ op: 'request', clientId, id: decoded });
  if (!reply.ok) return engineError(ex, reply, deps.tickerOf);
  ex.json(200, entryBody(reply.result, deps));
}

export async function history(ex: HttpCall, deps: RouteDeps, params: Params): Promise<void> {
  const clientId = await authenticate(ex, deps, params);
  if (clientId === null) return;
  const parsed = historySchema.safeParse(params);
  if (!parsed.success) return invalid(ex, parsed.error);
  const { limit, before } = parsed.data;
  const reply = await deps.engine.call({ op: 'history', clientId, limit: limit ?? 50, ...(before !== undefined ? { before } : {}) });
  if (!reply.ok) return engineError(ex, reply, deps.tickerOf);
  const { entries, ...rest } = reply.result;
  ex.json(200, { ...rest, entries: entries.map((e) => entryBody(e, deps)) });
}

export async function holdings(ex: HttpCall, deps: RouteDeps, params: Params): Promise<void> {
  const clientId = await authenticate(ex, deps, params);
  if (clientId === null) return;
  const reply = await deps.engine.call({ op: 'holdings', clientId });
  if (!reply.ok) return engineError(ex, reply, deps.tickerOf);
  const h = reply.result;
  const positions = namedPositions(h.positions, deps.tickerOf);
  ex.json(200, { ...holdingsBody(h, positions), pnl: deps.marks.pnl(h.cash, positions), last_reset: h.last_reset ?? null } satisfies HoldingsBody);
}

/** Every team ranked by P&L (cash plus positions at mid prices), from one engine read. */
export async function leaderboard(ex: HttpCall, deps: RouteDeps, instruments: Instruments): Promise<void> {
  const reply = await deps.engine.call({ op: 'dump' });
  if (!reply.ok) return engineError(ex, reply, deps.tickerOf);
  // A team that has neither a position nor cash has not traded: ranked after every team that has, or doing nothing would beat every loss.
  const teams = reply.result.accounts
    .map((a) => ({
      client_id: a.client_id,
      username: a.username,
      traded: a.cash !== 0 || a.positions.some(([, q]) => q !== 0),
      ...deps.marks.pnl(a.cash, a.positions.map(([symbol, quantity]) => ({ symbol, ticker: instruments.tickerOf(symbol), quantity }))),
    }))
    .sort((a, b) => Number(b.traded) - Number(a.traded) || b.total - a.total || a.client_id - b.client_id)
    .map((t, i) => ({ rank: i + 1, ...t }));
  ex.json(200, { teams, ts: Date.now() } satisfies LeaderboardBody);
}

export async function health(ex: HttpCall, deps: RouteDeps, natsConnected: boolean, views: { feed: FeedStatusView; pricing: PricingStatusView }, ws: { stats: unknown }): Promise<void> {
  const { feed, pricing } = views;
  // A probe: no engine there is its answer, at once (not after the request timeout).
  const reply = natsConnected ? await deps.engine.call({ op: 'ping' }, undefined, { waitForEngine: false }) : null;
  // Why an engine shard last exited (it is restarted by the supervisor): shown while it is down and after.
  const faults = [...deps.engine.faults.values()];
  const extra = { feed: feed.view(), pricing: pricing.view(), ws: ws.stats, ...(faults.length ? { engine_faults: faults } : {}) };
  if (!reply?.ok) {
    ex.json(503, { status: 'unavailable', nats: natsConnected, engine: false, ...extra });
    return;
  }
  const p = reply.result;
  // Teams are still served without the exchange (200), but positions may not be current: not "ok".
  // A refused roster line's team cannot sign in until the file is fixed: the instructor hears it here. Which line
  // only: this page is public, and a line's words may hold a password's (the operator page and the log say why).
  const roster = (p.roster_refused ?? []).map((r) => r.line);
  const why = 'the operator page and the engine log say why';
  const sb = p.scoreboard_failing;
  const problems = [
    ...feed.problems(),
    ...pricing.problems(),
    ...(sb ? [`the scoreboard file (NDFEX's record of conversions) has not been written since ${new Date(sb.since).toISOString()}${sb.shard !== undefined ? ` (engine shard ${sb.shard})` : ''}: ${sb.error}; the engine keeps trying, and a restart writes it again from the journal`] : []),
    ...roster.map((line) => (line === 0 ? `roster file could not be read: the roster read before stays in force (${why})` : `roster line ${line} refused, as if absent until the file is fixed (${why})`)),
  ];
  const status = problems.length === 0 ? 'ok' : 'degraded';
  ex.json(200, {
    status,
    ...(problems.length ? { problems } : {}),
    nats: true,
    engine: true,
    accounts: p.accounts,
    journal_seq: p.journal_seq,
    fill_seq: p.fill_seq,
    ...(roster.length ? { roster_refused_lines: roster } : {}),
    ...(sb ? { scoreboard_failing: sb } : {}),
    ...extra,
  });
}
