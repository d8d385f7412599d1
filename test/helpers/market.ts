import type { Config } from '../../src/config/config.js';
import { startBridge, type BridgeHandle } from '../../src/feed/service.js';
import { startPricing, type PricingHandle } from '../../src/pricing/service.js';
import { startSimulator, type SimulatorHandle } from '../../src/sim/service.js';
import { quietLog, startSystem, type TestSystem } from './system.js';
import { bridgeOpts } from './feed.js';

export interface Market {
  system: TestSystem;
  pricing: PricingHandle;
  bridge: BridgeHandle;
  /** Manual: the test drives it with step(). */
  sim: SimulatorHandle;
  close(): Promise<void>;
}

/** The whole chain in this process: simulator → multicast → feed bridge → NATS → engine and pricing → gateway. */
export async function startMarket(natsUrl: string, cfg: Config, o: { seed: number; rosterIds: number[] }): Promise<Market> {
  const system = await startSystem(natsUrl, cfg);
  const pricing = await startPricing(cfg, natsUrl, quietLog);
  const opts = await bridgeOpts(natsUrl);
  const bridge = await startBridge(opts, quietLog);
  const sim = await startSimulator({ clearing: opts.clearing, md: opts.marketData, snapshot: opts.snapshot, iface: '127.0.0.1', rate: 1, seed: o.seed, rosterIds: o.rosterIds, log: quietLog, manual: true });
  return {
    system,
    pricing,
    bridge,
    sim,
    close: async () => {
      await sim.close();
      await bridge.close();
      await pricing.close();
      await system.close();
    },
  };
}
