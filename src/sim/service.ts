import dgram from 'node:dgram';
import type { Logger } from '../shared/log.js';
import type { ClearingMessage, MdMessage } from '../../proto/ndfex.js';
import { SimMarket } from './market.js';
import { packClearing, packMd } from './datagrams.js';
import type { Endpoint, SimSettings } from '../config/sim.js';
import { readSimState, writeSimState } from './state.js';

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

export interface SimulatorStats {
  events: number;
  mdMessages: number;
  mdDatagrams: number;
  fills: number;
  clearingDatagrams: number;
  snapshots: number;
  sendErrors: number;
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
  close(): Promise<void>;
}

const SNAPSHOT_EVERY_MS = 500;
const SAVE_EVERY_MS = 1000;
const HEARTBEAT_AFTER_MS = 500;
const PACE_EVERY_MS = 5;
/** Most events one pacing turn runs, so a flood still lets timers and I/O through. */
const MAX_EVENTS_PER_TURN = 5000;

/** More seq numbers than one save interval can use at `rate` events a second (a step sends at most ~32 messages). */
const crashSeqMargin = (rate: number): number => Math.max(1000, Math.ceil((rate * 32 * 2 * SAVE_EVERY_MS) / 1000));

/** Wall-clock ns that never steps back: the epoch at start plus a monotonic clock. */
const epochAtStart = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
const wallClockNs = (): bigint => epochAtStart + process.hrtime.bigint();

/**
 * The simulator's I/O edge: runs the market at `rate` events per second and
 * sends its messages on the NDFEX multicast groups (TTL 1: never off the host).
 */
export async function startSimulator(opts: SimulatorOptions): Promise<SimulatorHandle> {
  const market = new SimMarket({ seed: opts.seed, rosterIds: opts.rosterIds, clock: opts.clock ?? wallClockNs });
  const saved = opts.stateFile ? readSimState(opts.stateFile) : null;
  if (saved) {
    market.restoreState(saved.market);
    // Messages sent after the last save of a crashed run must never be reused with other content.
    const skipped = saved.clean ? 0 : crashSeqMargin(opts.rate);
    market.skipSeqs(skipped);
    opts.log.info({ stateFile: opts.stateFile, mdSeq: market.lastMdSeq, clearingSeq: market.lastClearingSeq, afterCrash: !saved.clean, skipped }, 'simulator continues its session');
  }
  const save = (clean: boolean) => {
    if (!opts.stateFile) return;
    try {
      writeSimState(opts.stateFile, market.exportState(), clean);
    } catch (err) {
      opts.log.warn({ err: (err as Error).message, stateFile: opts.stateFile }, 'simulator state not saved');
    }
  };
  // From now on the file says "running": a crash before the next clean stop is known as one.
  save(false);
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  socket.setMulticastInterface(opts.iface);
  socket.setMulticastLoopback(true);
  socket.setMulticastTTL(1);
  socket.on('error', (err) => opts.log.warn({ err: err.message }, 'simulator socket error'));

  const stats: SimulatorStats = { events: 0, mdMessages: 0, mdDatagrams: 0, fills: 0, clearingDatagrams: 0, snapshots: 0, sendErrors: 0 };
  let lastMdSend = performance.now();
  let lastClearingSend = performance.now();
  let closed = false;

  const send = (bufs: Buffer[], to: Endpoint): Promise<void> => {
    if (bufs.length === 0 || closed) return Promise.resolve();
    return new Promise((resolve) => {
      let pending = bufs.length;
      for (const b of bufs) {
        socket.send(b, to.port, to.group, (err) => {
          if (err) {
            stats.sendErrors++;
            if (stats.sendErrors === 1 || stats.sendErrors % 1000 === 0) opts.log.warn({ err: err.message, count: stats.sendErrors }, 'send failed');
          }
          if (--pending === 0) resolve();
        });
      }
    });
  };

  const sendMd = (groups: MdMessage[][]): Promise<void> => {
    if (groups.length === 0) return Promise.resolve();
    const bufs = packMd(groups);
    for (const g of groups) stats.mdMessages += g.length;
    stats.mdDatagrams += bufs.length;
    lastMdSend = performance.now();
    return send(bufs, opts.md);
  };

  const sendClearing = (msgs: ClearingMessage[]): Promise<void> => {
    if (msgs.length === 0) return Promise.resolve();
    const bufs = packClearing(msgs);
    for (const m of msgs) if (m.type === 'fill') stats.fills++;
    stats.clearingDatagrams += bufs.length;
    lastClearingSend = performance.now();
    return send(bufs, opts.clearing);
  };

  const step = (n = 1): Promise<void> => {
    const md: MdMessage[][] = [];
    const clearing: ClearingMessage[] = [];
    for (let i = 0; i < n; i++) {
      const out = market.step();
      for (const g of out.md) md.push(g);
      for (const f of out.clearing) clearing.push(f);
    }
    stats.events += n;
    return Promise.all([sendMd(md), sendClearing(clearing)]).then(() => {});
  };

  const snapshot = (): Promise<void> => {
    const bufs = packMd(
      market.snapshot().map((m) => [m]),
      'snapshot',
    );
    stats.snapshots++;
    return send(bufs, opts.snapshot);
  };

  const heartbeat = (): Promise<void> =>
    Promise.all([sendMd([[market.mdHeartbeat()]]), sendClearing([market.clearingHeartbeat()])]).then(() => {});

  const timers: NodeJS.Timeout[] = [];
  if (!opts.manual) {
    // Pacing by elapsed time, not by timer count: timers drift, the event total must not.
    let base = performance.now();
    let done = 0;
    const pace = () => {
      if (closed) return;
      const due = Math.floor(((performance.now() - base) / 1000) * opts.rate) - done;
      if (due > opts.rate) {
        // More than a second behind (a stalled host): start over rather than burst.
        base = performance.now();
        done = 0;
      } else if (due > 0) {
        const n = Math.min(due, MAX_EVENTS_PER_TURN);
        done += n;
        void step(n);
      }
      timers[0] = setTimeout(pace, PACE_EVERY_MS);
    };
    timers.push(setTimeout(pace, PACE_EVERY_MS));
    timers.push(setInterval(() => void snapshot(), SNAPSHOT_EVERY_MS));
    timers.push(setInterval(() => save(false), SAVE_EVERY_MS));
    timers.push(
      setInterval(() => {
        const now = performance.now();
        if (now - lastMdSend >= HEARTBEAT_AFTER_MS) void sendMd([[market.mdHeartbeat()]]);
        if (now - lastClearingSend >= HEARTBEAT_AFTER_MS) void sendClearing([market.clearingHeartbeat()]);
      }, 100),
    );
  }
  opts.log.info(
    { clearing: opts.clearing, md: opts.md, snapshot: opts.snapshot, iface: opts.iface, rate: opts.rate, seed: opts.seed, roster: opts.rosterIds.length, manual: !!opts.manual },
    'simulator started',
  );

  return {
    market,
    step,
    snapshot,
    heartbeat,
    stats: () => ({ ...stats }),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      await new Promise<void>((resolve) => socket.close(() => resolve()));
      save(true);
    },
  };
}
