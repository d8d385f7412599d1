import type { JetStreamClient } from '@nats-io/jetstream';
import { encode } from '../../proto/codec.js';
import type { Fill } from '../../proto/fill.js';
import { fillMsgId, fillSubject } from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';

export interface PublisherStats {
  /** Fills JetStream acknowledged (stored, or recognised as already stored). */
  delivered: number;
  /** Of those, how many the stream had already (same msg id): a re-sent fill. */
  duplicates: number;
  retries: number;
  inFlight: number;
  queued: number;
}

type Item = { kind: 'fill'; fill: Fill } | { kind: 'barrier'; run: () => Promise<void>; what: string };

/**
 * Publishes fills to JetStream in arrival order with a bounded number of
 * unacknowledged publishes (a serial await per fill caps throughput at one
 * round trip per fill). A fill counts as delivered only once acked; a failed
 * publish is retried with the same msg id, which the stream de-duplicates.
 *
 * A barrier (a session change) waits until every earlier fill is acked, runs,
 * and only then lets later fills go, so a SessionMarker sits in the stream
 * after the old session's fills and before the new one's.
 */
export class FillPublisher {
  readonly stats: PublisherStats = { delivered: 0, duplicates: 0, retries: 0, inFlight: 0, queued: 0 };
  private queue: Item[] = [];
  private head = 0;
  private barrierRunning = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly js: JetStreamClient,
    private readonly log: Logger,
    /** The session string inside fill msg ids; a barrier may change it. */
    public session: string,
    private readonly maxInFlight = 512,
    private readonly ackTimeoutMs = 5000,
  ) {}

  enqueueFill(fill: Fill): void {
    this.queue.push({ kind: 'fill', fill });
    this.stats.queued++;
    this.pump();
  }

  enqueueBarrier(what: string, run: () => Promise<void>): void {
    this.queue.push({ kind: 'barrier', run, what });
    this.pump();
  }

  /** Resolves once everything enqueued so far is acked (or the publisher is closed). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops retrying; what is not acked by now is given up (it will be re-sent by no one: log it). */
  close(): void {
    this.closed = true;
    const left = this.queue.length - this.head + this.stats.inFlight;
    if (left > 0) this.log.warn({ left }, 'fill publisher closed with fills not acknowledged');
    this.queue = [];
    this.head = 0;
    this.wakeIdle(true);
  }

  private isIdle(): boolean {
    return this.head >= this.queue.length && this.stats.inFlight === 0 && !this.barrierRunning;
  }

  private wakeIdle(force = false): void {
    if (!force && !this.isIdle()) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }

  private pump(): void {
    while (!this.closed && !this.barrierRunning && this.head < this.queue.length) {
      const item = this.queue[this.head]!;
      if (item.kind === 'barrier') {
        if (this.stats.inFlight > 0) return; // resumes when the last ack arrives
        this.head++;
        this.runBarrier(item);
        return;
      }
      if (this.stats.inFlight >= this.maxInFlight) return;
      this.head++;
      this.stats.queued--;
      this.stats.inFlight++;
      this.send(item.fill, fillMsgId(this.session, item.fill.seq), 0);
    }
    if (this.head > 8192 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.wakeIdle();
  }

  private send(fill: Fill, msgID: string, attempt: number): void {
    this.js.publish(fillSubject(fill.client_id), encode(fill), { msgID, timeout: this.ackTimeoutMs }).then(
      (ack) => {
        this.stats.inFlight--;
        this.stats.delivered++;
        if (ack.duplicate) this.stats.duplicates++;
        this.pump();
      },
      (err: unknown) => {
        if (this.closed) return;
        this.stats.retries++;
        if (attempt % 20 === 0) this.log.warn({ msgID, attempt, err: String(err) }, 'fill publish failed: retrying with the same msg id');
        setTimeout(() => (this.closed ? undefined : this.send(fill, msgID, attempt + 1)), backoff(attempt));
      },
    );
  }

  private runBarrier(item: Extract<Item, { kind: 'barrier' }>, attempt = 0): void {
    this.barrierRunning = true;
    item.run().then(
      () => {
        this.barrierRunning = false;
        this.pump();
      },
      (err: unknown) => {
        if (this.closed) {
          this.barrierRunning = false;
          return;
        }
        this.log.warn({ what: item.what, attempt, err: String(err) }, 'session change failed: retrying before any later fill');
        setTimeout(() => this.runBarrier(item, attempt + 1), backoff(attempt));
      },
    );
  }
}

const backoff = (attempt: number) => Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
