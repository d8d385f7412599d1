import type { MdMessage } from '../../proto/ndfex.js';
import type { Bbo } from '../../proto/marketdata.js';
import { Books, type Top } from './book.js';
import { SeqTracker, type SeqEvent } from './integrity.js';

export interface MdStats {
  snapshots_applied: number;
  /** Live messages the books refused (unknown order id, bad side). */
  rejected: number;
  /** Live messages held while some symbol waits for its snapshot. */
  buffered: number;
  /** Snapshot-feed datagrams that did not decode (skipped; the next snapshot comes 500 ms later). */
  snapshot_bad_datagrams: number;
  /** Books given up on (crossed, locked, or contradicted by live messages) or never snapshotted: served from live orders alone. */
  books_distrusted: number;
}

type SeqNotice = { seq: number; event: Exclude<SeqEvent, { kind: 'next' | 'first' | 'late' }> };

interface PendingSnapshot {
  symbol: number;
  lastMdSeq: number;
  expected: number;
  timestamp: bigint;
  orders: Array<Extract<MdMessage, { type: 'new_order' }>>;
}

/**
 * Pure market-data core: live and snapshot messages in, changed top-of-book
 * out (at most one Bbo per symbol per datagram).
 *
 * A symbol's book is trusted ("synced") once it was built from the live feed
 * since seq 1 (the bridge saw the session start) or from a snapshot with
 * last_md_seq_num = L plus every live message after L. Until then live
 * messages are held in a buffer (bounded by age) so a snapshot can be caught
 * up. A gap on the live feed makes every book untrusted again; an exchange
 * restart empties every book.
 */
export class MarketData {
  readonly books = new Books();
  readonly tracker = new SeqTracker();
  readonly stats: MdStats = { snapshots_applied: 0, rejected: 0, buffered: 0, snapshot_bad_datagrams: 0, books_distrusted: 0 };
  /**
   * Every order heard on the live feed since joining, whatever the sync state:
   * the book of last resort for a symbol whose snapshot cannot be trusted (the
   * exchange's snapshot service keeps only some symbols, and can be wrong).
   * Makers requote all the time, so it converges on the real book.
   */
  private readonly liveBooks = new Books();
  /** Symbols served from liveBooks. */
  private readonly liveOnly = new Set<number>();
  private firstLiveAt: number | null = null;
  /** Why books were distrusted since the last drain: the service alerts them. */
  private distrustNotes: string[] = [];
  /** Every book starts from an empty one at seq 1: no snapshot needed. */
  private allSynced = false;
  /** symbol → last_md_seq_num of the snapshot it was built from. */
  private readonly syncedAt = new Map<number, number>();
  private buffer: Array<{ msg: MdMessage; at: number }> = [];
  private bufferHead = 0;
  /** Lowest seq from which the buffer holds every live message up to tracker.last. */
  private contiguousFrom = 0;
  private pending: PendingSnapshot | null = null;
  private readonly published = new Map<number, Bbo>();
  /** Symbols changed in the current datagram, with the message that last changed each. */
  private readonly touched = new Map<number, { seq: number; timestamp: bigint }>();

  constructor(private readonly bufferMs = 5000) {}

  /**
   * A confirmed exchange restart: every book is emptied (the new session's
   * orders start from nothing) and the next live message is the session's
   * first. Returns the Bbos that now show empty books.
   */
  restart(): Bbo[] {
    this.newSession({ seq: 0, timestamp: 0n }, null);
    this.tracker.newSession();
    return this.flush();
  }

  /** Empties every book for a new exchange session whose first message is `at` (null: not heard yet). */
  private newSession(at: { seq: number; timestamp: bigint }, nowMs: number | null): void {
    for (const s of this.books.bySymbol.keys()) this.touch(s, at);
    for (const s of this.published.keys()) this.touch(s, at);
    this.books.clearAll();
    this.liveBooks.clearAll();
    this.liveOnly.clear();
    this.firstLiveAt = nowMs;
    this.syncedAt.clear();
    this.allSynced = at.seq === 1;
    this.dropBuffer(at.seq);
  }

