import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { openBucket } from '../shared/streams.js';
import { watchBucket } from '../shared/kv-watch.js';
import { decode, encode } from '../../proto/codec.js';
import { BASKET_BUCKET, BBO_BUCKET, BBO_SUBJECT_WILDCARD, PRICE_BUCKET, priceSubject, type BasketVersions, type Bbo, type EtfPrice } from '../../proto/marketdata.js';
import type { Config } from '../config/config.js';
import { loadBaskets } from '../config/baskets.js';
import { connectNats } from '../shared/nats.js';
import { LatestPerKey } from '../shared/latest-kv.js';
import type { Logger } from '../shared/log.js';
import { PricingState, Throttle, bboProblem, priceChanged } from './core.js';

/** No ETF's price goes out more often than this. */
export const PRICE_INTERVAL_MS = 100;

export interface PricingStats {
  bbos: number;
  badBbos: number;
  published: number;
  publishErrors: number;
}

export interface PricingHandle {
  nc: NatsConnection;
  readonly state: PricingState;
  stats(): PricingStats;
  close(): Promise<void>;
}

/**
 * The pricing actor's I/O edge: best bids/asks in from the feed bridge, ETF
 * prices out on `etf.price.<ETF>` and in the PRICE_BUCKET KV, each ETF at
 * most every PRICE_INTERVAL_MS.
 */
export async function startPricing(cfg: Config, natsUrl: string, log: Logger): Promise<PricingHandle> {
  const instruments = loadBaskets(cfg.basketsFile || undefined);
  const state = new PricingState(instruments.baskets);
  const throttle = new Throttle(PRICE_INTERVAL_MS);
  const lastSent = new Map<string, EtfPrice>();
  const timers = new Map<string, NodeJS.Timeout>();
  const stats: PricingStats = { bbos: 0, badBbos: 0, published: 0, publishErrors: 0 };
  let closed = false;

  const nc = await connectNats(natsUrl, 'etf-pricing', { role: 'pricing', credsFile: cfg.nats.creds });
  const kvm = new Kvm(nc);
  // The pricing actor writes this bucket, so it creates it; readers only open it.
  const prices: KV = await openBucket(nc, PRICE_BUCKET);
  // KV first: whoever hears the subject and then reads the bucket finds this value or a newer one.
  const store = new LatestPerKey(prices, log, (etf, payload) => nc.publish(priceSubject(etf), payload));

  const publish = (etf: string): void => {
    const now = Date.now();
    const price = state.price(etf, now);
    if (!priceChanged(lastSent.get(etf), price)) {
      throttle.skipped(etf);
      return;
    }
    throttle.published(etf, now);
    lastSent.set(etf, price);
    stats.published++;
    store.put(etf, encode(price));
  };

  const changed = (etfs: readonly string[]): void => {
    if (closed) return;
    for (const etf of etfs) {
      const r = throttle.request(etf, Date.now());
      if (r === 'now') publish(etf);
      else if (r !== 'pending') {
        timers.set(
          etf,
          setTimeout(() => {
            timers.delete(etf);
            if (!closed) publish(etf);
          }, r.delayMs),
        );
      }
    }
  };

  const readBbo = (data: Uint8Array, origin: string): Bbo | null => {
    let v: unknown;
    try {
      v = decode(data);
    } catch (err) {
      v = undefined;
    }
    const problem = v === undefined ? 'not msgpack' : bboProblem(v);
    if (problem) {
      stats.badBbos++;
      log.warn({ origin, problem }, 'ignoring a bad Bbo');
      return null;
    }
    return v as Bbo;
  };

  // Live updates first, so nothing published while the bucket is read is missed.
  const sub: Subscription = nc.subscribe(BBO_SUBJECT_WILDCARD, {
    callback: (err, msg) => {
      if (err) return log.warn({ err: err.message }, 'bbo subscription error');
      stats.bbos++;
      const bbo = readBbo(msg.data, msg.subject);
      if (bbo) changed(state.apply(bbo));
    },
  });

  let seeded = 0;
  try {
    const bboKv = await kvm.open(BBO_BUCKET);
    for await (const key of await bboKv.keys()) {
      const e = await bboKv.get(key);
      if (!e || e.operation !== 'PUT') continue;
      const bbo = readBbo(e.value, `${BBO_BUCKET}/${key}`);
      if (bbo) {
        seeded++;
        changed(state.seed(bbo));
      }
    }
  } catch (err) {
    // No bucket yet: the bridge has not run. Live updates fill the books.
    log.info({ err: err instanceof Error ? err.message : err }, `no ${BBO_BUCKET} bucket to start from`);
  }
  // Basket changes the engine published: reprice with the version in force.
  const basketChanges = watchBucket<BasketVersions>(nc, BASKET_BUCKET, log, (etf, v) => {
    if (!instruments.baskets.has(etf) || !v || !Array.isArray(v.versions)) return;
    state.setVersions(etf, v.versions);
    if (!closed) publish(etf);
  });
  log.info({ etfs: [...instruments.baskets.keys()], seeded }, 'pricing ready');

  return {
    nc,
    state,
    stats: () => ({ ...stats, publishErrors: store.stats.failed }),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const t of timers.values()) clearTimeout(t);
      basketChanges.close();
      sub.unsubscribe();
      await Promise.race([store.flushed(), new Promise((r) => setTimeout(r, 2000).unref())]);
      store.close();
      await nc.drain();
    },
  };
}
