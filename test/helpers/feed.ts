import { afterAll, beforeAll } from 'vitest';
import { createSocket } from 'node:dgram';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import { FILL_STREAM } from '../../proto/subjects.js';
import { encodeClearingDatagram, encodeMdDatagram, type ClearingMessage } from '../../proto/ndfex.js';
import { readStream } from '../../src/shared/stream-reader.js';
import { multicastSender, type GroupAddr } from '../../src/feed/multicast.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../../src/feed/service.js';
import { natsClient, quietLog, spawnService, startSystem, startTestNats, tempDir, testConfig, type TestSystem } from './system.js';

/** A UDP port the OS just handed out (free right now). */
export async function udpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const rnd = () => 1 + Math.floor(Math.random() * 254);

/** Fresh groups and ports, so tests (and test files running side by side) never hear each other. */
export async function feedAddrs(): Promise<{ clearing: GroupAddr; marketData: GroupAddr; snapshot: GroupAddr }> {
  const [a, b] = [rnd(), rnd()];
  const mdPort = await udpPort();
  return {
    clearing: { group: `239.${a}.${b}.2`, port: await udpPort() },
    marketData: { group: `239.${a}.${b}.1`, port: mdPort },
    snapshot: { group: `239.${a}.${b}.3`, port: mdPort },
  };
}

export async function bridgeOpts(natsUrl: string, extra: Partial<BridgeOptions> = {}): Promise<BridgeOptions> {
  return { natsUrl, ...(await feedAddrs()), iface: '127.0.0.1', sessionName: '', restartPolicy: 'reset', statusIntervalMs: 100, ...extra };
}

export type Sender = Awaited<ReturnType<typeof multicastSender>>;

/**
 * The bridge as its own process on `opts`' groups, so that it can be SIGKILLed; its verdict window
 * the smallest the config takes (these tests decide by hand).
 */
export function spawnBridge(natsUrl: string, opts: Pick<BridgeOptions, 'clearing' | 'marketData' | 'snapshot'>, statusIntervalMs = 100) {
  return spawnService('feed', 'feed/main.js', {
    ...feedProcessEnv(natsUrl, opts),
    LOG_LEVEL: 'warn',
    NDFEX_STATUS_INTERVAL_MS: String(statusIntervalMs),
    NDFEX_VERDICT_WINDOW_MS: '2000',
  });
}

/** What a feed process (bridge or standby) needs to run on a test's server (no credentials) and groups. */
export function feedProcessEnv(natsUrl: string, groups: Pick<BridgeOptions, 'clearing' | 'marketData' | 'snapshot'>): NodeJS.ProcessEnv {
  const addr = (a: GroupAddr) => `${a.group}:${a.port}`;
  return {
    NATS_URL: natsUrl,
    NATS_CREDS: '',
    NDFEX_CLEARING_ADDR: addr(groups.clearing),
    NDFEX_MD_ADDR: addr(groups.marketData),
    NDFEX_SNAPSHOT_ADDR: addr(groups.snapshot),
  };
}

export const fillMsg = (seq: number, client_id: number, symbol: number, q: number, price = 100): ClearingMessage => ({
  type: 'fill',
  seq,
  client_id,
  symbol,
  quantity: Math.abs(q),
  price,
  side: q >= 0 ? 1 : 2,
});

/** Sends each group of clearing messages as one datagram. */
export async function sendClearing(sender: Sender, addr: GroupAddr, datagrams: ClearingMessage[][]): Promise<void> {
  for (const d of datagrams) await sender.send(addr, encodeClearingDatagram(d));
}

/** Every message of the fill stream, decoded, in stream order. */
export async function fillStream(nc: NatsConnection): Promise<Array<{ subject: string; seq: number; msgId: string | undefined; data: any }>> {
  const out: Array<{ subject: string; seq: number; msgId: string | undefined; data: any }> = [];
  const f = await readStream(nc, FILL_STREAM, 1, (m) => out.push({ subject: m.subject, seq: m.seq, msgId: m.headers?.get('Nats-Msg-Id'), data: decode(m.data) }), { follow: false });
  await f.caughtUp;
  await f.stop();
  return out;
}

/** Collects decoded messages of a subject; `next(pred)` resolves with the first (past or future) match. */
export function collect<T>(nc: NatsConnection, subject: string) {
  const seen: T[] = [];
  let waiters: Array<{ pred: (m: T) => boolean; resolve: (m: T) => void }> = [];
  const sub: Subscription = nc.subscribe(subject, {
    callback: (_err, msg) => {
      const m = decode<T>(msg.data);
      seen.push(m);
      waiters = waiters.filter((w) => (w.pred(m) ? (w.resolve(m), false) : true));
    },
  });
  return {
    seen,
    next(pred: (m: T) => boolean, timeoutMs = 10_000): Promise<T> {
      const hit = seen.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise<T>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no matching message on ${subject} within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
      });
    },
    stop: () => sub.unsubscribe(),
    flushed: () => nc.flush(),
  };
}

