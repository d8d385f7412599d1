import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { FEED_ALERT_SUBJECT, type FeedAlert } from '../proto/marketdata.js';
import { encodeMdDatagram, type ClearingMessage, type MdMessage } from '../proto/ndfex.js';
import { SESSION_SUBJECT, fillMsgId } from '../proto/subjects.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { api, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';
import { TEST_VERDICT_MS, bridgeOpts, collect, fillMsg, fillStream, playExchange, sendClearing, type Sender } from './helpers/feed.js';

/**
 * Forged datagrams, as a local process (or anyone on the feed's network) can
 * send them: the NDFEX feeds carry no authentication. Every attack below
 * leaves every position standing, resets nothing, and shows as an alert and a
 * standing problem; the real exchange's own restart is still applied once.
 * The exchange is played over loopback multicast (playExchange: heartbeats,
 * a restart is a new socket); the forger is another socket.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
let opts: BridgeOptions;
let dir: ReturnType<typeof tempDir>;
let system: TestSystem;
let forger: Sender;
let alerts: ReturnType<typeof collect<FeedAlert>>;
const bridges: BridgeHandle[] = [];
const exchanges: Array<{ close(): Promise<void> }> = [];
const OP: [string, string] = ['instructor', 'instructorpass'];

beforeEach(async () => {
  nats = await startTestNats();
  nc = await natsClient(nats.url);
  opts = await bridgeOpts(nats.url, { verdictWindowMs: TEST_VERDICT_MS });
  dir = tempDir();
  system = await startSystem(nats.url, { ...testConfig(dir.path), operator: { username: OP[0], password: OP[1] } });
  forger = await multicastSender('127.0.0.1');
  alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
  await alerts.flushed();
});

afterEach(async () => {
  alerts.stop();
  for (const x of exchanges.splice(0)) await x.close();
  for (const b of bridges.splice(0)) await b.close();
  await forger.close();
  await system.close();
  dir.remove();
  await nc.close();
  await nats.stop();
  nats.remove();
});

async function bridge(extra: Partial<BridgeOptions> = {}): Promise<BridgeHandle> {
  const b = await startBridge({ ...opts, ...extra }, quietLog);
  bridges.push(b);
  return b;
}

const http = () => api(system.url);
const holdings = async (user: string) => (await http().holdings(user, `${user}pass`)).body.holdings as Record<string, number>;
const markers = async () => (await fillStream(nc)).filter((m) => m.subject === SESSION_SUBJECT);
const health = async () => (await http().send('GET', '/health')).body;
let fakeTs = 10n ** 18n;
const hb = (seq: number): MdMessage => ({ type: 'heartbeat', seq, timestamp: (fakeTs += 1_000_000n) });
const forgeMd = async (msgs: MdMessage[]) => {
  for (const m of msgs) await forger.send(opts.marketData, encodeMdDatagram([m]));
};
const forgeClearing = (msgs: ClearingMessage[]) => sendClearing(forger, opts.clearing, msgs.map((m) => [m]));

/** An exchange session with fills applied: team1 STED 5, team2 STED -3. */
async function running() {
  const x = await playExchange(opts);
  exchanges.push(x);
  const b = await bridge();
  await x.fills([[1, 4, 5], [2, 4, -3]]);
  await until(() => system.engine.fills.applied >= 2, 'the session\'s fills applied');
  // The bridge follows the exchange's market data too (a bridge that has heard nothing yet follows whoever speaks first: README).
  await until(() => b.stats().status.market_data.messages >= 2, 'the exchange\'s market data heard');
  return { x, b };
}

/** After an attack: the real exchange goes on (one more fill), and every position is the real fills' sum. */
async function standing(x: Awaited<ReturnType<typeof running>>['x']) {
  await x.fills([[1, 4, 1]]);
  await until(() => system.engine.fills.applied >= 3, 'the real fill after the attack applied');
  expect(await holdings('team1')).toEqual({ STED: 6 });
  expect(await holdings('team2')).toEqual({ STED: -3 });
  expect(await markers()).toHaveLength(0);
}

