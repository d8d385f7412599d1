import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bbo } from '../proto/marketdata.js';
import type { EtfsBody } from '../proto/http.js';
import { NDFEX_SYMBOLS } from '../proto/symbols.js';
import { loadBaskets } from '../src/config/baskets.js';
import type { BridgeHandle } from '../src/feed/service.js';
import { computePrice } from '../src/pricing/core.js';
import type { SimulatorHandle } from '../src/sim/service.js';
import { UNDY_COMPONENTS } from '../src/sim/market.js';
import { api, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';
import { startMarket, type Market } from './helpers/market.js';

/**
 * The whole chain on one host: simulator → multicast → feed bridge → NATS →
 * engine (holdings) and pricing actor → gateway (GET /holdings, GET /etfs).
 */
describe('simulator through the feed bridge to the engine and pricing', () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let dir: ReturnType<typeof tempDir>;
  let market: Market;
  let system: TestSystem;
  let bridge: BridgeHandle;
  let sim: SimulatorHandle;

  beforeAll(async () => {
    nats = await startTestNats();
    dir = tempDir();
    market = await startMarket(nats.url, testConfig(dir.path), { seed: 2024, rosterIds: [1, 2] }); // roster: 1 team1, 2 team2
    ({ system, bridge, sim } = market);
  });

  afterAll(async () => {
    await market?.close();
    await nats?.stop();
    nats?.remove();
    dir?.remove();
  });

  it('moves demo teams’ holdings, prices UNDY from the live books, and lets a team create UNDY', async () => {
    for (let i = 0; i < 30; i++) {
      await sim.step(100);
      // Let the bridge, in this same process, read its sockets between bursts.
      await new Promise((r) => setImmediate(r));
    }
    const fills = sim.stats().fills;
    await until(() => bridge.stats().status.clearing.messages >= fills, `${fills} fills at the bridge`);
    await bridge.idle();
    expect(bridge.stats().status.clearing.gaps).toBe(0);
    expect(bridge.stats().status.market_data.gaps).toBe(0);

    // Holdings are exactly the simulator's positions for the team.
    const client = api(system.url);
    const expected = Object.fromEntries(NDFEX_SYMBOLS.map((s) => [s.ticker, sim.market.position(1, s.id)]));
    const held = await until(async () => {
      const r = await client.holdings('team1', 'team1pass');
      const h = r.body.holdings as Record<string, number>;
      return NDFEX_SYMBOLS.every((s) => (h[s.ticker] ?? 0) === expected[s.ticker]) ? h : undefined;
    }, 'team1 holdings to match the simulator');
    expect(Object.values(held).some((q) => q !== 0)).toBe(true);

    // UNDY's price on GET /etfs is the one computed from the simulator's own books.
    const books = new Map<number, Bbo>();
    for (const [symbol, b] of sim.market.books) {
      const bid = b.bids[0];
      const ask = b.asks[0];
      books.set(symbol, { symbol, bid: bid?.price ?? null, bid_qty: 0, ask: ask?.price ?? null, ask_qty: 0, ts: 0, md_seq: 0 });
    }
    const want = computePrice(loadBaskets(undefined).baskets.get('UNDY')!, books, 0);
    expect(want.nav).not.toBeNull();
    const listed = await until(async () => {
      const body = (await client.send('GET', '/etfs')).body as EtfsBody;
      const p = body.etfs.find((e) => e.name === 'UNDY')?.price;
      return p && p.nav === want.nav && p.create_cost === want.create_cost && p.etf_bid === want.etf_bid && p.etf_ask === want.etf_ask ? p : undefined;
    }, 'GET /etfs to price UNDY from the simulated books');
    expect(listed).toMatchObject({ ...want, ts: expect.any(Number) });

    // The team bought whole baskets: it can create UNDY from them.
    const units = Math.min(...UNDY_COMPONENTS.map((s) => sim.market.position(1, s)));
    expect(units).toBeGreaterThan(0);
    const created = await client.create('team1', 'team1pass', units, 'UNDY');
    expect(created.status).toBe(200);
    expect(created.body.holdings.UNDY).toBe(expected.UNDY! + units);
  });
});