/**
 * Plays the NDFEX exchange on the test's groups as the real one behaves: one
 * socket per session (a restart is a new process, so a new source port),
 * market-data heartbeats on a cadence with CLOCK_MONOTONIC-like timestamps
 * (never going back, even across a restart), market data from seq 0, clearing
 * from seq 1 (the first session as if running a while: market data from `mdSeq`). `heartbeatMs` is faster than NDFEX's 500 ms so tests stay short;
 * the bridge is given a verdict window to match (`TEST_VERDICT_MS`).
 */
export async function playExchange(addrs: Pick<BridgeOptions, 'clearing' | 'marketData'>, { iface = '127.0.0.1', heartbeatMs = 50, mdSeq = 100, clearingSeq = 0 } = {}) {
  let sock = await multicastSender(iface);
  let md = mdSeq;
  let cl = clearingSeq;
  let timer: NodeJS.Timeout | undefined;
  let sending = Promise.resolve();
  const heartbeat = () => {
    const msg = { type: 'heartbeat' as const, seq: md++, timestamp: process.hrtime.bigint() };
    const s = sock;
    sending = sending.then(() => s.send(addrs.marketData, encodeMdDatagram([msg]))).catch(() => {});
    return sending;
  };
  const beat = () => {
    timer = setInterval(() => void heartbeat(), heartbeatMs);
    timer.unref();
  };
  beat();
  return {
    get mdSeq() {
      return md;
    },
    get clearingSeq() {
      return cl;
    },
    /** The exchange's source address:port for this session. */
    source: () => `${iface}:${sock.port()}`,
    heartbeat,
    /** Sends fills `[client_id, symbol, signed quantity, price?]`, one a datagram, at the session's next seqs. */
    async fills(list: Array<[number, number, number, number?]>): Promise<number[]> {
      const seqs: number[] = [];
      for (const [c, s, q, p] of list) {
        const seq = ++cl;
        seqs.push(seq);
        await sendClearing(sock, addrs.clearing, [[fillMsg(seq, c, s, q, p)]]);
      }
      return seqs;
    },
    /** Fills the exchange sends that nobody receives (lost datagrams): the next fill's seq skips them. */
    skip(n: number): void {
      cl += n;
    },
    /** Market data falls silent (no heartbeats) until `resume`. */
    pause(): void {
      clearInterval(timer);
    },
    resume(): void {
      clearInterval(timer);
      beat();
    },
    /** Sends clearing messages from the session's own socket as they are (a spoofer who can forge the exchange's source). */
    spoof: (msgs: ClearingMessage[]) => sendClearing(sock, addrs.clearing, msgs.map((m) => [m])),
    /** Stops sending (the exchange process exits). */
    async stop(): Promise<void> {
      clearInterval(timer);
      await sending;
      await sock.close();
    },
    /** The exchange restarts: a new process (new socket), seq from the start on both feeds; `paused`: its market data silent until `resume`. */
    async restart(at: { mdSeq?: number; clearingSeq?: number; paused?: boolean } = {}): Promise<void> {
      await this.stop();
      sock = await multicastSender(iface);
      md = at.mdSeq ?? 0;
      cl = at.clearingSeq ?? 0;
      if (at.paused) return;
      await heartbeat();
      beat();
    },
    close(): Promise<void> {
      return this.stop().catch(() => {});
    },
  };
}

/** The bridge's verdict window in tests played with playExchange (heartbeats every 50 ms: 20 in it). */
export const TEST_VERDICT_MS = 1000;

/** What the feed session tests run against: a nats-server, the system with an operator, a multicast sender and fresh bridge options. */
export interface FeedWorld {
  nats: Awaited<ReturnType<typeof startTestNats>>;
  nc: NatsConnection;
  sender: Sender;
  opts: BridgeOptions;
  system: TestSystem;
  close(): Promise<void>;
}

export async function feedWorld(): Promise<FeedWorld> {
  const nats = await startTestNats();
  const nc = await natsClient(nats.url);
  const sender = await multicastSender('127.0.0.1');
  const opts = await bridgeOpts(nats.url);
  const dir = tempDir();
  const system = await startSystem(nats.url, { ...testConfig(dir.path), operator: { username: 'instructor', password: 'instructorpass' } });
  return {
    nats,
    nc,
    sender,
    opts,
    system,
    close: async () => {
      await system.close();
      dir.remove();
      await sender.close();
      await nc.close();
      await nats.stop();
      nats.remove();
    },
  };
}

/** A feedWorld with a bridge running in it, around a file's tests. */
export function useBridgeWorld(): FeedWorld & { bridge: BridgeHandle } {
  const f = {} as FeedWorld & { bridge: BridgeHandle };
  beforeAll(async () => {
    Object.assign(f, await feedWorld());
    f.bridge = await startBridge(f.opts, quietLog);
  });
  afterAll(async () => {
    await f.bridge?.close();
    await f.close?.();
  });
  return f;
}