/** The attack shows on /health as a standing problem of `kind` (degraded) until acknowledged. */
async function degradedWith(kind: string) {
  const h = await until(async () => {
    const b = await health();
    return b.feed?.problems?.some((p: { kind: string }) => p.kind === kind) ? b : undefined;
  }, `a ${kind} problem on /health`);
  expect(h.status).toBe('degraded');
  expect(h.problems.join('\n')).toContain(kind);
}

const counts = [3, 5, 200];

describe('a claimed exchange restart (seq back to the start) from a few or many forged datagrams', () => {
  const forge = {
    'clearing heartbeats seq 1..n': (n: number) => forgeClearing(Array.from({ length: n }, (_, i) => ({ type: 'heartbeat', seq: i + 1 }))),
    'market-data heartbeats seq 0..n-1': (n: number) => forgeMd(Array.from({ length: n }, (_, i) => hb(i))),
    'both feeds': async (n: number) => {
      await forgeMd(Array.from({ length: n }, (_, i) => hb(i)));
      await forgeClearing(Array.from({ length: n }, (_, i) => fillMsg(i + 1, 2, 4, 1000)));
    },
  };
  for (const [what, send] of Object.entries(forge)) {
    for (const n of counts) {
      it(`${what}, n=${n}: held, rejected by the real session's next message, nothing reset, alerted`, async () => {
        const { x, b } = await running();
        await send(n);
        await alerts.next((a) => a.kind === 'verdict_pending');
        // The real exchange heartbeats on: its session is alive, so the claimed restart is forged.
        const rejected = await alerts.next((a) => a.kind === 'restart_rejected');
        expect(rejected.detail).toMatch(/continues the session followed/);
        await standing(x);
        expect(b.stats().status.clearing.restarts + b.stats().status.market_data.restarts).toBe(0);
        await degradedWith('restart_rejected');
      });
    }
  }

  it('a sustained forged run on both feeds (in order, rising timestamps, longer than the window) is still rejected: the real session is heard', async () => {
    const { x, b } = await running();
    await forgeClearing([fillMsg(1, 2, 4, 1000), fillMsg(2, 2, 4, 1000)]);
    let ts = process.hrtime.bigint() + 10n ** 12n;
    const started = Date.now();
    for (let seq = 0; Date.now() - started < TEST_VERDICT_MS * 2; seq++) {
      await forgeMd([{ type: 'heartbeat', seq, timestamp: (ts += 50_000_000n) }]);
      await new Promise((r) => setTimeout(r, 40)); // the forger paces its run like the exchange's heartbeats
    }
    expect(b.stats().status.clearing.held).toBe(2);
    await standing(x);
    expect((await alerts.next((a) => a.kind === 'restart_rejected')).feed).toBeDefined();
  });

  it('the real exchange restart (new run on both feeds, old session silent) is still applied exactly once, with no new-session fill lost', async () => {
    const { x, b } = await running();
    await x.restart();
    await x.fills([[1, 5, 2], [2, 5, 1]]);
    await until(() => system.engine.fills.applied >= 4, 'the new session\'s fills applied');
    expect(await holdings('team1')).toEqual({ FISH: 2 });
    expect(await holdings('team2')).toEqual({ FISH: 1 });
    expect(await markers()).toHaveLength(1);
    expect(b.stats().status.clearing.restarts).toBe(1);
    // Before the restart's verdict, its fills were held, not published: the marker precedes them in the stream.
    expect((await fillStream(nc)).map((m) => (m.subject === SESSION_SUBJECT ? 'marker' : m.msgId))).toEqual([fillMsgId('1', 1), fillMsgId('1', 2), 'marker', fillMsgId('2', 1), fillMsgId('2', 2)]);
  });
});

