import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { decode } from '../../proto/codec.js';
import type { Logger } from './log.js';

const RETRY_MS = 1000;
/** A watch that has heard nothing for this long while its bucket holds newer revisions is started again. */
const STALL_MS = 3000;

/**
 * Follows a KV bucket of published state: its current values, then every
 * change, decoded; `null` for a deleted key. While the bucket is not there
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

export function watchBucket<T>(nc: NatsConnection, bucket: string, log: Logger, onEntry: (key: string, value: T | null) => void, opts: WatchOptions = {}): { close(): void } {
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
        if (e.operation !== 'PUT') {
          onEntry(e.key, null);
          continue;
        }
        try {
          onEntry(e.key, decode<T>(e.value));
        } catch (err) {
          log.warn({ bucket, key: e.key, err: err instanceof Error ? err.message : err }, 'unreadable entry in bucket');
        }
      }
    })().then(
      () => {
        if (current()) again();
      },
      (err: unknown) => {
        log.debug({ bucket, err: err instanceof Error ? err.message : err }, 'bucket not followed yet: retrying');
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
      .catch(() => {}) // JetStream unavailable: the next tick asks again
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
