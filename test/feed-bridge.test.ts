import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decode } from '../proto/codec.js';
import { FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, type FeedAlert, type FeedStatus } from '../proto/marketdata.js';
import { FEED_BUCKET, FEED_STATUS_KEY } from '../proto/feed.js';
import { SESSION_SUBJECT, fillMsgId } from '../proto/subjects.js';
import type { SessionMarker } from '../proto/fill.js';
import { CLEARING_MAGIC } from '../proto/ndfex.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { startNatsServer } from '../src/launcher/nats-server.js';
import { api, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, until, type TestSystem } from './helpers/system.js';
import { TEST_VERDICT_MS, bridgeOpts, collect, fillMsg, fillStream, playExchange, sendClearing, type Sender } from './helpers/feed.js';

type Nats = Awaited<ReturnType<typeof startTestNats>>;

let nats: Nats;
let nc: NatsConnection;
let sender: Sender;
let opts: BridgeOptions;
const bridges: BridgeHandle[] = [];
const exchanges: Array<{ close(): Promise<void> }> = [];
let system: TestSystem | undefined;
let dir: ReturnType<typeof tempDir> | undefined;

beforeEach(async () => {
  nats = await startTestNats();
  nc = await natsClient(nats.url);
  sender = await multicastSender('127.0.0.1');
  opts = await bridgeOpts(nats.url);
});

afterEach(async () => {
  for (const x of exchanges.splice(0)) await x.close();
  for (const b of bridges.splice(0)) await b.close();
  await system?.close();
  system = undefined;
  dir?.remove();
  dir = undefined;
  await sender.close();
  await nc.close();
  await nats.stop();
  nats.remove();
});

async function bridge(extra: Partial<BridgeOptions> = {}): Promise<BridgeHandle> {
  const b = await startBridge({ ...opts, ...extra }, quietLog);
  bridges.push(b);
  return b;
}

/** Waits until the bridge has taken in `n` clearing messages and JetStream acked every fill among them. */
async function settled(b: BridgeHandle, n: number): Promise<void> {
  // A copy of a message already passed is dropped before the seq tracker: received all the same.
  await until(() => b.stats().status.clearing.messages + (b.stats().status.clearing.duplicates ?? 0) >= n, `${n} clearing messages received`);
  await b.idle();
}

/** The exchange played over multicast (heartbeats, restarts as a new process); closed after the test. */
async function exchange() {
  const x = await playExchange(opts);
  exchanges.push(x);
  return x;
}

const markerIn = async () => (await fillStream(nc)).some((m) => m.subject === SESSION_SUBJECT);

/** The bridge follows the exchange's market data (one that has heard nothing yet follows whoever speaks first). */
const mdHeard = (b: BridgeHandle) => until(() => b.stats().status.market_data.messages >= 2, 'the exchange\'s market data heard');

async function withEngine(): Promise<ReturnType<typeof api>> {
  dir = tempDir();
  system = await startSystem(nats.url, testConfig(dir.path));
  return api(system.url);
}

const holdingsOf = async (a: ReturnType<typeof api>, user: string, pass: string): Promise<Record<string, number>> => {
  const r = await a.holdings(user, pass);
  expect(r.status).toBe(200);
  return r.body.holdings;
};