describe('a real exchange restart with one forged fill at seq 1 while its fills are held', () => {
  for (const where of ['on the exchange\'s host (another port)', 'on another host'] as const) {
    it(`from a forger ${where}: the new session's fills 1..20 are applied once on evidence, the forged one never`, async () => {
      const { x, b } = await running();
      await x.restart({ paused: true });
      await x.heartbeat(); // the new session's market data: seq 0
      await x.fills(Array.from({ length: 20 }, () => [1, 5, 1] as [number, number, number]));
      await until(() => b.stats().status.clearing.held === 20, 'the new session\'s fills held');
      const other = where === 'on another host' ? await multicastSender('127.0.0.2') : forger;
      const from = `${where === 'on another host' ? '127.0.0.2' : '127.0.0.1'}:${other.port()}`;
      try {
        await sendClearing(other, opts.clearing, [[fillMsg(1, 2, 4, 1000)]]);
      } finally {
        if (other !== forger) await other.close();
      }
      await until(() => b.stats().status.clearing.datagrams === 23, 'the forged fill heard');
      x.resume();
      await until(() => system.engine.fills.applied >= 22, 'the new session\'s 20 fills applied');
      expect(await markers()).toHaveLength(1);
      expect(await holdings('team1')).toEqual({ FISH: 20 });
      expect(await holdings('team2')).toEqual({});
      expect((await fillStream(nc)).filter((m) => m.subject !== SESSION_SUBJECT).map((m) => m.msgId)).toEqual([fillMsgId('1', 1), fillMsgId('1', 2), ...Array.from({ length: 20 }, (_, i) => fillMsgId('2', i + 1))]);
      // The exchange goes on: the forged run is dropped, never applied.
      await x.fills([[1, 5, 1]]);
      await until(() => system.engine.fills.applied >= 23, 'the exchange\'s next fill applied');
      expect(await holdings('team2')).toEqual({});
      await until(() => b.stats().status.clearing.held === 0, 'nothing held');
      expect((await alerts.next((a) => a.kind === 'verdict_pending' && /beside a possible exchange restart/.test(a.detail))).detail).toContain(`${from} sent another clearing run from seq 1`);
    });
  }
});

describe('a real exchange restart with one of its held fills lost on the way', () => {
  it('fill 7 of 1..20 never arrives while the new session\'s fills are held: the other 19 are applied once on evidence, after one marker, and the lost one is a gap alert', async () => {
    const { x, b } = await running();
    await x.restart({ paused: true });
    await x.heartbeat(); // the new session's market data: seq 0
    await x.fills(Array.from({ length: 6 }, () => [1, 5, 1] as [number, number, number]));
    x.skip(1);
    await x.fills(Array.from({ length: 13 }, () => [1, 5, 1] as [number, number, number]));
    await until(() => b.stats().status.clearing.held === 19, 'the new session\'s 19 fills held');
    x.resume();
    await until(() => system.engine.fills.applied >= 21, 'the new session\'s 19 fills applied');
    expect(await markers()).toHaveLength(1);
    expect(await holdings('team1')).toEqual({ FISH: 19 });
    const lost = (seq: number) => seq !== 7;
    expect((await fillStream(nc)).filter((m) => m.subject !== SESSION_SUBJECT).map((m) => m.msgId)).toEqual([fillMsgId('1', 1), fillMsgId('1', 2), ...Array.from({ length: 20 }, (_, i) => i + 1).filter(lost).map((seq) => fillMsgId('2', seq))]);
    expect(await alerts.next((a) => a.kind === 'gap' && a.feed === 'clearing')).toMatchObject({ expected: 7, received: 8, detail: expect.stringContaining('fills lost for good') });
    await until(() => b.stats().status.clearing.held === 0, 'nothing held');
    expect(b.stats().status.clearing).toMatchObject({ gaps: 1, missed_messages: 1 });
    expect(alerts.seen.filter((a) => a.kind === 'stray' || a.kind === 'far_jump')).toEqual([]);
    expect(alerts.seen.filter((a) => a.kind === 'verdict_pending')).toHaveLength(1);
  });
});

