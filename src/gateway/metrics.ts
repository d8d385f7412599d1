import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { PingResult } from '../../proto/engine.js';
import type { FeedCounters } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import type { EngineClient } from '../shared/engine-client.js';
import type { FeedStatusView } from './feed-status.js';
import type { PricingStatusView, PricingView } from './pricing-status.js';
import type { HttpCall } from './http.js';
import type { HubStats } from './ws/hub.js';

export const METRICS_PATH = '/metrics';

export interface MetricsSources {
  engine: EngineClient;
  feed: FeedStatusView;
  pricing: PricingStatusView;
  /** The WebSocket hub's counters (a getter: the hub is attached after the metrics are made). */
  ws: () => HubStats;
  /** What the NATS server refused of the gateway's connection (src/shared/nats.ts followRefusals). */
  natsRefused?: () => number;
  /** Subscription handlers that threw (src/shared/nats.ts guardCallbacks). */
  natsHandlerThrows?: () => number;
}

export interface GatewayMetrics {
  readonly registry: Registry;
  /** Counts and times the response `ex` sends, under `route` (a route pattern, never a raw path: labels stay few). */
  track(ex: HttpCall, method: string, route: string): void;
  /** Answers a request for METRICS_PATH with the Prometheus text. */
  serve(ex: HttpCall, method: string): Promise<void> | void;
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH']);
const FEEDS = ['clearing', 'market_data'] as const;

/**
 * The route label for a request path: the path itself when the table has it,
 * else the first `/prefix/*` pattern it falls under, else "unmatched" (so a
 * scan of random URLs cannot grow the label set).
 */
export function routeLabel(path: string, routes: Iterable<string>): string {
  let wildcard: string | undefined;
  for (const r of routes) {
    if (r === path) return r;
    if (wildcard === undefined && r.endsWith('/*') && path.startsWith(r.slice(0, -1))) wildcard = r;
  }
  return wildcard ?? 'unmatched';
}

/**
 * The gateway's Prometheus metrics, in a registry of its own (tests run
 * several gateways in one process). Request figures are counted as responses
 * go out; engine, feed and WebSocket figures are read at scrape time from
 * what the gateway already has: an engine `ping`, the bridge's published
 * status, the hub's counters.
 */
export function createMetrics(src: MetricsSources, log: Logger): GatewayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const observe = requestMetrics(registry);
  const engine = engineMetrics(registry, src.engine);
  feedMetrics(registry, src.feed);
  pricingMetrics(registry, src.pricing);
  wsMetrics(registry, src.ws);
  // Counted by the connection (src/shared/nats.ts).
  if (src.natsRefused) scrapedCounter(registry, 'etf_gateway_nats_refused_total', 'Publishes and subscriptions of the gateway the NATS server refused (a permission, a subject): each logged', src.natsRefused);
  if (src.natsHandlerThrows) scrapedCounter(registry, 'etf_gateway_nats_handler_throws_total', 'Messages whose subscription handler in the gateway threw (caught, so the connection reads on): each logged', src.natsHandlerThrows);

  return {
    registry,
    track(ex, method, route) {
      // performance.now(), not hrtime.bigint(): no BigInt per request, and microseconds are all a histogram needs.
      const start = performance.now();
      ex.onAnswer = (status) => observe(method, route, status, start);
    },
    serve(ex, method) {
      const start = performance.now();
      ex.onAnswer = (status) => observe(method, METRICS_PATH, status, start);
      if (method !== 'GET' && method !== 'HEAD') {
        return ex.json(405, { error: { code: 'method_not_allowed', message: `${METRICS_PATH} takes GET` } }, { allow: 'GET' });
      }
      engine.newScrape();
      return registry.metrics().then(
        (text) => ex.send(200, registry.contentType, text),
        (err: unknown) => {
          log.error({ err }, 'metrics collection failed');
          ex.error('internal', 'metrics collection failed');
        },
      );
    },
  };
}

