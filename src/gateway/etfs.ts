import type { NatsConnection } from '@nats-io/transport-node';
import { BASKET_BUCKET, PRICE_BUCKET, basketVersionsShape, etfPriceShape, type BasketVersions, type EtfPrice } from '../../proto/marketdata.js';
import type { EtfListing, EtfsBody } from '../../proto/http.js';
import type { Config } from '../config/config.js';
import { basketInForce, loadBaskets, type Basket } from '../config/baskets.js';
import type { Logger } from '../shared/log.js';
import { watchBucket } from '../shared/kv-watch.js';
import type { HttpCall } from './http.js';

export interface EtfsRoute {
  handle(ex: HttpCall): void;
  close(): void;
}

export const listing = (b: Basket, price: EtfPrice | null): EtfListing => ({
  name: b.name,
  symbol: b.symbol,
  components: b.components.map((c) => ({ ticker: c.ticker, symbol: c.symbol, weight: c.weight })),
  price,
});

/**
 * GET /etfs: every ETF with the basket in force and its latest prices. Both
 * come from watches on published state (the pricing actor's bucket and the
 * engine's basket versions), so a request costs no NATS round trip; until the
 * price bucket exists (pricing not started) prices are null.
 */
export function startEtfsRoute(cfg: Config, nc: NatsConnection, log: Logger): EtfsRoute {
  const baskets = [...loadBaskets(cfg.basketsFile || undefined).baskets.values()];
  const latest = new Map<string, EtfPrice>();
  const versions = new Map<string, BasketVersions['versions']>();
  const prices = watchBucket(nc, PRICE_BUCKET, log, etfPriceShape, (key, p) => {
    if (p && typeof p === 'object' && p.etf === key) latest.set(key, p);
    else latest.delete(key);
  });
  const changes = watchBucket(nc, BASKET_BUCKET, log, basketVersionsShape, (key, v) => {
    if (v?.etf === key && Array.isArray(v.versions)) versions.set(key, v.versions);
    else versions.delete(key);
  });

  return {
    handle: (ex) => {
      const now = Date.now();
      const body: EtfsBody = { etfs: baskets.map((b) => listing(basketInForce(b, versions.get(b.name), now).basket, latest.get(b.name) ?? null)) };
      ex.json(200, body);
    },
    close: () => {
      prices.close();
      changes.close();
    },
  };
}
