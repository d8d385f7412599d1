import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { decodeAs } from '../../proto/codec.js';
import type { Shape } from '../../proto/shape.js';
import type { Logger } from './log.js';
import { isTransientJsError } from './js-retry.js';
import { describeError, isStreamNotFound } from './js-errors.js';

const RETRY_MS = 1000;
/** A watch that has heard nothing for this long while its bucket holds newer revisions is started again. */
const STALL_MS = 3000;

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
export interface WatchOptions {
  /** Opens a watch (tests wrap it to play a consumer lost with its node). */
  open?: (kv: KV) => Promise<QueuedIterator<KvWatchEntry>>;
}

export function watchBucket<T>(nc: NatsConnection, bucket: string, log: Logger, entryShape: Shape<T>, onEntry: (key: string, value: T | null) => void, opts: WatchOptions = {}): { close(): void } {
  const open = opts.open ?? ((kv: KV) => kv.watch());
  let generation = 0;
  let stop: (() => void) | null = null;
  let retry: NodeJS.Timeout | null = null;
  let closed = false;
  let lastRevision = 0;
  let lastHeard = Date.now();
  const again = () => {
    if (!closed) retry = setTimeout(follow, RETRY_MS);
  };
  const follow = () => {
    const mine = ++generation;
    const current = () => mine === generation && !closed;
    retry = null;
    stop = null;
    lastHeard = Date.now();
    (async () => {
      const kv = await new Kvm(nc).open(bucket);
      const entries = await open(kv);
      if (!current()) return entries.stop();
      stop = () => entries.stop();
      for await (const e of entries) {
        if (!current()) return;
        lastHeard = Date.now();
        lastRevision = Math.max(lastRevision, e.revision);
        let value: T | null = null;
        if (e.operation === 'PUT') {
          try {
            value = decodeAs(e.value, entryShape);
          } catch (err) {
            log.warn({ bucket, key: e.key, err: describeError(err) }, 'unreadable entry in bucket');
            continue;
          }
        }
        try {
          onEntry(e.key, value);
        } catch (err) {
          // The handler's own fault, not the bucket's: said at error level, and the watch goes on (the key's next value replaces this one).
          log.error({ bucket, key: e.key, err }, 'bucket entry handler failed');
        }
      }
    })().then(
      () => {
        if (current()) again();
      },
      (err: unknown) => {
        // Not there yet (its writer has not started) or JetStream between leaders is routine; anything else is said.
        const routine = isStreamNotFound(err) || isTransientJsError(err);
        log[routine ? 'debug' : 'warn']({ bucket, err: describeError(err) }, 'bucket not followed: retrying');
        if (current()) again();
      },
    );
  };
  let checking = false;
  const watchdog = setInterval(() => {
    if (closed || checking || Date.now() - lastHeard < STALL_MS) return;
    checking = true;
    jetstreamManager(nc)
      .then((jsm) => jsm.streams.info(`KV_${bucket}`))
      .then((info) => {
        if (info.state.last_seq > lastRevision && Date.now() - lastHeard >= STALL_MS && !closed) {
          log.warn({ bucket, heard: lastRevision, last: info.state.last_seq }, 'bucket watch silent while the bucket moved on: watching again');
          stop?.();
          if (retry) clearTimeout(retry);
          follow();
        }
      })
      .catch((err: unknown) => {
        // JetStream unavailable: the next tick asks again; anything else is worth a line.
        if (!isTransientJsError(err) && !isStreamNotFound(err)) log.warn({ bucket, err: describeError(err) }, 'bucket watch: cannot check progress');
      })
      .finally(() => (checking = false));
  }, STALL_MS / 3);
  watchdog.unref();
  follow();
  return {
    close: () => {
      closed = true;
      clearInterval(watchdog);
      if (retry) clearTimeout(retry);
      stop?.();
    },
  };
}