describe('far seq jumps', () => {
  it('a forged fill at seq +5,000,000 on the clearing feed is held and flagged, never applied; the real run going on makes it a stray', async () => {
    const { x, b } = await running();
    await forgeClearing([fillMsg(x.clearingSeq + 5_000_000, 2, 4, 1000)]);
    expect((await alerts.next((a) => a.kind === 'far_jump')).feed).toBe('clearing');
    expect(b.stats().status.clearing.held).toBe(1);
    await standing(x);
    expect((await alerts.next((a) => a.kind === 'stray')).feed).toBe('clearing');
    // The real next fills are no restart.
    await x.fills([[1, 4, 1], [1, 4, 1], [1, 4, 1]]);
    await until(() => system.engine.fills.applied >= 6, 'the real fills after the jump applied');
    expect(await holdings('team1')).toEqual({ STED: 9 });
    expect(await markers()).toHaveLength(0);
    await degradedWith('jump_rejected');
  });

  it('a forged market-data heartbeat at seq +5,000,000 is held and flagged; the real heartbeats make it a stray', async () => {
    const { x, b } = await running();
    await forgeMd([hb(x.mdSeq + 5_000_000)]);
    expect((await alerts.next((a) => a.kind === 'far_jump')).feed).toBe('market_data');
    expect((await alerts.next((a) => a.kind === 'stray')).feed).toBe('market_data');
    expect(b.stats().status.market_data.last_seq).toBeLessThan(5_000_000);
    await standing(x);
    await degradedWith('jump_rejected');
  });
});

