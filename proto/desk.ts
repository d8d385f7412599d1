/**
 * The desk's records in DESK_STREAM (proto/subjects.ts, proto/streams.ts),
 * msgpack: what the charts draw and how each conversion scored, written by
 * the pricing service (src/pricing/desk.ts) from published state only, so
 * every gateway serves the same history and a restarted one loses none.
 * A scorecard record is a Scorecard (proto/http.ts).
 */

import type { Scorecard } from './http.js';
import { fields, INT, isInt, isMap, isNum, isStr, NUM, NUM_OR_NULL, oneOf, optional, shape, STR, STR_LIST, type Shape } from './shape.js';

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
  }),
);
