import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import parsePrometheusTextFormat, { type MetricFamily } from 'parse-prometheus-text-format';
import { encode } from '../proto/codec.js';
import { FEED_STATUS_SUBJECT, type FeedCounters, type FeedStatus } from '../proto/marketdata.js';
import { routeLabel } from '../src/gateway/metrics.js';
import { buy, until, useSystem } from './helpers/system.js';

const counters = (over: Partial<FeedCounters> = {}): FeedCounters => ({
  datagrams: 10,
  messages: 20,
  gaps: 0,
  missed_messages: 0,
  bad_datagrams: 0,
  restarts: 0,
  last_seq: 20,
  ...over,
});

describe('/metrics', () => {
  const f = useSystem();

  /** Families by name; a name that recurs (series of one histogram come label set by label set) gets all its samples. */
  const byName = (fams: MetricFamily[]) => {
    const map = new Map<string, MetricFamily>();
    for (const m of fams) {
      const seen = map.get(m.name);
      if (seen) seen.metrics.push(...m.metrics);
      else map.set(m.name, { ...m, metrics: [...m.metrics] });
    }
    return map;
  };

  /**
   * Scrapes and parses: a text the parser refuses fails the test here. The
   * parser folds a histogram's labelled series into one, so sample values are
   * read from a second parse with the histograms' TYPE lines left out, where
   * each `_bucket`, `_sum` and `_count` series stands alone with its labels.
   */
  async function scrape(): Promise<{ families: Map<string, MetricFamily>; samples: Map<string, MetricFamily> }> {
    const res = await fetch(`${f.sys.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    return {
      families: byName(parsePrometheusTextFormat(text)),
      samples: byName(parsePrometheusTextFormat(text.replace(/^# TYPE \S+ histogram$/gm, ''))),
    };
  }

  const sample = (s: { samples: Map<string, MetricFamily> }, name: string, labels: Record<string, string> = {}): number | undefined => {
    const m = s.samples.get(name)?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
    return m ? Number(m.value) : undefined;
  };

  it('is Prometheus text with the documented families and types', async () => {
    const fams = await scrape();
    const types = Object.fromEntries([...fams.families.values()].map((m) => [m.name, m.type]));
    expect(types).toMatchObject({
      etf_http_requests_total: 'COUNTER',
      etf_http_request_duration_seconds: 'HISTOGRAM',
      etf_engine_up: 'GAUGE',
      etf_engine_journal_seq: 'GAUGE',
      etf_engine_fill_seq: 'GAUGE',
      etf_engine_accounts: 'GAUGE',
      ndfex_feed_up: 'GAUGE',
      ndfex_feed_gaps_total: 'COUNTER',
      ndfex_feed_restarts_total: 'COUNTER',
      ndfex_feed_bad_datagrams_total: 'COUNTER',
      etf_ws_connections: 'GAUGE',
      etf_ws_deltas_total: 'COUNTER',
      process_cpu_seconds_total: 'COUNTER',
    });
    expect(sample(fams, 'etf_engine_up')).toBe(1);
    expect(sample(fams, 'etf_engine_accounts')).toBe(2);
  });

  it('counts requests by route and status, with a latency histogram', async () => {
    const labels = { method: 'GET', route: '/holdings', status: '200' };
    const before = await scrape();
    const ok0 = sample(before, 'etf_http_requests_total', labels) ?? 0;
    const denied0 = sample(before, 'etf_http_requests_total', { ...labels, status: '401' }) ?? 0;
    for (let i = 0; i < 3; i++) expect((await f.http.holdings('team1', 'team1pass')).status).toBe(200);
    expect((await f.http.holdings('team1', 'wrong')).status).toBe(401);
    expect((await fetch(`${f.sys.url}/no/such/route-${Date.now()}`)).status).toBe(404);

    const after = await scrape();
    expect(sample(after, 'etf_http_requests_total', labels)).toBe(ok0 + 3);
    expect(sample(after, 'etf_http_requests_total', { ...labels, status: '401' })).toBe(denied0 + 1);
    // Unknown paths share one label value: a URL scan cannot grow the series.
    expect(sample(after, 'etf_http_requests_total', { route: 'unmatched', status: '404' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, 'etf_http_request_duration_seconds_count', labels)).toBe(ok0 + 3);
    expect(sample(after, 'etf_http_request_duration_seconds_bucket', { ...labels, le: '+Inf' })).toBe(ok0 + 3);
    expect(sample(after, 'etf_http_request_duration_seconds_sum', labels)).toBeGreaterThan(0);
    // Buckets are cumulative: never fewer with a larger bound, and these quick answers all within the 5 s one.
    const bounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
    const cumulative = bounds.map((le) => sample(after, 'etf_http_request_duration_seconds_bucket', { ...labels, le: String(le) }) ?? -1);
    expect(cumulative).toEqual([...cumulative].sort((a, b) => a - b));
    expect(cumulative.at(-1)).toBe(ok0 + 3);
    // The scrape before this one was counted too.
    expect(sample(after, 'etf_http_requests_total', { route: '/metrics', status: '200' })).toBeGreaterThanOrEqual(1);
  });

  it('shows the engine fill sequence and the journal sequence moving', async () => {
    const before = await scrape();
    const fill0 = sample(before, 'etf_engine_fill_seq')!;
    const journal0 = sample(before, 'etf_engine_journal_seq')!;
    await buy(f.nc, 1, { 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: 1 });
    expect((await f.http.create('team1', 'team1pass', 1)).status).toBe(200);
    const after = await scrape();
    expect(sample(after, 'etf_engine_fill_seq')).toBe(fill0 + 10);
    expect(sample(after, 'etf_engine_journal_seq')).toBeGreaterThan(journal0);
  });

  it("repeats the feed bridge's gaps, restarts and bad datagrams", async () => {
    const status: FeedStatus = { clearing: counters({ gaps: 4, missed_messages: 9 }), market_data: counters({ restarts: 2, bad_datagrams: 1 }), ts: Date.now() };
    f.nc.publish(FEED_STATUS_SUBJECT, encode(status));
    const fams = await until(async () => {
      const s = await scrape();
      return sample(s, 'ndfex_feed_up') === 1 ? s : undefined;
    }, 'the gateway to receive the feed status');
    expect(sample(fams, 'ndfex_feed_gaps_total', { feed: 'clearing' })).toBe(4);
    expect(sample(fams, 'ndfex_feed_missed_messages_total', { feed: 'clearing' })).toBe(9);
    expect(sample(fams, 'ndfex_feed_restarts_total', { feed: 'market_data' })).toBe(2);
    expect(sample(fams, 'ndfex_feed_bad_datagrams_total', { feed: 'market_data' })).toBe(1);
  });

  it('counts WebSocket connections and the deltas fanned out to them', async () => {
    const ws = new WebSocket(`${f.sys.url.replace('http', 'ws')}/ws`, {
      headers: { authorization: `Basic ${Buffer.from('team2:team2pass').toString('base64')}` },
    });
    const messages: { type: string }[] = [];
    const waitFor = (type: string) =>
      new Promise<void>((resolve) => {
        const check = () => (messages.some((m) => m.type === type) ? resolve() : ws.once('message', check));
        check();
      });
    ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
    await waitFor('snapshot');
    const before = await scrape();
    expect(sample(before, 'etf_ws_connections')).toBe(1);
    const deltas0 = sample(before, 'etf_ws_deltas_total')!;
    await buy(f.nc, 2, { 3: 5 });
    await waitFor('delta');
    const after = await scrape();
    expect(sample(after, 'etf_ws_deltas_total')).toBe(deltas0 + 1);
    const closed = new Promise((r) => ws.once('close', r));
    ws.close();
    await closed;
    await until(async () => sample(await scrape(), 'etf_ws_connections') === 0, 'the connection to be counted closed');
  });
});

describe('routeLabel', () => {
  it('names a table route, a wildcard route, or "unmatched"', () => {
    const routes = ['/holdings', '/requests/*', '/positions/*'];
    expect(routeLabel('/holdings', routes)).toBe('/holdings');
    expect(routeLabel('/requests/r42', routes)).toBe('/requests/*');
    expect(routeLabel('/positions/1/3', routes)).toBe('/positions/*');
    expect(routeLabel('/holdings/x', routes)).toBe('unmatched');
    expect(routeLabel('/../../etc/passwd', routes)).toBe('unmatched');
  });
});
