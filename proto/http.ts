import { z } from 'zod';
import type { EngineErrorCode, LastReset } from './engine.js';
import { clientKeyProblem } from './audit.js';
import type { EtfPrice } from './marketdata.js';
import type { AuditEntry } from './audit.js';

/**
 * The HTTP API: routes, parameter rules and error codes. README.md documents
 * the same with examples; the gateway validates with these schemas.
 *
 * Parameters come from an `application/x-www-form-urlencoded` or JSON body,
 * the query string, and credentials also from HTTP Basic auth. Every response
 * is JSON; errors are `{ "error": { "code", "message", "field"?, "shortfalls"? } }`.
 *
 *   POST /register  username, password            200 {client_id, username} | 400 | 403 (REGISTRATION=closed)
 *   POST /create    username, password, etf_name, amount   200 | 400 | 401
 *   POST /redeem    username, password, etf_name?, amount  200 | 400 | 401
 *   GET  /holdings  username, password            200 {client_id, username, holdings, positions, cash, pnl, last_reset} | 401
 *   GET  /health                                  200 | 503
 *   GET  /history   username, password, limit?, before?   200 {entries: AuditEntry[], next?} | 401
 *   GET  /requests/<id>  username, password       200 AuditEntry | 401 | 404 (unknown, or another team's)
 *   GET  /leaderboard                             200 LeaderboardBody (its page: /board)
 *   GET  /charts    since?, team?                 200 ChartsBody | 400
 *
 * /create and /redeem take an optional idempotency key (body `request_id` or
 * header `Idempotency-Key`): a retry with the same key returns the original
 * result and changes nothing; the same key with other parameters is a 409.
 *   GET  /etfs                                    200 EtfsBody: every ETF, its basket, its latest prices
 *
 * NDFEX's own ETF service's read routes, for scripts written against it (own account only):
 *   GET  /positions/<client_id>           username, password   200 PositionsBody | 401 | 403 (another team's)
 *   GET  /positions/<client_id>/<symbol>  username, password   200 PositionBody (symbol: id or ticker) | 401 | 403 | 404
 *   GET  /symbols                                              200 SymbolsBody
 */
export const ROUTES = {
  register: { method: 'post', path: '/register' },
  create: { method: 'post', path: '/create' },
  redeem: { method: 'post', path: '/redeem' },
  holdings: { method: 'get', path: '/holdings' },
  health: { method: 'get', path: '/health' },
  history: { method: 'get', path: '/history' },
  request: { method: 'get', path: '/requests/*' },
  etfs: { method: 'get', path: '/etfs' },
  positions: { method: 'get', path: '/positions/*' },
  symbols: { method: 'get', path: '/symbols' },
  openapi: { method: 'get', path: '/openapi.json' },
  leaderboard: { method: 'get', path: '/leaderboard' },
  charts: { method: 'get', path: '/charts' },
} as const;

export const USERNAME_PATTERN = /^[A-Za-z0-9_.-]{1,16}$/;
export const PASSWORD_MIN_BYTES = 8;
export const PASSWORD_MAX_BYTES = 72; // bcrypt ignores bytes past 72: longer would be a false promise.

export type HttpErrorCode =
  | EngineErrorCode
  | 'invalid_parameter'
  | 'unauthorized'
  /** POST /register on a system started with REGISTRATION=closed. */
  | 'registration_closed'
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'engine_unavailable'
  | 'too_many_requests'
  | 'internal'
  // The node server's own answers (src/gateway/transport/node.ts): requests refused before any route sees them.
  | 'request_timeout'
  | 'request_header_too_large'
  | 'not_implemented'
  | 'http_version_not_supported';

export const HTTP_STATUS: Record<HttpErrorCode, number> = {
  bad_request: 400,
  invalid_parameter: 400,
  username_taken: 400,
  unknown_etf: 400,
  invalid_amount: 400,
  insufficient_holdings: 400,
  idempotency_conflict: 409,
  unsupported_version: 400,
  unauthorized: 401,
  // The gateway only sends client_ids it authenticated; an unknown one means the account is gone.
  unknown_account: 401,
  not_found: 404,
  forbidden: 403,
  registration_closed: 403,
  halted: 403,
  limit_exceeded: 400,
  outside_window: 403,
  method_not_allowed: 405,
  payload_too_large: 413,
  unsupported_media_type: 415,
  too_many_requests: 429,
  internal: 500,
  engine_unavailable: 503,
  request_timeout: 408,
  request_header_too_large: 431,
  not_implemented: 501,
  http_version_not_supported: 505,
};