describe('two different messages with the same seq', () => {
  it('clearing: a forged fill re-using an applied seq is flagged (both fingerprints), never applied', async () => {
    const { x } = await running();
    const seq = x.clearingSeq;
    await forgeClearing([fillMsg(seq, 2, 4, 1000)]);
    const c = await alerts.next((a) => a.kind === 'conflict');
    expect(c).toMatchObject({ feed: 'clearing', received: seq });
    expect(c.fingerprints).toHaveLength(2);
    expect(c.fingerprints![0]).not.toBe(c.fingerprints![1]);
    await standing(x);
    await degradedWith('conflict');
  });

  it('clearing: a forged fill at the next seq ahead of the real one, from another socket, is held; the real one is applied and the pair flagged', async () => {
    const { x, b } = await running();
    await forgeClearing([fillMsg(x.clearingSeq + 1, 2, 4, 7)]);
    expect((await alerts.next((a) => a.kind === 'verdict_pending')).detail).toMatch(/another sender continuing/);
    expect(b.stats().status.clearing.held).toBe(1);
    const c = alerts.next((a) => a.kind === 'conflict');
    await standing(x);
    const conflict = await c;
    expect(conflict.detail).toContain(`from ${x.source()}`.replace(/:\d+$/, ''));
    expect(conflict.fingerprints).toHaveLength(2);
    expect(b.stats().status.clearing).toMatchObject({ conflicts: 1, held: 0 });
    await degradedWith('conflict');
  });

  it('clearing: a spoofed fill from the session\'s own source at the next seq is applied (first heard); the real one is flagged with both fingerprints, not dropped silently', async () => {
    const { x, b } = await running();
    const seq = x.clearingSeq + 1;
    await x.spoof([fillMsg(seq, 2, 4, 7)]);
    await until(() => system.engine.fills.applied >= 3, 'the first fill heard at that seq applied');
    await x.fills([[1, 4, 1]]);
    const c = await alerts.next((a) => a.kind === 'conflict');
    expect(c).toMatchObject({ feed: 'clearing', received: seq });
    expect(c.fingerprints).toHaveLength(2);
    expect(c.detail).toContain('"client_id":1'); // the other one, shown for the operator to correct by hand
    expect(b.stats().status.clearing.conflicts).toBe(1);
    await degradedWith('conflict');
  });

  it('clearing: a forged fill at a seq the exchange\'s run skipped (its datagram lost), from another socket, is held, never applied', async () => {
    const { x, b } = await running();
    const lost = x.clearingSeq + 1;
    await x.spoof([fillMsg(lost + 1, 1, 4, 1)]); // the exchange's next fill; the one at `lost` never arrives
    await until(() => system.engine.fills.applied >= 3, 'the fill after the gap applied');
    await forgeClearing([fillMsg(lost, 2, 4, 1000)]);
    expect((await alerts.next((a) => a.kind === 'verdict_pending')).detail).toMatch(/never heard from the session's sender/);
    expect(b.stats().status.clearing.held).toBe(1);
    await x.spoof([fillMsg(lost + 2, 1, 4, 1)]);
    expect((await alerts.next((a) => a.kind === 'stray')).feed).toBe('clearing');
    await until(() => system.engine.fills.applied >= 4, 'the exchange\'s next fill applied');
    expect(await holdings('team1')).toEqual({ STED: 7 });
    expect(await holdings('team2')).toEqual({ STED: -3 });
    expect(await markers()).toHaveLength(0);
    await degradedWith('jump_rejected');
  });

  it('clearing, after a bridge restart: a forged fill from another local address at the next seq, before the exchange\'s, is held; the exchange\'s is applied and the pair flagged', async () => {
    const { x, b } = await running();
    await b.close();
    bridges.splice(bridges.indexOf(b), 1);
    const again = await bridge();
    await until(() => again.stats().status.market_data.messages >= 2, 'the exchange\'s market data heard again');
    const other = await multicastSender('127.0.0.2');
    try {
      await sendClearing(other, opts.clearing, [[fillMsg(x.clearingSeq + 1, 2, 4, 1000)]]);
    } finally {
      await other.close();
    }
    expect((await alerts.next((a) => a.kind === 'verdict_pending')).detail).toMatch(/first sender on clearing since this start/);
    expect(again.stats().status.clearing.held).toBe(1);
    const c = alerts.next((a) => a.kind === 'conflict');
    await standing(x);
    expect((await c).detail).toContain('127.0.0.2');
    await degradedWith('conflict');
  });

  describe('clearing, after a bridge restart: a forger on the exchange\'s own host (another port)', () => {
    async function restarted() {
      const { x, b } = await running();
      await b.close();
      bridges.splice(bridges.indexOf(b), 1);
      const again = await bridge();
      await until(() => again.stats().status.market_data.messages >= 2, 'the exchange\'s market data heard again');
      // The forger's socket is on 127.0.0.1 too, as the exchange's.
      expect(x.source().startsWith('127.0.0.1:')).toBe(true);
      return { x, again };
    }

    it('at the next seq, before the exchange\'s: held (not the socket the last bridge heard); the exchange\'s is applied and the pair flagged', async () => {
      const { x, again } = await restarted();
      await forgeClearing([fillMsg(x.clearingSeq + 1, 2, 4, 1000)]);
      expect((await alerts.next((a) => a.kind === 'verdict_pending')).detail).toMatch(/last bridge heard the session's fills from 127\.0\.0\.1:/);
      expect(again.stats().status.clearing.held).toBe(1);
      const c = alerts.next((a) => a.kind === 'conflict');
      await standing(x);
      expect((await c).detail).toContain(`127.0.0.1:${forger.port()}`);
      await degradedWith('conflict');
    });

    it('a few seqs ahead (a believable gap): held, never applied; the exchange going on makes it a stray', async () => {
      const { x, again } = await restarted();
      await forgeClearing([fillMsg(x.clearingSeq + 3, 2, 4, 1000), fillMsg(x.clearingSeq + 4, 2, 4, 1000)]);
      await alerts.next((a) => a.kind === 'verdict_pending');
      await until(() => again.stats().status.clearing.held === 2, 'both forged fills held');
      await standing(x);
      expect(again.stats().status.clearing.held).toBe(0);
      expect(again.stats().status.clearing.gaps).toBe(0);
      await degradedWith('jump_rejected');
    });

    it('with a forged restart on market data first (the exchange quiet): the forged fill waits in the claimed restart, and stays held when the exchange disproves it', async () => {
      const { x, b } = await running();
      await b.close();
      bridges.splice(bridges.indexOf(b), 1);
      x.pause();
      const again = await bridge();
      // A claimed restart while no bridge listened: market data from seq 0, then a fill past the saved seq.
      await forgeMd([hb(0), hb(1)]);
      await alerts.next((a) => a.kind === 'verdict_pending');
      await forgeClearing([fillMsg(x.clearingSeq + 5, 2, 4, 1000)]);
      await until(() => again.stats().status.clearing.held === 1, 'the forged fill held');
      x.resume();
      await alerts.next((a) => a.kind === 'restart_rejected');
      // Before the saved socket was known, the rejection passed it on as the old session's fill after a gap.
      expect(again.stats().status.clearing.held).toBe(1);
      await standing(x);
    });

    it('the exchange itself, from the socket the last bridge heard, is followed at once (nothing held)', async () => {
      const { x, again } = await restarted();
      await standing(x);
      expect(again.stats().status.clearing.held ?? 0).toBe(0);
      expect(again.stats().status.problems ?? []).toEqual([]);
    });
  });

  it('clearing, after a bridge restart before anything is heard: a forged fill into a seq the exchange\'s run skipped is held, never applied; market data disproves it and the exchange\'s next fill is applied', async () => {
    const { x, b } = await running();
    // The exchange's seq 3 is lost on the way (a gap), its seq 4 arrives.
    x.skip(1);
    await x.fills([[1, 4, 1]]);
    await until(() => system.engine.fills.applied >= 3, 'the fill after the gap applied');
    await b.close();
    bridges.splice(bridges.indexOf(b), 1);
    // Market data quiet for a moment: the bridge starts and hears nothing before the forger speaks.
    x.pause();
    const again = await bridge();
    const other = await multicastSender('127.0.0.2');
    try {
      await sendClearing(other, opts.clearing, [[fillMsg(3, 2, 4, 1000)]]);
    } finally {
      await other.close();
    }
    expect((await alerts.next((a) => a.kind === 'verdict_pending')).detail).toMatch(/restart/);
    expect(again.stats().status.clearing.held).toBe(1);
    // The exchange's market data goes on with the old session: the claim is disproved; its next fill is applied.
    x.resume();
    await alerts.next((a) => a.kind === 'restart_rejected');
    await x.fills([[1, 4, 1]]);
    await until(() => system.engine.fills.applied >= 4, 'the exchange\'s next fill applied');
    expect(await holdings('team1')).toEqual({ STED: 7 });
    expect(await holdings('team2')).toEqual({ STED: -3 });
    expect(await markers()).toHaveLength(0);
    expect((await fillStream(nc)).map((m) => m.data.seq)).toEqual([1, 2, 4, 5]);
  });

  it('market data: a forged message re-using a heard seq is flagged with both fingerprints', async () => {
    const { x, b } = await running();
    const seq = b.stats().status.market_data.last_seq;
    await forgeMd([{ type: 'new_order', seq, timestamp: (fakeTs += 1n), order_id: 99n, symbol: 4, side: 1, quantity: 10, price: 100, flags: 0 }]);
    const c = await alerts.next((a) => a.kind === 'conflict');
    expect(c).toMatchObject({ feed: 'market_data', received: seq });
    expect(c.fingerprints).toHaveLength(2);
    await standing(x);
  });
});

describe('a fill replayed byte for byte', () => {
  it('from another socket or the exchange\'s own: never published again (JetStream\'s dedup lasts only an hour), counted, a replay alerted', async () => {
    const { x, b } = await running();
    const seq = x.clearingSeq;
    await until(() => b.stats().publisher.delivered >= 2, 'the session\'s fills stored');
    const delivered = b.stats().publisher.delivered;
    // What a student recorded off the group: team2's fill, the same bytes again.
    await forgeClearing([fillMsg(seq, 2, 4, -3)]);
    expect(await alerts.next((a) => a.kind === 'replay')).toMatchObject({ feed: 'clearing', received: seq });
    await x.spoof([fillMsg(seq, 2, 4, -3)]);
    await until(() => b.stats().status.clearing.duplicates === 2, 'both copies counted');
    await standing(x);
    expect(b.stats().publisher.delivered).toBe(delivered + 1);
    expect(b.stats().publisher.duplicates).toBe(0);
    expect((await fillStream(nc)).map((m) => m.data.seq)).toEqual([1, 2, 3]);
  });
});

describe('a foreign source', () => {
  it('with NDFEX_SOURCE naming the exchange, forged restarts and fills from another local address are foreign: counted, alerted, ignored', async () => {
    const x = await playExchange(opts);
    exchanges.push(x);
    const b = await bridge({ sources: ['127.0.0.1'] });
    await x.fills([[1, 4, 5], [2, 4, -3]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    const other = await multicastSender('127.0.0.2');
    try {
      await sendClearing(other, opts.clearing, [[{ type: 'heartbeat', seq: 1 }], [{ type: 'heartbeat', seq: 2 }], [fillMsg(3, 2, 4, 1000)]]);
      for (let i = 0; i < 3; i++) await other.send(opts.marketData, encodeMdDatagram([hb(i)]));
    } finally {
      await other.close();
    }
    await until(() => (b.stats().status.clearing.foreign ?? 0) === 3 && (b.stats().status.market_data.foreign ?? 0) === 3, 'six foreign datagrams');
    expect((await alerts.next((a) => a.kind === 'foreign')).detail).toMatch(/127\.0\.0\.2/);
    await standing(x);
  });
});

describe('the operator decides', () => {
  it('confirm: a restart the evidence cannot prove (another host) waits, its fills held; confirmed, it resets once and applies them', async () => {
    const { x, b } = await running();
    await x.stop();
    // A new session from another address: only the operator may believe it.
    const other = await playExchange(opts, { iface: '127.0.0.2', mdSeq: 0 });
    exchanges.push(other);
    await other.fills([[1, 6, 3]]);
    const pending = await until(() => b.stats().status.problems?.find((p) => p.kind === 'verdict_pending' && /needs the operator/.test(p.detail)), 'a verdict for the operator');
    expect(pending.actions).toEqual(['confirm', 'reject']);
    expect(b.stats().status.clearing.held).toBe(1);
    expect(await markers()).toHaveLength(0);
    expect((await http().send('POST', '/operator/api/feed/verdict', { basic: ['team1', 'team1pass'], form: { id: pending.id, decision: 'confirm' } })).status).toBe(401);
    expect((await http().send('POST', '/operator/api/feed/verdict', { basic: OP, form: { id: pending.id, decision: 'maybe' } })).status).toBe(400);
    expect((await http().send('POST', '/operator/api/feed/verdict', { basic: OP, form: { id: 'v-nope', decision: 'confirm' } })).status).toBe(404);
    const r = await http().send('POST', '/operator/api/feed/verdict', { basic: OP, form: { id: pending.id, decision: 'confirm' } });
    expect(r.status).toBe(200);
    expect(r.body.done).toEqual([pending.id]);
    await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
    expect(await holdings('team1')).toEqual({ DILN: 3 });
    expect(await holdings('team2')).toEqual({});
    expect(await markers()).toHaveLength(1);
    expect((await alerts.next((a) => a.kind === 'verdict_decided')).verdict).toBe(pending.id);
    // Decided once: a second decision finds nothing.
    expect((await http().send('POST', '/operator/api/feed/verdict', { basic: OP, form: { id: pending.id, decision: 'confirm' } })).status).toBe(404);
  });

  it('reject: a pending restart claim is dropped, nothing reset; acknowledging clears /health', async () => {
    const { x, b } = await running();
    await x.stop(); // the exchange is quiet: nothing disproves the claim but the operator
    await forgeClearing([{ type: 'heartbeat', seq: 1 }, { type: 'heartbeat', seq: 2 }, fillMsg(3, 2, 4, 1000)]);
    const pending = await until(() => b.stats().status.problems?.find((p) => p.kind === 'verdict_pending'), 'the pending verdict');
    await degradedWith('verdict_pending');
    const r = await http().send('POST', '/operator/api/feed/verdict', { basic: OP, json: { id: pending.id, decision: 'reject' } });
    expect(r.status).toBe(200);
    expect(r.body.problems.map((p: { id: string }) => p.id)).not.toContain(pending.id);
    expect(b.stats().status.clearing).toMatchObject({ held: 0, strays: 3, restarts: 0 });
    expect(await holdings('team2')).toEqual({ STED: -3 });
    expect(await markers()).toHaveLength(0);
    // What is left (none here but acknowledgeable kinds) clears with one acknowledgement.
    const ack = await http().send('POST', '/operator/api/feed/ack', { basic: OP, form: {} });
    expect([200, 404]).toContain(ack.status);
    await until(async () => !(await health()).feed?.problems, 'no standing problem on /health');
  });
});
