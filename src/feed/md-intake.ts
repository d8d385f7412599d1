import { decodeMdDatagram, type MdMessage } from '../../proto/ndfex.js';
import type { Bbo, FeedCounters } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import type { SendAlert } from './alerts.js';
import { MarketData } from './marketdata.js';

export interface MdIntakeDeps {
  alert: SendAlert;
  bbos(bbos: Bbo[]): void;
  log: Logger;
}

/**
 * Market data's way in: live datagrams are decoded here and go to the session
 * verdict first; what it lets through comes back to apply(). Snapshots go
 * straight to the books (they carry no session seq of their own).
 */
export class MarketDataIntake {
  readonly books = new MarketData();
  /** The highest exchange timestamp heard live: saved with the progress, a later start's evidence of a restart. */
  lastTs = 0n;

  constructor(private readonly deps: MdIntakeDeps) {}

  get counters(): FeedCounters {
    return this.books.tracker.counters;
  }

  get progress(): { seq: number; ts: bigint } {
    return { seq: this.books.tracker.last, ts: this.lastTs };
  }

  /** The messages of a live datagram; a bad one is counted and alerted, and what could be read of it kept. */
  decodeLive(buf: Buffer): MdMessage[] {
    const c = this.counters;
    c.datagrams++;
    const d = decodeMdDatagram(buf, 'live');
    if (d.error) {
      c.bad_datagrams++;
      this.deps.log.warn({ error: d.error, bytes: buf.byteLength }, 'bad market-data datagram');
      this.deps.alert('market_data', { kind: 'bad_datagram', detail: d.error });
    }
    return d.messages;
  }

  /** Live messages the verdict let through, in order. */
  apply(msgs: MdMessage[]): void {
    if (msgs.length === 0) return;
    for (const m of msgs) if (m.timestamp > this.lastTs) this.lastTs = m.timestamp;
    const { notices, bbos } = this.books.onLive(msgs, Date.now());
    for (const n of notices) {
      if (n.event.kind === 'gap') {
        const e = n.event;
        this.deps.alert('market_data', { kind: 'gap', detail: `market-data seq gap: expected ${e.expected}, received ${e.received}; books resync from the snapshot feed`, expected: e.expected, received: e.received });
      }
    }
    this.deps.bbos(bbos);
    this.alertDistrust();
  }

  onSnapshot(buf: Buffer): void {
    const d = decodeMdDatagram(buf, 'snapshot');
    if (d.error) {
      this.books.stats.snapshot_bad_datagrams++;
      this.deps.log.warn({ error: d.error, bytes: buf.byteLength }, 'bad snapshot datagram');
    }
    this.deps.bbos(this.books.onSnapshot(d.messages));
    this.alertDistrust();
  }

  /** A believed exchange restart: every book emptied, and published so. */
  restart(): void {
    this.deps.bbos(this.books.restart());
  }

  private alertDistrust(): void {
    for (const detail of this.books.drainDistrust()) {
      this.deps.log.warn({ detail }, 'order book distrusted');
      this.deps.alert('market_data', { kind: 'book_distrusted', detail });
    }
  }
}
