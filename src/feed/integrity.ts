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

/** In-order messages a run needs before it is believed: a restart, or the feed resuming below a bogus jump. */
export const CONFIRM_RUN = 3;
/** A run starting at or below this seq is a new exchange session (which starts at 0 or 1); above, the feed resumed. */
export const NEW_SESSION_MAX_START = 1000;

export type GuardOutcome<M> =
  /** Belongs to the run being followed (in order, a gap, or a duplicate within the reorder window). */
  | { kind: 'pass'; msg: M }
  /** Went back in seq: held until its run is confirmed or disproved. */
  | { kind: 'held' }
  /** A held run is confirmed: a new exchange session (`restart`) or the feed resuming lower; its messages, in order. */
  | { kind: 'confirmed'; restart: boolean; from: number; msgs: M[] }
  /** A held run was disproved (the followed run went on, or another run replaced it): its messages are dropped. */
  | { kind: 'stray'; msgs: M[]; from: number };

/**
 * Decides which seq_num run of one feed to believe, so that one datagram (a
 * stray or a forged one) cannot fake an exchange restart. A message that goes
 * back in seq starts a candidate run, held aside; CONFIRM_RUN consecutive
 * messages of that run from the same sender confirm it, while the followed
 * run going on for CONFIRM_RUN more messages disproves it. Pure: the feed
 * decides what a confirmation means (and may confirm early: market data
 * proving the restart).
 */
export class RunGuard<M> {
  private last = 0;
  private candidate: { sender: string; from: number; last: number; msgs: M[] } | null = null;
  private followedSinceCandidate = 0;

  constructor(
    /** A new session's first seq: 1 on the clearing feed, 0 on market data. */
    private readonly startSeq: number,
    private readonly reorderWindow = 64,
  ) {}

  get pending(): number {
    return this.candidate?.msgs.length ?? 0;
  }

  /** The next message starts a run of its own (the exchange is known to have restarted). */
  expectNewRun(): void {
    this.last = 0;
  }

  observe(seq: number, sender: string, msg: M): GuardOutcome<M>[] {
    const last = this.last;
    const c = this.candidate;
    // The held run goes on (checked first: a new session's low seqs can overlap a short old one's).
    if (c && c.sender === sender && seq === c.last + 1 && seq <= last + 1) {
      c.last = seq;
      c.msgs.push(msg);
      return c.msgs.length >= CONFIRM_RUN ? [this.confirm()!] : [{ kind: 'held' }];
    }
    const backwards = last !== 0 && ((seq <= this.startSeq && last > seq) || last - seq > this.reorderWindow);
    if (!backwards) {
      const out: GuardOutcome<M>[] = [];
      if (seq > last) {
        this.last = seq;
        if (this.candidate && ++this.followedSinceCandidate >= CONFIRM_RUN) out.push(this.dropCandidate());
      }
      out.push({ kind: 'pass', msg });
      return out;
    }
    if (c && c.sender === sender && seq >= c.from && seq <= c.last) return [{ kind: 'held' }]; // a duplicate inside the candidate
    const out: GuardOutcome<M>[] = c ? [this.dropCandidate()] : [];
    this.candidate = { sender, from: seq, last: seq, msgs: [msg] };
    this.followedSinceCandidate = 0;
    out.push({ kind: 'held' });
    return out;
  }

  /** Confirms the held run now (another feed proved the restart); null when none is held. */
  confirm(): Extract<GuardOutcome<M>, { kind: 'confirmed' }> | null {
    const c = this.candidate;
    if (!c) return null;
    this.candidate = null;
    this.last = c.last;
    return { kind: 'confirmed', restart: c.from <= NEW_SESSION_MAX_START, from: c.from, msgs: c.msgs };
  }

  private dropCandidate(): Extract<GuardOutcome<M>, { kind: 'stray' }> {
    const c = this.candidate!;
    this.candidate = null;
    return { kind: 'stray', msgs: c.msgs, from: c.from };
  }
}
