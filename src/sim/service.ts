import type { Logger } from '../shared/log.js';
import { SimMarket } from './market.js';
import type { SimSettings } from '../config/sim.js';
import { SAVE_EVERY_MS, SimStateKeeper } from './state.js';
import { SimFeeds, type SimulatorStats } from './feeds.js';
import { SimPacer } from './pacer.js';

export type { SimulatorStats } from './feeds.js';

export interface SimulatorOptions extends SimSettings {
  rosterIds: readonly number[];
  log: Logger;
  /** No timers at all: the caller drives the market with step(), snapshot() and heartbeat(). For tests. */
  manual?: boolean;
  /** Exchange clock in ns; wall clock by default. */
  clock?: () => bigint;
  /**
   * Where the simulator keeps its state (seq numbers, timestamps, books), so
   * that a restart continues the same exchange session instead of starting a
   * new one (which would reset every team's positions). None: a new session each start.
   */
  stateFile?: string;
}

export interface SimulatorHandle {
  readonly market: SimMarket;
  /** Runs `n` market events now and resolves once their datagrams are handed to the kernel. */
  step(n?: number): Promise<void>;
  /** Sends one snapshot round now. */
  snapshot(): Promise<void>;
  /** Sends a heartbeat on both live feeds now. */
  heartbeat(): Promise<void>;
  stats(): SimulatorStats;
  /** The UDP source port its feeds are sent from. */
  port(): number;
  close(): Promise<void>;
}

/** Wall-clock ns that never steps back: the epoch at start plus a monotonic clock. */
const epochAtStart = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
const wallClockNs = (): bigint => epochAtStart + process.hrtime.bigint();

/**
 * The simulator's I/O edge: runs the market at `rate` events per second and
 * sends its messages on the NDFEX multicast groups (TTL 1: never off the host).
 */
export async function startSimulator(opts: SimulatorOptions): Promise<SimulatorHandle> {
  const market = new SimMarket({ seed: opts.seed, rosterIds: opts.rosterIds, clock: opts.clock ?? wallClockNs });
  const state = new SimStateKeeper(opts.stateFile, market, opts.log);
  const port = state.restore(opts.rate);
  const feeds = await SimFeeds.open(market, opts, opts.log, port);
  // Kept with the session: a restart that continues it sends from this port again.
  state.running(feeds.port());
  const pacer = opts.manual
    ? null
    : new SimPacer(opts.rate, SAVE_EVERY_MS, {
        step: (n) => void feeds.step(n),
        snapshot: () => void feeds.snapshot(),
        save: () => state.save(false),
        heartbeatIfQuiet: () => feeds.heartbeatIfQuiet(),
      });
  pacer?.start();
  opts.log.info(
    { clearing: opts.clearing, md: opts.md, snapshot: opts.snapshot, iface: opts.iface, rate: opts.rate, seed: opts.seed, roster: opts.rosterIds.length, manual: !!opts.manual },
    'simulator started',
  );

  let closed = false;
  return {
    market,
    step: feeds.step,
    snapshot: feeds.snapshot,
    heartbeat: feeds.heartbeat,
    stats: () => ({ ...feeds.stats }),
    port: () => feeds.port(),
    close: async () => {
      if (closed) return;
      closed = true;
      pacer?.stop();
      await feeds.close();
      state.save(true);
    },
  };
}
