import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decode } from '../../proto/codec.js';
import type { Logger } from './log.js';

const RETRY_MS = 1000;

/**
 * Follows a KV bucket of published state: its current values, then every
 * change, decoded; `null` for a deleted key. While the bucket is not there
 * yet (its writer has not started) or the connection drops, it tries again.
 */
export function watchBucket<T>(nc: NatsConnection, bucket: string, log: Logger, onEntry: (key: string, value: T | null) => void): { close(): void } {
  let stop: (() => void) | null = null;
  let retry: NodeJS.Timeout | null = null;
  let closed = false;
  const again = () => {
    if (!closed) retry = setTimeout(follow, RETRY_MS);
  };
  const follow = () => {
    (async () => {
      const kv = await new Kvm(nc).open(bucket);
      const entries = await kv.watch();
      stop = () => entries.stop();
      for await (const e of entries) {
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
    })().then(again, (err: unknown) => {
      log.debug({ bucket, err: err instanceof Error ? err.message : err }, 'bucket not followed yet: retrying');
      again();
    });
  };
  follow();
  return {
    close: () => {
      closed = true;
      if (retry) clearTimeout(retry);
      stop?.();
    },
  };
}
