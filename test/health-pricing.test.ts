import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import { bboSubject, PRICE_BUCKET, type Bbo } from '../proto/marketdata.js';
import { OPERATOR_ROUTES } from '../proto/operator.js';
import { DESK_STREAM } from '../proto/subjects.js';
import type { Config } from '../src/config/config.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { startPricing, type PricingHandle } from '../src/pricing/service.js';
import { api, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';

/**
 * The pricing service serves nothing itself: a pricing that stopped, or whose
 * writes fail, froze GET /etfs, the WebSocket prices, the charts and the
 * scorecards while /health said nothing. It reports its status; the gateway
 * makes its silence and its failing writes problems.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let cfg: Config;
let sys: TestSystem;
let nc: NatsConnection;
let pricing: PricingHandle | undefined;
const gateways: GatewayHandle[] = [];
const OPERATOR = { username: 'instructor', password: 'instructorpass' };

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  // Bad quotes of a symbol reported after 300 ms of nothing else, not 3 s.
  cfg = testConfig(dir.path, { operator: OPERATOR, pricingBadBboMs: 300 });
  sys = await startSystem(nats.url, cfg);
  nc = await natsClient(nats.url);
});

afterAll(async () => {
  await pricing?.close();
  for (const g of gateways) await g.close();
  await nc?.close();
  await sys?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

/** Limits still set when a test ended (it failed before lifting them): lifted after it, not left to the next. */
const lifts: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const lift of lifts.splice(0)) await lift();
});

/** A limit no message of pricing's fits, set on `stream` (a quota): JetStream refuses its writes until lifted. */
async function squeeze(stream: string): Promise<() => Promise<void>> {
  const jsm = await jetstreamManager(nc);
  const { config } = await jsm.streams.info(stream);
  await jsm.streams.update(stream, { ...config, max_msg_size: 16 });
  let lifted = false;
  const lift = async () => {
    if (lifted) return;
    lifted = true;
    await jsm.streams.update(stream, config);
  };
  lifts.push(lift);
  return lift;
}

const health = async (url = sys.url) => (await api(url).send('GET', '/health')).body;
const pricingProblems = (h: { problems?: string[] }) => (h.problems ?? []).filter((p) => /pricing/.test(p));
const metrics = async () => fetch(`${sys.url}/metrics`).then((r) => r.text());
const metric = (text: string, name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);

/** Quotes for UNDY and each of its components (symbols 3..13), moved each time: UNDY's price changes, and is written. */
let tick = 0;
const quote = async () => {
  tick++;
  for (let symbol = 3; symbol <= 13; symbol++) {
    const b: Bbo = { symbol, bid: 1000 + tick, bid_qty: 10, ask: 1010 + tick, ask_qty: 10, ts: 0, md_seq: tick };
    nc.publish(bboSubject(symbol), encode(b));
  }
  await nc.flush();
};

it('a gateway run without pricing does not count it missing', async () => {
  const before = await health();
  expect(before.pricing).toEqual({ live: false, age_ms: null });
  expect(pricingProblems(before)).toEqual([]);
});