/**
 * A create/redeem without a client key gets one from the gateway before it is
 * sent: `g-` + 16 characters. A 503 names the key in its body
 * (`error.request_id`) and in this header, so the outcome can be looked up
 * with GET /requests/<key> (or the request retried with it) once the engine answers.
 */
export const GATEWAY_KEY_PREFIX = 'g-';
export const REQUEST_ID_HEADER = 'idempotency-key';
export const ENGINE_UNAVAILABLE_CONVERSION =
  'the engine did not answer in time; the operation may or may not have happened: look it up with GET /requests/<request_id>, or retry with the same request_id';
/** A conversion no engine received (none was running to take it until the deadline): certainly not done. */
export const ENGINE_ABSENT_CONVERSION =
  'no engine was running to take it: nothing was done; send it again once the engine is back (the same request_id is safe)';

/**
 * 429: `{error: {code: "too_many_requests", message, retry_after}}` with a
 * `Retry-After` header (whole seconds). `scope` says which limit was hit.
 */
export type ThrottleScope = 'address' | 'team' | 'login_user' | 'login_address' | 'register' | 'conversion';

const byteLength = (s: string) => Buffer.byteLength(s, 'utf8');

export const usernameSchema = z
  .string({ error: 'username is required' })
  .regex(USERNAME_PATTERN, 'username must be 1-16 characters of A-Z a-z 0-9 _ . -');

export const newPasswordSchema = z
  .string({ error: 'password is required' })
  .refine((p) => byteLength(p) >= PASSWORD_MIN_BYTES && byteLength(p) <= PASSWORD_MAX_BYTES, {
    message: `password must be ${PASSWORD_MIN_BYTES}-${PASSWORD_MAX_BYTES} bytes`,
  });

export const registerSchema = z.object({ username: usernameSchema, password: newPasswordSchema });

/** Credentials of an authenticated route: shape problems are a 401, never a hint about which part was wrong. */
export const credentialsSchema = z.object({
  username: z.string().min(1),
  // What registration refuses can never be right: bcrypt would compare only the first 72 bytes.
  password: z
    .string()
    .min(1)
    .refine((p) => byteLength(p) <= PASSWORD_MAX_BYTES),
});

/**
 * `amount`: a positive whole number of creation units, at most `max`. A JSON
 * number must be an integer; a string (form bodies) must be plain decimal
 * digits. 1.9, true, "1e3", " 2" and 0 are all refused, never rounded.
 */
export const amountSchema = (max: number) =>
  z
    .union([z.number(), z.string().regex(/^[0-9]{1,16}$/, 'amount must be a whole number').transform(Number)], {
      error: (iss) => (iss.input === undefined ? 'amount is required' : 'amount must be a whole number'),
    })
    .pipe(
      z
        .number()
        .int('amount must be a whole number')
        .min(1, 'amount must be at least 1')
        .max(max, `amount must be at most ${max}`),
    );

