import type { PnlBody } from './http.js';
import type { AuditEntry } from './audit.js';
import type { FeedAlert, FeedCounters, FillsUnstored, PricingStatus } from './marketdata.js';
import type { FeedProblem } from './feed.js';
import type { RosterRefusal, ScoreboardFailing } from './engine.js';

/**
 * The operator's HTTP API, behind the operator's credentials (config
 * `operator`, or OPERATOR_USER / OPERATOR_PASSWORD, or the generated
 * <dataDir>/operator.json), sent as HTTP Basic auth. Read-only: the gateway
 * asks the engine (its `dump` and `history` reads) and shows the feed
 * bridge's published status; nothing here changes state.
 *
 *   GET /operator/api/overview   200 OperatorOverview | 401 | 503
 *   GET /operator/api/accounts   200 OperatorAccounts | 401 | 503
 *   GET /operator/api/alerts     200 {alerts: FeedAlert[]} newest first | 401
 *
 * The pages: GET / (a team's page) and GET /operator (the operator's),
 * static files from web/ that talk to the routes above, the public API and /ws.
 */
export const OPERATOR_ROUTES = {
  overview: '/operator/api/overview',
  accounts: '/operator/api/accounts',
  alerts: '/operator/api/alerts',
  /** GET: the conversion rules in force (halts, fees, creation units). */
  rules: '/operator/api/rules',
  /** POST etf_name? (none: every ETF), reason: halt conversions; journaled with who and when. */
  halt: '/operator/api/halt',
  /** POST etf_name? (none: lift every halt). */
  resume: '/operator/api/resume',
  /** POST etf_name, components {TICKER: weight}, from? (ISO time or ms; default now): a new basket version. */
  basket: '/operator/api/basket',
  /**
   * POST id, decision (confirm | reject): the operator's verdict on a pending
   * exchange session or far seq jump (a FeedProblem whose actions name it).
   * 200 {done, problems} | 404 no such verdict | 503 feed bridge not answering.
   */
  feedVerdict: '/operator/api/feed/verdict',
  /** POST id? (default all): acknowledges standing feed problems (gaps, conflicts, rejected restarts); 200 {done, problems} | 404. */
  feedAck: '/operator/api/feed/ack',
} as const;

/** Feed alerts the gateway keeps for the operator (since it started). */
export const OPERATOR_ALERTS_KEPT = 200;
/** Latest conversions the overview lists, across every team. */
export const OPERATOR_CONVERSIONS_SHOWN = 50;

export interface OperatorAccount {
  client_id: number;
  username: string;
  /** Non-zero positions by ticker. */
  holdings: Record<string, number>;
  cash: number;
  /** Cash plus positions at mid prices. */
  pnl: PnlBody;
}

export interface OperatorAccounts {
  /** The journal and fill-stream sequences these positions are the replay of. */
  journal_seq: number;
  fill_seq: number;
  accounts: OperatorAccount[];
}

export interface OperatorFeed {
  /** The bridge published its status within the last few seconds. */
  live: boolean;
  age_ms: number | null;
  clearing?: FeedCounters;
  market_data?: FeedCounters;
  /** Standing problems until acknowledged (proto/feed.ts). */
  problems?: FeedProblem[];
  /** Fills the fill stream has not stored for seconds (proto/marketdata.ts FeedStatus). */
  unstored?: FillsUnstored;
}

/** The pricing service as the gateway last heard it (proto/marketdata.ts PricingStatus), as /health shows it under `pricing`. */
export type OperatorPricing = {
  /** It published its status within the last few seconds. */
  live: boolean;
  /** Since its last status; null: never heard by this gateway. */
  age_ms: number | null;
  /** New runs heard since the gateway started. */
  restarts?: number;
  /** What /health lists of it (not reporting, starting for too long, restarting, writes failing); absent: none. */
  problems?: string[];
} & Partial<Omit<PricingStatus, 'ts' | 'v'>>;

export interface OperatorOverview extends OperatorAccounts {
  /** The latest conversions of every team (accepted and refused), newest first. */
  conversions: (AuditEntry & { username: string })[];
  feed: OperatorFeed;
  pricing: OperatorPricing;
  alerts: FeedAlert[];
  ws: { connections: number; accounts: number; changes: number };
  /** Roster lines the engine refused at its last reading of the file (as if absent until fixed); absent when none. */
  roster_refused?: RosterRefusal[];
  /** The scoreboard file cannot be written (proto/engine.ts PingResult); absent while it is. */
  scoreboard_failing?: ScoreboardFailing;
  /**
   * What this overview could not read from the engine (it did not answer in
   * time): `roster` (refused lines unknown, not none), or a team's username
   * (its conversions are missing from the list, not absent). Absent: all read.
   */
  unread?: string[];
  /** Gateway wall-clock ms. */
  ts: number;
}