describe('with pricing running', () => {
  beforeAll(async () => {
    pricing = await startPricing(cfg, nats.url, quietLog);
    await quote();
  });

  it('/health and /metrics show its counters', async () => {
    const heard = await until(async () => {
      const h = await health();
      return h.pricing?.live && h.pricing.bbos >= 1 && h;
    }, 'pricing on /health');
    expect(heard.pricing).toMatchObject({ live: true, bad_bbos: 0, publish_errors: 0, desk: { write_errors: 0 }, started: expect.any(Number) });
    expect(heard.pricing.failing).toBeUndefined();
    expect(pricingProblems(heard)).toEqual([]);
    const m = await metrics();
    expect(metric(m, 'etf_pricing_up')).toBe(1);
    expect(metric(m, 'etf_pricing_bbos_total')).toBeGreaterThanOrEqual(1);
    expect(metric(m, 'etf_pricing_publish_errors_total')).toBe(0);
  });

  it('a symbol with only bad best bids/offers: a problem naming it and their count, on /health, /metrics and the operator page, until a good one comes', async () => {
    const good = pricing!.state.books.get(5)!;
    // Crossed, a price of zero, a NaN bid (not of the Bbo shape): all ignored, the last good quote kept.
    const bad: Array<Omit<Bbo, 'bid'> & { bid: number }> = [
      { symbol: 5, bid: 1020, bid_qty: 10, ask: 1010, ask_qty: 10, ts: 0, md_seq: 900 },
      { symbol: 5, bid: 0, bid_qty: 10, ask: 1010, ask_qty: 10, ts: 0, md_seq: 901 },
      { symbol: 5, bid: NaN, bid_qty: 10, ask: 1010, ask_qty: 10, ts: 0, md_seq: 902 },
    ];
    for (const b of bad) nc.publish(bboSubject(5), encode(b));
    await nc.flush();
    const told = await until(async () => {
      const h = await health();
      return pricingProblems(h).length > 0 && h;
    }, 'the bad quotes on /health');
    expect(told.status).toBe('degraded');
    expect(pricingProblems(told)).toEqual([
      expect.stringMatching(/^the pricing service has had only bad best bids\/offers of symbol 5 \(FISH\) for \d+ s \(3, the last: bid is not an i32 or null\): the prices of UNDY keep its last good quote and do not move with it/),
    ]);
    expect(told.pricing.bad_bbo_symbols).toEqual([{ symbol: 5, ticker: 'FISH', etfs: ['UNDY'], count: 3, problem: 'bid is not an i32 or null', since: expect.any(Number), for_ms: expect.any(Number) }]);
    expect(told.pricing.bad_bbos).toBe(3);
    expect(pricing!.state.books.get(5)).toEqual(good);
    expect(metric(await metrics(), 'etf_pricing_bad_bbo_symbols')).toBe(1);
    expect(metric(await metrics(), 'etf_pricing_bad_bbos_total')).toBe(3);
    const overview = await api(sys.url).send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] });
    expect(overview.body.pricing.problems).toEqual(pricingProblems(told));

    // A good quote of it again: its prices move, and the problem goes (the count stays, for the record).
    await quote();
    const cleared = await until(async () => {
      const h = await health();
      return pricingProblems(h).length === 0 && h;
    }, 'the bad quotes gone from /health');
    expect(cleared.pricing.bad_bbo_symbols).toBeUndefined();
    expect(cleared.pricing.bad_bbos).toBe(3);
    expect(metric(await metrics(), 'etf_pricing_bad_bbo_symbols')).toBe(0);
  });

  it('prices the bucket does not store: a problem naming the error, on /health, /metrics and the operator page, until they are stored', async () => {
    const lift = await squeeze(`KV_${PRICE_BUCKET}`);
    await quote();
    const told = await until(async () => {
      const h = await health();
      return pricingProblems(h).length > 0 && h;
    }, 'the failing price writes on /health');
    expect(told.status).toBe('degraded');
    expect(pricingProblems(told)).toEqual([expect.stringMatching(/^the pricing service has not stored an ETF price for \d+ s \(.*message size exceeds.*\): GET \/etfs and the WebSocket stream keep showing the last prices stored/)]);
    expect(told.pricing.failing).toEqual([expect.objectContaining({ what: 'prices', error: expect.stringMatching(/message size exceeds/) })]);
    expect(told.pricing.last_error).toMatchObject({ what: 'prices', error: expect.stringMatching(/message size exceeds/) });
    const m = await metrics();
    expect(metric(m, 'etf_pricing_publish_errors_total')).toBeGreaterThan(0);
    expect(metric(m, 'etf_pricing_writes_failing_seconds{output="prices"}')).toBeGreaterThanOrEqual(3);
    const overview = await api(sys.url).send('GET', OPERATOR_ROUTES.overview, { basic: [OPERATOR.username, OPERATOR.password] });
    expect(overview.body.pricing.problems).toEqual(pricingProblems(told));

    // Room again: the retried price is stored, and /health no longer names it (the last error stays, for the record).
    await lift();
    const cleared = await until(async () => {
      const h = await health();
      return pricingProblems(h).length === 0 && h;
    }, 'the problem gone from /health');
    expect(cleared.pricing.failing).toBeUndefined();
    expect(cleared.pricing.last_error).toMatchObject({ what: 'prices' });
    expect(metric(await metrics(), 'etf_pricing_writes_failing_seconds{output="prices"}')).toBe(0);
  });

  it('chart samples and scorecards the desk stream does not store: a problem naming the error, until one is stored', async () => {
    const lift = await squeeze(DESK_STREAM);
    // The desk samples every second while there is a price to chart (the test before made one).
    const told = await until(async () => {
      const h = await health();
      return pricingProblems(h).length > 0 && h;
    }, 'the failing desk writes on /health');
    expect(pricingProblems(told)).toEqual([expect.stringMatching(/^the pricing service has not written the desk stream for \d+ s \(.*message size exceeds.*\): the charts and the conversions' scorecards miss what is not written/)]);
    expect(told.pricing.desk.write_errors).toBeGreaterThan(0);
    expect(metric(await metrics(), 'etf_pricing_desk_write_errors_total')).toBeGreaterThan(0);

    await lift();
    const cleared = await until(async () => {
      const h = await health();
      return pricingProblems(h).length === 0 && h;
    }, 'the desk problem gone from /health');
    expect(cleared.pricing.last_error).toMatchObject({ what: 'desk', error: expect.stringMatching(/message size exceeds/) });
  });

  it('pricing stopped: /health is degraded naming it (from the start on a gateway told the system runs it), and not once it is back', async () => {
    await pricing!.close();
    pricing = undefined;
    // A gateway started now never hears pricing: told the system runs it (as the launcher tells its gateway), that is a problem too, once a start would have been heard.
    const expecting = await startGateway({ ...cfg, expectPricing: true, pricingStartGraceMs: 1000 }, nats.url, quietLog);
    gateways.push(expecting);
    const expectingUrl = `http://127.0.0.1:${expecting.port}`;
    const silent = await until(
      async () => {
        const h = await health();
        return pricingProblems(h).length > 0 && h;
      },
      'pricing taken for down',
      15_000,
    );
    expect(silent.status).toBe('degraded');
    expect(silent.pricing.live).toBe(false);
    expect(pricingProblems(silent)).toEqual([expect.stringMatching(/^the pricing service last reported \d+ s ago: ETF prices \(GET \/etfs, the WebSocket stream\), the charts and the scorecards are not being updated/)]);
    expect(metric(await metrics(), 'etf_pricing_up')).toBe(0);

    const never = await until(
      async () => {
        const h = await health(expectingUrl);
        return pricingProblems(h).length > 0 && h;
      },
      'pricing never heard, on the expecting gateway',
      15_000,
    );
    expect(pricingProblems(never)).toEqual([expect.stringMatching(/^the pricing service has not reported since this gateway started \d+ s ago/)]);

    pricing = await startPricing(cfg, nats.url, quietLog);
    for (const url of [sys.url, expectingUrl]) {
      const back = await until(async () => {
        const h = await health(url);
        return pricingProblems(h).length === 0 && h;
      }, `pricing back on ${url}`);
      expect(back.pricing.live).toBe(true);
    }
    expect((await health()).pricing.restarts).toBe(1);
  });

  it('pricing restarting again and again is a problem while each run reports', async () => {
    // Two more runs, three with the one before, within the minute: each is heard (its first status goes out at once), none lasts.
    for (let i = 0; i < 2; i++) {
      const started = (await health()).pricing?.started;
      await pricing?.close();
      pricing = await startPricing(cfg, nats.url, quietLog);
      await until(async () => (await health()).pricing?.started !== started, 'the new run heard');
    }
    const looping = await health();
    expect(looping.pricing.live).toBe(true);
    expect(pricingProblems(looping)).toEqual([expect.stringMatching(/^the pricing service restarted 3 times in the last minute: is it crashing/)]);
    expect(metric(await metrics(), 'etf_pricing_restarts_total')).toBe(3);
  });
});
