import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decodeAs } from '../../proto/codec.js';
import type { FlatPositions, RulesResult, TickerOf } from '../../proto/engine.js';
import { noticeBatchShape, type NoticeBatch } from '../../proto/holdings.js';
import { PRICE_SUBJECT_WILDCARD, etfPriceShape, type EtfPrice } from '../../proto/marketdata.js';
import { NOTICES_SUBJECT_WILDCARD } from '../../proto/subjects.js';
import { CHART_LIMITS, type ChartsBody, type Scorecard } from '../../proto/http.js';
import type { Logger } from '../shared/log.js';
import type { EngineClient } from './engine-client.js';
import type { Exchange } from './http.js';
import type { Marks } from './marks.js';
import type { Params } from './params.js';

interface Account {
  username: string;
  cash: number;
  positions: FlatPositions;
}

const mid = (bid: number | null, ask: number | null): number => (bid !== null && ask !== null ? (bid + ask) / 2 : NaN);

/**
 * One time axis shared by every series (what uPlot draws), in fixed-size
 * typed arrays: when full, every other point goes and the step doubles, so
 * memory stays bounded and the whole session stays on the chart, older parts
 * coarser.
 */
export class SeriesGrid {
  readonly t: Float64Array;
  n = 0;
  step: number;
  private readonly cols = new Map<string, Float64Array>();

  constructor(
    readonly cap: number,
    baseStep: number,
  ) {
    this.t = new Float64Array(cap);
    this.step = baseStep;
  }

  /** A column: NaN (no value) at every point before it appeared. */
  col(name: string): Float64Array {
    let c = this.cols.get(name);
    if (!c) {
      c = new Float64Array(this.cap).fill(NaN);
      this.cols.set(name, c);
    }
    return c;
  }

  has(name: string): boolean {
    return this.cols.has(name);
  }

  get columns(): number {
    return this.cols.size;
  }

  /** Starts a point at `ts` unless the last one is closer than a step; its index, or -1. */
  begin(ts: number): number {
    if (this.n > 0 && ts - this.t[this.n - 1]! < this.step) return -1;
    if (this.n === this.cap) this.halve();
    this.t[this.n] = ts;
    return this.n++;
  }

  private halve(): void {
    const keep = (a: Float64Array) => {
      for (let i = 0, j = 0; i < this.n; i += 2, j++) a[j] = a[i]!;
      a.fill(NaN, Math.ceil(this.n / 2));
    };
    keep(this.t);
    for (const c of this.cols.values()) keep(c);
    this.n = Math.ceil(this.n / 2);
    this.step *= 2;
  }

  /** Index of the first point after `since`. */
  from(since: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (this.t[m]! <= since) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  /**
   * A column's points from `from`, NaN where no value: JSON.stringify writes
   * NaN as null, so the answer has nulls without building a mixed array
   * (a plain copy of doubles is ten times faster for a thousand teams).
   */
  slice(name: string, from: number): (number | null)[] {
    const c = this.cols.get(name);
    const out: number[] = [];
    for (let i = from; i < this.n; i++) out.push(c ? c[i]! : NaN);
    return out;
  }

  /** The last value of a column (NaN when none). */
  last(name: string): number {
    return this.n ? (this.cols.get(name)?.[this.n - 1] ?? NaN) : NaN;
  }
}

/**
 * What the pages' charts draw, sampled from published state only: ETF
 * prices (the pricing actor's `etf.price.*`), every account's cash and
 * positions (the engine's notices, seeded by one dump), marked at the mids
 * the gateway already follows (Marks). It writes nothing anywhere: the
 * engine alone owns positions. It also scores each accepted conversion
 * (its value at the marks of the moment, fee included) as its notice arrives.
 *
 * Served by GET /charts (proto/http.ts ChartsBody). In memory and bounded
 * (CHART_LIMITS): a gateway restarted mid-session starts its charts again.
 */
export class Charts {
  readonly grid: SeriesGrid;
  private readonly accounts = new Map<number, Account>();
  /** Teams with a P&L column (activity seen), capped at CHART_LIMITS.teams. */
  private readonly tracked = new Set<number>();
  private readonly prices = new Map<string, EtfPrice>();
  private readonly cards = new Map<string, Scorecard>();
  /** Per account, its conversions whose received units are not all sold yet, oldest first: what later sells are matched to. */
  private readonly openLegs = new Map<number, { card: Scorecard; left: Map<number, number>; needed: number }[]>();
  private halts: RulesResult['halts'] = [];
  private readonly subs: Subscription[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private dumpPending: Promise<void> | null = null;
  private retry: NodeJS.Timeout | undefined;
  private lastDump = 0;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly engine: EngineClient,
    private readonly marks: Marks,
    private readonly tickerOf: TickerOf,
    private readonly symbolOf: (etf: string) => number | undefined,
    private readonly log: Logger,
    opts: { sampleMs?: number; auto?: boolean } = {},
  ) {
    this.grid = new SeriesGrid(CHART_LIMITS.points, opts.sampleMs ?? CHART_LIMITS.sampleMs);
    this.subs.push(
      nc.subscribe(PRICE_SUBJECT_WILDCARD, {
        callback: (err, m) => {
          if (err) return;
          try {
            const p = decodeAs(m.data, etfPriceShape);
            if (p && typeof p.etf === 'string') this.prices.set(p.etf, p);
          } catch {
            // A bad payload is the pricing actor's to report; the chart keeps the last good one.
          }
        },
      }),
      nc.subscribe(NOTICES_SUBJECT_WILDCARD, {
        callback: (err, m) => {
          if (err) return;
          try {
            this.onNotices(decodeAs(m.data, noticeBatchShape));
          } catch (e) {
            log.warn({ err: e instanceof Error ? e.message : e }, 'charts: unreadable notice batch');
          }
        },
      }),
    );
    void this.refreshAccounts();
    if (opts.auto !== false) {
      const every = opts.sampleMs ?? CHART_LIMITS.sampleMs;
      this.timers.push(setInterval(() => this.sample(), every).unref(), setInterval(() => void this.refreshHalts(), CHART_LIMITS.haltPollMs).unref());
      void this.refreshHalts();
    }
  }