  /** Applies one live datagram. Returns the seq problems it showed and the Bbos to publish. */
  onLive(msgs: MdMessage[], nowMs: number): { notices: SeqNotice[]; bbos: Bbo[] } {
    const notices: SeqNotice[] = [];
    for (const m of msgs) {
      const ev = this.tracker.observe(m.seq);
      switch (ev.kind) {
        case 'late':
          continue; // already applied or past its place: applying it now would corrupt the book
        case 'first':
          this.firstLiveAt = nowMs;
          if (m.seq <= 1) this.allSynced = true;
          this.contiguousFrom = m.seq;
          // A book built from a snapshot older than the first live message we hear missed the ones between.
          for (const [symbol, at] of this.syncedAt) if (at < m.seq - 1) this.syncedAt.delete(symbol);
          break;
        case 'restart':
          notices.push({ seq: m.seq, event: ev });
          this.newSession(m, nowMs);
          break;
        case 'gap':
          notices.push({ seq: m.seq, event: ev });
          // Missed messages may have changed any book: trust none until its next snapshot.
          this.allSynced = false;
          this.syncedAt.clear();
          this.dropBuffer(m.seq);
          break;
        case 'next':
          break;
      }
      if (!this.allSynced) {
        this.buffer.push({ msg: m, at: nowMs });
        this.stats.buffered++;
      }
      this.contradicts(m);
      this.applyLive(m);
      this.applyLiveOnly(m);
    }
    this.pruneBuffer(nowMs);
    // A symbol no trustworthy snapshot came for in the buffer's time is served from its live orders.
    if (!this.allSynced && this.firstLiveAt !== null && nowMs - this.firstLiveAt > this.bufferMs) {
      for (const s of this.liveBooks.bySymbol.keys()) {
        if (!this.isSynced(s) && !this.liveOnly.has(s)) this.distrust(s, `no trustworthy snapshot of symbol ${s} within ${this.bufferMs} ms: its book is built from the live orders heard since joining`);
      }
    }
    return { notices, bbos: this.flush() };
  }

  /** Reasons books were distrusted since the last call (for alerts). */
  drainDistrust(): string[] {
    const out = this.distrustNotes;
    this.distrustNotes = [];
    return out;
  }

  /** A live message about an order the live feed placed on a snapshot-built book, which that book does not hold: the snapshot was wrong. */
  private contradicts(m: MdMessage): void {
    if (this.allSynced || (m.type !== 'modify_order' && m.type !== 'delete_order' && m.type !== 'trade')) return;
    const symbol = this.liveBooks.symbolOf(m.order_id);
    if (symbol === undefined || !this.syncedAt.has(symbol) || this.books.symbolOf(m.order_id) !== undefined) return;
    if (m.seq > this.syncedAt.get(symbol)!) this.distrust(symbol, `the snapshot of symbol ${symbol} disagrees with the live feed (order ${m.order_id} is missing from it)`);
  }

  private applyLiveOnly(m: MdMessage): void {
    const symbol = applyToBooks(this.liveBooks, m);
    if (symbol !== undefined && this.liveOnly.has(symbol)) this.touch(symbol, m);
  }

  /** Gives up on a symbol's snapshot-built book: from now on it is served from its live orders. */
  private distrust(symbol: number, why: string): void {
    this.liveOnly.add(symbol);
    this.syncedAt.delete(symbol);
    this.books.clearSymbol(symbol);
    this.stats.books_distrusted++;
    this.distrustNotes.push(why);
    const t = this.touched.get(symbol);
    this.touched.set(symbol, t ?? { seq: this.tracker.last, timestamp: 0n });
  }

  /** A resting book cannot be crossed or locked: one that is was built wrong. */
  private checkCrossed(symbol: number): void {
    if (this.liveOnly.has(symbol)) return;
    const t = this.books.top(symbol);
    if (t.bid === null || t.ask === null || t.bid < t.ask) return;
    const state = t.bid === t.ask ? 'locked' : 'crossed';
    if (this.allSynced) {
      this.distrustNotes.push(`symbol ${symbol}'s book is ${state} (bid ${t.bid}, ask ${t.ask}) although followed from the session's start`);
      return;
    }
    this.distrust(symbol, `symbol ${symbol}'s book is ${state} (bid ${t.bid}, ask ${t.ask}): its snapshot cannot be trusted`);
  }

  /** Applies one snapshot-feed datagram (snapshot_info, then its new orders). */
  onSnapshot(msgs: MdMessage[]): Bbo[] {
    for (const m of msgs) {
      if (m.type === 'snapshot_info') {
        this.pending = {
          symbol: m.symbol,
          lastMdSeq: m.last_md_seq_num,
          expected: m.bid_count + m.ask_count,
          timestamp: m.timestamp,
          orders: [],
        };
      } else if (m.type === 'new_order' && this.pending && m.symbol === this.pending.symbol) {
        this.pending.orders.push(m);
      } else {
        this.pending = null; // out of place: this snapshot cannot be trusted
        continue;
      }
      const p = this.pending;
      if (p && p.orders.length === p.expected) {
        this.pending = null;
        this.trySync(p);
      }
    }
    return this.flush();
  }

  isSynced(symbol: number): boolean {
    return this.allSynced || this.syncedAt.has(symbol);
  }

