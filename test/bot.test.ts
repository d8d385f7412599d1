import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { EtfsBody } from '../proto/http.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { api, buy, natsClient, startTestNats, tempDir, testConfig, undyBasket, until } from './helpers/system.js';
import { startMarket, type Market } from './helpers/market.js';

const run = promisify(execFile);

/** The starter bot against the built-in simulator: prices from its books, conversions through the real service. */
describe('starter bot (examples/starter-bot.ts)', () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let dir: ReturnType<typeof tempDir>;
  let market: Market;

  beforeAll(async () => {
    nats = await startTestNats();
    dir = tempDir();
    market = await startMarket(nats.url, testConfig(dir.path), { seed: 7, rosterIds: [] });
  });

  afterAll(async () => {
    await market?.close();
    await nats?.stop();
    nats?.remove();
    dir?.remove();
  });

  it('converts on fresh prices after a dry run, and ends with a scorecard line per conversion and its P&L', async () => {
    const nc = await natsClient(nats.url);
    await buy(nc, 1, undyBasket(5));
    await nc.close();
    // Market activity until UNDY has a price.
    await until(async () => {
      await market.sim.step(200);
      const body = (await api(market.system.url).send('GET', '/etfs')).body as EtfsBody;
      const p = body.etfs[0]?.price;
      return p && p.create_edge !== null && p.redeem_edge !== null ? p : undefined;
    }, 'a price with both edges', 30_000);

    // A threshold every edge beats: the bot acts on a price as soon as it has one. The market keeps moving
    // while it runs, so new prices reach it even if the one at its subscription was not there yet.
    const bot = run(process.execPath, [join(PROJECT_ROOT, 'dist/examples/starter-bot.js'), '--url', market.system.url, '--threshold=-1000000000', '--for', '3'], { timeout: 30_000 });
    let running = true;
    void bot.finally(() => (running = false)).catch(() => {});
    while (running) {
      await market.sim.step(20);
      await new Promise((r) => setTimeout(r, 100));
    }
    const { stdout } = await bot;
    const conversions = stdout.match(/(created|redeemed) \d+ UNDY at edge [-+]?[\d.]+\/unit, fee \d+/g) ?? [];
    expect(conversions.length).toBeGreaterThan(0);
    // A leg whose book went one-sided as the bot converted (the market moves while it runs) leaves a card unpriced: '—'.
    const scorecards = stdout.match(/scorecard r\d+: (create|redeem) \d+ UNDY, seen edge [-+]?[\d.]+\/unit, fee \d+, worth at mid ([-+]?[\d.]+|—), at the touch ([-+]?[\d.]+|—)/g) ?? [];
    expect(scorecards).toHaveLength(conversions.length);
    expect(stdout).toMatch(new RegExp(`${conversions.length} conversion\\(s\\), worth [-+]?[\\d.]+ at mid; P&L [-+]?[\\d.]+ \\(was [-+]?[\\d.]+, change [-+]?[\\d.]+\\)`));
    const h = (await api(market.system.url).holdings('team1', 'team1pass')).body.holdings;
    expect((h.UNDY ?? 0) + (h.KNAN ?? 0)).toBe(5); // units moved between basket and ETF, none lost
  });
});
