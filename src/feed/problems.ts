import type { FeedProblem } from '../../proto/feed.js';
import type { FeedAlert } from '../../proto/marketdata.js';

/** At most this many problems are kept: every kind but pending verdicts is aggregated, so this is only a guard. */
const MAX_PROBLEMS = 64;

/**
 * The bridge's standing problems (proto/feed.ts FeedProblem): raised by the
 * feeds, cleared by the operator's acknowledgement or, for a pending verdict,
 * by its decision. Pure; `changed` tells the caller to persist and publish.
 */
export class ProblemBook {
  private readonly byId = new Map<string, FeedProblem>();
  changed = false;
  /** Told when a problem is raised, resolved or acknowledged (not when a detail is rewritten): its keeper saves soon, not at the next tick. */
  onEvent: () => void = () => {};

  constructor(saved: FeedProblem[] = []) {
    for (const p of saved) {
      // A pending verdict of an earlier bridge process. Held fills it kept come back with it (SessionVerdict.restore raises it
      // again); market data it held is gone, so until then it is only a record.
      const stale = p.kind === 'verdict_pending';
      this.byId.set(p.id, stale ? { ...p, actions: ['ack'], detail: `${p.detail} (the bridge restarted before a decision: no held fill of it was kept; the market data it held is gone)` } : p);
    }
  }

  /** Adds a problem, or counts one more event of the same id (newest detail wins). */
  raise(p: Omit<FeedProblem, 'since' | 'ts' | 'count'> & { count?: number }, now: number): void {
    const cur = this.byId.get(p.id);
    const add = p.count ?? 1;
    if (cur) this.byId.set(p.id, { ...cur, ...p, count: cur.count + add, ts: now });
    else this.add({ ...p, count: add, since: now, ts: now });
    this.changed = true;
    this.onEvent();
  }

  /** A problem another process raised (the standby's, src/feed/problem-store.ts), counted in with one of its id: its events, its times. */
  merge(p: FeedProblem): void {
    const cur = this.byId.get(p.id);
    if (cur) this.byId.set(p.id, { ...(p.ts >= cur.ts ? { ...cur, ...p } : cur), count: cur.count + p.count, since: Math.min(cur.since, p.since), ts: Math.max(cur.ts, p.ts) });
    else this.add(p);
    this.changed = true;
    this.onEvent();
  }

  private add(p: FeedProblem): void {
    if (this.byId.size >= MAX_PROBLEMS) {
      const oldest = [...this.byId.values()].filter((x) => x.kind !== 'verdict_pending').sort((a, b) => a.ts - b.ts)[0];
      if (oldest) this.byId.delete(oldest.id);
    }
    this.byId.set(p.id, p);
  }

  /** Rewrites a problem's detail (a pending verdict's evidence grows) without counting an event. */
  describe(id: string, detail: string): void {
    const cur = this.byId.get(id);
    if (!cur || cur.detail === detail) return;
    this.byId.set(id, { ...cur, detail });
    this.changed = true;
  }

  /** A problem's figures corrected (fills of a gap found stored after all): saved soon, as an event is. */
  update(id: string, change: Pick<FeedProblem, 'detail'> & Partial<Pick<FeedProblem, 'missed'>>): void {
    const cur = this.byId.get(id);
    if (!cur) return;
    this.byId.set(id, { ...cur, ...change });
    this.changed = true;
    this.onEvent();
  }

  resolve(id: string): void {
    if (!this.byId.delete(id)) return;
    this.changed = true;
    this.onEvent();
  }

  get(id: string): FeedProblem | undefined {
    return this.byId.get(id);
  }

  /** Acknowledges one problem, or every acknowledgeable one ('all'); returns the ids cleared. */
  ack(id: string): string[] {
    const ids = id === 'all' ? [...this.byId.values()].filter((p) => p.actions.includes('ack')).map((p) => p.id) : this.byId.get(id)?.actions.includes('ack') ? [id] : [];
    for (const i of ids) this.byId.delete(i);
    if (ids.length) {
      this.changed = true;
      this.onEvent();
    }
    return ids;
  }

  list(): FeedProblem[] {
    return [...this.byId.values()].sort((a, b) => a.since - b.since);
  }
}

/** Fills lost for good on the clearing feed: a standing problem until the operator acknowledges it. */
export class ClearingLossProblems {
  constructor(private readonly book: ProblemBook) {}

  /** A clearing alert; `session` is the exchange session it happened in. */
  onAlert(a: Omit<FeedAlert, 'ts' | 'feed'>, session: number, now: number): void {
    if (a.kind === 'gap') {
      // Counted on the problem itself, so a restarted bridge goes on from the figure it shows (one saved without it: from 0).
      const missed = (this.book.get(GAP_PROBLEM)?.missed ?? 0) + (a.received ?? 0) - (a.expected ?? 0);
      this.book.raise({ id: GAP_PROBLEM, kind: 'gap', feed: 'clearing', detail: gapDetail(missed, `latest gap: expected seq ${a.expected}, received ${a.received}`), actions: ['ack'], missed }, now);
    } else if (a.kind === 'late_join') {
      this.book.raise({ id: `late-join-${session}`, kind: 'late_join', feed: 'clearing', detail: `${a.detail}; positions may be incomplete`, actions: ['ack'] }, now);
    }
  }

  /**
   * `n` fills counted missed that another bridge stored after all (src/feed/gap-cover.ts): no longer
   * counted; none left, the problem goes. One saved without a figure (older bridges) stays as it is.
   */
  covered(n: number): void {
    const p = this.book.get(GAP_PROBLEM);
    if (p?.missed === undefined || n <= 0) return;
    const missed = Math.max(0, p.missed - n);
    if (missed === 0) return this.book.resolve(GAP_PROBLEM);
    this.book.update(GAP_PROBLEM, { missed, detail: gapDetail(missed, `${n} more were stored by another bridge`) });
  }
}

const GAP_PROBLEM = 'gap-clearing';
const gapDetail = (missed: number, latest: string) => `clearing fills missed for good: ${missed} (${latest}); positions may be incomplete`;
