import { createInbox, headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { inboxPrefixOf } from '../shared/nats.js';
import { encode } from '../../proto/codec.js';
import type { Fill } from '../../proto/fill.js';
import type { FillsUnstored } from '../../proto/marketdata.js';
import { fillMsgId, fillSubject } from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';
import { NextTurn } from '../shared/next-turn.js';

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

interface Pending {
  fill: Fill;
  msgID: string;
  sentAt: number;
  attempt: number;
  /** When it was first sent: a fill retried for long is news for /health, not only for the log. */
  since: number;
}

/** An ack takes milliseconds; this long, and a cluster electing a leader has become a stream that does not store. */
export const UNSTORED_AFTER_MS = 3000;

const textDecoder = new TextDecoder();
// The server writes `"duplicate": true` (with a space); allow either.
const DUPLICATE = /"duplicate":\s*true/;
/** The stream seq in an ack's JSON (a duplicate's: the copy stored first). */
const STREAM_SEQ = /"seq":(\d+)/;

/**
 * Publishes fills to JetStream in arrival order with a bounded number of
 * unacknowledged publishes (a serial await per fill caps throughput at one
 * round trip per fill). A fill counts as delivered only once acked; a failed
 * or unanswered publish is retried with the same msg id, which the stream
 * de-duplicates.
 *
 * Publishes are core NATS messages carrying the Nats-Msg-Id header and a reply
 * subject under one wildcard inbox, so an ack costs one subscription callback
 * instead of the per-request promise and timer of `js.publish` (about twice
 * the throughput, measured). Unanswered publishes are found by a sweep.
 *
 * A barrier (a session change) waits until every earlier fill is acked, runs,
 * and only then lets later fills go, so a SessionMarker sits in the stream
 * after the old session's fills and before the new one's.
 */
export class FillPublisher {
  /** The highest fill-stream seq an ack named (set at a start to the stream's last): where a look for fills stored by another bridge can begin. */
  streamSeq = 0;
  /**
   * Fills of `session` not to publish: counted already under the session before it, stored by another bridge
   * before this session's marker (ClearingSession.countedBefore, the `keep` policy).
   */
  counted: { session: string; seqs: Set<number> } | null = null;
  readonly stats: PublisherStats = { delivered: 0, duplicates: 0, retries: 0, inFlight: 0, queued: 0 };
  private queue: Item[] = [];
  private head = 0;
  private barrierRunning = false;
  private closed = false;
  private readonly nextPump = new NextTurn(() => this.pump());
  private idleWaiters: Array<() => void> = [];
  private readonly pending = new Map<number, Pending>();
  private nextToken = 0;
  private readonly inbox: string;
  private readonly sub: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  /** Since when a session change has held later fills back (0: none running). */
  private barrierSince = 0;
  private lastError: string | null = null;

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    /** The session string inside fill msg ids; a barrier may change it. */
    public session: string,
    private readonly maxInFlight = 512,
    private readonly ackTimeoutMs = 5000,
  ) {
    this.inbox = createInbox(inboxPrefixOf(nc));
    this.sub = nc.subscribe(`${this.inbox}.*`, { callback: (_err, msg) => this.onAck(msg) });
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.floor(ackTimeoutMs / 4)));
    this.sweeper.unref();
  }

  enqueueFill(fill: Fill): void {
    this.queue.push({ kind: 'fill', fill });
    this.stats.queued++;
    this.schedulePump();
  }

  enqueueBarrier(what: string, run: () => Promise<void>): void {
    this.queue.push({ kind: 'barrier', run, what });
    this.schedulePump();
  }

  /**
   * Publishing waits for the check phase, after every datagram of this poll
   * phase was read: one socket write to NATS carries them all. Publishing
   * from each datagram's callback costs a write syscall per fill (a quarter
   * of the bridge's CPU when profiled) and was the cause of kernel drops.
   */
  private schedulePump(): void {
    this.nextPump.schedule();
  }

  /** Resolves once everything enqueued so far is acked (or the publisher is closed). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops publishing and retrying; what is not acked by now is given up (logged). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    const left = this.queue.length - this.head + this.pending.size;
    if (left > 0) this.log.warn({ left }, 'fill publisher closed with fills not acknowledged');
    this.queue = [];
    this.head = 0;
    this.wakeIdle(true);
  }

  /**
   * Fills waiting to be stored whose oldest has waited UNSTORED_AFTER_MS, or
   * null. The retries go on by themselves; this is what lets /health say the
   * teams' positions have stopped moving, which the log alone did not.
   */
  unstored(now = Date.now()): FillsUnstored | null {
    let oldest = this.barrierSince || Infinity;
    for (const p of this.pending.values()) if (p.since < oldest) oldest = p.since;
    if (now - oldest < UNSTORED_AFTER_MS) return null;
    return { fills: this.pending.size + this.stats.queued, oldest_ms: now - oldest, ...(this.lastError ? { last_error: this.lastError } : {}) };
  }

  private isIdle(): boolean {
    return this.head >= this.queue.length && this.pending.size === 0 && !this.barrierRunning && !this.nextPump.pending;
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
        if (this.pending.size > 0) return; // resumes when the last ack arrives
        this.head++;
        this.runBarrier(item);
        return;
      }
      if (this.pending.size >= this.maxInFlight) return;
      this.head++;
      this.stats.queued--;
      if (this.counted?.session === this.session && this.counted.seqs.has(item.fill.seq)) {
        this.stats.duplicates++;
        continue;
      }
      this.send({ fill: item.fill, msgID: fillMsgId(this.session, item.fill.seq), sentAt: 0, attempt: 0, since: Date.now() });
    }
    if (this.head > 8192 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.stats.inFlight = this.pending.size;
    this.wakeIdle();
  }

  private send(p: Pending): void {
    const token = ++this.nextToken;
    p.sentAt = Date.now();
    this.pending.set(token, p);
    this.stats.inFlight = this.pending.size;
    const h = headers();
    h.set('Nats-Msg-Id', p.msgID);
    try {
      this.nc.publish(fillSubject(p.fill.client_id), encode(p.fill), { headers: h, reply: `${this.inbox}.${token}` });
    } catch (err) {
      // Closed or draining connection: the sweep retries it (or close() gives it up).
      this.log.warn({ msgID: p.msgID, err: String(err) }, 'fill publish failed');
    }
  }

  private onAck(msg: Msg): void {
    const token = Number(msg.subject.slice(this.inbox.length + 1));
    const p = this.pending.get(token);
    if (!p) return; // the ack of an attempt already retried
    this.pending.delete(token);
    const body = msg.data.length > 0 ? textDecoder.decode(msg.data) : '';
    // An empty body is a status message (503 no responders: the stream is not there yet).
    if (body === '' || body.includes('"error"')) {
      this.retry(p, body || msg.headers?.description || 'no responders');
      return;
    }
    this.stats.delivered++;
    this.lastError = null;
    if (DUPLICATE.test(body)) this.stats.duplicates++;
    const stored = STREAM_SEQ.exec(body);
    if (stored) this.streamSeq = Math.max(this.streamSeq, Number(stored[1]));
    this.schedulePump(); // acks of one socket read refill the window in one write
  }

  private retry(p: Pending, why: string): void {
    if (this.closed) return;
    this.stats.retries++;
    this.lastError = why.slice(0, 300);
    if (p.attempt % 20 === 0) this.log.warn({ msgID: p.msgID, attempt: p.attempt, why }, 'fill not stored: retrying with the same msg id');
    // Keeps its in-flight slot until re-sent, so the window stays bounded.
    const token = -++this.nextToken;
    this.pending.set(token, p);
    setTimeout(() => {
      this.pending.delete(token);
      if (this.closed) return;
      this.send({ ...p, attempt: p.attempt + 1 });
    }, backoff(p.attempt)).unref();
  }

  private sweep(): void {
    const cutoff = Date.now() - this.ackTimeoutMs;
    for (const [token, p] of this.pending) {
      if (token > 0 && p.sentAt < cutoff) {
        this.pending.delete(token);
        this.retry(p, 'no ack');
      }
    }
  }

  private runBarrier(item: Extract<Item, { kind: 'barrier' }>, attempt = 0): void {
    this.barrierRunning = true;
    this.barrierSince ||= Date.now();
    item.run().then(
      () => {
        this.barrierRunning = false;
        this.barrierSince = 0;
        this.pump();
      },
      (err: unknown) => {
        if (this.closed) {
          this.barrierRunning = false;
          return;
        }
        this.lastError = `${item.what}: ${String(err)}`.slice(0, 300);
        this.log.warn({ what: item.what, attempt, err: String(err) }, 'session change failed: retrying before any later fill');
        setTimeout(() => this.runBarrier(item, attempt + 1), backoff(attempt)).unref();
      },
    );
  }
}

/** The pause before retry `attempt` of a write to JetStream (fills, and the held store's entries). */
export const backoff = (attempt: number) => Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
