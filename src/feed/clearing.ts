import { decodeClearingDatagram, type ClearingMessage } from '../../proto/ndfex.js';
import { clearingFill, fillProblem } from '../../proto/fill.js';
import type { FeedAlert } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import { SeqTracker } from './integrity.js';
import type { FillPublisher } from './publisher.js';

export type RestartPolicy = 'reset' | 'keep';

export interface ClearingDeps {
  publisher: Pick<FillPublisher, 'enqueueFill' | 'enqueueBarrier'>;
  /** Begins the next exchange session and publishes its SessionMarker; runs as a publisher barrier. */
  beginSession(detail: string, seq: number): Promise<void>;
  alert(a: Omit<FeedAlert, 'ts' | 'feed'>): void;
  /** Where each decoded message goes first: the session verdict (src/feed/verdict.ts) decides whether it is applied. */
  route(m: ClearingMessage, sender: string): void;
  log: Logger;
}

/**
 * The clearing feed: decodes every fill of every datagram and hands each
 * message to the session verdict (deps.route); what it accepts comes back to
 * accept(), which tracks seq_num (gaps, late joins) and hands fills to the
 * publisher in order. A believed exchange restart becomes a publisher barrier
 * (beginNewSession), so the new session's marker is in the stream before any
 * of its fills.
 */
export class ClearingFeed {
  readonly tracker: SeqTracker;
  invalidFills = 0;
  /** Exchange restarts seen whose new session is not begun (marker not yet in the stream). */
  restartsPending = 0;
  /** While set, datagrams wait: start-up asks market data whether the exchange restarted while the bridge was down. */
  private gated: Array<{ buf: Uint8Array; sender: string }> | null = null;
  /** The first fill heard in a session the bridge joined late, for the missed-fills count. */
  private joined = false;

  constructor(
    private readonly deps: ClearingDeps,
    lastSeq: number,
  ) {
    this.tracker = new SeqTracker(lastSeq);
    this.joined = lastSeq > 0;
  }

  get counters() {
    return this.tracker.counters;
  }

  /** Holds datagrams until `open()`. */
  hold(): void {
    this.gated ??= [];
  }

  open(): void {
    const held = this.gated;
    this.gated = null;
    for (const d of held ?? []) this.onDatagram(d.buf, d.sender);
  }

  onDatagram(buf: Uint8Array, sender = ''): void {
    if (this.gated) {
      this.gated.push({ buf, sender });
      return;
    }
    const c = this.tracker.counters;
    c.datagrams++;
    const d = decodeClearingDatagram(buf);
    if (d.error) {
      c.bad_datagrams++;
      this.deps.log.warn({ error: d.error, bytes: buf.byteLength, kept: d.messages.length }, 'bad clearing datagram');
      this.deps.alert({ kind: 'bad_datagram', detail: d.error });
    }
    for (const m of d.messages) this.deps.route(m, sender);
  }

  /** Begins the next exchange session (its first message is `seq`, 0: not heard yet). */
  beginNewSession(detail: string, seq: number): void {
    this.deps.log.warn({ previous: this.tracker.last, seq }, 'exchange restart on the clearing feed');
    this.deps.alert({ kind: 'exchange_restart', detail, received: seq });
    this.tracker.newSession();
    this.joined = false;
    this.restartsPending++;
    this.deps.publisher.enqueueBarrier('exchange restart', async () => {
      await this.deps.beginSession(detail, seq);
      this.restartsPending--;
    });
  }

  /** A message the verdict lets through, in order. */
  accept(m: ClearingMessage): void {
    const ev = this.tracker.observe(m.seq);
    if (ev.kind === 'gap') {
      const detail = `clearing seq gap: expected ${ev.expected}, received ${ev.received} (${ev.missed} missed: fills lost for good)`;
      this.deps.log.warn({ expected: ev.expected, received: ev.received, missed: ev.missed }, 'clearing seq gap');
      this.deps.alert({ kind: 'gap', detail, expected: ev.expected, received: ev.received });
    } else if (ev.kind === 'first' && !this.joined && m.seq > 1) {
      const missed = m.seq - 1;
      this.tracker.counters.missed_before_join = missed;
      const detail = `joined the clearing feed at seq ${m.seq}: the ${missed} message(s) of this session sent before were never seen (fills lost for good)`;
      this.deps.log.warn({ seq: m.seq, missed }, 'late join on the clearing feed');
      this.deps.alert({ kind: 'late_join', detail, received: m.seq });
    }
    this.joined = true;
    this.publish(m);
  }

  /**
   * A held message a stopped bridge was applying, published at this start:
   * one at or below the seq already followed (the stream held fills after
   * it) is published without being counted again as the feed's order.
   */
  acceptHeld(m: ClearingMessage): void {
    if (m.seq <= this.tracker.last) this.publish(m);
    else this.accept(m);
  }

  private publish(m: ClearingMessage): void {
    if (m.type !== 'fill') return;
    const fill = clearingFill(m);
    const problem = fillProblem(fill);
    if (problem) {
      this.invalidFills++;
      this.deps.log.warn({ seq: m.seq, problem }, 'invalid fill skipped');
      return;
    }
    this.deps.publisher.enqueueFill(fill);
  }
}
