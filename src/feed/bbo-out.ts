import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { encode } from '../../proto/codec.js';
import { bboSubject, type Bbo } from '../../proto/marketdata.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import type { Logger } from '../shared/log.js';

/** Top of book out: each Bbo on its NATS subject, and the latest per symbol in the BBO bucket for late readers. */
export class BboOut {
  private readonly store: LatestPerKey;

  constructor(
    private readonly nc: NatsConnection,
    kv: KV,
    log: Logger,
  ) {
    this.store = new LatestPerKey(kv, log);
  }

  readonly publish = (bbos: Bbo[]): void => {
    for (const b of bbos) {
      const data = encode(b);
      this.nc.publish(bboSubject(b.symbol), data);
      this.store.put(String(b.symbol), data);
    }
  };

  /** A bounded wait for the bucket writes: a stop must not hang on a lost JetStream. */
  async stop(): Promise<void> {
    await Promise.race([this.store.flushed(), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.store.close();
  }
}