  /** Every account's name, cash and positions from one engine read; notices keep them current after. */
  refreshAccounts(): Promise<void> {
    if (this.dumpPending) return this.dumpPending;
    this.lastDump = Date.now();
    this.dumpPending = (async () => {
      const reply = await this.engine.call({ op: 'dump' });
      if (!reply.ok) {
        // The engine is not up yet: try again (one timer, however long it takes).
        if (!this.closed) {
          clearTimeout(this.retry);
          this.retry = setTimeout(() => void this.refreshAccounts(), 2000).unref();
        }
        return;
      }
      for (const a of reply.result.accounts) {
        const known = this.accounts.get(a.client_id);
        if (known) known.username = a.username;
        else this.accounts.set(a.client_id, { username: a.username, cash: a.cash, positions: a.positions.flat() });
        this.track(a.client_id);
      }
    })().finally(() => (this.dumpPending = null));
    return this.dumpPending;
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

  private track(clientId: number): void {
    if (this.tracked.has(clientId) || this.tracked.size >= CHART_LIMITS.teams) return;
    const a = this.accounts.get(clientId);
    if (a && (a.cash !== 0 || a.positions.length > 0)) this.tracked.add(clientId);
  }

  private onNotices(batch: NoticeBatch): void {
    // Fees of this batch's conversions, per account in order: the cash a conversion took.
    const fees = new Map<number, number[]>();
    for (const c of batch.changes ?? []) {
      let a = this.accounts.get(c.client_id);
      if (!a) {
        a = { username: `#${c.client_id}`, cash: 0, positions: [] };
        this.accounts.set(c.client_id, a);
        // A team registered since the last read: its name once, not per notice.
        if (Date.now() - this.lastDump > 2000) void this.refreshAccounts();
      }
      if ((c.cause === 'create' || c.cause === 'redeem') && c.cash !== undefined) {
        const list = fees.get(c.client_id) ?? [];
        list.push(Math.max(0, a.cash - c.cash));
        fees.set(c.client_id, list);
      }
      if (c.cause === 'fill') this.legsSold(c.client_id, c.deltas);
      a.positions = c.positions;
      if (c.cash !== undefined) a.cash = c.cash;
      this.track(c.client_id);
    }
    for (const o of batch.outcomes ?? []) {
      if (o.status !== 'accepted' || !o.etf || !o.deltas) continue;
      this.score(o.request_id, o.client_id, o.op, o.etf, o.amount, o.deltas, fees.get(o.client_id)?.shift() ?? 0, o.ts);
    }
  }

  /** A conversion's value at the marks of the moment: Σ delta × mid (what it did to P&L at mid), less its fee. */
  private score(requestId: string, clientId: number, op: 'create' | 'redeem', etf: string, amount: number, deltas: FlatPositions, fee: number, ts: number): void {
    let value = 0;
    const unmarked: string[] = [];
    for (let i = 0; i < deltas.length; i += 2) {
      const m = this.marks.mid(deltas[i]!);
      if (m === undefined) unmarked.push(this.tickerOf(deltas[i]!));
      else value += deltas[i + 1]! * m;
    }
    const symbol = this.symbolOf(etf);
    const etfMid = symbol === undefined ? undefined : this.marks.mid(symbol);
    const p = this.prices.get(etf);
    const quoted = op === 'create' ? p?.create_edge : p?.redeem_edge;
    const card: Scorecard = {
      request_id: requestId,
      client_id: clientId,
      op,
      etf,
      amount,
      ts,
      etf_mid: etfMid ?? null,
      edge: unmarked.length ? null : value - fee,
      edge_per_unit: unmarked.length ? null : (value - fee) / amount,
      quoted_edge: quoted === null || quoted === undefined ? null : quoted * amount - fee,
      fee,
      legs_sold: 0,
      ...(unmarked.length ? { unmarked } : {}),
    };
    // The legs: what the conversion gave the team (the ETF for a create, the basket for a redeem) is to be sold on the exchange.
    const left = new Map<number, number>();
    for (let i = 0; i < deltas.length; i += 2) if (deltas[i + 1]! > 0) left.set(deltas[i]!, deltas[i + 1]!);
    const needed = [...left.values()].reduce((a, b) => a + b, 0);
    if (needed > 0) {
      const open = this.openLegs.get(clientId) ?? [];
      open.push({ card, left, needed });
      if (open.length > CHART_LIMITS.openLegs) open.shift();
      this.openLegs.set(clientId, open);
    }
    this.cards.set(requestId, card);
    if (this.cards.size > CHART_LIMITS.scorecards) this.cards.delete(this.cards.keys().next().value!);
  }

  /** A fill's sells count against the oldest conversions that gave the team that symbol. */
  private legsSold(clientId: number, deltas: FlatPositions): void {
    const open = this.openLegs.get(clientId);
    if (!open) return;
    for (let i = 0; i < deltas.length; i += 2) {
      let sold = -deltas[i + 1]!;
      for (const o of open) {
        if (sold <= 0) break;
        const want = o.left.get(deltas[i]!);
        if (!want) continue;
        const take = Math.min(want, sold);
        sold -= take;
        if (want === take) o.left.delete(deltas[i]!);
        else o.left.set(deltas[i]!, want - take);
        o.card.legs_sold = 1 - [...o.left.values()].reduce((a, b) => a + b, 0) / o.needed;
      }
    }
    const still = open.filter((o) => o.left.size > 0);
    if (still.length) this.openLegs.set(clientId, still);
    else this.openLegs.delete(clientId);
  }

  scorecard(requestId: string): Scorecard | undefined {
    return this.cards.get(requestId);
  }

  /** Takes one point of every series now (the timer's job; tests call it to place points). */
  sample(ts = Date.now()): void {
    // Nothing to chart yet (no price, no team active): no empty points before the session starts.
    if (this.prices.size === 0 && this.tracked.size === 0) return;
    const i = this.grid.begin(ts);
    if (i < 0) return;
    for (const [etf, p] of this.prices) {
      this.grid.col(`etf:${etf}`)[i] = mid(p.etf_bid, p.etf_ask);
      this.grid.col(`nav:${etf}`)[i] = p.nav ?? NaN;
      this.grid.col(`premium:${etf}`)[i] = p.premium ?? NaN;
    }
    for (const id of this.tracked) {
      const a = this.accounts.get(id)!;
      let total = a.cash;
      for (let k = 0; k < a.positions.length; k += 2) {
        // Unmarked positions count at nothing, as GET /leaderboard counts them.
        const m = this.marks.mid(a.positions[k]!);
        if (m !== undefined) total += a.positions[k + 1]! * m;
      }
      this.grid.col(`pnl:${id}`)[i] = total;
    }
  }

  /** GET /charts?since=<ms>&team=<username>: points after `since`; one team's P&L or every team's. */
  handle(ex: Exchange, params: Params): void {
    const sinceText = params.since;
    const since = typeof sinceText === 'string' && /^[0-9]{1,16}$/.test(sinceText) ? Number(sinceText) : sinceText === undefined ? 0 : NaN;
    if (Number.isNaN(since)) return ex.error('invalid_parameter', 'since must be a time in ms', { field: 'since' });
    const team = typeof params.team === 'string' ? params.team : undefined;
    const from = this.grid.from(since);
    const g = this.grid;
    const etfs: ChartsBody['etfs'] = {};
    for (const etf of this.prices.keys()) {
      if (!g.has(`etf:${etf}`)) continue;
      etfs[etf] = { etf: g.slice(`etf:${etf}`, from), nav: g.slice(`nav:${etf}`, from), premium: g.slice(`premium:${etf}`, from) };
    }
    let ids = [...this.tracked].filter((id) => g.has(`pnl:${id}`) && (team === undefined || this.accounts.get(id)!.username === team));
    // Every team's lines: the best CHART_LIMITS.listed by P&L now (a chart of more is unreadable, and its answer large).
    if (ids.length > CHART_LIMITS.listed) ids = ids.sort((a, b) => (g.last(`pnl:${b}`) || 0) - (g.last(`pnl:${a}`) || 0)).slice(0, CHART_LIMITS.listed);
    const teams: ChartsBody['teams'] = ids.map((id) => ({ client_id: id, username: this.accounts.get(id)!.username, pnl: g.slice(`pnl:${id}`, from) }));
    const body: ChartsBody = { t: Array.from(g.t.subarray(from, g.n)), step_ms: g.step, etfs, teams, halts: this.halts, ts: Date.now() };
    ex.json(200, body);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.subs) s.unsubscribe();
  }
}
