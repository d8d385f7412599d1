import type { PnlBody } from './http.js';
import type { LastReset, Position } from './engine.js';
import type { HoldingsChange } from './holdings.js';
import type { EtfPrice } from './marketdata.js';
import type { RequestOutcome } from './requests.js';

/**
 * The gateway's WebSocket stream for live strategies: `ws://<gateway>/ws`.
 *
 * Encoding: JSON text frames by default; `/ws?format=msgpack` switches the
 * server's frames to binary msgpack maps with the same fields (proto/codec.ts).
 * The server accepts client messages in either encoding on either format:
 * a text frame is JSON, a binary frame is msgpack.
 *
 * Authentication, one of:
 *  - HTTP Basic on the upgrade request (`Authorization: Basic base64(user:pass)`);
 *  - a first message `{"type":"auth","username":..,"password":..}` within
 *    WS_LIMITS.authTimeoutMs of the connection opening.
 * Anything else gets close code 4001 with the reason. Credentials are checked
 * once per connection; a team only ever sees its own account. A sign-in the
 * login throttle refuses (too many failed logins from the client's host, or
 * for the username) is not a wrong password: it closes with 4029 and a reason
 * ending in `retry after <seconds> s` (wsThrottled, retryAfterOfReason), as
 * HTTP answers 429 with Retry-After.
 *
 * Holdings: after authentication the server sends `welcome`, then a
 * `snapshot` of the account (its positions and `seq`, the account's change
 * counter), then one `delta` per change (a fill, a create, a redeem, an
 * exchange session reset: every position and the cash back to 0, and the
 * snapshot's `last_reset` from then on), each with `seq` = previous + 1. A client that sees a
 * `delta` whose seq is not its last seq + 1 has missed something: it should
 * send `{"type":"snapshot"}` (the server does not let that happen, but the
 * check is cheap). Every `delta` carries the whole account after the change
 * (`positions`) as well as the signed `deltas`, so applying either is enough.
 *
 * Resume after a reconnect: send `{"type":"resume","from_seq":N}` (or put
 * `"resume_from":N` in the auth message, or `?resume_from=N` on the URL,
 * which skips the initial snapshot) with N = the last seq you applied.
 * If the gateway still holds every change after N (it keeps the last
 * WS_LIMITS.ringSize changes of an account that has, or recently had, a
 * connected client), it sends `resumed` and then exactly the deltas N+1..;
 * otherwise a `snapshot` with `reason: "resume_unavailable"`.
 *
 * Slow consumers (the server never lets one client delay the engine or
 * another client; the engine publishes on NATS and never waits for the gateway):
 *  - The server checks the connection's unsent bytes before every delta,
 *    price and request outcome. Over WS_LIMITS.softBufferBytes the
 *    connection turns *stale*: nothing more is queued for it (deltas are
 *    dropped, prices coalesce to the latest per ETF, up to
 *    WS_LIMITS.staleOutcomes request outcomes are held, and any beyond that
 *    are counted in `missed_outcomes`).
 *  - When the buffer drains below half the soft limit the server sends ONE
 *    `snapshot` with `reason: "resync"` (the latest state; the seq jumps),
 *    then the latest price of each subscribed ETF and the held outcomes, and
 *    resumes deltas.
 *  - A connection stale for longer than WS_LIMITS.staleTimeoutMs, or whose
 *    buffer reaches WS_LIMITS.hardBufferBytes, is closed with 4008 "too slow".
 *
 * Heartbeats: the server pings at the WebSocket level and closes a connection
 * idle for WS_LIMITS.idleTimeoutS (any standard client answers pings by
 * itself). `{"type":"ping"}` gets `{"type":"pong"}` for clients that want an
 * application-level round trip. On shutdown the server closes with 1001.
 *
 * Errors in a client message get `{"type":"error"}` and change nothing; the
 * connection stays open.
 */
export const WS_PROTOCOL_VERSION = 1;
export const WS_PATH = '/ws';

export type WsFormat = 'json' | 'msgpack';

