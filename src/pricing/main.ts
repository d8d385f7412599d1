/**
 * The pricing actor: live ETF prices from the feed bridge's best bids/asks.
 * Subscribes `ndfex.md.bbo.*` (and reads the `ndfex_bbo` KV bucket at start),
 * publishes EtfPrice (proto/marketdata.ts) on `etf.price.<ETF>` at most every
 * 100 ms per ETF and keeps the last one in the `etf_prices` KV bucket.
 *
 * Environment (src/config/config.ts):
 *   NATS_URL      the nats-server to use (required; the launcher sets it)
 *   BASKETS_FILE  ETF baskets (default config/baskets.json; empty: UNDY alone)
 *   CONFIG_FILE, LOG_LEVEL
 */
import { loadConfig } from '../config/config.js';
import { createLogger } from '../shared/log.js';
import { onShutdown } from '../shared/process.js';
import { startPricing } from './service.js';

const cfg = loadConfig();
const log = createLogger('pricing', cfg.logLevel);
if (!cfg.nats.url) {
  log.fatal('NATS_URL is not set: run pricing through the launcher (npm start) or give it a server');
  process.exit(2);
}
try {
  const pricing = await startPricing(cfg, cfg.nats.url, log);
  onShutdown(log, () => pricing.close());
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : err }, 'pricing failed to start');
  process.exit(1);
}
