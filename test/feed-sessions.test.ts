import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { FEED_ALERT_SUBJECT, type FeedAlert } from '../proto/marketdata.js';
import { Kvm } from '@nats-io/kv';
import { decode, encode } from '../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, type ClearingSessionRecord } from '../proto/feed.js';
import { encodeMdDatagram, type MdMessage } from '../proto/ndfex.js';
import { SESSION_SUBJECT, fillMsgId } from '../proto/subjects.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { api, quietLog, until, type TestSystem } from './helpers/system.js';
import { feedWorld, type FeedWorld, TEST_VERDICT_MS, collect, fillMsg, fillStream, playExchange, sendClearing, type Sender } from './helpers/feed.js';

/**
 * Exchange sessions as the bridge decides them, over real multicast: a lone
 * datagram cannot fake a restart; a real one is applied once, as soon as
 * either feed proves it, even when it happened while the bridge was down.
 */
let world: FeedWorld;
let nats: FeedWorld['nats'];
let nc: NatsConnection;
let sender: Sender;
let opts: BridgeOptions;
let system: TestSystem;
const bridges: BridgeHandle[] = [];
const exchanges: Array<{ close(): Promise<void> }> = [];

beforeEach(async () => {
  world = await feedWorld();
  ({ nats, nc, sender, opts, system } = world);
});

afterEach(async () => {
  for (const x of exchanges.splice(0)) await x.close();
  for (const b of bridges.splice(0)) await b.close();
  await world.close();
});

async function exchange(at: { mdSeq?: number; clearingSeq?: number } = {}) {
  const x = await playExchange(opts, at);
  exchanges.push(x);
  return x;
}

/** The bridge follows the exchange's market data (one that has heard nothing yet follows whoever speaks first). */
const mdHeard = (b: BridgeHandle) => until(() => b.stats().status.market_data.messages >= 2, 'the exchange\'s market data heard');

async function bridge(extra: Partial<BridgeOptions> = {}): Promise<BridgeHandle> {
  const b = await startBridge({ ...opts, verdictWindowMs: TEST_VERDICT_MS, ...extra }, quietLog);
  bridges.push(b);
  return b;
}

let ts = 5_000_000_000n;
const heartbeat = (seq: number): MdMessage => ({ type: 'heartbeat', seq, timestamp: (ts += 1_000_000n) });
const sendMd = (msgs: MdMessage[][]) => Promise.all(msgs.map((m) => sender.send(opts.marketData, encodeMdDatagram(m))));
const holdings = async (user: string) => (await api(system.url).holdings(user, `${user}pass`)).body.holdings as Record<string, number>;
const markers = async () => (await fillStream(nc)).filter((m) => m.subject === SESSION_SUBJECT);