export const WS_LIMITS = {
  /** How long a connection without Basic credentials has to send its auth message. */
  authTimeoutMs: 5_000,
  /** Changes kept per account for resume. */
  ringSize: 1024,
  /** How long an account's ring is kept after its last client disconnected. */
  ringRetentionMs: 120_000,
  /** Unsent bytes above which a connection turns stale. */
  softBufferBytes: 256 * 1024,
  /** Unsent bytes at which a connection is closed with 4008 (uWS maxBackpressure). */
  hardBufferBytes: 4 * 1024 * 1024,
  /** How long a connection may stay stale before it is closed with 4008. */
  staleTimeoutMs: 15_000,
  /** Request outcomes held for a stale connection. */
  staleOutcomes: 256,
  /** Largest client message. */
  maxMessageBytes: 4096,
  /** Price subscriptions per connection (besides "*"). */
  maxPriceSubscriptions: 64,
  /** WebSocket idle timeout (the server pings automatically before it). */
  idleTimeoutS: 60,
} as const;

/** Close codes the server uses, with the reason text it sends. */
export const WS_CLOSE = {
  /** Bad or missing credentials, or no auth message in time. */
  authFailed: { code: 4001, reason: 'authentication failed' },
  authTimeout: { code: 4001, reason: 'authentication timeout' },
  authRequired: { code: 4001, reason: 'authentication required: send {"type":"auth"} first' },
  /** The account's sign-in changed (its roster password, or its line taken out): connect and authenticate again. */
  signInChanged: { code: 4001, reason: 'sign-in changed: authenticate again' },
  /**
   * Too many sign-in attempts (the throttle's failure budgets, as HTTP's 429):
   * the credentials were not checked. Sent as wsThrottled() builds it, with the
   * scope and the seconds to wait; connect again after them.
   */
  throttled: { code: 4029, reason: 'too many sign-in attempts' },
  /** Could not keep up: reconnect and resume. */
  tooSlow: { code: 4008, reason: 'too slow' },
  /** The engine could not be reached to authenticate or snapshot: retry later. */
  unavailable: { code: 1013, reason: 'engine unavailable, try again later' },
  shutdown: { code: 1001, reason: 'server shutting down' },
} as const;

/**
 * The throttled sign-in's close: `too many sign-in attempts (<scope>): retry after <seconds> s`,
 * the words of HTTP's 429 message, so one pattern reads both. The scope is
 * proto/http.ts ThrottleScope (login_address: the client's host; login_user: the username).
 */
export function wsThrottled(scope: string, retryAfterS: number): { code: number; reason: string } {
  return { code: WS_CLOSE.throttled.code, reason: `${WS_CLOSE.throttled.reason} (${scope}): retry after ${retryAfterS} s` };
}

/** The seconds a close reason (or a 429 message) says to wait, when it says so. */
export function retryAfterOfReason(reason: string): number | undefined {
  const m = /retry after (\d+) s$/.exec(reason);
  return m ? Number(m[1]) : undefined;
}

// ---------------------------------------------------------------- client → server

/** Every client message may carry an `id` (string or number), echoed in the reply or error it causes. */
type WithId = { id?: string | number };

export type ClientMessage =
  | (WithId & {
      type: 'auth';
      username: string;
      password: string;
      /** Resume from this seq instead of starting with a snapshot. */
      resume_from?: number;
    })
  /** Replays the changes after `from_seq`, or sends a fresh snapshot if they are no longer held. */
  | (WithId & { type: 'resume'; from_seq: number })
  /** Asks for a fresh snapshot (`reason: "requested"`). */
  | (WithId & { type: 'snapshot' })
  /**
   * Adds subscriptions: `prices` are ETF names (or "*" for every ETF), each
   * answered at once with its latest price if one is known; `requests: true`
   * streams the outcome of every create/redeem of this account.
   */
  | (WithId & { type: 'subscribe'; prices?: string[]; requests?: boolean })
  | (WithId & { type: 'unsubscribe'; prices?: string[]; requests?: boolean })
  | (WithId & { type: 'ping' });

