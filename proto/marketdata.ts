import { feedProblemProblem, type FeedProblem } from './feed.js';
import { at, fields, INT, isMap, isNum, isStr, itemsProblem, NUM, NUM_OR_NULL, oneOf, optional, shape, STR, STR_LIST, type Shape } from './shape.js';
/**
 * Market data and prices on NATS (msgpack via proto/codec.ts).
 *
 * The feed bridge keeps every symbol's order book from the NDFEX market-data
 * feed and publishes the top of book when it changes:
 *   subject `ndfex.md.bbo.<symbol id>`, payload Bbo.
 * The last Bbo of every symbol is also kept in the JetStream KV bucket
 * BBO_BUCKET under key `<symbol id>`, where a late subscriber reads it.
 *
 * The pricing actor turns those into per-ETF prices:
 *   subject `etf.price.<ETF name>`, payload EtfPrice, at most every 100 ms per ETF,
 * and keeps the last one in KV bucket PRICE_BUCKET under key `<ETF name>`.
 */
export const BBO_SUBJECT_PREFIX = 'ndfex.md.bbo';
export const bboSubject = (symbol: number): string => `${BBO_SUBJECT_PREFIX}.${symbol}`;
export const BBO_SUBJECT_WILDCARD = `${BBO_SUBJECT_PREFIX}.*`;
export const BBO_BUCKET = 'ndfex_bbo';

export const PRICE_SUBJECT_PREFIX = 'etf.price';
export const priceSubject = (etf: string): string => `${PRICE_SUBJECT_PREFIX}.${etf}`;
export const PRICE_SUBJECT_WILDCARD = `${PRICE_SUBJECT_PREFIX}.*`;
export const PRICE_BUCKET = 'etf_prices';

/**
 * The operator's basket versions per ETF, published by the engine once
 * journaled: KV bucket BASKET_BUCKET, key `<ETF name>`, payload BasketVersions.
 * The version in force at a time is the latest whose `from` has come, else the
 * configured basket (version 0): pricing and GET /etfs follow what conversions use.
 */
export const BASKET_BUCKET = 'etf_baskets';
export const basketKvSubject = (etf: string): string => `$KV.${BASKET_BUCKET}.${etf}`;

export interface BasketVersions {
  etf: string;
  versions: { version: number; from: number; components: { symbol: number; ticker: string; weight: number }[] }[];
}

/** Feed-integrity alerts from the bridge (gaps, exchange restarts, bad datagrams). */
export const FEED_ALERT_SUBJECT = 'ndfex.alert';
/** The bridge's periodic status, which the gateway shows on /health. */
export const FEED_STATUS_SUBJECT = 'ndfex.feed.status';
/** The pricing service's periodic status (PricingStatus), which the gateway shows on /health and /metrics. */
export const PRICING_STATUS_SUBJECT = 'etf.pricing.status';

export interface Bbo {
  symbol: number;
  /** Best bid price and total quantity at it; null when the side is empty. */
  bid: number | null;
  bid_qty: number;
  ask: number | null;
  ask_qty: number;
  /** Exchange timestamp (ns) of the market-data message that changed it, as a number (loses sub-µs precision). */
  ts: number;
  /** Market-data seq_num of that message. */
  md_seq: number;
}

export interface EtfPrice {
  etf: string;
  symbol: number;
  /** Sum over components of weight × mid; null while any component lacks a bid or an ask. */
  nav: number | null;
  /** Cost to buy the basket for one creation unit: sum of weight × best ask. */
  create_cost: number | null;
  /** Proceeds of selling the basket of one redeemed unit: sum of weight × best bid. */
  redeem_proceeds: number | null;
  /** The ETF's own top of book on the exchange. */
  etf_bid: number | null;
  etf_ask: number | null;
  /** (ETF mid − NAV) / NAV; positive is a premium. */
  premium: number | null;
  /** Arbitrage edges per unit before fees: buy basket+create, sell ETF (etf_bid − create_cost); buy ETF+redeem, sell basket (redeem_proceeds − etf_ask). */
  create_edge: number | null;
  redeem_edge: number | null;
  /** Wall-clock ms when computed. */
  ts: number;
}

