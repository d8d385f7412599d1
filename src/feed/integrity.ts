import type { FeedCounters } from '../../proto/marketdata.js';

/** What one seq_num means relative to the ones before it. */
export type SeqEvent =
  /** The first message this tracker sees (and it has no saved position). */
  | { kind: 'first' }
  | { kind: 'next' }
  | { kind: 'gap'; expected: number; received: number; missed: number }
  /** At or below the last seq, within the reorder window: a duplicate or a reordered datagram. */
  | { kind: 'late' }
  /** The exchange restarted: seq went back to 1, or back further than any reordering explains. */
  | { kind: 'restart'; previous: number };

export const emptyCounters = (): FeedCounters => ({
  datagrams: 0,
  messages: 0,
  gaps: 0,
  missed_messages: 0,
  bad_datagrams: 0,
  restarts: 0,
  last_seq: 0,
});

/**
 * Pure seq_num bookkeeping of one feed (every message carries seq +1). The
 * exchange has no retransmission, so a gap is final: it is counted and
 * reported, never waited for. Going back by at most `reorderWindow` is taken
 * as a duplicate (a re-sent datagram), further back (or to 1) as a restart.
 */
export class SeqTracker {
  readonly counters = emptyCounters();

  constructor(
    lastSeq = 0,
    private readonly reorderWindow = 64,
  ) {
    this.counters.last_seq = lastSeq;
  }

  get last(): number {
    return this.counters.last_seq;
  }

  /** A confirmed exchange restart: the next message is the new session's first. */
  newSession(): void {
    this.counters.restarts++;
    this.counters.last_seq = 0;
  }

  /** Follows the feed again from `seq` (it resumed below a seq that had run ahead). */
  reanchor(seq: number): void {
    this.counters.last_seq = seq;
  }

  observe(seq: number): SeqEvent {
    const c = this.counters;
    c.messages++;
    const last = c.last_seq;
    if (last === 0) {
      c.last_seq = seq;
      return { kind: 'first' };
    }
    if (seq === last + 1) {
      c.last_seq = seq;
      return { kind: 'next' };
    }
    if (seq > last) {
      const missed = seq - last - 1;
      c.gaps++;
      c.missed_messages += missed;
      c.last_seq = seq;
      return { kind: 'gap', expected: last + 1, received: seq, missed };
    }
    if ((seq === 1 && last > 1) || last - seq > this.reorderWindow) {
      c.restarts++;
      c.last_seq = seq;
      return { kind: 'restart', previous: last };
    }
    return { kind: 'late' };
  }
}
