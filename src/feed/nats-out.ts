import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { encode } from '../../proto/codec.js';
import type { Logger } from '../shared/log.js';

/** Publishes without throwing: a status or alert that cannot go out is logged, never a reason to stop the feeds. */
export function publishQuiet(nc: NatsConnection, log: Logger, subject: string, payload: unknown, data?: Uint8Array): void {
  try {
    nc.publish(subject, data ?? encode(payload));
  } catch (err) {
    log.warn({ subject, err: String(err) }, 'publish failed');
  }
}

/** A KV put whose failure is logged: the next tick writes the key again. */
export function putQuiet(kv: KV, log: Logger, key: string, data: Uint8Array): void {
  kv.put(key, data).catch((err: unknown) => log.warn({ key, err: String(err) }, 'kv put failed'));
}
