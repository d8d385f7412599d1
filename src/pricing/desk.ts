import { errors, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { decodeAs, decodeIf, decodeRecordsAs, encode } from '../../proto/codec.js';
import type { FlatPositions, TickerOf } from '../../proto/engine.js';
import { noticeBatchShape, type NoticeBatch } from '../../proto/holdings.js';
import { etfPriceShape, PRICE_SUBJECT_WILDCARD, type EtfPrice } from '../../proto/marketdata.js';
import { DESK_SAMPLE_PREFIX, DESK_STREAM, NOTICES_SUBJECT_WILDCARD, deskCardSubject, deskSampleSubject } from '../../proto/subjects.js';
import { DESK_SAMPLE_VERSION, deskSampleShape, type DeskSample } from '../../proto/desk.js';
import { CHART_LIMITS, type Scorecard } from '../../proto/http.js';
import type { Instruments } from '../config/baskets.js';
import { EngineClient } from '../shared/engine-client.js';
import { Marks } from '../shared/marks.js';
import { SeriesGrid } from '../shared/desk-history.js';
import { ensureDeskStream } from '../shared/streams.js';
import { readStream } from '../shared/stream-reader.js';
import { describeError } from '../shared/js-errors.js';
import type { Logger } from '../shared/log.js';

interface Account {
  username: string;
  cash: number;
  positions: FlatPositions;
}

const mid = (bid: number | null, ask: number | null): number | null => (bid !== null && ask !== null ? (bid + ask) / 2 : null);

/** How long a changed scorecard waits to be written with the others changed meanwhile. */
const CARD_FLUSH_MS = 100;
/** How long a card the stream did not store waits to be written again. */
const CARD_RETRY_MS = 1000;

export interface DeskStats {
  samples: number;
  /** Scorecard writes (a card written again as its legs are sold counts again). */
  cards: number;
  writeErrors: number;
}

/**
 * The desk's one writer (proto/desk.ts): chart samples and conversion
 * scorecards into DESK_STREAM, derived from published state only: ETF prices
 * (`etf.price.*`), every account's cash and positions (the engine's notices,
 * seeded by one admin dump), marked at the books' mids (Marks). It writes no
 * team state: the engine alone owns positions.
 *
 * The pricing service runs it: one per system (gateways are many, the engine
 * must not wait on market data), and it already follows the books and
 * publishes what is derived from them. A sample is written only when the
 * chart grid takes a point (its step doubles as it fills), so the stream
 * stays a few thousand samples a day; at start the grid is rebuilt from the
 * stream, so a restarted writer goes on at the step it had.
 *
 * Not recovered across a restart of this writer: which conversions' legs are
 * still unsold (their cards keep the legs_sold they had), and fills made
 * while it was down.
 */
export class DeskRecorder {
  private readonly grid: SeriesGrid;
  private readonly accounts = new Map<number, Account>();
  /** Teams with a P&L series (activity seen), capped at CHART_LIMITS.teams. */
  private readonly tracked = new Set<number>();
  private readonly prices = new Map<string, EtfPrice>();
  /** Per account, its conversions whose received units are not all sold yet, oldest first: what later sells are matched to. */
  private readonly openLegs = new Map<number, { card: Scorecard; left: Map<number, number>; needed: number }[]>();
  private readonly subs: Subscription[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly js: JetStreamClient;
  private readonly dirty = new Set<Scorecard>();
  private flushTimer: NodeJS.Timeout | undefined;
  private dumpPending: Promise<void> | null = null;
  private retry: NodeJS.Timeout | undefined;
  private lastDump = 0;
  private closed = false;
  readonly stats: DeskStats = { samples: 0, cards: 0, writeErrors: 0 };
  /** The first failed write since the last stored one; null while writes are stored. */
  private failingSince: number | null = null;
  private lastError: { error: string; ts: number } | null = null;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly engine: EngineClient,
    private readonly marks: Marks,
    private readonly instruments: Pick<Instruments, 'tickerOf' | 'baskets'>,
    private readonly log: Logger,
    private readonly sampleMs: number,
  ) {
    this.grid = new SeriesGrid(CHART_LIMITS.points, sampleMs);
    this.js = jetstream(nc);
  }

  /** Opens the stream, takes up the grid where the stream left it, then samples every `sampleMs` (`auto: false`: tests call sample()). */
  static async start(nc: NatsConnection, instruments: Pick<Instruments, 'tickerOf' | 'baskets'>, log: Logger, opts: { sampleMs?: number; shards?: number; auto?: boolean; replicas?: number } = {}): Promise<DeskRecorder> {
    await ensureDeskStream(nc, opts.replicas);
    const engine = new EngineClient(nc, 5000, { admin: true, shards: opts.shards ?? 1, log });
    const desk = new DeskRecorder(nc, engine, new Marks(nc, log), instruments, log, opts.sampleMs ?? CHART_LIMITS.sampleMs);
    await desk.restore();
    desk.listen();
    if (opts.auto !== false) desk.timers.push(setInterval(() => desk.sample(), desk.sampleMs).unref());
    return desk;
  }

  /** The grid's times as written: the same points taken again thin the same way, so the step goes on from where it was. */
  private async restore(): Promise<void> {
    let restored = 0;
    const reader = await readStream(
      this.nc,
      DESK_STREAM,
      1,
      (m) => {
        if (!m.subject.startsWith(DESK_SAMPLE_PREFIX)) return;
        const s = decodeIf(m.data, deskSampleShape);
        if (s && this.grid.begin(s.ts) >= 0) restored++;
      },
      { follow: false, log: this.log },
    );
    await reader.caughtUp;
    if (restored) this.log.info({ restored, step_ms: this.grid.step }, 'desk: chart history taken up from the stream');
  }

  private listen(): void {
    this.subs.push(
      this.nc.subscribe(PRICE_SUBJECT_WILDCARD, {
        callback: (err, m) => {
          if (err) return;
          try {
            const p = decodeAs(m.data, etfPriceShape);
            this.prices.set(p.etf, p);
          } catch {
            // A bad payload is the pricing actor's to report; the chart keeps the last good one.
          }
        },
      }),
      this.nc.subscribe(NOTICES_SUBJECT_WILDCARD, {
        callback: (err, m) => {
          if (err) return;
          try {
            this.onNotices(decodeRecordsAs(m.data, noticeBatchShape));
          } catch (e) {
            this.log.warn({ err: e instanceof Error ? e.message : e }, 'desk: unreadable notice batch');
          }
        },
      }),
    );
    void this.refreshAccounts();
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

  private track(clientId: number): void {
    if (this.tracked.has(clientId) || this.tracked.size >= CHART_LIMITS.teams) return;
    const a = this.accounts.get(clientId);
    if (a && (a.cash !== 0 || a.positions.length > 0)) this.tracked.add(clientId);
  }

  private onNotices(batch: NoticeBatch): void {
    // An outcome carries its fee from notice batches version 3. An older engine's: the cash each conversion took, per
    // account in order, from the change beside it (wrong for an account not read yet, taken to start from cash 0).
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
      // What its conversions gave the team went with the reset: a later sell is of what it got since, not their legs.
      if (c.cause === 'session_reset') this.openLegs.delete(c.client_id);
      a.positions = c.positions;
      if (c.cash !== undefined) a.cash = c.cash;
      this.track(c.client_id);
    }
    for (const o of batch.outcomes ?? []) {
      if (o.status !== 'accepted' || !o.etf || !o.deltas) continue;
      const inferred = fees.get(o.client_id)?.shift() ?? 0;
      this.score(o.request_id, o.client_id, o.op, o.etf, o.amount, o.deltas, o.fee ?? inferred, o.ts);
    }
  }

  /** A conversion's value at the marks of the moment: Σ delta × mid (what it did to P&L at mid), less its fee; a leg without a two-sided market now is unmarked, not valued at its last mid. */
  private score(requestId: string, clientId: number, op: 'create' | 'redeem', etf: string, amount: number, deltas: FlatPositions, fee: number, ts: number): void {
    let value = 0;
    const unmarked: string[] = [];
    for (let i = 0; i < deltas.length; i += 2) {
      const m = this.marks.liveMid(deltas[i]!);
      if (m === undefined) unmarked.push(this.instruments.tickerOf(deltas[i]!));
      else value += deltas[i + 1]! * m;
    }
    const symbol = this.instruments.baskets.get(etf)?.symbol;
    const etfMid = symbol === undefined ? undefined : this.marks.liveMid(symbol);
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
    this.writeCard(card);
  }

  /** A fill's sells count against the oldest conversions that gave the team that symbol; each card that moved is written again. */
  private legsSold(clientId: number, deltas: FlatPositions): void {
    const open = this.openLegs.get(clientId);
    if (!open) return;
    const moved = new Set<Scorecard>();
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
        moved.add(o.card);
      }
    }
    for (const card of moved) this.writeCard(card);
    const still = open.filter((o) => o.left.size > 0);
    if (still.length) this.openLegs.set(clientId, still);
    else this.openLegs.delete(clientId);
  }

  /**
   * Cards changed since the last write go out together every CARD_FLUSH_MS: a
   * card scored and then sold in several fills within it is written once
   * (under a benchmark's thousands of conversions a second, the stream takes
   * one write per card, not one per change). Published in order on one
   * connection: the stream keeps each card's newest.
   */
  private writeCard(card: Scorecard, delayMs = CARD_FLUSH_MS): void {
    // Retries stop with the writer, and are bounded while the stream stays away.
    if (delayMs === CARD_RETRY_MS && (this.closed || this.dirty.size >= CHART_LIMITS.scorecards)) return;
    this.dirty.add(card);
    this.flushTimer ??= setTimeout(() => this.flushCards(), delayMs);
  }

  private flushCards(): void {
    this.flushTimer = undefined;
    for (const card of this.dirty) {
      this.stats.cards++;
      // A card not stored (JetStream electing a leader, say) is written again a second later, as it then stands: a grade depends on it.
      void this.write(deskCardSubject(card.client_id, card.request_id), encode(card)).then((ok) => ok || this.writeCard(card, CARD_RETRY_MS));
    }
    this.dirty.clear();
  }

  /**
   * While writes fail and none has been stored since: the first of those
   * failures and what the stream last said (a sample lost is a gap, a card is
   * retried: only a failure that lasts is worth an operator's look).
   */
  failing(): { since: number; error: string } | null {
    return this.failingSince === null || !this.lastError ? null : { since: this.failingSince, error: this.lastError.error };
  }

  /** The newest failed write, kept after writes succeed again. */
  lastFailure(): { error: string; ts: number } | null {
    return this.lastError;
  }

  /** Whether the stream stored it. */
  private write(subject: string, data: Uint8Array): Promise<boolean> {
    return this.js.publish(subject, data).then(
      () => {
        this.failingSince = null;
        return true;
      },
      (err: unknown) => {
        const error = describeError(err);
        this.failingSince ??= Date.now();
        this.lastError = { error, ts: Date.now() };
        if (this.stats.writeErrors++ % 100 === 0) this.log.warn({ subject, err: error, errors: this.stats.writeErrors }, 'desk: a write to the stream failed');
        return false;
      },
    );
  }

  /** Takes one point of every series now when the grid is due one (the timer's job; tests call it to place points). */
  sample(ts = Date.now()): void {
    // Nothing to chart yet (no price, no team active): no empty points before the session starts.
    if (this.closed || (this.prices.size === 0 && this.tracked.size === 0)) return;
    if (this.grid.begin(ts) < 0) return;
    const etfs: DeskSample['etfs'] = {};
    for (const [etf, p] of this.prices) etfs[etf] = [mid(p.etf_bid, p.etf_ask), p.nav ?? null, p.premium ?? null];
    const teams: DeskSample['teams'] = [];
    for (const id of this.tracked) {
      const a = this.accounts.get(id)!;
      let total = a.cash;
      for (let k = 0; k < a.positions.length; k += 2) {
        // Unmarked positions count at nothing, as GET /leaderboard counts them.
        const m = this.marks.mid(a.positions[k]!);
        if (m !== undefined) total += a.positions[k + 1]! * m;
      }
      teams.push([id, a.username, total]);
    }
    const sample: DeskSample = { v: DESK_SAMPLE_VERSION, ts, step: this.grid.step, etfs, teams };
    this.stats.samples++;
    void this.write(deskSampleSubject(ts), encode(sample));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retry);
    for (const t of this.timers) clearInterval(t);
    for (const s of this.subs) s.unsubscribe();
    this.marks.close();
    this.engine.close();
    clearTimeout(this.flushTimer);
    this.flushCards();
    // What was written is flushed before the connection goes; a connection already closed or draining has nothing left to flush.
    await this.nc.flush().catch((err: unknown) => {
      if (!(err instanceof errors.ClosedConnectionError) && !(err instanceof errors.DrainingConnectionError)) this.log.warn({ err: describeError(err) }, 'desk: flush at close failed');
    });
  }
}
