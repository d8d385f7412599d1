/**
 * The pricing actor: live ETF prices from the feed bridge's best bids/asks.
 * Subscribes `ndfex.md.bbo.*` (and reads the `ndfex_bbo` KV bucket at start),
 * publishes EtfPrice (proto/marketdata.ts) on `etf.price.<ETF>` at most every
 * 100 ms per ETF and keeps the last one in the `etf_prices` KV bucket; runs the
 * desk (chart samples, scorecards); and says how it goes on `etf.pricing.status`
 * every second (PricingStatus), from its connection to NATS on (`starting`
 * until ready), which the gateway shows on /health and /metrics.
 *
 * Environment (src/config/config.ts):
 *   NATS_URL      the nats-server to use (required; the launcher sets it)
 *   BASKETS_FILE  ETF baskets (default config/baskets.json; empty: UNDY alone)
 *   PRICING_BAD_BBO_MS  how long a symbol's Bbos must all have been bad before its status names it (default 3000)
 *   CONFIG_FILE, LOG_LEVEL
 */
import { runService } from '../shared/process.js';
import { loadConfig } from '../config/config.js';
import { processSettings } from '../config/process.js';
import { startPricing } from './service.js';

await runService('pricing', processSettings(process.env), () => loadConfig(process.env), startPricing);