export interface FeedAlert {
  /**
   * stray: messages that went back in seq but were not followed by a run of their own
   * (a lone datagram cannot fake an exchange restart); foreign: datagrams from a sender
   * not in NDFEX_SOURCE; late_join: fills of the session sent before the bridge first heard it;
   * book_distrusted: a crossed or locked book, rebuilt from live data and snapshots;
   * verdict_pending: a possible new exchange session or far seq jump, held until proven or decided;
   * restart_rejected: a claimed restart disproved (the old session went on), nothing reset;
   * far_jump: a seq far beyond any believable gap, held; conflict: two different messages with one seq;
   * verdict_decided: the operator confirmed or rejected a pending verdict;
   * held_store: held fills cannot be kept outside the bridge right now (a stop would lose them);
   * replay: a copy of a message already passed, from another sender than the one it came from (dropped).
   */
  kind:
    | 'gap'
    | 'exchange_restart'
    | 'bad_datagram'
    | 'session_change'
    | 'stray'
    | 'foreign'
    | 'late_join'
    | 'book_distrusted'
    | 'verdict_pending'
    | 'restart_rejected'
    | 'far_jump'
    | 'conflict'
    | 'verdict_decided'
    | 'held_store'
    | 'replay'
    | 'marker_unreadable';
  feed: 'clearing' | 'market_data';
  detail: string;
  /** Expected and received seq_num for a gap. */
  expected?: number;
  received?: number;
  /** The verdict (FeedProblem id) this alert is about. */
  verdict?: string;
  /** conflict: fingerprints of the message applied first and of the other one. */
  fingerprints?: string[];
  ts: number;
}

export interface FeedStatus {
  clearing: FeedCounters;
  market_data: FeedCounters;
  /** Standing problems until the operator acknowledges them (proto/feed.ts). */
  problems?: FeedProblem[];
  /** Present while fills wait to be stored in the fill stream for longer than an ack ever takes. */
  unstored?: FillsUnstored;
  /** Present while the clearing progress the bridge has reached has not been saved for a few ticks. */
  progress_unsaved?: ProgressUnsaved;
  ts: number;
}

/**
 * The clearing session record (proto/feed.ts ClearingSessionRecord) not saved
 * past what is stored: the standby follows that record (the session's sender,
 * how far the bridge got), and a restart resumes from it. Tried again every tick.
 */
export interface ProgressUnsaved {
  /** How long progress past the stored record has gone unsaved. */
  for_ms: number;
  /** Saves tried since. */
  attempts: number;
  /** Why the last one did not save. */
  last_error: string;
}

/**
 * Exchange fills the bridge heard and JetStream has not stored (a stream at its
 * limits, a disk full, a permission refused): retried under their msg ids, but
 * no position moves until they are.
 */
export interface FillsUnstored {
  /** Fills sent and not stored, and those queued behind them. */
  fills: number;
  /** How long the oldest has waited. */
  oldest_ms: number;
  /** What JetStream (or the session change they wait behind) last said. */
  last_error?: string;
}

/**
 * The standby bridge's status (src/feed/standby.ts), on FEED_STATUS_SUBJECT
 * beside the bridge's own: `role` tells them apart, and a reader that knows
 * only FeedStatus finds no counters in it and ignores it.
 */