describe('exchange sessions that a stray datagram cannot fake', () => {
  it('a lone heartbeat or fill with a lower seq is held, rejected when the session goes on, alerted: every position stays', async () => {
    const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
    await alerts.flushed();
    const b = await bridge();
    await sendClearing(sender, opts.clearing, [[fillMsg(5000, 1, 4, 5)], [fillMsg(5001, 2, 4, 3)]]);
    await until(() => system.engine.fills.applied >= 2, 'two fills applied');
    // The attack: a 15-byte heartbeat at seq 100, then a forged fill at seq 1.
    await sendClearing(sender, opts.clearing, [[{ type: 'heartbeat', seq: 100 }], [fillMsg(1, 2, 4, 1000)]]);
    await alerts.next((a) => a.kind === 'verdict_pending');
    // The exchange goes on: its session is alive, so the claimed restart is forged.
    await sendClearing(sender, opts.clearing, [[fillMsg(5002, 1, 4, 1)], [fillMsg(5003, 1, 4, 1)], [fillMsg(5004, 1, 4, 1)]]);
    await alerts.next((a) => a.kind === 'restart_rejected');
    await until(() => system.engine.fills.applied >= 5, 'the session\'s fills applied');
    expect(await holdings('team1')).toEqual({ STED: 8 });
    expect(await holdings('team2')).toEqual({ STED: 3 });
    expect(await markers()).toHaveLength(0);
    expect(b.stats().status.clearing).toMatchObject({ restarts: 0, strays: 1, held: 1, rejected_restarts: 1 });
    expect(await alerts.next((a) => a.kind === 'stray')).toMatchObject({ feed: 'clearing' });
    // The bridge joined at seq 5000: it says how many fills of the session it never saw.
    expect(await alerts.next((a) => a.kind === 'late_join')).toMatchObject({ feed: 'clearing', received: 5000 });
    const health = await until(async () => {
      const h = (await api(system.url).send('GET', '/health')).body;
      return h.feed?.clearing?.rejected_restarts === 1 ? h : undefined;
    }, 'the rejected restart on /health');
    expect(health.feed.clearing).toMatchObject({ strays: 1, restarts: 0, missed_before_join: 4999 });
    alerts.stop();
  });

  it('a real restart (a new run from seq 1 on both feeds, the old session silent) is applied once: one marker, positions reset, the new session\'s fills kept', async () => {
    const x = await exchange();
    const b = await bridge();
    await x.fills([[1, 4, 5], [1, 4, 5], [2, 4, 1]]);
    await until(() => system.engine.fills.applied >= 3, 'first session applied');
    await mdHeard(b);
    await x.restart();
    await x.fills([[1, 5, 1], [1, 5, 1], [1, 5, 1], [1, 5, 1]]);
    await until(() => system.engine.fills.applied >= 7, 'new session applied');
    expect(await holdings('team1')).toEqual({ FISH: 4 });
    expect(await holdings('team2')).toEqual({});
    expect(await markers()).toHaveLength(1);
    expect(b.stats().status.clearing.restarts).toBe(1);
    expect(b.stats().status.market_data.restarts).toBe(1);
    expect(b.stats().status.problems).toEqual([]);
  });

  it('market data alone does not reset: the new session is believed once the clearing feed shows it too, reset before its first fill, once', async () => {
    const x = await exchange();
    const b = await bridge();
    await x.fills([[1, 4, 5], [2, 4, 5]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    await mdHeard(b);
    await x.restart();
    // Market data's new run lasts past the window with the old session silent; the clearing feed has said nothing yet.
    await until(() => b.stats().status.problems?.some((p) => p.kind === 'verdict_pending' && /no new run on the clearing feed/.test(p.detail)), 'a verdict waiting for the clearing feed');
    expect(await markers()).toHaveLength(0);
    expect(await holdings('team1')).toEqual({ STED: 5 });
    // Then the new session's first fill: the reset goes first, then the fill; no second restart.
    await x.fills([[1, 6, 2]]);
    await until(() => system.engine.fills.applied >= 3, 'new session fill applied');
    expect(await holdings('team1')).toEqual({ DILN: 2 });
    expect(await holdings('team2')).toEqual({});
    expect(await markers()).toHaveLength(1);
    expect((await fillStream(nc)).at(-1)!.msgId).toBe(fillMsgId('2', 1));
    expect(b.stats().status.market_data.restarts).toBe(1);
    expect(b.stats().status.clearing.restarts).toBe(1);
  });

  // The old session stopped at clearing seq 11 while no bridge listened; the new one comes back past it, or a little below it
  // (inside the reorder window): either way a reset, then its fill, never a late fill of the old session.
  // `quiet`: its market data silent until the fill is in (the first thing the new bridge hears is that fill).
  it.each([
    { where: 'is already past the old seq', clearingSeq: 19, lastSeq: 20, missed: 19, quiet: false },
    { where: 'has a clearing seq a little below the old one', clearingSeq: 5, lastSeq: 6, missed: undefined, quiet: false },
    { where: 'has a clearing seq a little below the old one, its fill heard before any market data', clearingSeq: 5, lastSeq: 6, missed: undefined, quiet: true },
  ])('an exchange restart while the bridge was down whose new session $where: reset, then its fill', async ({ clearingSeq, lastSeq, missed, quiet }) => {
    const x = await exchange({ mdSeq: 4000, clearingSeq: 9 });
    let b = await bridge();
    await x.fills([[1, 4, 5], [2, 4, 5]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    await mdHeard(b);
    await b.close();
    bridges.splice(0);
    // While no bridge listens the exchange restarts; market data is at seq 30 of the new session.
    await x.restart({ mdSeq: 30, clearingSeq, paused: quiet });
    b = await bridge();
    await x.fills([[1, 6, 1]]);
    if (quiet) {
      const held = b;
      await until(() => held.stats().status.clearing.held === 1, 'the fill held');
      x.resume();
    }
    await until(async () => (await markers()).length === 1, 'the session marker');
    await until(() => system.engine.fills.applied >= 3, "the new session's fill applied");
    expect(await holdings('team1')).toEqual({ DILN: 1 });
    expect(await holdings('team2')).toEqual({});
    expect((await fillStream(nc)).at(-1)!.msgId).toBe(fillMsgId('2', lastSeq));
    // It says how much of the new session it missed.
    if (missed !== undefined) expect(b.stats().status.clearing.missed_before_join).toBe(missed);
  });

  it('with NDFEX_SOURCE, datagrams from any other sender are counted as foreign and ignored', async () => {
    const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
    await alerts.flushed();
    const b = await bridge({ sources: ['127.0.0.9'] });
    await sendClearing(sender, opts.clearing, [[fillMsg(1, 1, 4, 5)], [fillMsg(2, 1, 4, 5)]]);
    await until(() => b.stats().status.clearing.foreign === 2, 'two foreign datagrams');
    expect(await alerts.next((a) => a.kind === 'foreign')).toMatchObject({ feed: 'clearing' });
    expect(b.stats().status.clearing.messages).toBe(0);
    expect(await fillStream(nc)).toHaveLength(0);
    alerts.stop();
  });

  it('after a crash whose saved progress lags, the gap counts only what was really lost (progress comes from the stored fills)', async () => {
    let b = await bridge();
    await sendClearing(sender, opts.clearing, Array.from({ length: 10 }, (_, i) => [fillMsg(i + 1, 1, 4, 1)]));
    await until(() => system.engine.fills.applied >= 10, 'fills applied');
    await b.close();
    bridges.splice(0);
    // As a SIGKILL leaves it: the saved record still at seq 3.
    const kv = await new Kvm(nc).open(FEED_BUCKET);
    const rec = decode<ClearingSessionRecord>((await kv.get(FEED_CLEARING_KEY))!.value);
    await kv.put(FEED_CLEARING_KEY, encode({ ...rec, last_seq: 3 }));
    b = await bridge();
    // Market data is heard (the exchange's own session goes on): a skipped seq is a gap, not a restart while no bridge listened.
    await sendMd([[heartbeat(50)]]);
    await until(() => b.stats().status.market_data.messages === 1, 'market data heard');
    await sendClearing(sender, opts.clearing, [[fillMsg(12, 1, 4, 1)]]);
    await until(() => b.stats().status.clearing.messages === 1, 'fill 12 heard');
    expect(b.stats().status.clearing).toMatchObject({ gaps: 1, missed_messages: 1 });
  });

  it('a bridge killed between beginning a session and storing its marker: the next start stores it before any fill of the session, once', async () => {
    let b = await bridge();
    await sendClearing(sender, opts.clearing, [[fillMsg(10, 1, 4, 5)], [fillMsg(11, 2, 4, 5)]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    await b.close();
    bridges.splice(0);
    // As a kill right after the record's compare-and-set leaves it: session 2 begun at seq 1, no marker.
    const kv = await new Kvm(nc).open(FEED_BUCKET);
    const rec = decode<ClearingSessionRecord>((await kv.get(FEED_CLEARING_KEY))!.value);
    await kv.put(FEED_CLEARING_KEY, encode({ ...rec, session: 2, last_seq: 1 } satisfies ClearingSessionRecord));
    b = await bridge();
    expect((await markers()).map((m) => m.data.session)).toEqual([2]);
    await sendClearing(sender, opts.clearing, [[fillMsg(2, 1, 6, 3)]]);
    await until(() => system.engine.fills.applied >= 3, 'the new session\'s fill applied');
    expect(await holdings('team1')).toEqual({ DILN: 3 });
    expect(await holdings('team2')).toEqual({});
    await b.close();
    bridges.splice(0);
    await bridge();
    expect(await markers()).toHaveLength(1);
  });

  describe('a restart while no bridge listened that market data cannot tell from a gap', () => {
    /** A session at clearing seq 11, the bridge stopped, then the clearing feed resumes at 20 with no market data heard. */
    async function resumedPastTheOldSeq() {
      let b = await bridge();
      await sendClearing(sender, opts.clearing, [[fillMsg(10, 1, 4, 5)], [fillMsg(11, 2, 4, 5)]]);
      await until(() => system.engine.fills.applied >= 2, 'fills applied');
      await b.close();
      bridges.splice(0);
      b = await bridge();
      await sendClearing(sender, opts.clearing, [[fillMsg(20, 1, 6, 1)]]);
      const p = await until(() => b.stats().status.problems?.find((x) => x.kind === 'verdict_pending'), 'a standing problem for the operator');
      expect(p.detail).toMatch(/while no bridge listened/);
      expect(b.stats().status.clearing.held).toBe(1);
      expect(await holdings('team1')).toEqual({ STED: 5 });
      return { b, id: p.id };
    }
    const decide = (id: string, decision: string) => api(system.url).send('POST', '/operator/api/feed/verdict', { basic: ['instructor', 'instructorpass'], form: { id, decision } });

    it('is held as a standing problem, never merged; confirmed, it is a new session (reset, then the fill)', async () => {
      const { b } = await resumedPastTheOldSeq();
      const id = b.stats().status.problems!.find((x) => x.kind === 'verdict_pending')!.id;
      expect((await decide(id, 'confirm')).status).toBe(200);
      await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
      expect(await holdings('team1')).toEqual({ DILN: 1 });
      expect(await holdings('team2')).toEqual({});
      expect(await markers()).toHaveLength(1);
      expect(b.stats().status.clearing.missed_before_join).toBe(19);
    });

    it('rejected, the held fill is the old session\'s after a gap (and the gap is a standing problem)', async () => {
      const { b, id } = await resumedPastTheOldSeq();
      expect((await decide(id, 'reject')).status).toBe(200);
      await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
      expect(await holdings('team1')).toEqual({ STED: 5, DILN: 1 });
      expect(await markers()).toHaveLength(0);
      expect(b.stats().status.clearing).toMatchObject({ gaps: 1, missed_messages: 8 });
      expect(b.stats().status.problems!.map((x) => x.kind)).toEqual(['late_join', 'gap']);
    });
  });
});
