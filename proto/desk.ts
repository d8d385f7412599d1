/**
 * The desk's records in DESK_STREAM (proto/subjects.ts, proto/streams.ts),
 * msgpack: what the charts draw and how each conversion scored, written by
 * the pricing service (src/pricing/desk.ts) from published state only, so
 * every gateway serves the same history and a restarted one loses none.
 * A scorecard record is a Scorecard (proto/http.ts).
 */

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