export interface StandbyStatus {
  role: 'standby';
  /** The exchange session it follows (0: none yet) and that session's sender. */
  session: number;
  sender: string | null;
  /** Fills at or below this seq are left to the bridge. */
  last_seq: number;
  /** Why it publishes nothing now, or null. */
  waiting: string | null;
  datagrams: number;
  bad_datagrams: number;
  /** Fills it sent to the stream (each stored once: `duplicates` of them the bridge had stored first). */
  published: number;
  duplicates: number;
  /** Clearing messages (fills, heartbeats) left to the bridge: heard before it had a session to follow, from another sender, at or below `last_seq`, while suspended (a seq the bridge would hold for a verdict). */
  not_following: number;
  other_sender: number;
  not_after: number;
  suspended: number;
  /** A message heard with the seq of one it followed (a fill it published, a heartbeat), or of a message of the run it keeps, and other content (the one heard first stands), from any sender: alerted with both, and a standing problem (`problems`). */
  conflicts: number;
  /** Copies (same seq, same content) of a message it followed, dropped: the bridge's `duplicates` of its followed run; one from another sender than the exchange's is a replay, alerted (absent from a standby before this field). */
  copies?: number;
  /** Copies (same seq, same content) of a message of the run it keeps while no bridge listens, dropped: the bridge's `duplicates` (absent from a standby before this field). */
  held_duplicates?: number;
  /** Messages of the run it keeps while no bridge listens (suspended on a first seq that skips), stored in NDFEX_HELD so that a standby restart keeps them: absent while it keeps none. */
  kept?: number;
  /** Why that run cannot be stored right now (a standby stop would lose what is not), while so. */
  kept_unsaved?: string;
  /** Standing problems it raised as the bridge would have (a conflict in the run it keeps), as FeedStatus's. */
  problems?: FeedProblem[];
  gaps: number;
  invalid: number;
  ts: number;
}

export const standbyStatusShape: Shape<StandbyStatus> = shape('standby status', (s) => {
  if (!isMap(s) || s.role !== 'standby') return 'not a standby status';
  return fields({ session: INT, last_seq: INT, published: INT, duplicates: INT, gaps: INT, ts: NUM })(s) ?? ((s.waiting === null || isStr(s.waiting)) && (s.sender === null || isStr(s.sender)) ? null : 'waiting, sender: not a string or null');
});

export interface FeedCounters {
  datagrams: number;
  messages: number;
  gaps: number;
  missed_messages: number;
  bad_datagrams: number;
  restarts: number;
  last_seq: number;
  /** Messages ignored because they went back in seq without a run of their own to confirm a restart. */
  strays?: number;
  /** Clearing fills of heard gaps that another bridge stored (src/feed/gap-cover.ts): taken out of `gaps` and `missed_messages`. */
  covered?: number;
  /** Datagrams from a sender not allowed by NDFEX_SOURCE. */
  foreign?: number;
  /** Messages held while a possible exchange restart waits for confirmation. */
  held?: number;
  /** Messages of the session sent before the bridge first heard it (a late join); for clearing, fills it never saw. */
  missed_before_join?: number;
  /** Messages whose seq was already taken by a different message (the first one heard is kept). */
  conflicts?: number;
  /** Copies of a message already passed (same seq, same content), dropped: never published twice. */
  duplicates?: number;
  /** Far seq jumps held (never applied without the operator). */
  jumps?: number;
  /** Claimed exchange restarts disproved by the old session's own traffic. */
  rejected_restarts?: number;
}

const isCount = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
const isPrice = (v: unknown): boolean => v === null || (Number.isSafeInteger(v) && Math.abs(v as number) <= 0x7fffffff);

/** Why a decoded payload is not a Bbo, or null when it is one. */
export function bboProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null) return 'not a map';
  const b = v as Record<string, unknown>;
  if (!isCount(b.symbol) || (b.symbol as number) > 0xffffffff) return 'symbol is not a u32';
  if (!isPrice(b.bid)) return 'bid is not an i32 or null';
  if (!isPrice(b.ask)) return 'ask is not an i32 or null';
  if (!isCount(b.bid_qty) || !isCount(b.ask_qty)) return 'bid_qty/ask_qty are not counts';
  return null;
}

export const bboShape: Shape<Bbo> = shape('bbo', bboProblem);

export const etfPriceShape: Shape<EtfPrice> = shape(
  'etf price',
  fields({
    etf: STR,
    symbol: INT,
    nav: NUM_OR_NULL,
    create_cost: NUM_OR_NULL,
    redeem_proceeds: NUM_OR_NULL,
    etf_bid: NUM_OR_NULL,
    etf_ask: NUM_OR_NULL,
    premium: NUM_OR_NULL,
    create_edge: NUM_OR_NULL,
    redeem_edge: NUM_OR_NULL,
    ts: NUM,
  }),
);

