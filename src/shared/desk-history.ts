import { decodeIf } from '../../proto/codec.js';
import { DESK_CARD_PREFIX, DESK_SAMPLE_PREFIX } from '../../proto/subjects.js';
import { deskSampleShape, scorecardShape, type DeskSample } from '../../proto/desk.js';
import { CHART_LIMITS, type Scorecard } from '../../proto/http.js';

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
 * The desk's history as DESK_STREAM holds it (proto/desk.ts), rebuilt by
 * whoever reads the stream: every gateway for GET /charts and the scorecards
 * of /history, and the audit export. Samples go onto a grid of the chart's
 * size whose own step is 0: the writer already spaced them, and a grid fed
 * the writer's points in order thins exactly as the writer's did.
 * Bounded: CHART_LIMITS.points per series, CHART_LIMITS.scorecards cards.
 */
export class DeskHistory {
  readonly grid = new SeriesGrid(CHART_LIMITS.points, 0);
  /** Every team seen in a sample: its username. */
  readonly names = new Map<number, string>();
  readonly etfs = new Set<string>();
  /** The writer's step at the newest point (ms). */
  step: number = CHART_LIMITS.sampleMs;
  /** The newest sample read (the export's P&L is at its marks). */
  last: DeskSample | null = null;
  private readonly cards = new Map<string, Scorecard>();

  /** `cardLimit`: how many scorecards to keep (the newest); the export keeps every one. */
  constructor(private readonly cardLimit: number = CHART_LIMITS.scorecards) {}

  /** One message of the stream; anything it does not know (a newer version) is left out, not fatal. */
  apply(subject: string, data: Uint8Array): void {
    if (subject.startsWith(DESK_SAMPLE_PREFIX)) {
      const s = decodeIf(data, deskSampleShape);
      if (s) this.addSample(s);
    } else if (subject.startsWith(DESK_CARD_PREFIX)) {
      const c = decodeIf(data, scorecardShape);
      if (c) this.addCard(c);
    }
  }

  addSample(s: DeskSample): void {
    const i = this.grid.begin(s.ts);
    if (i < 0) return;
    this.last = s;
    this.step = s.step;
    for (const [etf, [m, nav, premium]] of Object.entries(s.etfs)) {
      this.etfs.add(etf);
      this.grid.col(`etf:${etf}`)[i] = m ?? NaN;
      this.grid.col(`nav:${etf}`)[i] = nav ?? NaN;
      this.grid.col(`premium:${etf}`)[i] = premium ?? NaN;
    }
    for (const [id, username, pnl] of s.teams) {
      this.names.set(id, username);
      this.grid.col(`pnl:${id}`)[i] = pnl;
    }
  }

  /** A card, new or rewritten (its legs sold since); the oldest goes past the limit. */
  addCard(c: Scorecard): void {
    const key = cardKey(c.client_id, c.request_id);
    if (!this.cards.has(key) && this.cards.size >= this.cardLimit) this.cards.delete(this.cards.keys().next().value!);
    this.cards.set(key, c);
  }

  scorecard(clientId: number, requestId: string): Scorecard | undefined {
    return this.cards.get(cardKey(clientId, requestId));
  }

  scorecards(): IterableIterator<Scorecard> {
    return this.cards.values();
  }
}

const cardKey = (clientId: number, requestId: string): string => `${clientId}/${requestId}`;
