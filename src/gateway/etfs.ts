import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decode } from '../../proto/codec.js';
import { PRICE_BUCKET, type EtfPrice } from '../../proto/marketdata.js';
import type { EtfListing, EtfsBody } from '../../proto/http.js';
import type { Config } from '../config/config.js';
import { loadBaskets, type Basket } from '../config/baskets.js';
import type { Logger } from '../shared/log.js';
import type { Exchange } from './http.js';

/** How long to wait before looking again for a price bucket that does not exist yet (pricing not started). */
const RETRY_MS = 1000;

export interface EtfsRoute {
  handle(ex: Exchange): void;
  close(): void;
}

export const listing = (b: Basket, price: EtfPrice | null): EtfListing => ({
  name: b.name,
  symbol: b.symbol,
  components: b.components.map((c) => ({ ticker: c.ticker, symbol: c.symbol, weight: c.weight })),
  price,
});

/**
 * GET /etfs: every ETF with its basket and latest prices. The prices come
 * from a watch on the pricing actor's KV bucket, so a request costs no NATS
 * round trip; until the bucket exists (pricing not started) prices are null.
 */
export function startEtfsRoute(cfg: Config, nc: NatsConnection, log: Logger): EtfsRoute {
  const baskets = [...loadBaskets(cfg.basketsFile || undefined).baskets.values()];
  const latest = new Map<string, EtfPrice>();
  let stopWatch: (() => void) | null = null;
  let retry: NodeJS.Timeout | null = null;
  let closed = false;

  const watch = async (): Promise<void> => {
    const kv = await new Kvm(nc).open(PRICE_BUCKET);
    const entries = await kv.watch();
    stopWatch = () => entries.stop();
    for await (const e of entries) {
      if (e.operation !== 'PUT') {
        latest.delete(e.key);
        continue;
      }
      try {
        const p = decode<EtfPrice>(e.value);
        if (typeof p === 'object' && p !== null && p.etf === e.key) latest.set(e.key, p);
      } catch (err) {
        log.warn({ key: e.key, err: err instanceof Error ? err.message : err }, 'unreadable price in bucket');
      }
    }
  };

  const keepWatching = (): void => {
    if (closed) return;
    watch().then(
      () => {
        if (!closed) retry = setTimeout(keepWatching, RETRY_MS);
      },
      (err: unknown) => {
        log.debug({ err: err instanceof Error ? err.message : err }, `no ${PRICE_BUCKET} bucket yet`);
        if (!closed) retry = setTimeout(keepWatching, RETRY_MS);
      },
    );
  };
  keepWatching();

  return {
    handle: (ex) => {
      const body: EtfsBody = { etfs: baskets.map((b) => listing(b, latest.get(b.name) ?? null)) };
      ex.json(200, body);
    },
    close: () => {
      closed = true;
      if (retry) clearTimeout(retry);
      stopWatch?.();
    },
  };
}
