import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { decodeAs } from '../../proto/codec.js';
import type { Shape } from '../../proto/shape.js';
import type { Logger } from './log.js';
import { isTransientJsError } from './js-retry.js';
import { describeError, isStreamNotFound } from './js-errors.js';
import { StallWatch } from './stall-watch.js';

const RETRY_MS = 1000;
/** A watch that has heard nothing for this long while its bucket holds newer revisions is started again. */
const STALL_MS = 3000;

export interface WatchOptions {
  /** Opens a watch (tests wrap it to play a consumer lost with its node). */
  open?: (kv: KV) => Promise<QueuedIterator<KvWatchEntry>>;
}

/**
 * Follows a KV bucket of published state: its current values, then every
 * change, decoded and checked (`entryShape`: an entry not of it is logged
 * and skipped); `null` for a deleted key. While the bucket is not there
 * yet (its writer has not started) or the connection drops, it tries again.
 *
 * On a cluster the watch's consumer lives on one node; when that node dies
 * the client may wait on it indefinitely. So a watch quiet for STALL_MS asks
 * the bucket's stream for its last revision, and when that is newer than the
 * last one heard, watches again (which hands over every current value). It
 * does not wait for the silent watch to end: a lost one may not even end when
 * stopped, so each watch has a generation, and only the newest one's entries
 * are applied or its end followed up.
 */
export function watchBucket<T>(nc: NatsConnection, bucket: string, log: Logger, entryShape: Shape<T>, onEntry: (key: string, value: T | null) => void, opts: WatchOptions = {}): { close(): void } {
  const w = new BucketWatch<T>(nc, bucket, log, entryShape, onEntry, opts.open ?? ((kv: KV) => kv.watch()));
  w.start();
  return { close: () => w.close() };
}

class BucketWatch<T> {
  constructor(
    private readonly nc: NatsConnection,
    private readonly bucket: string,
    private readonly log: Logger,
    private readonly entryShape: Shape<T>,
    private readonly onEntry: (key: string, value: T | null) => void,
    private readonly open: (kv: KV) => Promise<QueuedIterator<KvWatchEntry>>,
  ) {}

  /** Only the newest watch's entries are applied, and only its end is followed up. */
  private generation = 0;
  private stop: (() => void) | null = null;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  private lastRevision = 0;
  private readonly stall = new StallWatch(STALL_MS, () => this.check());

  start(): void {
    this.stall.start();
    this.follow();
  }

  close(): void {
    this.closed = true;
    this.stall.stop();
    if (this.retry) clearTimeout(this.retry);
    this.stop?.();
  }

  private again(): void {
    if (!this.closed) this.retry = setTimeout(this.follow, RETRY_MS);
  }

  private readonly follow = (): void => {
    const mine = ++this.generation;
    const current = () => mine === this.generation && !this.closed;
    this.retry = null;
    this.stop = null;
    this.stall.heard();
    this.watch(current).then(
      () => {
        if (current()) this.again();
      },
      (err: unknown) => {
        // Not there yet (its writer has not started) or JetStream between leaders is routine; anything else is said.
        const routine = isStreamNotFound(err) || isTransientJsError(err);
        this.log[routine ? 'debug' : 'warn']({ bucket: this.bucket, err: describeError(err) }, 'bucket not followed: retrying');
        if (current()) this.again();
      },
    );
  };

  private async watch(current: () => boolean): Promise<void> {
    const kv = await new Kvm(this.nc).open(this.bucket);
    const entries = await this.open(kv);
    if (!current()) return entries.stop();
    this.stop = () => entries.stop();
    for await (const e of entries) {
      if (!current()) return;
      this.stall.heard();
      this.lastRevision = Math.max(this.lastRevision, e.revision);
      this.apply(e);
    }
  }

  private apply(e: KvWatchEntry): void {
    let value: T | null = null;
    if (e.operation === 'PUT') {
      try {
        value = decodeAs(e.value, this.entryShape);
      } catch (err) {
        this.log.warn({ bucket: this.bucket, key: e.key, err: describeError(err) }, 'unreadable entry in bucket');
        return;
      }
    }
    try {
      this.onEntry(e.key, value);
    } catch (err) {
      // The handler's own fault, not the bucket's: said at error level, and the watch goes on (the key's next value replaces this one).
      this.log.error({ bucket: this.bucket, key: e.key, err }, 'bucket entry handler failed');
    }
  }

  private async check(): Promise<void> {
    if (this.closed) return;
    await jetstreamManager(this.nc)
      .then((jsm) => jsm.streams.info(`KV_${this.bucket}`))
      .then((info) => {
        if (info.state.last_seq > this.lastRevision && this.stall.quiet && !this.closed) {
          this.log.warn({ bucket: this.bucket, heard: this.lastRevision, last: info.state.last_seq }, 'bucket watch silent while the bucket moved on: watching again');
          this.stop?.();
          if (this.retry) clearTimeout(this.retry);
          this.follow();
        }
      })
      .catch((err: unknown) => {
        // JetStream unavailable: the next tick asks again; anything else is worth a line.
        if (!isTransientJsError(err) && !isStreamNotFound(err)) this.log.warn({ bucket: this.bucket, err: describeError(err) }, 'bucket watch: cannot check progress');
      });
  }
}
