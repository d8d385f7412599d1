import { decodeClearingDatagram } from '../../proto/ndfex.js';
import { fillProblem, type Fill } from '../../proto/fill.js';
import type { FeedAlert } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import { SeqTracker } from './integrity.js';
import type { FillPublisher } from './publisher.js';

export type RestartPolicy = 'reset' | 'keep';

export interface ClearingDeps {
  publisher: FillPublisher;
  /** Begins the next exchange session and publishes its SessionMarker; runs as a publisher barrier. */
  beginSession(detail: string, seq: number): Promise<void>;
  alert(a: Omit<FeedAlert, 'ts' | 'feed'>): void;
  log: Logger;
}

/**
 * The clearing feed: decodes every fill of every datagram, tracks seq_num
 * (gaps, exchange restarts) and hands fills to the publisher in order. A
 * restart becomes a publisher barrier, so the new session's marker is in the
 * stream before any of its fills.
 */
export class ClearingFeed {
  readonly tracker: SeqTracker;
  invalidFills = 0;
  /** Exchange restarts seen whose new session is not begun (marker not yet in the stream). */
  restartsPending = 0;

  constructor(
    private readonly deps: ClearingDeps,
    lastSeq: number,
  ) {
    this.tracker = new SeqTracker(lastSeq);
  }

  get counters() {
    return this.tracker.counters;
  }

  onDatagram(buf: Uint8Array): void {
    const c = this.tracker.counters;
    c.datagrams++;
    const d = decodeClearingDatagram(buf);
    if (d.error) {
      c.bad_datagrams++;
      this.deps.log.warn({ error: d.error, bytes: buf.byteLength, kept: d.messages.length }, 'bad clearing datagram');
      this.deps.alert({ kind: 'bad_datagram', detail: d.error });
    }
    for (const m of d.messages) {
      const ev = this.tracker.observe(m.seq);
      if (ev.kind === 'gap') {
        const detail = `clearing seq gap: expected ${ev.expected}, received ${ev.received} (${ev.missed} missed: fills lost for good)`;
        this.deps.log.warn({ expected: ev.expected, received: ev.received, missed: ev.missed }, 'clearing seq gap');
        this.deps.alert({ kind: 'gap', detail, expected: ev.expected, received: ev.received });
      } else if (ev.kind === 'restart') {
        const detail = `clearing seq_num went back from ${ev.previous} to ${m.seq}: exchange restart`;
        this.deps.log.warn({ previous: ev.previous, seq: m.seq }, 'exchange restart on the clearing feed');
        this.deps.alert({ kind: 'exchange_restart', detail, received: m.seq });
        this.restartsPending++;
        this.deps.publisher.enqueueBarrier('exchange restart', async () => {
          await this.deps.beginSession(detail, m.seq);
          this.restartsPending--;
        });
      }
      if (m.type !== 'fill') continue;
      const fill: Fill = { seq: m.seq, client_id: m.client_id, symbol: m.symbol, side: m.side, quantity: m.quantity, price: m.price };
      const problem = fillProblem(fill);
      if (problem) {
        this.invalidFills++;
        this.deps.log.warn({ seq: m.seq, problem }, 'invalid fill skipped');
        continue;
      }
      this.deps.publisher.enqueueFill(fill);
    }
  }
}