  private trySync(p: PendingSnapshot): void {
    // A distrusted symbol's snapshots are not taken again: the live feed serves it.
    if (this.isSynced(p.symbol) || this.liveOnly.has(p.symbol)) return;
    // Every live message after the snapshot's point must be in hand (or still to come).
    const last = this.tracker.last;
    if (last !== 0 && p.lastMdSeq < last && this.contiguousFrom > p.lastMdSeq + 1) return;
    this.books.clearSymbol(p.symbol);
    for (const o of p.orders) this.books.add(o.order_id, o.symbol, o.side, o.quantity, o.price);
    this.syncedAt.set(p.symbol, p.lastMdSeq);
    this.stats.snapshots_applied++;
    this.touched.set(p.symbol, { seq: p.lastMdSeq, timestamp: p.timestamp });
    for (let i = this.bufferHead; i < this.buffer.length; i++) {
      const m = this.buffer[i]!.msg;
      if (m.seq > p.lastMdSeq) this.applyLive(m, p.symbol);
    }
  }

  /** Applies a live message to a synced book; with `only`, just to that symbol (a snapshot catch-up). */
  private applyLive(m: MdMessage, only?: number): void {
    let symbol: number | undefined;
    switch (m.type) {
      case 'new_order':
        symbol = m.symbol;
        break;
      case 'modify_order':
      case 'delete_order':
      case 'trade':
        symbol = this.books.symbolOf(m.order_id);
        if (symbol === undefined) {
          // Unknown order: an error only when every book is trusted; otherwise it may belong to an unsynced symbol.
          if (this.allSynced && only === undefined) this.stats.rejected++;
          return;
        }
        break;
      default:
        return; // heartbeats, trade summaries, snapshot info: no book change
    }
    if (only !== undefined && symbol !== only) return;
    if (!this.allSynced) {
      const at = this.syncedAt.get(symbol);
      if (at === undefined || m.seq <= at) return;
    }
    const before = this.books.rejected;
    const changed = applyToBooks(this.books, m);
    this.stats.rejected += this.books.rejected - before;
    if (changed !== undefined) this.touch(changed, m);
  }

  private touch(symbol: number, m: { seq: number; timestamp: bigint }): void {
    this.touched.set(symbol, { seq: m.seq, timestamp: m.timestamp });
  }

  /** The Bbos of touched symbols whose top of book differs from the last one published. */
  private flush(): Bbo[] {
    const out: Bbo[] = [];
    for (const symbol of this.touched.keys()) this.checkCrossed(symbol);
    for (const [symbol, at] of this.touched) {
      const top = this.liveOnly.has(symbol) ? this.liveBooks.top(symbol) : this.books.top(symbol);
      const prev = this.published.get(symbol);
      if (prev && sameTop(prev, top)) continue;
      if (!prev && top.bid === null && top.ask === null) continue;
      const bbo: Bbo = { symbol, ...top, ts: Number(at.timestamp), md_seq: at.seq };
      this.published.set(symbol, bbo);
      out.push(bbo);
    }
    this.touched.clear();
    return out;
  }

  private dropBuffer(fromSeq: number): void {
    this.buffer = [];
    this.bufferHead = 0;
    this.contiguousFrom = fromSeq;
  }

  private pruneBuffer(nowMs: number): void {
    if (this.allSynced) {
      if (this.buffer.length > 0) this.dropBuffer(this.tracker.last + 1);
      return;
    }
    const horizon = nowMs - this.bufferMs;
    let h = this.bufferHead;
    while (h < this.buffer.length && this.buffer[h]!.at < horizon) h++;
    if (h === this.bufferHead) return;
    this.bufferHead = h;
    const first = this.buffer[h];
    this.contiguousFrom = first ? first.msg.seq : this.tracker.last + 1;
    if (h > 4096 && h * 2 > this.buffer.length) {
      this.buffer = this.buffer.slice(h);
      this.bufferHead = 0;
    }
  }
}

/** Applies a book-changing live message; the symbol whose book changed, or undefined (refused, or no book change). */
function applyToBooks(books: Books, m: MdMessage): number | undefined {
  switch (m.type) {
    case 'new_order':
      return books.add(m.order_id, m.symbol, m.side, m.quantity, m.price);
    case 'modify_order':
      return books.modify(m.order_id, m.side, m.quantity, m.price);
    case 'delete_order':
      return books.remove(m.order_id);
    case 'trade':
      return books.trade(m.order_id, m.quantity);
    default:
      return undefined;
  }
}

const sameTop = (a: Top, b: Top) => a.bid === b.bid && a.bid_qty === b.bid_qty && a.ask === b.ask && a.ask_qty === b.ask_qty;