export const conversionSchema = (maxAmount: number) =>
  z.object({
    etf_name: z.string().min(1, 'etf_name must not be empty').max(64).optional(),
    amount: amountSchema(maxAmount),
    request_id: z
      .string()
      .superRefine((k, ctx) => {
        const problem = clientKeyProblem(k);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
    /** Answer what would happen (deltas, or the refusal) and change nothing. */
    dry_run: z
      .union([z.boolean(), z.enum(['true', 'false', '1', '0'], { error: 'dry_run must be true or false' }).transform((v) => v === 'true' || v === '1')])
      .optional(),
  });

export const historySchema = z.object({
  limit: z
    .union([z.number(), z.string().regex(/^[0-9]{1,4}$/, 'limit must be a whole number').transform(Number)])
    .pipe(z.number().int().min(1, 'limit must be at least 1').max(500, 'limit must be at most 500'))
    .optional(),
  before: z.string().regex(/^r[0-9]{1,16}$/, 'before must be a request id like r42').optional(),
});

/** Every error answer: `{"error": {"code", "message", "field"?, ...details}}` (e.g. shortfalls, retry_after_s, request_id). */
export const httpErrorSchema = z.object({
  error: z
    .object({
      code: z.enum(Object.keys(HTTP_STATUS) as [HttpErrorCode, ...HttpErrorCode[]]),
      message: z.string(),
      field: z.string().optional(),
    })
    .catchall(z.unknown()),
});
export type HttpErrorBody = z.infer<typeof httpErrorSchema>;

/**
 * GET /etfs, no parameters:
 *   { "etfs": [ { "name": "TECH", "symbol": 101,
 *                 "components": [ { "ticker": "KNAN", "symbol": 3, "weight": 2 }, ... ],
 *                 "price": EtfPrice | null } ] }
 * `price` is the pricing actor's latest (proto/marketdata.ts EtfPrice: nav,
 * create_cost, redeem_proceeds, etf_bid, etf_ask, premium, create_edge,
 * redeem_edge, ts), null until it has priced the ETF; inside it, a figure
 * that needs a quote the books lack is null.
 */
export interface EtfListing {
  name: string;
  symbol: number;
  components: { ticker: string; symbol: number; weight: number }[];
  price: EtfPrice | null;
}

export interface EtfsBody {
  etfs: EtfListing[];
}

/** GET /holdings: every non-zero position by ticker and by symbol id; `seq` counts the account's changes. */
export interface HoldingsBody {
  client_id: number;
  username: string;
  seq: number;
  holdings: Record<string, number>;
  positions: { symbol: number; ticker: string; quantity: number }[];
  /** Price units: fills move it by quantity × price the other way; conversion fees take from it. */
  cash: number;
  /** GET /holdings only: cash plus positions at mid prices. */
  pnl?: PnlBody;
  /**
   * GET /holdings only: the last exchange reset, which started every team's cash, positions and P&L again from 0
   * (null: none). `ts`: when it was stored (ms); `last_request_id`: the last request decided before it (null: none),
   * so the conversions of the session since are those with higher ids.
   */
  last_reset?: LastReset | null;
}

/** POST /create and /redeem: what changed (by ticker) and the holdings after it. */
export interface ConversionBody extends HoldingsBody {
  request_id: string;
  client_request_id?: string;
  /** The stored answer of an earlier request with the same key: nothing changed now. */
  replayed?: true;
  /** What would happen: nothing changed, nothing journaled (request_id is "dry-run"). */
  dry_run?: true;
  op: 'create' | 'redeem';
  etf_name: string;
  amount: number;
  deltas: Record<string, number>;
  /** Fee charged in cash (0 when fees are off). */
  fee: number;
  /** Accepted beyond a position limit in `warn` mode. */
  warnings?: string[];
  /** The ETF's basket version it used (0: the config's; the operator's from 1). */
  basket_version: number;
}

/** Profit and loss: cash plus the positions marked at their mid prices (GET /holdings `pnl`, GET /leaderboard). */
export interface PnlBody {
  cash: number;
  marked: number;
  total: number;
  /** Tickers held without a two-sided market to mark them at (left out of `marked`). */
  unmarked: string[];
  /** Present when some positions are marked at the last two-sided mid of a book that is one-sided now: which, at what, and how old. */
  stale?: StaleMark[];
}

/** A mark kept from when its book was last two-sided. */
export interface StaleMark {
  ticker: string;
  mid: number;
  /** Milliseconds since the book was last two-sided. */
  age_ms: number;
}

/** GET /leaderboard: every team, best P&L first. */
export interface LeaderboardBody {
  /** Teams that traded (a position or cash) first, by P&L; then those that have not (`traded: false`). */
  teams: ({ rank: number; client_id: number; username: string; traded: boolean } & PnlBody)[];
  ts: number;
}

/** POST /register. */
export interface RegisterBody {
  client_id: number;
  username: string;
}

/** GET /positions/<client_id>: every non-zero position, by symbol id and by ticker. */
export interface PositionsBody {
  client_id: number;
  positions: { symbol: number; ticker: string; quantity: number }[];
  holdings: Record<string, number>;
}

/** GET /positions/<client_id>/<symbol>: one position (0 when none). */
export interface PositionBody {
  client_id: number;
  symbol: number;
  ticker: string;
  quantity: number;
}

/** GET /symbols: the exchange's symbols and the ETFs this service converts. */
export interface SymbolsBody {
  symbols: { symbol: number; ticker: string; tick_size: number | null; etf: boolean }[];
}

/**
 * GET /charts, no credentials (every team's P&L is public, as on
 * /leaderboard): what the pages chart, sampled from published state by the
 * pricing service's desk (src/pricing/desk.ts) and kept in its stream
 * (proto/desk.ts), so every gateway serves the whole session, however late it
 * started. `since` (ms): only points after it, for a page that
 * polls; `team` (username): that team's P&L alone.
 *   { "t": [ms...], "step_ms": 1000,
 *     "etfs": { "UNDY": { "etf": [mid...], "nav": [...], "premium": [...] } },
 *     "teams": [ { "client_id": 1, "username": "team1", "pnl": [...] } ],
 *     "halts": [ { "etf": "UNDY" | null, "reason", "by", "since" } ], "ts": ms }
 * Every series has one value per `t` (null: not known then). Teams appear once
 * they hold something or have cash; without `team`, the best
 * CHART_LIMITS.listed of them by P&L now. Older points are thinned (`step_ms`
 * doubles) so a whole session fits in CHART_LIMITS.points.
 */
export interface ChartsBody {
  t: number[];
  step_ms: number;
  etfs: Record<string, { etf: (number | null)[]; nav: (number | null)[]; premium: (number | null)[] }>;
  teams: { client_id: number; username: string; pnl: (number | null)[] }[];
  halts: { etf: string | null; reason: string; by: string; since: number }[];
  ts: number;
}

export const CHART_LIMITS = {
  /** One point per this long at first (it doubles each time the points fill up). */
  sampleMs: 1000,
  /** Points kept per series. */
  points: 1200,
  /** Teams with a P&L series. */
  teams: 1000,
  /** Teams in an answer without `team`: the best by P&L now. */
  listed: 60,
  /** Conversion scorecards kept (the newest). */
  scorecards: 50_000,
  /** Conversions per team whose legs are still followed (the oldest is let go). */
  openLegs: 100,
  /** How often the gateway reads the halts in force for /charts. */
  haltPollMs: 1000,
} as const;

/**
 * A conversion's scorecard, computed by the pricing service's desk when the
 * engine's outcome arrives and kept in the desk stream (GET /history and GET /requests/<id> entries carry it as
 * `scorecard`): what the conversion was worth at the mid prices of that
 * moment, fee included. `edge` = Σ delta × mid − fee over the ETF and its
 * basket: positive when the team received more value than it gave. null when
 * a leg had no two-sided market (`unmarked`; a book one-sided then counts as
 * none, its last mid unused; `etf_mid` is null likewise). `quoted_edge`: the pricing
 * actor's executable edge then (create_edge or redeem_edge × amount − fee),
 * what trading the legs at the touch would have earned. `legs_sold` (0..1):
 * how much of what the conversion gave the team (the ETF units of a create,
 * the basket of a redeem) it has sold on the exchange since, as fills arrive
 * (sells matched to its oldest conversions first, and only sells the exchange
 * filled after the engine decided the conversion).
 *
 * `unscored: 'missed'`: the desk learned of the conversion from the engine's
 * journal after its moment (the pricing service was stopped, restarting or
 * cut off from NATS when it was made), so the mids of that moment are unknown:
 * `etf_mid`, `edge`, `edge_per_unit` and `quoted_edge` are null. Its `fee` and
 * `legs_sold` are as any conversion's. Absent: scored at its moment.
 */
export interface Scorecard {
  request_id: string;
  client_id: number;
  op: 'create' | 'redeem';
  etf: string;
  amount: number;
  ts: number;
  etf_mid: number | null;
  edge: number | null;
  edge_per_unit: number | null;
  quoted_edge: number | null;
  fee: number;
  legs_sold: number;
  unmarked?: string[];
  unscored?: ScorecardUnscored;
}

/** Why a scorecard has no value at its moment (Scorecard.unscored); readers take any other string as unscored too. */
export type ScorecardUnscored = 'missed';

/**
 * An entry of GET /history and GET /requests/<id>: the audit entry
 * (proto/audit.ts), whose `deltas` and `holdings` are lists of positions
 * (kept for the scripts that read them), plus the same as maps by ticker, the
 * shape `deltas` and `holdings` have in a conversion's answer. The maps are
 * the preferred form; `scorecard` is there for an accepted conversion the
 * gateway scored.
 */
export interface AuditEntryBody extends AuditEntry {
  deltas_by_ticker?: Record<string, number>;
  holdings_by_ticker?: Record<string, number>;
  scorecard?: Scorecard;
}
