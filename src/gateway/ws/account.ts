import type { PnlBody } from '../../../proto/http.js';
import type { HoldingsView, LastReset, Position } from '../../../proto/engine.js';
import type { HoldingsChange } from '../../../proto/holdings.js';
import { deltaMessage } from '../../../proto/ws.js';
import { SharedFrame } from './protocol.js';
import { SeqRing } from './ring.js';

/** What a connection of the account hears from its feed. */
export interface FeedListener {
  /** The feed holds a fresh engine snapshot (`resync`: not the first one). */
  feedLive(resync: boolean): void;
  onChange(seq: number, frame: SharedFrame): void;
  /** A request outcome, once every change received before it is in what the connection was sent. */
  deliverOutcome(frame: SharedFrame): void;
  /** An outcome held while re-snapshotting was dropped (more held than the feed keeps). */
  outcomeDropped(): void;
}

export type Offer = 'ok' | 'gap';

/**
 * One account's view in the gateway: its positions at `seq`, built from an
 * engine snapshot plus the changes after it, and the ring of recent changes
 * for resume. Synchronous: the hub does the I/O.
 *
 * Joining is race-free because the hub subscribes before it asks for the
 * snapshot: changes that arrive while the snapshot is on its way are held in
 * `pending`, and the ones the snapshot already contains (seq <= its seq) are
 * dropped when it lands.
 */
export class AccountFeed<L extends FeedListener = FeedListener> {
  seq = 0;
  positions: Position[] = [];
  cash = 0;
  /** The last exchange reset, from the engine's snapshot and then the session_reset changes. */
  lastReset: LastReset | null = null;
  live = false;
  readonly ring: SeqRing<SharedFrame>;
  readonly sessions = new Set<L>();
  /** When the last connection left; 0 while one is connected. */
  idleSince = 0;
  /** Which snapshot request is current: a reply to an older one is ignored. */
  joinId = 0;
  private pending: HoldingsChange[] = [];
  /**
   * Outcomes that arrived while not live. The engine publishes an outcome after its change (a batch's changes
   * come before its outcomes), so each goes out after the snapshot that includes every change held before it;
   * kept across another startJoin (a gap at the snapshot), since the next snapshot includes their changes too.
   */
  private heldOutcomes: SharedFrame[] = [];
  private snapshots = 0;

  constructor(
    readonly clientId: number,
    ringSize: number,
    /** Changes held while joining; beyond that the oldest go and the gap check forces another snapshot. */
    private readonly maxPending = ringSize * 4,
    /** P&L at the current marks, for the frames (none: no P&L on the stream). */
    readonly pnlOf?: (cash: number, positions: Position[]) => PnlBody,
  ) {
    this.ring = new SeqRing(ringSize);
  }

  /** Asks for a (new) snapshot: changes are held until it lands. */
  startJoin(): void {
    this.live = false;
    this.pending = [];
  }

  /** A change from NATS. 'gap' means one was missed: the hub must take a new snapshot. */
  offer(c: HoldingsChange): Offer {
    if (!this.live) {
      if (this.pending.length >= this.maxPending) this.pending.shift();
      this.pending.push(c);
      return 'ok';
    }
    const frame = this.apply(c);
    if (frame === 'gap') return 'gap';
    if (frame) for (const s of this.sessions) s.onChange(c.seq, frame);
    return 'ok';
  }

  /** A request outcome from NATS: out now when live, else after the snapshot (an outcome before its change would lie). */
  outcome(frame: SharedFrame): void {
    if (this.live) {
      for (const s of this.sessions) s.deliverOutcome(frame);
      return;
    }
    if (this.heldOutcomes.length >= this.maxPending) {
      this.heldOutcomes.shift();
      for (const s of this.sessions) s.outcomeDropped();
    }
    this.heldOutcomes.push(frame);
  }

  /** The engine's snapshot landed: adopt it, apply the changes held meanwhile, then tell the connections. */
  snapshot(view: HoldingsView): Offer {
    this.seq = view.seq;
    this.positions = view.positions;
    this.cash = view.cash;
    this.lastReset = view.last_reset ?? null;
    this.ring.clear();
    const pending = this.pending;
    this.pending = [];
    for (const c of pending) if (this.apply(c) === 'gap') return 'gap';
    this.live = true;
    const resync = this.snapshots++ > 0;
    for (const s of this.sessions) s.feedLive(resync);
    const outcomes = this.heldOutcomes;
    this.heldOutcomes = [];
    for (const f of outcomes) for (const s of this.sessions) s.deliverOutcome(f);
    return 'ok';
  }

  private apply(c: HoldingsChange): SharedFrame | null | 'gap' {
    if (c.seq <= this.seq) return null; // already in the snapshot, or a duplicate
    if (c.seq !== this.seq + 1) return 'gap';
    this.seq = c.seq;
    this.positions = c.positions;
    this.cash = c.cash ?? 0;
    if (c.last_reset) this.lastReset = c.last_reset;
    const frame = new SharedFrame(deltaMessage(c, this.pnlOf?.(this.cash, c.positions)));
    this.ring.push(c.seq, frame);
    return frame;
  }
}