describe('feed bridge end to end', () => {
  it('publishes every fill of multi-message datagrams to the fill stream, and the engine applies them', async () => {
    const a = await withEngine();
    const b = await bridge();
    // UNDY's basket for team1 (client 1): one datagram of 5 fills, one of 5 fills + a heartbeat; team2 sells 3 KNAN.
    await sendClearing(sender, opts.clearing, [
      [3, 4, 5, 6, 7].map((s, i) => fillMsg(i + 1, 1, s, 1)),
      [...[8, 9, 10, 11, 12].map((s, i) => fillMsg(i + 6, 1, s, 1)), { type: 'heartbeat', seq: 11 }],
      [fillMsg(12, 2, 3, -3, 95)],
    ]);
    await settled(b, 12);
    const stream = await fillStream(nc);
    expect(stream).toHaveLength(11);
    expect(stream.map((m) => m.data.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]);
    expect(stream[10]).toMatchObject({ subject: 'ndfex.fill.2', msgId: fillMsgId('1', 12), data: { seq: 12, client_id: 2, symbol: 3, side: 2, quantity: 3, price: 95 } });

    await until(() => system!.engine.fills.applied >= 11, 'engine applied 11 fills');
    expect(await holdingsOf(a, 'team2', 'team2pass')).toMatchObject({ KNAN: -3 });
    // The basket is complete: creating one UNDY succeeds, and the holdings are the fills' sum minus the basket.
    const created = await a.create('team1', 'team1pass', 1, 'UNDY');
    expect(created.status).toBe(200);
    const h = await holdingsOf(a, 'team1', 'team1pass');
    expect(h.UNDY).toBe(1);
    expect(h.KNAN ?? 0).toBe(0);
  });

  it('a skipped seq is a gap: alert published, counted in the status (NATS and KV)', async () => {
    const b = await bridge();
    const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
    const statuses = collect<FeedStatus>(nc, FEED_STATUS_SUBJECT);
    await alerts.flushed();
    await sendClearing(sender, opts.clearing, [[fillMsg(1, 1, 3, 1)], [fillMsg(2, 1, 3, 1)], [fillMsg(4, 1, 3, 1), fillMsg(5, 1, 3, 1)]]);
    const gap = await alerts.next((m) => m.kind === 'gap');
    expect(gap).toMatchObject({ feed: 'clearing', expected: 3, received: 4 });
    const st = await statuses.next((s) => s.clearing.messages === 4);
    expect(st.clearing).toMatchObject({ datagrams: 3, messages: 4, gaps: 1, missed_messages: 1, last_seq: 5, bad_datagrams: 0 });
    await b.idle();
    expect((await fillStream(nc)).map((m) => m.data.seq)).toEqual([1, 2, 4, 5]);
    const kv = await new Kvm(nc).open(FEED_BUCKET);
    await until(async () => {
      const e = await kv.get(FEED_STATUS_KEY);
      return e && decode<FeedStatus>(e.value).clearing.gaps === 1;
    }, 'status in KV');
    alerts.stop();
    statuses.stop();
  });

  it('the same fill sent twice changes the position once', async () => {
    const a = await withEngine();
    const b = await bridge();
    const f = fillMsg(1, 1, 5, 7);
    await sendClearing(sender, opts.clearing, [[f], [f], [fillMsg(2, 1, 5, 1)]]);
    await settled(b, 3);
    // Dropped by the bridge, not left to JetStream's dedup (its window is an hour).
    expect(b.stats().publisher).toMatchObject({ delivered: 2, duplicates: 0 });
    expect(b.stats().status.clearing.duplicates).toBe(1);
    expect(await fillStream(nc)).toHaveLength(2);
    await until(() => system!.engine.fills.applied >= 2, 'engine applied 2 fills');
    expect(await holdingsOf(a, 'team1', 'team1pass')).toMatchObject({ FISH: 8 });
  });

  // NDFEX never sends a seq twice, and after a bridge restart a fill at or below the saved seq heard before anything else
  // is held as a possible new session (feed-sessions, feed-forgery): the re-sent fills here come once the session's
  // next fills are heard from its socket, as late datagrams of that socket (stored once: JetStream's msg-id dedup).
  it('a bridge restart mid-stream, with overlapping re-sent fills, loses and doubles nothing', async () => {
    const a = await withEngine();
    let b = await bridge();
    const fills = Array.from({ length: 30 }, (_, i) => fillMsg(i + 1, 1 + (i % 2), 3 + (i % 10), 1 + (i % 4)));
    await sendClearing(sender, opts.clearing, fills.slice(0, 20).map((f) => [f]));
    await settled(b, 20);
    await b.close();
    bridges.splice(bridges.indexOf(b), 1);
    b = await bridge();
    expect(b.stats().session).toBe(1);
    await sendClearing(sender, opts.clearing, [[fills[20]!], [fills[21]!], fills.slice(14, 22), ...fills.slice(22).map((f) => [f])]);
    await settled(b, 18);
    expect(b.stats().status.clearing.gaps).toBe(0);
    const stream = await fillStream(nc);
    expect(stream.map((m) => m.data.seq)).toEqual(fills.map((f) => f.seq));
    await until(() => system!.engine.fills.applied >= 30, 'engine applied 30 fills');
    const want = (client: number) => {
      const sum: Record<number, number> = {};
      for (const f of fills) if (f.type === 'fill' && f.client_id === client) sum[f.symbol] = (sum[f.symbol] ?? 0) + f.quantity;
      return sum;
    };
    const byId = (h: Record<string, number>) => Object.fromEntries(Object.entries(h).filter(([, q]) => q !== 0));
    const tickers: Record<number, string> = { 3: 'KNAN', 4: 'STED', 5: 'FISH', 6: 'DILN', 7: 'SORN', 8: 'RYAN', 9: 'LYON', 10: 'WLSH', 11: 'LEWI', 12: 'BDIN' };
    for (const [client, user] of [[1, 'team1'], [2, 'team2']] as const) {
      const expected = Object.fromEntries(Object.entries(want(client)).map(([s, q]) => [tickers[Number(s)]!, q]));
      expect(byId(await holdingsOf(a, user, `${user}pass`))).toEqual(expected);
    }
  });

  it('seq back to 1 with a run of its own is an exchange restart: a SessionMarker precedes the new session, positions reset', async () => {
    const a = await withEngine();
    const x = await exchange();
    const b = await bridge({ verdictWindowMs: TEST_VERDICT_MS });
    const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
    await alerts.flushed();
    await x.fills([[1, 4, 5], [1, 4, 5], [2, 4, 1]]);
    await settled(b, 3);
    await mdHeard(b);
    // The exchange restarts: seq 1 again, and the new session goes on in order (market data from 0, heartbeating).
    await x.restart();
    await x.fills([[1, 4, 2], [1, 6, 1], [1, 7, 1]]);
    await until(markerIn, 'the session marker');
    await settled(b, 6);
    expect(await alerts.next((m) => m.kind === 'exchange_restart' && m.feed === 'clearing')).toMatchObject({ received: 1 });
    const stream = await fillStream(nc);
    expect(stream.map((m) => (m.subject === SESSION_SUBJECT ? 'marker' : m.msgId))).toEqual([
      fillMsgId('1', 1), fillMsgId('1', 2), fillMsgId('1', 3), 'marker', fillMsgId('2', 1), fillMsgId('2', 2), fillMsgId('2', 3),
    ]);
    const marker = stream[3]!.data as SessionMarker;
    expect(marker).toMatchObject({ v: 1, kind: 'exchange_restart', reset: true, session: 2 });
    expect(stream[3]!.msgId).toBe('session-2');
    await until(() => system!.engine.fills.applied >= 6, 'engine applied 6 fills');
    expect(await holdingsOf(a, 'team1', 'team1pass')).toMatchObject({ STED: 2, DILN: 1, SORN: 1 });
    expect(b.stats().status.clearing.restarts).toBe(1);
    expect((await holdingsOf(a, 'team2', 'team2pass')).STED ?? 0).toBe(0);
    alerts.stop();
  });

  it('policy keep: the marker says reset=false and positions carry over', async () => {
    const a = await withEngine();
    const x = await exchange();
    const b = await bridge({ restartPolicy: 'keep', verdictWindowMs: TEST_VERDICT_MS });
    await x.fills([[1, 4, 5], [1, 4, 5]]);
    await settled(b, 2);
    await mdHeard(b);
    await x.restart();
    await x.fills([[1, 4, 1], [1, 4, 1], [1, 4, 1]]);
    await until(markerIn, 'the session marker');
    await settled(b, 5);
    const stream = await fillStream(nc);
    expect(stream.find((m) => m.subject === SESSION_SUBJECT)?.data).toMatchObject({ reset: false, session: 2 });
    await until(() => system!.engine.fills.applied >= 5, 'engine applied 5 fills');
    expect(await holdingsOf(a, 'team1', 'team1pass')).toMatchObject({ STED: 13 });
  });

  it('a changed NDFEX_SESSION begins a new session on start (marker first), the same name resumes it', async () => {
    let b = await bridge({ sessionName: 'day1' });
    await sendClearing(sender, opts.clearing, [[fillMsg(1, 1, 4, 5)]]);
    await settled(b, 1);
    await b.close();
    bridges.splice(0);
    b = await bridge({ sessionName: 'day1' });
    expect(b.stats().session).toBe(1);
    await b.close();
    bridges.splice(0);
    b = await bridge({ sessionName: 'day2' });
    expect(b.stats().session).toBe(2);
    await sendClearing(sender, opts.clearing, [[fillMsg(2, 1, 4, 5)]]);
    await settled(b, 1);
    const stream = await fillStream(nc);
    expect(stream.map((m) => m.msgId)).toEqual([fillMsgId('1', 1), 'session-2', fillMsgId('2', 2)]);
  });

  it('two bridges at once store each fill once and agree on the session after a restart', async () => {
    const x = await exchange();
    const b1 = await bridge({ verdictWindowMs: TEST_VERDICT_MS });
    const b2 = await bridge({ verdictWindowMs: TEST_VERDICT_MS });
    await x.fills([[1, 4, 5], [1, 4, 5]]);
    await settled(b1, 2);
    await settled(b2, 2);
    await mdHeard(b1);
    await mdHeard(b2);
    await x.restart();
    await x.fills([[1, 4, 1], [1, 4, 1], [1, 4, 1]]);
    await settled(b1, 5);
    await settled(b2, 5);
    const stream = await fillStream(nc);
    expect(stream.map((m) => m.msgId)).toEqual([fillMsgId('1', 1), fillMsgId('1', 2), 'session-2', fillMsgId('2', 1), fillMsgId('2', 2), fillMsgId('2', 3)]);
    expect([b1.stats().session, b2.stats().session]).toEqual([2, 2]);
  });

  it('fills that arrive while nats-server is down are stored once it is back (retried with the same msg id)', async () => {
    const b = await bridge({ ackTimeoutMs: 300 });
    await sendClearing(sender, opts.clearing, [[fillMsg(1, 1, 3, 1), fillMsg(2, 1, 3, 1)]]);
    await settled(b, 2);
    await nats.stop();
    // The exchange keeps sending: the bridge takes them in and keeps them until JetStream acks.
    await sendClearing(sender, opts.clearing, [[fillMsg(3, 1, 3, 1)], [fillMsg(4, 1, 3, 1), fillMsg(5, 1, 3, 1)]]);
    await until(() => b.stats().status.clearing.messages >= 5, '5 clearing messages received');
    expect(b.stats().publisher.delivered).toBe(2);
    const restarted = await startNatsServer({ port: nats.port, storeDir: nats.storeDir });
    nats = Object.assign(restarted, { storeDir: nats.storeDir, remove: nats.remove });
    await nc.close();
    nc = await natsClient(nats.url);
    await b.idle();
    expect((await fillStream(nc)).map((m) => m.data.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('bad datagrams are counted, alerted and skipped; good messages before the bad one are kept', async () => {
    const b = await bridge();
    const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
    await alerts.flushed();
    const wrongMagic = Buffer.alloc(32);
    wrongMagic.writeBigUInt64LE(CLEARING_MAGIC + 1n, 0);
    const good = (await import('../proto/ndfex.js')).encodeClearingDatagram([fillMsg(1, 1, 3, 1)]);
    const truncated = good.subarray(0, 20);
    const lengthMismatch = Buffer.from(good);
    lengthMismatch.writeUInt16LE(31, 8);
    const goodThenBad = Buffer.concat([(await import('../proto/ndfex.js')).encodeClearingDatagram([fillMsg(2, 1, 3, 1)]), Buffer.from('junk')]);
    for (const d of [Buffer.from('hello'), wrongMagic, truncated, lengthMismatch, goodThenBad]) await sender.send(opts.clearing, d);
    await sendClearing(sender, opts.clearing, [[fillMsg(3, 1, 3, 1)]]);
    await settled(b, 2);
    expect(b.stats().status.clearing).toMatchObject({ datagrams: 6, bad_datagrams: 5, messages: 2 });
    expect((await fillStream(nc)).map((m) => m.data.seq)).toEqual([2, 3]);
    await until(() => alerts.seen.filter((m) => m.kind === 'bad_datagram').length === 5, '5 bad-datagram alerts');
    alerts.stop();
  });
});
