import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { EtfsBody } from '../proto/http.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { startBridge, type BridgeHandle } from '../src/feed/service.js';
import { startPricing, type PricingHandle } from '../src/pricing/service.js';
import { startSimulator, type SimulatorHandle } from '../src/sim/service.js';
import { api, buy, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, undyBasket, until, type TestSystem } from './helpers/system.js';
import { bridgeOpts } from './helpers/feed.js';

const run = promisify(execFile);

/** The starter bot against the built-in simulator: prices from its books, conversions through the real service. */
describe('starter bot (examples/starter-bot.ts)', () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let dir: ReturnType<typeof tempDir>;
  let system: TestSystem;
  let bridge: BridgeHandle;
  let pricing: PricingHandle;
  let sim: SimulatorHandle;

  beforeAll(async () => {
    nats = await startTestNats();
    dir = tempDir();
    const cfg = testConfig(dir.path);
    system = await startSystem(nats.url, cfg);
    pricing = await startPricing(cfg, nats.url, quietLog);
    const opts = await bridgeOpts(nats.url);
    bridge = await startBridge(opts, quietLog);
    sim = await startSimulator({ clearing: opts.clearing, md: opts.marketData, snapshot: opts.snapshot, iface: '127.0.0.1', rate: 1, seed: 7, rosterIds: [], log: quietLog, manual: true });
  });

  afterAll(async () => {
    await sim?.close();
    await bridge?.close();
    await pricing?.close();
    await system?.close();
    await nats?.stop();
    nats?.remove();
    dir?.remove();
  });

  it('makes at least one conversion in a fixed time, and its holdings reconcile with GET /holdings', async () => {
    const nc = await natsClient(nats.url);
    await buy(nc, 1, undyBasket(5));
    await nc.close();
    // Market activity until UNDY has a price.
    await until(async () => {
      await sim.step(200);
      const body = (await api(system.url).send('GET', '/etfs')).body as EtfsBody;
      const p = body.etfs[0]?.price;
      return p && p.create_edge !== null && p.redeem_edge !== null ? p : undefined;
    }, 'a price with both edges', 30_000);

    // A threshold every edge beats: the bot acts on the first price it sees.
    const { stdout } = await run(process.execPath, [join(PROJECT_ROOT, 'dist/examples/starter-bot.js'), '--url', system.url, '--threshold=-1000000000', '--for', '2'], { timeout: 30_000 });
    expect(stdout).toMatch(/(created|redeemed) 1 UNDY at edge/);
    expect(stdout).toMatch(/[1-9]\d* conversion\(s\); holdings reconciled with GET \/holdings/);
    const h = (await api(system.url).holdings('team1', 'team1pass')).body.holdings;
    expect((h.UNDY ?? 0) + (h.KNAN ?? 0)).toBe(5); // units moved between basket and ETF, none lost
  });
});