const componentProblem = fields({ symbol: INT, ticker: STR, weight: NUM });
const basketVersionFields = fields({ version: INT, from: NUM });
const basketVersionProblem = (v: unknown): string | null => basketVersionFields(v) ?? at('components', itemsProblem((v as { components: unknown }).components, componentProblem));

export const basketVersionsShape: Shape<BasketVersions> = shape('basket versions', (b) =>
  !isMap(b) ? 'not a map' : !isStr(b.etf) ? 'etf: not a string' : at('versions', itemsProblem(b.versions, basketVersionProblem)),
);

export const feedAlertShape: Shape<FeedAlert> = shape('feed alert', fields({ kind: STR, feed: STR, detail: STR, ts: NUM }));

const countersProblem = fields({ datagrams: NUM, messages: NUM, gaps: NUM, missed_messages: NUM, bad_datagrams: NUM, restarts: NUM, last_seq: NUM });

const unstoredProblem = fields({ fills: NUM, oldest_ms: NUM, last_error: optional(STR) });
const unsavedProblem = fields({ for_ms: NUM, attempts: NUM, last_error: STR });

/** What /health and the operator page show of the bridge: its counters and its standing problems. */
export const feedStatusShape: Shape<FeedStatus> = shape('feed status', (s) => {
  if (!isMap(s)) return 'not a map';
  const p = at('clearing', countersProblem(s.clearing)) ?? at('market_data', countersProblem(s.market_data));
  if (p !== null) return p;
  if (s.problems !== undefined) {
    const bad = at('problems', itemsProblem(s.problems, feedProblemProblem));
    if (bad !== null) return bad;
  }
  if (s.unstored !== undefined) {
    const bad = at('unstored', unstoredProblem(s.unstored));
    if (bad !== null) return bad;
  }
  if (s.progress_unsaved !== undefined) {
    const bad = at('progress_unsaved', unsavedProblem(s.progress_unsaved));
    if (bad !== null) return bad;
  }
  return !isNum(s.ts) ? 'ts: not a number' : null;
});

/** What the pricing service writes: `prices` into PRICE_BUCKET (then on their subjects), `desk` into DESK_STREAM (proto/desk.ts). */
export type PricingOutput = 'prices' | 'desk';

/**
 * One of the pricing service's outputs whose writes have failed, none
 * succeeding since, for longer than a stream leader's election takes.
 */
export interface PricingFailing {
  what: PricingOutput;
  /** What NATS or JetStream last said. */
  error: string;
  /** When its first failed write since the last stored one was (the pricing host's clock), and how long before `ts`. */
  since: number;
  for_ms: number;
}

/**
 * PricingStatus's version, in `v`.
 * 1 (no `v`): sent only once the service was ready, so a start slower than the
 *   gateway's patience showed as a service that had not reported.
 * 2: sent from the service's connection to NATS on, with `phase` (`starting`,
 *   and what the start is doing in `start`, until it is `ready`); and
 *   `bad_bbo_symbols`, `bad_bbos` counting unusable quotes as well as
 *   payloads not of the Bbo shape.
 * A reader takes a status without `v` or `phase` for a ready one. Fields are
 * only added: a version-1 gateway reads a version-2 status (it ignores the new
 * fields, and shows a starting service as a live one with nothing counted yet).
 */
export const PRICING_STATUS_VERSION = 2;

/** Where a start of the pricing service is (PricingStatus.start). */
export interface PricingStart {
  /** What it is doing: `opening the etf_prices bucket`, `reading the stored books`, ... */
  step: string;
  /** What JetStream last answered the step, while it waits for it to answer (a cluster electing its leaders, a server coming up); absent otherwise. */
  waiting?: string;
  /** Since this run started, by the pricing host's clock (as `started`). */
  for_ms: number;
}

/**
 * A symbol whose Bbos have all been bad (not of the Bbo shape, or unusable:
 * crossed, a price not above zero) for a while: pricing keeps its last good
 * quote, so the ETFs priced from it stop moving with the market.
 */