// ---------------------------------------------------------------- server → client

interface Base {
  v: typeof WS_PROTOCOL_VERSION;
}

/** First message after a successful authentication. */
export interface WelcomeMessage extends Base {
  type: 'welcome';
  client_id: number;
  username: string;
  format: WsFormat;
  /** The limits this server applies (WS_LIMITS, possibly tuned). */
  limits: Record<keyof typeof WS_LIMITS, number>;
}

export type SnapshotReason =
  /** First snapshot of the connection. */
  | 'initial'
  /** Asked for with {"type":"snapshot"}. */
  | 'requested'
  /** A resume could not be served from the ring. */
  | 'resume_unavailable'
  /** After the connection was stale, or the gateway re-synchronised with the engine: seq may jump. */
  | 'resync';

export interface SnapshotMessage extends Base {
  type: 'snapshot';
  reason: SnapshotReason;
  client_id: number;
  /** The account's change counter: the next delta has seq + 1. */
  seq: number;
  positions: Position[];
  cash: number;
  /** Cash plus positions at mid prices, when the gateway has them. */
  pnl?: PnlBody;
  /**
   * The last exchange reset (null: none): it started the account's cash, positions and P&L again from 0; the
   * conversions of the session since are those with request ids above `last_request_id` (proto/engine.ts LastReset).
   */
  last_reset: LastReset | null;
  /** Request outcomes that could not be held while the connection was stale. */
  missed_outcomes?: number;
  id?: string | number;
}

/** One holdings change: proto/holdings.ts HoldingsChange with the fields a strategy needs. */
export interface DeltaMessage extends Base {
  type: 'delta';
  client_id: number;
  seq: number;
  cause: HoldingsChange['cause'];
  /** Signed change per symbol in this step. */
  deltas: Position[];
  /** The whole account after the change. */
  positions: Position[];
  /** Cash after the change, and P&L at the mid prices of that moment. */
  cash: number;
  pnl?: PnlBody;
  /** Engine wall-clock ms when applied. */
  ts: number;
  fill?: { seq: number; price: number };
  /** cause 'session_reset': the reset, as later snapshots give it in `last_reset`. */
  last_reset?: LastReset;
}

/** Sent before the replayed deltas from_seq+1 .. to_seq. */
export interface ResumedMessage extends Base {
  type: 'resumed';
  from_seq: number;
  to_seq: number;
  count: number;
  id?: string | number;
}

export interface PriceMessage extends Base {
  type: 'price';
  price: EtfPrice;
}

export interface RequestMessage extends Base {
  type: 'request';
  outcome: RequestOutcome;
}

/** Answer to subscribe/unsubscribe: the connection's subscriptions now. */
export interface SubscribedMessage extends Base {
  type: 'subscribed';
  prices: string[];
  requests: boolean;
  id?: string | number;
}

export interface PongMessage extends Base {
  type: 'pong';
  /** Server wall-clock ms. */
  ts: number;
  id?: string | number;
}

export type WsErrorCode = 'bad_message' | 'unknown_type' | 'already_authenticated' | 'too_many_subscriptions';

export interface ErrorMessage extends Base {
  type: 'error';
  code: WsErrorCode;
  message: string;
  id?: string | number;
}

export type ServerMessage =
  | WelcomeMessage
  | SnapshotMessage
  | DeltaMessage
  | ResumedMessage
  | PriceMessage
  | RequestMessage
  | SubscribedMessage
  | PongMessage
  | ErrorMessage;

export const deltaMessage = (c: HoldingsChange, pnl?: PnlBody): DeltaMessage => ({
  v: WS_PROTOCOL_VERSION,
  type: 'delta',
  client_id: c.client_id,
  seq: c.seq,
  cause: c.cause,
  deltas: c.deltas,
  positions: c.positions,
  cash: c.cash ?? 0,
  ...(pnl ? { pnl } : {}),
  ts: c.ts,
  ...(c.fill ? { fill: c.fill } : {}),
  ...(c.last_reset ? { last_reset: c.last_reset } : {}),
});