type Observe = (method: string, route: string, status: number, startMs: number) => void;

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** One label set's responses: their count, summed seconds and count per latency bucket (not cumulative). */
interface Tally {
  labels: { method: string; route: string; status: string };
  count: number;
  sum: number;
  buckets: Float64Array;
}

/** One line of a scraped metric, as prom-client's registry formats it. */
interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/**
 * HTTP responses counted and timed by method, route and status; returns what
 * records one. Tallied here and handed to the registry only at scrape time:
 * prom-client's own inc and observe validate and hash the labels on every
 * call, a few microseconds of every request's CPU (issue 24).
 */
/** A counter another part keeps (undefined: not known yet), read at each scrape: a restart of its owner resets it, as Prometheus expects of counters. */
function scrapedCounter(registry: Registry, name: string, help: string, read: () => number | undefined): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const v = read();
      this.reset();
      if (v !== undefined) this.inc(v);
    },
  });
}

function requestMetrics(registry: Registry): Observe {
  const tallies = new Map<string, Tally>();
  // prom-client's typings name only its own classes; its registry reads any object with a name and get().
  const register = (name: string, help: string, type: 'counter' | 'histogram', samples: () => Sample[]) =>
    registry.registerMetric({ name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, aggregator: 'sum', values: samples() }) } as unknown as Parameters<Registry['registerMetric']>[0]);
  register('etf_http_requests_total', 'HTTP responses sent, by method, route and status', 'counter', () => [...tallies.values()].map((t) => ({ value: t.count, labels: t.labels })));
  const latency = 'etf_http_request_duration_seconds';
  register(latency, 'Time from request to response, by method, route and status', 'histogram', () =>
    [...tallies.values()].flatMap((t): Sample[] => {
      let below = 0;
      const buckets = LATENCY_BUCKETS.map((le, i) => ({ value: (below += t.buckets[i]!), labels: { ...t.labels, le }, metricName: `${latency}_bucket` }));
      return [
        ...buckets,
        { value: t.count, labels: { ...t.labels, le: '+Inf' }, metricName: `${latency}_bucket` },
        { value: t.sum, labels: t.labels, metricName: `${latency}_sum` },
        { value: t.count, labels: t.labels, metricName: `${latency}_count` },
      ];
    }),
  );
  return (method, route, status, startMs) => {
    const m = METHODS.has(method) ? method : 'other';
    const key = `${m} ${route} ${status}`;
    let t = tallies.get(key);
    if (!t) {
      t = { labels: { method: m, route, status: String(status) }, count: 0, sum: 0, buckets: new Float64Array(LATENCY_BUCKETS.length) };
      tallies.set(key, t);
    }
    const seconds = (performance.now() - startMs) / 1000;
    t.count++;
    t.sum += seconds;
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]!) b++;
    if (b < LATENCY_BUCKETS.length) t.buckets[b]!++;
  };
}

/** The engine's figures, from one `ping` per scrape (newScrape forgets the last one). */
function engineMetrics(registry: Registry, engine: EngineClient): { newScrape(): void } {
  let ping: Promise<PingResult | null> | null = null;
  const freshPing = (): Promise<PingResult | null> => (ping ??= engine.call({ op: 'ping' }, undefined, { waitForEngine: false }).then((r) => (r.ok ? r.result : null)));
  const engineGauge = (name: string, help: string, value: (p: PingResult | null) => number | null) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const v = value(await freshPing());
        if (v === null) this.reset();
        else this.set(v);
      },
    });
  engineGauge('etf_engine_up', 'The engine answered this scrape (1) or not (0)', (p) => (p ? 1 : 0));
  engineGauge('etf_engine_journal_seq', 'Last journal (ETF_JOURNAL) sequence the engine state reflects', (p) => p?.journal_seq ?? null);
  engineGauge('etf_engine_fill_seq', 'Last fill-stream (NDFEX_FILLS) sequence the engine applied', (p) => p?.fill_seq ?? null);
  engineGauge('etf_engine_accounts', 'Accounts the engine knows', (p) => p?.accounts ?? null);
  return { newScrape: () => (ping = null) };
}

