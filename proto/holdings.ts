import { namedPositions, type FlatPositions, type LastReset, type Position, type TickerOf } from './engine.js';
import { outcomeNoticeProblem, type OutcomeNotice } from './requests.js';
import { at, fields, INT, INT_LIST, isInt, isIntList, isMap, isNum, isStr, isStrOrNull, itemsProblem, NUM, optional, shape, STR, type Check, type Shape } from './shape.js';

/**
 * A holdings change, published by the engine once it is durable: a fill as
 * soon as it is applied (it is already in the fill stream), a conversion
 * after its journal write. `seq` is the account's own change counter: +1 per
 * change, the same after an engine restart, so a consumer can tell it missed
 * nothing. `positions` is the whole account after the change.
 *
 * On NATS a change travels as a HoldingsNotice in a NoticeBatch (positions
 * flat, no tickers); HoldingsChange (v 1) is the same change named, as the
 * gateway hands it to WebSocket clients (proto/ws.ts).
 */
export interface HoldingsChange<P = Position[]> {
  v: 1;
  client_id: number;
  seq: number;
  cause: 'fill' | 'create' | 'redeem' | 'opening' | 'session_reset';
  /** Signed change per symbol in this step. */
  deltas: P;
  positions: P;
  /** Cash after the change (absent from engines before cash was kept). */
  cash?: number;
  /** Engine wall-clock ms when applied. */
  ts: number;
  /** For cause 'fill': the fill's exchange seq and price. */
  fill?: { seq: number; price: number };
  /** For cause 'session_reset': the reset itself, as holdings reads report it from then on (absent from engines before it was kept). */
  last_reset?: LastReset;
}

/** A HoldingsChange as a NoticeBatch carries it. */
export type HoldingsNotice = Omit<HoldingsChange<FlatPositions>, 'v'>;

/**
 * 2: batches name the shared record shapes (proto/records.ts). 3: an accepted
 * conversion's outcome carries its `fee` (a shape of its own in the list).
 */
export const NOTICE_BATCH_VERSION = 3;
/** Versions read: an engine not yet upgraded still publishes 2, and its batches decode as they did. */
export const NOTICE_BATCH_VERSIONS_READ: readonly number[] = [2, 3];

/**
 * What an engine shard publishes on its notices subject (ShardNames.notices)
 * once a group commit is durable, and as fills are applied: every holdings
 * change (each account's in seq order, across batches too) and every request
 * outcome. One message per group, not one per change and per outcome: a
 * publish costs the engine and the server more than the notice's own bytes.
 * A large group is split over several batches, in order.
 */
export interface NoticeBatch {
  /** NOTICE_BATCH_VERSION as written; any of NOTICE_BATCH_VERSIONS_READ as read. */
  v: number;
  changes: HoldingsNotice[];
  outcomes: OutcomeNotice[];
}

/** Notices per batch: a batch stays well under NATS's 1 MB payload limit. */
export const MAX_BATCH_NOTICES = 2000;

export const namedChange = (n: HoldingsNotice, tickerOf: TickerOf): HoldingsChange => ({
  ...n,
  v: 1,
  deltas: namedPositions(n.deltas, tickerOf),
  positions: namedPositions(n.positions, tickerOf),
});

/** Why a change in a NoticeBatch cannot be shown: a feed follows seq, and shows positions and deltas. */
const LAST_RESET: Check = { ok: (v) => isMap(v) && isNum(v.ts) && isStrOrNull(v.last_request_id), what: 'not {ts, last_request_id}' };
const noticeFields = fields({ client_id: INT, seq: INT, cause: STR, deltas: INT_LIST, positions: INT_LIST, cash: optional(NUM), ts: NUM, last_reset: optional(LAST_RESET) });
export const holdingsNoticeProblem = (n: unknown): string | null =>
  isMap(n) && isInt(n.client_id) && isInt(n.seq) && isStr(n.cause) && isIntList(n.deltas) && isIntList(n.positions) && (n.cash === undefined || isNum(n.cash)) && isNum(n.ts) && (n.last_reset === undefined || LAST_RESET.ok(n.last_reset))
    ? null
    : noticeFields(n);

/** A whole batch is checked before any of it is delivered: a WebSocket client never gets half of a forged one. */
export const noticeBatchShape: Shape<NoticeBatch> = shape('notice batch', (b) => {
  if (!isMap(b)) return 'not a map';
  if (!NOTICE_BATCH_VERSIONS_READ.includes(b.v as number)) return `v: not one of ${NOTICE_BATCH_VERSIONS_READ.join(', ')}`;
  return at('changes', itemsProblem(b.changes, holdingsNoticeProblem)) ?? at('outcomes', itemsProblem(b.outcomes, outcomeNoticeProblem));
});