export interface PricingBadSymbol {
  symbol: number;
  /** As the pricing service's baskets name it (the id when none does). */
  ticker: string;
  /** The ETFs priced from it; empty: none is. */
  etfs: string[];
  /** Bad Bbos since its last good one, and why the newest was bad. */
  count: number;
  problem: string;
  /** When the first of them came (the pricing host's clock), and how long before `ts`. */
  since: number;
  for_ms: number;
}

/**
 * The pricing service's status, every second on PRICING_STATUS_SUBJECT: it
 * serves nothing over HTTP, so its counters and failures reach an operator only
 * through the gateway. A process that stops (crashed, hung) stops sending it.
 */
export interface PricingStatus {
  /** PRICING_STATUS_VERSION; absent: version 1. */
  v?: number;
  /** When this run of the service started: a new value is a restart. */
  started: number;
  /** `starting` until its books, buckets and desk are open (`start` says where it is); absent: version 1, which reported only once ready. */
  phase?: 'starting' | 'ready';
  start?: PricingStart;
  /** Best bids/asks heard, and those ignored: not of the Bbo shape, or (version 2) unusable. */
  bbos: number;
  bad_bbos: number;
  /** Symbols whose Bbos have all been bad for 3 s or more (PRICING_BAD_BBO_MS), the longest first, at most 20; absent while none. */
  bad_bbo_symbols?: PricingBadSymbol[];
  /** ETF prices sent to the bucket, those it stored, and failed attempts (each retried). */
  published: number;
  stored: number;
  publish_errors: number;
  /**
   * The desk's chart samples and scorecards written, and writes the stream
   * refused; `missed` (absent from a service before it): conversions this run
   * of the service learned of from the journal only, after their moment, and
   * wrote as missed (Scorecard.unscored).
   */
  desk: { samples: number; cards: number; write_errors: number; missed?: number };
  /** Outputs failing now; absent while none is. */
  failing?: PricingFailing[];
  /** The newest failed write, kept after writes succeed again. */
  last_error?: { what: PricingOutput; error: string; ts: number };
  ts: number;
}

const pricingOutput = oneOf('prices', 'desk');
const pricingFailingProblem = fields({ what: pricingOutput, error: STR, since: NUM, for_ms: NUM });
const pricingDeskProblem = fields({ samples: INT, cards: INT, write_errors: INT, missed: optional(INT) });
const pricingLastErrorProblem = fields({ what: pricingOutput, error: STR, ts: NUM });
const pricingVersionPhase = fields({ v: optional(INT), phase: optional(oneOf('starting', 'ready')) });
const pricingStartProblem = fields({ step: STR, waiting: optional(STR), for_ms: NUM });
const pricingBadSymbolProblem = fields({ symbol: INT, ticker: STR, etfs: STR_LIST, count: INT, problem: STR, since: NUM, for_ms: NUM });

export const pricingStatusShape: Shape<PricingStatus> = shape('pricing status', (s) => {
  if (!isMap(s)) return 'not a map';
  const p = fields({ started: NUM, bbos: INT, bad_bbos: INT, published: INT, stored: INT, publish_errors: INT, ts: NUM })(s) ?? at('desk', pricingDeskProblem(s.desk));
  if (p !== null) return p;
  const vp = pricingVersionPhase(s);
  if (vp !== null) return vp;
  if (s.start !== undefined) {
    const bad = at('start', pricingStartProblem(s.start));
    if (bad !== null) return bad;
  }
  if (s.bad_bbo_symbols !== undefined) {
    const bad = at('bad_bbo_symbols', itemsProblem(s.bad_bbo_symbols, pricingBadSymbolProblem));
    if (bad !== null) return bad;
  }
  if (s.failing !== undefined) {
    const bad = at('failing', itemsProblem(s.failing, pricingFailingProblem));
    if (bad !== null) return bad;
  }
  return s.last_error === undefined ? null : at('last_error', pricingLastErrorProblem(s.last_error));
});