/** The feed bridge's figures, as its last published status has them. */
function feedMetrics(registry: Registry, feed: FeedStatusView): void {
  new Gauge({
    name: 'ndfex_feed_up',
    help: 'The feed bridge published its status within the last 5 s',
    registers: [registry],
    collect() {
      this.set(feed.view().live ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ndfex_feed_standby_up',
    help: 'The standby bridge published its status within the last 5 s (no standby reported: 0)',
    registers: [registry],
    collect() {
      this.set(feed.view().standby?.live ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ndfex_feed_fills_unstored',
    help: 'Exchange fills the feed bridge has waited over 3 s for the fill stream to store (0: none)',
    registers: [registry],
    collect() {
      this.set(feed.view().unstored?.fills ?? 0);
    },
  });
  new Gauge({
    name: 'ndfex_feed_progress_unsaved_seconds',
    help: 'How long the feed bridge has gone without saving its clearing session record, which the standby follows (0: saved)',
    registers: [registry],
    collect() {
      this.set((feed.view().progress_unsaved?.for_ms ?? 0) / 1000);
    },
  });
  // The bridge owns these counts; they are repeated here as it reports them (a bridge restart resets them, as Prometheus expects of counters).
  const feedCounter = (name: string, help: string, field: keyof FeedCounters) =>
    new Counter({
      name,
      help,
      labelNames: ['feed'] as const,
      registers: [registry],
      collect() {
        const view = feed.view();
        this.reset();
        for (const f of FEEDS) {
          const c = view[f];
          if (c) this.inc({ feed: f }, c[field] ?? 0);
        }
      },
    });
  feedCounter('ndfex_feed_gaps_total', 'Sequence gaps the feed bridge saw, per feed', 'gaps');
  feedCounter('ndfex_feed_missed_messages_total', 'Messages lost in those gaps, per feed', 'missed_messages');
  feedCounter('ndfex_feed_restarts_total', 'Exchange restarts the feed bridge saw, per feed', 'restarts');
  feedCounter('ndfex_feed_bad_datagrams_total', 'Datagrams the feed bridge could not decode, per feed', 'bad_datagrams');
  feedCounter('ndfex_feed_datagrams_total', 'Datagrams the feed bridge received, per feed', 'datagrams');
  feedCounter('ndfex_feed_strays_total', 'Messages ignored for going back in seq without a run of their own (a lone datagram cannot fake a restart), per feed', 'strays');
  feedCounter('ndfex_feed_foreign_total', 'Datagrams from a sender not in NDFEX_SOURCE, per feed', 'foreign');
  new Gauge({
    name: 'ndfex_feed_last_seq',
    help: 'Last exchange seq_num the feed bridge saw, per feed',
    labelNames: ['feed'] as const,
    registers: [registry],
    collect() {
      const view = feed.view();
      this.reset();
      for (const f of FEEDS) {
        const c = view[f];
        if (c) this.set({ feed: f }, c.last_seq);
      }
    },
  });
}

/** The pricing service's figures, as its last published status has them (src/pricing/status.ts). */
function pricingMetrics(registry: Registry, pricing: PricingStatusView): void {
  new Gauge({
    name: 'etf_pricing_up',
    help: 'The pricing service published its status within the last 5 s',
    registers: [registry],
    collect() {
      this.set(pricing.view().live ? 1 : 0);
    },
  });
  new Gauge({
    name: 'etf_pricing_starting_seconds',
    help: 'How long the pricing service has been starting, as its live status says (0: ready, or not heard)',
    registers: [registry],
    collect() {
      const v = pricing.view();
      this.set(v.live && v.phase === 'starting' ? (v.start?.for_ms ?? 0) / 1000 : 0);
    },
  });
  new Gauge({
    name: 'etf_pricing_bad_bbo_symbols',
    help: 'Symbols whose best bids/offers have all been bad (crossed, a price not above zero, not of their shape) for 3 s or more (PRICING_BAD_BBO_MS), as the pricing service\'s live status lists them: the ETFs priced from them do not move',
    registers: [registry],
    collect() {
      const v = pricing.view();
      this.set(v.live ? (v.bad_bbo_symbols?.length ?? 0) : 0);
    },
  });
  new Gauge({
    name: 'etf_pricing_writes_failing_seconds',
    help: 'How long the pricing service\'s writes of an output (prices: the etf_prices bucket; desk: the ETF_DESK stream) have failed with none stored since, once over 3 s (0: not failing)',
    labelNames: ['output'] as const,
    registers: [registry],
    collect() {
      const failing = pricing.view().failing ?? [];
      this.reset();
      for (const output of ['prices', 'desk'] as const) this.set({ output }, (failing.find((f) => f.what === output)?.for_ms ?? 0) / 1000);
    },
  });
  // Pricing owns these counts; repeated as it reports them (a restart of it resets them, as Prometheus expects of counters).
  const pricingCounter = (name: string, help: string, read: (v: PricingView) => number | undefined) => scrapedCounter(registry, name, help, () => read(pricing.view()));
  pricingCounter('etf_pricing_bbos_total', 'Best bids/asks the pricing service heard', (v) => v.bbos);
  pricingCounter('etf_pricing_bad_bbos_total', 'Best bids/asks the pricing service ignored: not of their shape, crossed, or a price not above zero', (v) => v.bad_bbos);
  pricingCounter('etf_pricing_prices_published_total', 'ETF prices the pricing service sent to the etf_prices bucket', (v) => v.published);
  pricingCounter('etf_pricing_prices_stored_total', 'ETF prices the etf_prices bucket stored (each then published on etf.price.<ETF>)', (v) => v.stored);
  pricingCounter('etf_pricing_publish_errors_total', 'Failed writes of ETF prices to the etf_prices bucket (each retried)', (v) => v.publish_errors);
  pricingCounter('etf_pricing_desk_samples_total', 'Chart samples the desk wrote', (v) => v.desk?.samples);
  pricingCounter('etf_pricing_desk_cards_total', 'Scorecard writes of the desk', (v) => v.desk?.cards);
  pricingCounter('etf_pricing_desk_write_errors_total', 'Desk writes the ETF_DESK stream refused', (v) => v.desk?.write_errors);
  pricingCounter('etf_pricing_desk_missed_total', 'Conversions the desk learned of from the journal only, after their moment (the pricing service stopped or cut off then), and wrote as missed, without an edge', (v) => v.desk?.missed);
  pricingCounter('etf_pricing_restarts_total', 'Restarts of the pricing service heard since this gateway started (a new run in its status)', (v) => v.restarts ?? 0);
}

/** The WebSocket hub's figures (a getter: the hub is attached after the metrics are made). */
function wsMetrics(registry: Registry, ws: () => HubStats): void {
  const wsGauge = (name: string, help: string, field: 'connections' | 'accounts') =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(ws()[field]);
      },
    });
  wsGauge('etf_ws_connections', 'Open WebSocket connections', 'connections');
  wsGauge('etf_ws_accounts', 'Accounts with a live or recently closed WebSocket connection', 'accounts');
  const wsCounter = (name: string, help: string, field: Exclude<keyof HubStats, 'connections' | 'accounts'>) => scrapedCounter(registry, name, help, () => ws()[field]);
  wsCounter('etf_ws_deltas_total', 'Holdings changes (deltas) fanned out to the connections of their account', 'changes');
  wsCounter('etf_ws_snapshots_total', 'Holdings snapshots fetched from the engine for the stream', 'snapshots');
  wsCounter('etf_ws_prices_total', 'ETF price updates the stream received (and sent to the connections subscribed to them)', 'prices');
  wsCounter('etf_ws_request_outcomes_total', 'Create/redeem outcomes sent to the connections of their account', 'outcomes');
  wsCounter('etf_ws_gaps_total', 'Holdings changes the gateway missed and re-snapshotted', 'gaps');
}
