import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decode, encode } from '../proto/codec.js';
import { BBO_BUCKET, bboSubject, priceSubject, type Bbo, type EtfPrice } from '../proto/marketdata.js';
import type { EtfsBody } from '../proto/http.js';
import type { Config } from '../src/config/config.js';
import { buildInstruments, loadBaskets } from '../src/config/baskets.js';
import { PricingState, Throttle, bboUnusable, computePrice } from '../src/pricing/core.js';
import { startPricing, type PricingHandle } from '../src/pricing/service.js';
import { MULTI_BASKETS, api, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';

const bbo = (symbol: number, bid: number | null, ask: number | null, md_seq = 1): Bbo => ({ symbol, bid, bid_qty: bid === null ? 0 : 10, ask, ask_qty: ask === null ? 0 : 10, ts: 0, md_seq });

/** TECH = 2 KNAN(3) + 1 STED(4) + 3 FISH(5), symbol 101 (config/baskets.multi.example.json). */
const TECH_BOOKS = [bbo(3, 100, 110), bbo(4, 200, 210), bbo(5, 50, 55), bbo(101, 600, 620)];
const TECH_EXPECTED = {
  etf: 'TECH',
  symbol: 101,
  nav: 2 * 105 + 205 + 3 * 52.5, // 572.5
  create_cost: 2 * 110 + 210 + 3 * 55, // 595
  redeem_proceeds: 2 * 100 + 200 + 3 * 50, // 550
  etf_bid: 600,
  etf_ask: 620,
  premium: (610 - 572.5) / 572.5,
  create_edge: 600 - 595,
  redeem_edge: 550 - 620,
};

describe('pricing core', () => {
  const instruments = loadBaskets(MULTI_BASKETS);
  const tech = instruments.baskets.get('TECH')!;

  it('prices a weighted basket from the books', () => {
    const books = new Map(TECH_BOOKS.map((b) => [b.symbol, b]));
    expect(computePrice(tech, books, 5)).toEqual({ ...TECH_EXPECTED, ts: 5 });
  });

  it('leaves a figure null when a quote it needs is missing, never guesses', () => {
    const books = new Map([bbo(3, 100, null), bbo(4, 200, 210), bbo(5, 50, 55)].map((b) => [b.symbol, b]));
    const p = computePrice(tech, books, 0);
    expect(p).toMatchObject({ nav: null, create_cost: null, redeem_proceeds: 550, etf_bid: null, etf_ask: null, premium: null, create_edge: null, redeem_edge: null });
  });

  it('tells which ETFs a symbol moves', () => {
    const state = new PricingState(instruments.baskets);
    expect([...state.apply(bbo(3, 1, 2))].sort()).toEqual(['TECH', 'UNDY']);
    expect(state.apply(bbo(12, 1, 2))).toEqual(['UNDY']);
    expect(state.apply(bbo(101, 1, 2))).toEqual(['TECH']);
    expect(state.apply(bbo(1, 1, 2))).toEqual([]);
    // A stored value never overwrites a live one.
    expect(state.seed(bbo(3, 50, 60))).toEqual([]);
    expect(state.books.get(3)!.bid).toBe(1);
  });

  it('throttles per key, deferring rather than dropping the last change', () => {
    const t = new Throttle(100);
    expect(t.request('A', 1000)).toBe('now');
    t.published('A', 1000);
    expect(t.request('B', 1010)).toBe('now');
    expect(t.request('A', 1030)).toEqual({ delayMs: 70 });
    expect(t.request('A', 1050)).toBe('pending');
    t.published('A', 1100);
    expect(t.request('A', 1150)).toEqual({ delayMs: 50 });
    t.skipped('A');
    expect(t.request('A', 1200)).toBe('now');
  });

  it('takes a crossed book or a price not above zero for unusable, a locked or one-sided book not', () => {
    expect(bboUnusable(bbo(5, 56, 55))).toBe('crossed: bid 56 above ask 55');
    expect(bboUnusable(bbo(5, 0, 55))).toBe('bid 0 is not above zero');
    expect(bboUnusable(bbo(5, 50, -1))).toBe('ask -1 is not above zero');
    expect(bboUnusable(bbo(5, 55, 55))).toBeNull();
    expect(bboUnusable(bbo(5, null, 55))).toBeNull();
    expect(bboUnusable(bbo(5, 50, null))).toBeNull();
  });

  it('accepts a basket of one ETF holding another', () => {
    const inst = buildInstruments({ etfs: [{ name: 'DUO', symbol: 200, components: { UNDY: 1, GOLD: 2 } }] }, 'test');
    const books = new Map([bbo(13, 1000, 1010), bbo(1, 500, 510)].map((b) => [b.symbol, b]));
    expect(computePrice(inst.baskets.get('DUO')!, books, 0)).toMatchObject({ nav: 1005 + 2 * 505, create_cost: 1010 + 1020 });
  });
});

/** Every EtfPrice published for one ETF, with a way to wait for one that matches. */
function priceWatcher(nc: NatsConnection, etf: string) {
  const got: EtfPrice[] = [];
  const waiters = new Set<() => void>();
  const sub = nc.subscribe(priceSubject(etf), {
    callback: (_err, m) => {
      got.push(decode<EtfPrice>(m.data));
      for (const w of waiters) w();
    },
  });
  return {
    got,
    stop: () => sub.unsubscribe(),
    waitFor: (pred: (p: EtfPrice) => boolean, what: string, timeoutMs = 10_000) =>
      new Promise<EtfPrice>((resolve, reject) => {
        const check = () => {
          const hit = got.find(pred);
          if (!hit) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(got.slice(-3))}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}

const publishBbos = async (nc: NatsConnection, bbos: Bbo[]) => {
  for (const b of bbos) nc.publish(bboSubject(b.symbol), encode(b));
  await nc.flush();
};

describe('pricing actor and GET /etfs', () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let dir: ReturnType<typeof tempDir>;
  let cfg: Config;
  let system: TestSystem;
  let pricing: PricingHandle;
  let nc: NatsConnection;
  const extra: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    nats = await startTestNats();
    dir = tempDir();
    cfg = testConfig(dir.path, { basketsFile: MULTI_BASKETS });
    system = await startSystem(nats.url, cfg);
    pricing = await startPricing(cfg, nats.url, quietLog);
    nc = await natsClient(nats.url);
  });

  afterAll(async () => {
    for (const e of extra) await e.close();
    await pricing?.close();
    await system?.close();
    await nc?.close();
    await nats?.stop();
    nats?.remove();
    dir?.remove();
  });

  const getEtfs = async () => {
    const r = await api(system.url).send('GET', '/etfs');
    expect(r.status).toBe(200);
    return r.body as EtfsBody;
  };

  it('lists every ETF with its basket, prices null before any quote', async () => {
    const body = await getEtfs();
    expect(body.etfs.map((e) => e.name)).toEqual(['UNDY', 'TECH']);
    const tech = body.etfs[1]!;
    expect(tech).toEqual({
      name: 'TECH',
      symbol: 101,
      components: [
        { ticker: 'KNAN', symbol: 3, weight: 2 },
        { ticker: 'STED', symbol: 4, weight: 1 },
        { ticker: 'FISH', symbol: 5, weight: 3 },
      ],
      price: null,
    });
    expect(body.etfs[0]!.components).toHaveLength(10);
    expect(body.etfs[0]!.price).toBeNull();
    const wrong = await api(system.url).send('POST', '/etfs');
    expect(wrong.status).toBe(405);
  });

  it('prices from published best bids/asks, on the subject and on GET /etfs', async () => {
    const watch = priceWatcher(nc, 'TECH');
    await publishBbos(nc, TECH_BOOKS);
    const published = await watch.waitFor((p) => p.create_cost === TECH_EXPECTED.create_cost && p.etf_ask === 620, 'the TECH price');
    watch.stop();
    expect(published).toMatchObject(TECH_EXPECTED);
    const listed = await until(async () => {
      const t = (await getEtfs()).etfs.find((e) => e.name === 'TECH')!;
      return t.price?.etf_ask === 620 && t.price.create_cost === 595 ? t.price : undefined;
    }, 'GET /etfs to show the TECH price');
    expect(listed).toMatchObject(TECH_EXPECTED);
    // UNDY shares KNAN/STED/FISH but lacks its other seven components: priced, with nulls.
    const undy = (await getEtfs()).etfs.find((e) => e.name === 'UNDY')!;
    expect(undy.price).toMatchObject({ nav: null, create_cost: null, redeem_proceeds: null });
  });

  it('ignores bad Bbo payloads and keeps its books', async () => {
    const watch = priceWatcher(nc, 'TECH');
    const before = pricing.stats().badBbos;
    nc.publish(bboSubject(5), new Uint8Array([0xc1, 0xff, 0x00]));
    nc.publish(bboSubject(5), encode({ symbol: 5, bid: 'cheap', ask: 60 }));
    await publishBbos(nc, [bbo(4, 205, 215)]);
    const p = await watch.waitFor((x) => x.redeem_proceeds === 555, 'the price after the good Bbo');
    watch.stop();
    expect(pricing.stats().badBbos).toBe(before + 2);
    expect(p).toMatchObject({ create_cost: 600, redeem_proceeds: 555 });
    expect(pricing.state.books.get(5)).toMatchObject({ bid: 50, ask: 55 });
  });

  it('publishes a burst of changes at most once per 100 ms per ETF, ending on the last one', async () => {
    const watch = priceWatcher(nc, 'TECH');
    const started = performance.now();
    const burst = Array.from({ length: 300 }, (_, i) => bbo(3, 100 + i * 5, 110 + i * 5, 1000 + i));
    await publishBbos(nc, burst);
    const last = burst[burst.length - 1]!;
    const final = await watch.waitFor((p) => p.create_cost === 2 * last.ask! + 215 + 3 * 55, 'the price of the last change');
    const elapsedMs = performance.now() - started;
    await nc.flush();
    watch.stop();
    // The final value is the last one published, and at most one went out per started 100 ms (+1 leading).
    expect(watch.got[watch.got.length - 1]).toEqual(final);
    expect(watch.got.length).toBeGreaterThanOrEqual(1);
    expect(watch.got.length).toBeLessThanOrEqual(Math.ceil(elapsedMs / 100) + 1);
    expect(watch.got.length).toBeLessThan(burst.length / 10);
  });

  it('starts from the last best bids/asks in the bridge bucket', async () => {
    const kv = await new Kvm(nc).create(BBO_BUCKET, { history: 1 });
    for (let s = 3; s <= 12; s++) await kv.put(String(s), encode(bbo(s, 1000, 1010)));
    await kv.put('13', encode(bbo(13, 10_100, 10_200)));
    const watch = priceWatcher(nc, 'UNDY');
    // A second actor started now knows the books only from the bucket: no Bbo is published live.
    const late = await startPricing(cfg, nats.url, quietLog);
    extra.push(late);
    const p = await watch.waitFor((x) => x.nav !== null, 'UNDY priced from the bucket');
    watch.stop();
    expect(p).toMatchObject({ nav: 10_050, create_cost: 10_100, redeem_proceeds: 10_000, etf_bid: 10_100, etf_ask: 10_200, create_edge: 0, redeem_edge: -200 });
    expect(p.premium).toBeCloseTo((10_150 - 10_050) / 10_050, 12);
  });
});
