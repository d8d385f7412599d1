/**
 * The desk's records in DESK_STREAM (proto/subjects.ts, proto/streams.ts),
 * msgpack: what the charts draw and how each conversion scored, written by
 * the pricing service (src/pricing/desk.ts) from published state only, so
 * every gateway serves the same history and a restarted one loses none.
 * A scorecard record is a Scorecard (proto/http.ts). The writer also keeps its
 * own place there (DeskCursor, DeskLegs), which readers of the history skip.
 */

import type { Scorecard } from './http.js';
import { fields, INT, isInt, isIntList, isMap, isNum, isStr, NUM, NUM_OR_NULL, oneOf, optional, shape, STR, STR_LIST, type Shape } from './shape.js';

export const DESK_SAMPLE_VERSION = 1;

/** One point of every chart series, at the writer's wall clock. */
export interface DeskSample {
  v: typeof DESK_SAMPLE_VERSION;
  ts: number;
  /** The writer's grid step (ms) when it took this point: what GET /charts reports as step_ms. */
  step: number;
  /** Per ETF: its mid (null when one-sided), NAV and premium (null when unknown). */
  etfs: Record<string, [mid: number | null, nav: number | null, premium: number | null]>;
  /** Per team with activity: its client_id, username and P&L (cash + positions at the mids; unmarked count at nothing). */
  teams: [clientId: number, username: string, pnl: number][];
}

const etfPoint = (v: unknown) => Array.isArray(v) && v.length === 3 && v.every(NUM_OR_NULL.ok);
const teamPoint = (v: unknown) => Array.isArray(v) && isInt(v[0]) && isStr(v[1]) && isNum(v[2]);

/** A desk sample as the gateways read it from the stream (a bad one is skipped, not drawn). */
export const deskSampleShape: Shape<DeskSample> = shape('desk sample', (v) => {
  const p = fields({ v: oneOf(DESK_SAMPLE_VERSION), ts: NUM, step: NUM })(v);
  if (p !== null) return p;
  const s = v as Record<string, unknown>;
  if (!isMap(s.etfs) || !Object.values(s.etfs).every(etfPoint)) return 'etfs: not a map of [mid, nav, premium]';
  if (!Array.isArray(s.teams) || !s.teams.every(teamPoint)) return 'teams: not a list of [client_id, username, pnl]';
  return null;
});

/** A scorecard record of the stream (proto/http.ts Scorecard). */
export const scorecardShape: Shape<Scorecard> = shape(
  'scorecard',
  fields({
    request_id: STR,
    client_id: INT,
    op: oneOf('create', 'redeem'),
    etf: STR,
    amount: INT,
    ts: NUM,
    etf_mid: NUM_OR_NULL,
    edge: NUM_OR_NULL,
    edge_per_unit: NUM_OR_NULL,
    quoted_edge: NUM_OR_NULL,
    fee: NUM,
    legs_sold: NUM,
    unmarked: optional(STR_LIST),
    unscored: optional(STR),
  }),
);

export const DESK_CURSOR_VERSION = 1;

/**
 * Where the desk's writer stands in the engine's durable streams
 * (DESK_CURSOR_SUBJECT), written once everything it derived from them up to
 * there is stored: every accepted conversion of each shard's journal up to
 * `journal[shard]` has its scorecard in the stream, and the sells of every
 * fill up to `fills` are counted in the cards and the teams' DeskLegs. A
 * restarted writer reads on from there, so nothing the engine did while it
 * was stopped, or while notices did not reach it, goes unrecorded.
 */
export interface DeskCursor {
  v: typeof DESK_CURSOR_VERSION;
  /** Per engine shard, in shard order: a journal sequence. */
  journal: number[];
  /** A fill-stream sequence. */
  fills: number;
  /** The last exchange reset read, up to `fills` (its fill-stream sequence; 0: none): a conversion decided before it, read after the cursor, lost its legs with it. */
  reset: number;
  /** The writer's clock when it wrote this (ms). */
  ts: number;
}

export const deskCursorShape: Shape<DeskCursor> = shape('desk cursor', (v) => {
  const p = fields({ v: oneOf(DESK_CURSOR_VERSION), fills: INT, reset: INT, ts: NUM })(v);
  if (p !== null) return p;
  const j = (v as Record<string, unknown>).journal;
  return Array.isArray(j) && j.length > 0 && j.every(isInt) ? null : 'journal: not a list of sequences';
});

export const DESK_LEGS_VERSION = 1;

/**
 * One team's conversions whose legs are not all sold yet (deskLegsSubject),
 * oldest first, as the desk's writer matches the team's sells to them:
 * rewritten whenever they change. `journal` (the team's shard's journal) and
 * `fills` say how far into the engine's streams this record has taken in: a
 * restarted writer applies to the team only what comes after (the cursor may
 * be older than the record).
 */
export interface DeskLegs {
  v: typeof DESK_LEGS_VERSION;
  client_id: number;
  journal: number;
  fills: number;
  /** `at`: the fill-stream sequence the engine stood at as it decided the conversion (its sells are the later ones); `needed` what it gave the team in all; `left` what is unsold, flat [symbol, quantity, ...]. */
  open: { request_id: string; at: number; needed: number; left: number[] }[];
}

const legsEntry = (e: unknown): boolean => isMap(e) && isStr(e.request_id) && isInt(e.at) && isNum(e.needed) && e.needed > 0 && isIntList(e.left) && e.left.length % 2 === 0;

export const deskLegsShape: Shape<DeskLegs> = shape('desk legs', (v) => {
  const p = fields({ v: oneOf(DESK_LEGS_VERSION), client_id: INT, journal: INT, fills: INT })(v);
  if (p !== null) return p;
  const open = (v as Record<string, unknown>).open;
  return Array.isArray(open) && open.every(legsEntry) ? null : 'open: not a list of {request_id, at, needed, left}';
});
