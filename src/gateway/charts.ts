import type { NatsConnection } from '@nats-io/transport-node';
import type { RulesResult } from '../../proto/engine.js';
import { DESK_STREAM } from '../../proto/subjects.js';
import { CHART_LIMITS, type ChartsBody, type Scorecard } from '../../proto/http.js';
import { DeskHistory } from '../shared/desk-history.js';
import { readStream, type StreamFollower } from '../shared/stream-reader.js';
import { describeError, isStreamNotFound } from '../shared/js-errors.js';
import type { Logger } from '../shared/log.js';
import type { EngineClient } from '../shared/engine-client.js';
import type { HttpCall } from './http.js';
import type { Params } from './params.js';

export { SeriesGrid } from '../shared/desk-history.js';

/**
 * What the pages' charts draw and each conversion's scorecard, read from the
 * desk's stream (DESK_STREAM, proto/desk.ts), which the pricing service alone
 * writes from published state: every gateway reads it from its start and
 * follows it, so a gateway started late or restarted mid-session serves the
 * session so far, the same as every other. The gateway writes nothing there.
 *
 * Served by GET /charts (proto/http.ts ChartsBody), and the scorecards in
 * /history and /requests. Bounded as DeskHistory is (CHART_LIMITS).
 */
export class Charts {
  private history = new DeskHistory();
  private halts: RulesResult['halts'] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private follower: StreamFollower | null = null;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly engine: EngineClient,
    private readonly log: Logger,
    opts: { auto?: boolean } = {},
  ) {
    void this.follow();
    if (opts.auto !== false) {
      this.timers.push(setInterval(() => void this.refreshHalts(), CHART_LIMITS.haltPollMs).unref());
      void this.refreshHalts();
    }
  }

  /**
   * Read from the stream's first message, then live. The stream is made by the
   * launcher (or the pricing service): until it is there, ask again; a
   * follower that stops (its consumer lost for good) is started again from
   * nothing, its history rebuilt whole.
   */
  private async follow(): Promise<void> {
    if (this.closed) return;
    const history = new DeskHistory();
    const again = (err: unknown) => {
      if (this.closed) return;
      if (!isStreamNotFound(err)) this.log.warn({ err: describeError(err) }, 'charts: reading the desk stream stopped; reading it again');
      this.timers.push(setTimeout(() => void this.follow(), 2000).unref());
    };
    try {
      // Served as it fills: a long history is not held back until its last sample is read.
      this.history = history;
      this.follower = await readStream(this.nc, DESK_STREAM, 1, (m) => history.apply(m.subject, m.data), { follow: true, onError: again, log: this.log });
      if (this.closed) void this.follower.stop();
      this.follower.caughtUp.catch(again);
    } catch (err) {
      again(err);
    }
  }

  private haltsAsked = false;

  /** One read at a time: while the engine is slow or down, reads do not pile up behind its time-out. */
  private async refreshHalts(): Promise<void> {
    if (this.haltsAsked) return;
    this.haltsAsked = true;
    try {
      const reply = await this.engine.call({ op: 'rules' });
      if (reply.ok) this.halts = reply.result.halts;
    } finally {
      this.haltsAsked = false;
    }
  }

  scorecard(clientId: number, requestId: string): Scorecard | undefined {
    return this.history.scorecard(clientId, requestId);
  }

  /** GET /charts?since=<ms>&team=<username>: points after `since`; one team's P&L or every team's. */
  handle(ex: HttpCall, params: Params): void {
    const sinceText = params.since;
    const since = typeof sinceText === 'string' && /^[0-9]{1,16}$/.test(sinceText) ? Number(sinceText) : sinceText === undefined ? 0 : NaN;
    if (Number.isNaN(since)) return ex.error('invalid_parameter', 'since must be a time in ms', { field: 'since' });
    const team = typeof params.team === 'string' ? params.team : undefined;
    const h = this.history;
    const g = h.grid;
    const from = g.from(since);
    const etfs: ChartsBody['etfs'] = {};
    for (const etf of h.etfs) etfs[etf] = { etf: g.slice(`etf:${etf}`, from), nav: g.slice(`nav:${etf}`, from), premium: g.slice(`premium:${etf}`, from) };
    let ids = [...h.names.keys()].filter((id) => team === undefined || h.names.get(id) === team);
    // Every team's lines: the best CHART_LIMITS.listed by P&L now (a chart of more is unreadable, and its answer large).
    if (ids.length > CHART_LIMITS.listed) ids = ids.sort((a, b) => (g.last(`pnl:${b}`) || 0) - (g.last(`pnl:${a}`) || 0)).slice(0, CHART_LIMITS.listed);
    const teams: ChartsBody['teams'] = ids.map((id) => ({ client_id: id, username: h.names.get(id)!, pnl: g.slice(`pnl:${id}`, from) }));
    const body: ChartsBody = { t: Array.from(g.t.subarray(from, g.n)), step_ms: h.step, etfs, teams, halts: this.halts, ts: Date.now() };
    ex.json(200, body);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    void this.follower?.stop();
  }
}
