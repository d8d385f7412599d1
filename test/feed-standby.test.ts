import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { decode, encode } from '../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, FEED_PROBLEMS_KEY, FEED_STANDBY_PROBLEMS_KEY, type ClearingSessionRecord, type FeedProblem, type StandbyKeptEntry } from '../proto/feed.js';
import { HELD_STREAM, SESSION_SUBJECT, fillMsgId, fillSubject, isStandbyKeptSubject } from '../proto/subjects.js';
import { readStream } from '../src/shared/stream-reader.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { ClearingSession } from '../src/feed/clearing-session.js';
import { SessionStore, beginsSession } from '../src/feed/session.js';
import { ensureFillStream, openBucket } from '../src/shared/streams.js';
import { StandbyListener } from '../src/feed/standby.js';
import { GapCover } from '../src/feed/gap-cover.js';
import { ProblemOutbox, takeStandbyProblems } from '../src/feed/problem-store.js';
import { ProblemBook } from '../src/feed/problems.js';
import { emptyCounters } from '../src/feed/integrity.js';
import { multicastSender } from '../src/feed/multicast.js';
import { api, quietLog, spawnService, until, type TestSystem } from './helpers/system.js';
import { fingerprint } from '../src/feed/verdict.js';
import { collect, feedProcessEnv, feedWorld, type FeedWorld, TEST_VERDICT_MS, fillMsg, fillStream, playExchange, sendClearing, spawnBridge } from './helpers/feed.js';
import { FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, type FeedAlert, type StandbyStatus } from '../proto/marketdata.js';

/**
 * The standby bridge (src/feed/standby.ts) covers the bridge's downtime:
 * NDFEX never retransmits, so what the exchange sends while the bridge is
 * stopped, killed or restarting reaches the stream only through it. With both
 * up, each fill is stored once. It publishes nothing the bridge would hold:
 * another sender, a seq going back or jumping too far, a new exchange session
 * before the bridge has begun it.
 */
let world: FeedWorld;
let nc: NatsConnection;
let opts: BridgeOptions;
let system: TestSystem;
const closers: Array<() => Promise<unknown>> = [];

beforeEach(async () => {
  world = await feedWorld();
  ({ nc, opts, system } = world);
});

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await world.close();
});

async function bridge(): Promise<BridgeHandle> {
  const b = await startBridge({ ...opts, verdictWindowMs: TEST_VERDICT_MS }, quietLog);
  closers.push(() => b.close());
  return b;
}

async function standby(): Promise<StandbyListener> {
  const s = await StandbyListener.start(opts, quietLog);
  closers.push(() => s.close());
  return s;
}

/** The bridge as its own process, so that it can be SIGKILLed. */
async function bridgeProcess(): Promise<{ kill(): Promise<void> }> {
  const s = await spawnBridge(world.nats.url, opts);
  let killed = false;
  const kill = async () => {
    if (killed) return;
    killed = true;
    await s.stop('SIGKILL');
  };
  closers.push(kill);
  return { kill };
}

/** The clearing seq the bridge last saved as its progress. */
const bridgeRecordSeq = async () => {
  const e = await (await new Kvm(nc).open(FEED_BUCKET)).get(FEED_CLEARING_KEY);
  return e ? decode<ClearingSessionRecord>(e.value).last_seq : 0;
};
const fills = async () => (await fillStream(nc)).filter((m) => m.subject !== SESSION_SUBJECT);
const fillIds = async () => (await fills()).map((m) => m.msgId);
const storedCount = (n: number, what: string) => until(async () => ((await fills()).length >= n ? true : undefined), what);
const ack = (id: string) => api(system.url).send('POST', '/operator/api/feed/ack', { basic: ['instructor', 'instructorpass'], form: { id } });
const holdings = async (user: string) => (await api(system.url).holdings(user, `${user}pass`)).body.holdings as Record<string, number>;
/** The standby follows the exchange's session once the bridge has saved its sender. */
const following = (s: StandbyListener, source: string, session = 1, lastSeq = 0) =>
  until(() => (s.status().sender === source && s.status().session === session && s.status().last_seq >= lastSeq ? s.status() : undefined), `the standby to follow session ${session} from ${source} past ${lastSeq}`);

/**
 * The exchange filled 101 to 103 while a bridge ran; the whole system stopped (104 to 106 lost to everybody);
 * a standby starts first, following session 1 from 103: its first seq heard will skip.
 */
async function standbyAfterWholeStop() {
  const ex = await playExchange(opts, { clearingSeq: 100 });
  closers.push(() => ex.close());
  const b = await bridgeProcess();
  await ex.fills([[1, 4, 1], [1, 4, 1], [1, 4, 1]]);
  await storedCount(3, 'the first fills');
  await until(async () => ((await bridgeRecordSeq()) >= 103 ? true : undefined), 'the bridge to save its progress');
  await b.kill();
  ex.skip(3);
  const sb = await standby();
  await following(sb, ex.source(), 1, 103);
  return { ex, sb };
}

describe('the standby bridge covers the bridge\'s downtime', () => {
  for (const how of ['SIGKILL', 'a clean stop'] as const) {
    it(`fills sent while the bridge is down (${how}) are stored by the standby, each once, and the restarted bridge goes on without a gap`, async () => {
      const ex = await playExchange(opts);
      closers.push(() => ex.close());
      const first = how === 'SIGKILL' ? await bridgeProcess() : null;
      const inProcess = first ? null : await bridge();
      const sb = await standby();
      await ex.fills([[1, 4, 10], [2, 6, 3]]);
      await storedCount(2, 'the first fills stored');
      await following(sb, ex.source(), 1, 2);

      if (first) await first.kill();
      else await inProcess!.close();
      await ex.fills([[1, 4, 1], [1, 4, 1], [2, 6, -1], [1, 6, 2]]);
      await storedCount(6, 'the fills sent while the bridge was down');

      await (first ? bridgeProcess() : bridge());
      await ex.fills([[1, 4, 1]]);
      await storedCount(7, 'the fill after the restart');
      await until(() => (system.engine.fills.applied >= 7 ? true : undefined), 'every fill applied');
      expect(await fillIds()).toEqual([1, 2, 3, 4, 5, 6, 7].map((s) => `fill-1-${s}`));
      expect(await holdings('team1')).toEqual({ STED: 13, DILN: 2 });
      expect(await holdings('team2')).toEqual({ DILN: 2 });
      expect(sb.status()).toMatchObject({ waiting: null, gaps: 0, suspended: 0, other_sender: 0 });
      // The restarted bridge saw no gap: it resumed from what the stream holds.
      const health = await until(async () => {
        const h = (await api(system.url).send('GET', '/health')).body;
        return h.feed?.live && h.feed.standby?.live && h.feed.clearing.last_seq >= 7 ? h : undefined;
      }, 'both bridges on /health');
      expect(health.feed.clearing.gaps).toBe(0);
      expect(health.feed.problems).toBeUndefined();
      expect(health.feed.standby).toMatchObject({ session: 1, sender: ex.source(), waiting: null });
    });
  }

  it('clearing heartbeats take seqs too: the standby follows them (no gap), and publishes only the fills', async () => {
    const ex = await playExchange(opts);
    closers.push(() => ex.close());
    const b = await bridgeProcess();
    const sb = await standby();
    const heartbeat = async () => {
      await ex.spoof([{ type: 'heartbeat', seq: ex.clearingSeq + 1 }]);
      ex.skip(1);
    };
    await ex.fills([[1, 4, 1]]);
    await heartbeat();
    await ex.fills([[1, 4, 1]]);
    await storedCount(2, 'the first fills');
    await following(sb, ex.source(), 1, 3);
    await b.kill();
    await heartbeat();
    await ex.fills([[1, 4, 1]]);
    await heartbeat();
    await heartbeat();
    await ex.fills([[1, 4, 1]]);
    await storedCount(4, 'the fills sent while the bridge was down');
    expect(await fillIds()).toEqual(['fill-1-1', 'fill-1-3', 'fill-1-5', 'fill-1-8']);
    expect(sb.status()).toMatchObject({ gaps: 0, suspended: 0, last_seq: 8 });
  });

  it('with both up, every fill is stored once (the standby\'s copies are duplicates)', async () => {
    const ex = await playExchange(opts);
    closers.push(() => ex.close());
    await bridge();
    const sb = await standby();
    await ex.fills([[1, 4, 1]]);
    await following(sb, ex.source());
    await ex.fills(Array.from({ length: 20 }, () => [1, 4, 1] as [number, number, number]));
    await storedCount(21, 'every fill');
    await sb.idle();
    expect(await fillIds()).toEqual(Array.from({ length: 21 }, (_, i) => `fill-1-${i + 1}`));
    expect(sb.status().published).toBeGreaterThan(0);
    await until(() => (system.engine.fills.applied >= 21 ? true : undefined), 'every fill applied');
    expect(await holdings('team1')).toEqual({ STED: 21 });
  });
});

describe('the standby publishes nothing the bridge would hold', () => {
  /** The exchange at seq 103 (its session began at 101), the standby following it, the bridge killed. */
  async function bridgeDown() {
    const ex = await playExchange(opts, { clearingSeq: 100 });
    closers.push(() => ex.close());
    const b = await bridgeProcess();
    const sb = await standby();
    await ex.fills([[1, 4, 1], [1, 4, 1], [1, 4, 1]]);
    await storedCount(3, 'the first fills');
    await following(sb, ex.source(), 1, 103);
    await b.kill();
    return { ex, sb };
  }
  const FIRST = ['fill-1-101', 'fill-1-102', 'fill-1-103'];

  it('a fill from another socket, at the next seq and further on: not published', async () => {
    const { sb } = await bridgeDown();
    const forger = await multicastSender('127.0.0.1');
    closers.push(() => forger.close());
    await sendClearing(forger, opts.clearing, [[fillMsg(104, 1, 6, 100)], [fillMsg(105, 1, 6, 100)], [fillMsg(150, 1, 6, 100)]]);
    await until(() => (sb.status().other_sender >= 3 ? true : undefined), 'the forged fills heard');
    await sb.idle();
    expect(await fillIds()).toEqual(FIRST);
  });

  it('from the exchange\'s own address: a re-sent seq with other content is not published (a conflict, alerted); a seq going back suspends the standby, and no later fill goes out on its word', async () => {
    const { ex, sb } = await bridgeDown();
    const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
    await alerts.flushed();
    await ex.fills([[1, 4, 1]]);
    await storedCount(4, 'the standby\'s fill');
    // The same seq again, another fill: the first one stands, and the operator hears of the other.
    await ex.spoof([fillMsg(104, 1, 6, 100)]);
    const conflict = await alerts.next((a) => a.kind === 'conflict');
    expect(conflict.detail).toMatch(/^standby: clearing seq 104 came twice with other content: applied /);
    expect(sb.status()).toMatchObject({ conflicts: 1, not_after: 1 });
    // A run going back beyond a reordered datagram: an exchange restart from the same socket or a forgery, the bridge's to judge.
    await ex.spoof([fillMsg(1, 2, 6, 100)]);
    await until(() => (sb.status().suspended >= 1 ? true : undefined), 'the standby suspended');
    await ex.fills([[1, 4, 1]]);
    await until(() => (sb.status().suspended >= 2 ? true : undefined), 'the next fill left to the bridge');
    await sb.idle();
    expect(await fillIds()).toEqual([...FIRST, 'fill-1-104']);
    expect((await fills()).every((m) => m.data.symbol === 4)).toBe(true);
    alerts.stop();
  });

  for (const [copy, told] of [
    ['with other content, from the exchange\'s address', 'a conflict: counted, alerted with both, a standing problem the operator acknowledges'],
    ['with other content, from another socket', 'a conflict: counted, alerted with both, a standing problem the operator acknowledges'],
    ['with the same content, from the exchange\'s address', 'a copy, counted'],
    ['with the same content, from another socket', 'a replay, counted and alerted'],
  ] as const) {
    it(`a second message at the seq of a fill it just published while the bridge is down, ${copy}: ${told}, as the bridge tells one on its followed run; the first stays, the other is never stored`, async () => {
      const { ex, sb } = await bridgeDown();
      const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
      // On the same connection as the alerts: a standby status after the copy comes after any alert it sent for it.
      const statuses = collect<StandbyStatus>(nc, FEED_STATUS_SUBJECT);
      await alerts.flushed();
      const forger = await multicastSender('127.0.0.1');
      closers.push(() => forger.close());
      const fromExchange = copy.endsWith("exchange's address");
      const conflict = copy.startsWith('with other content');
      const first = fillMsg(104, 1, 4, 1);
      const second = conflict ? fillMsg(104, 2, 6, 50) : first;
      const from = fromExchange ? ex.source() : `127.0.0.1:${forger.port()}`;
      await ex.fills([[1, 4, 1]]); // 104, published by the standby alone
      await storedCount(4, "the standby's fill");
      const before = sb.status();
      if (fromExchange) await ex.spoof([second]);
      else await sendClearing(forger, opts.clearing, [[second]]);
      const heard = await statuses.next((x) => x.role === 'standby' && (x.conflicts ?? 0) + (x.copies ?? 0) >= 1);
      const told = alerts.seen.filter((a) => a.kind === 'conflict' || a.kind === 'replay');
      if (conflict) {
        const detail = `clearing seq 104 came twice with other content: applied ${fingerprint(first)} from ${ex.source()} (${JSON.stringify(first)}), not ${fingerprint(second)} from ${from} (${JSON.stringify(second)})`;
        expect(told).toEqual([expect.objectContaining({ feed: 'clearing', kind: 'conflict', received: 104, fingerprints: [fingerprint(first), fingerprint(second)], detail: `standby: ${detail}` })]);
        expect(heard.problems).toEqual([expect.objectContaining({ id: 'conflict-clearing', kind: 'conflict', feed: 'clearing', count: 1, detail: `latest: ${detail}`, actions: ['ack'] })]);
      } else {
        // The exchange sends a seq once, from one socket: the same again from another is someone replaying it.
        expect(told).toEqual(fromExchange ? [] : [expect.objectContaining({ feed: 'clearing', kind: 'replay', received: 104, detail: `standby: clearing seq 104 sent again by ${from}, a copy of the message passed from ${ex.source()}: a replay, dropped` })]);
        expect(heard.problems).toBeUndefined();
      }
      expect(heard).toMatchObject({ conflicts: conflict ? 1 : 0, copies: conflict ? 0 : 1, published: before.published, not_after: before.not_after + (fromExchange ? 1 : 0), other_sender: before.other_sender + (fromExchange ? 0 : 1) });
      alerts.stop();
      statuses.stop();
      const b = await bridge();
      if (conflict) {
        // Taken into the bridge's standing problems, where the operator reads and acknowledges them.
        const taken = await until(() => b.stats().status.problems?.find((p) => p.id === 'conflict-clearing'), "the bridge to take the standby's problem");
        expect(taken).toEqual(heard.problems![0]);
        await until(() => (sb.status().problems === undefined ? true : undefined), 'the standby to see it taken');
        const health = await until(async () => {
          const h = (await api(system.url).send('GET', '/health')).body;
          return h.problems?.find((p: string) => p.startsWith('conflict on clearing [conflict-clearing, operator: ack]: ')) ?? undefined;
        }, 'the conflict on /health');
        expect(health).toBe(`conflict on clearing [conflict-clearing, operator: ack]: ${taken!.detail}`);
        expect((await ack('conflict-clearing')).status).toBe(200);
        expect(b.stats().status.problems?.find((p) => p.id === 'conflict-clearing')).toBeUndefined();
      }
      await ex.fills([[1, 4, 1]]); // 105
      await storedCount(5, 'the next fill');
      await sb.idle();
      const stored = await fills();
      expect(stored.map((m) => m.msgId)).toEqual([...FIRST, 'fill-1-104', 'fill-1-105']);
      expect(stored.find((m) => m.msgId === 'fill-1-104')!.data).toMatchObject({ seq: 104, client_id: 1, symbol: 4, quantity: 1 });
      await until(() => (system.engine.fills.applied >= 5 ? true : undefined), 'every fill applied');
      expect(await holdings('team1')).toEqual({ STED: 5 });
      expect(await holdings('team2')).toEqual({});
    });
  }

  it('from the exchange\'s own address: a seq beyond any believable gap, and then a seq far back, suspend it until the bridge decides', async () => {
    const { ex, sb } = await bridgeDown();
    await ex.spoof([fillMsg(5_000_000, 1, 6, 100)]);
    await until(() => (sb.status().suspended >= 1 ? true : undefined), 'the far jump suspends the standby');
    expect(sb.status().waiting).toMatch(/bridge to decide/);
    await ex.fills([[1, 4, 1]]);
    await until(() => (sb.status().suspended >= 2 ? true : undefined), 'the next fill left to the bridge');
    await sb.idle();
    expect(await fillIds()).toEqual(FIRST);

    // The bridge comes back and goes on with the session: the standby publishes again.
    await bridge();
    await ex.fills([[1, 4, 1]]);
    await until(() => (sb.status().waiting === null ? true : undefined), 'the standby resumes once the bridge has gone on');
    await ex.fills([[1, 4, 1]]);
    await storedCount(5, 'fills after the bridge came back');
    expect((await fillIds()).includes('fill-1-5000000')).toBe(false);
    expect(sb.status().published).toBeGreaterThan(0);
  });

  it('started while no bridge runs, its first fill skipping seqs: it keeps what it hears for the bridge to judge, and once the bridge goes on past it stores those fills and covers again', async () => {
    const { ex, sb } = await standbyAfterWholeStop();
    await ex.fills([[1, 6, 1], [1, 6, 1]]);
    await until(() => (sb.status().suspended >= 2 ? true : undefined), 'the standby waiting on a first fill that skips');
    await sb.idle();
    // Nothing stored on its word alone: the skip may be an exchange restart while nobody listened.
    expect(await fillIds()).toEqual(FIRST);
    // The bridge comes back, judges the skip a gap of the session it followed (market data goes on), and goes on.
    const b2 = await bridge();
    await ex.fills([[1, 4, 1]]);
    await until(() => (sb.status().waiting === null ? true : undefined), 'the standby publishing again once the bridge went on');
    await ex.fills([[1, 4, 1]]);
    await storedCount(7, 'the fills heard while only the standby listened, and after');
    // 107 and 108 reached only the standby: they are stored, each once, after the bridge's 109.
    expect((await fillIds()).sort()).toEqual([...FIRST, 'fill-1-107', 'fill-1-108', 'fill-1-109', 'fill-1-110']);
    await until(() => (system.engine.fills.applied >= 7 ? true : undefined), 'every fill applied');
    expect(await holdings('team1')).toEqual({ STED: 5, DILN: 2 });
    // The bridge's gap (104 to 108) counts only what nobody stored: 104 to 106, sent while the whole system was down.
    await until(() => ((b2.stats().status.clearing.covered ?? 0) >= 2 ? true : undefined), 'the gap taken back for what the standby stored');
    expect(b2.stats().status.clearing).toMatchObject({ missed_messages: 3, covered: 2 });
  });

  it('the operator begins a new session while the same exchange process goes on: the standby\'s copies under the old session, stored after the reset, are not applied', async () => {
    const ex = await playExchange(opts);
    closers.push(() => ex.close());
    const b = await startBridge({ ...opts, sessionName: 'day-1', verdictWindowMs: TEST_VERDICT_MS }, quietLog);
    await ex.fills([[1, 4, 5], [1, 4, 5]]);
    await storedCount(2, 'the first day\'s fills');
    await until(async () => ((await bridgeRecordSeq()) >= 2 ? true : undefined), 'the bridge to save the sender');
    // A standby that looks at the session record seldom (NDFEX_STATUS_INTERVAL_MS up to 60 s): it follows session 1 throughout.
    const sb = await StandbyListener.start({ ...opts, statusIntervalMs: 30_000 }, quietLog);
    closers.push(() => sb.close());
    expect(sb.status()).toMatchObject({ session: 1, sender: ex.source() });
    await b.close();
    // The operator's new session name: the restarted bridge begins session 2 (its reset marker) on the exchange's running feed.
    const b2 = await startBridge({ ...opts, sessionName: 'day-2', verdictWindowMs: TEST_VERDICT_MS }, quietLog);
    closers.push(() => b2.close());
    await ex.fills([[1, 6, 1], [1, 6, 1]]);
    await until(async () => ((await fills()).filter((m) => m.msgId?.startsWith('fill-2-')).length >= 2 ? true : undefined), 'the new session\'s fills');
    await sb.idle();
    const stale = (await fills()).filter((m) => m.msgId === 'fill-1-3' || m.msgId === 'fill-1-4');
    await until(() => (system.engine.fills.applied >= 4 ? true : undefined), 'the fills applied');
    // Whether or not the standby's copies reached the stream, only the new session's count after its reset.
    expect(await holdings('team1'), `the standby's stored copies: ${stale.map((m) => m.msgId).join(', ') || 'none'}`).toEqual({ DILN: 2 });
  });

  it('a run kept while the bridge is not listening takes no forgery from the exchange\'s own address: a second message with a kept seq (the first stays), a seq at or before the last stored, a seq further ahead than the exchange sends', async () => {
    const { ex, sb } = await standbyAfterWholeStop();
    await ex.fills([[1, 6, 1]]); // 107: the first heard, skipping: the run begins
    await ex.spoof([fillMsg(107, 2, 6, 50)]); // the same seq, other content
    await ex.fills([[1, 6, 1]]); // 108
    await ex.fills([[1, 6, 0]]); // 109: no fill (quantity 0), counted as invalid as on the live feed, not dropped unsaid
    await ex.spoof([fillMsg(102, 2, 6, 50), fillMsg(1_000_000, 2, 6, 50)]);
    await until(() => (sb.status().suspended >= 6 ? true : undefined), 'the standby to hear the run');
    expect(sb.status().conflicts).toBe(1);
    expect(sb.status().invalid).toBe(1);
    await bridge();
    await ex.fills([[1, 4, 1]]); // 110
    await until(() => (sb.status().waiting === null ? true : undefined), 'the standby publishing again once the bridge went on');
    await ex.fills([[1, 4, 1]]); // 111
    await storedCount(7, 'the fills after the bridge came back');
    await sb.idle();
    // 107 as first heard, as the bridge keeps a held one; nothing forged is stored.
    expect((await fillIds()).sort()).toEqual([...FIRST, 'fill-1-107', 'fill-1-108', 'fill-1-110', 'fill-1-111']);
    await until(() => (system.engine.fills.applied >= 7 ? true : undefined), 'every fill applied');
    expect(await holdings('team2')).toEqual({});
    expect(await holdings('team1')).toEqual({ STED: 5, DILN: 2 });
  });

  for (const [copy, told] of [
    ['with other content (forged from its address, or corrupted)', 'a conflict: counted, alerted with both, a standing problem'],
    ['with the same content', 'a duplicate, counted'],
    ['with other content, then the first one\'s content again', 'a conflict, then a duplicate of the first'],
  ] as const) {
    it(`a second message at a seq of the run it keeps while no bridge listens, ${copy}: ${told}; the first kept, stored once the bridge goes on, the gap covered, and applied once`, async () => {
      const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
      await alerts.flushed();
      const { ex, sb } = await standbyAfterWholeStop();
      const first = fillMsg(107, 1, 6, 1);
      const other = fillMsg(107, 2, 6, 50);
      await ex.fills([[1, 6, 1]]); // 107: the first heard, skipping 104 to 106: the run begins
      const conflicts = copy === 'with the same content' ? 0 : 1;
      const duplicates = copy === 'with other content (forged from its address, or corrupted)' ? 0 : 1;
      await ex.spoof([conflicts ? other : first]);
      if (conflicts && duplicates) await ex.spoof([first]);
      await ex.fills([[1, 6, 1]]); // 108
      await until(() => (sb.status().suspended >= 2 + conflicts + duplicates ? true : undefined), 'the standby to hear the run');
      if (conflicts) {
        const a = await alerts.next((x) => x.kind === 'conflict');
        expect(a).toMatchObject({ feed: 'clearing', received: 107, fingerprints: [fingerprint(first), fingerprint(other)] });
        expect(a.detail).toBe(
          `standby: clearing seq 107 came twice with other content: held ${fingerprint(first)} from ${ex.source()} (${JSON.stringify(first)}) in the run the standby keeps while no bridge listens, kept (stored once the bridge goes on past it), not ${fingerprint(other)} from ${ex.source()} (${JSON.stringify(other)})`,
        );
        expect(sb.status().problems).toEqual([expect.objectContaining({ id: 'conflict-clearing', kind: 'conflict', feed: 'clearing', count: 1, detail: `latest: ${a.detail.slice('standby: '.length)}`, actions: ['ack'] })]);
      } else expect(sb.status().problems ?? []).toEqual([]);
      expect(sb.status()).toMatchObject({ conflicts, held_duplicates: duplicates });
      const problem = sb.status().problems?.[0];
      const b = await bridge();
      if (problem) {
        // Taken into the bridge's standing problems, where the operator reads and acknowledges them.
        const taken = await until(() => b.stats().status.problems?.find((p) => p.id === 'conflict-clearing'), "the bridge to take the standby's problem");
        expect(taken).toEqual(problem);
        await until(() => (sb.status().problems === undefined ? true : undefined), 'the standby to see it taken');
      }
      await ex.fills([[1, 4, 1]]); // 109
      await until(() => (sb.status().waiting === null ? true : undefined), 'the standby publishing again once the bridge went on');
      await ex.fills([[1, 4, 1]]); // 110
      await storedCount(7, 'the kept run and the fills after the bridge came back');
      await sb.idle();
      const stored = await fills();
      expect(stored.map((m) => m.msgId).sort()).toEqual([...FIRST, 'fill-1-107', 'fill-1-108', 'fill-1-109', 'fill-1-110']);
      expect(stored.find((m) => m.msgId === 'fill-1-107')!.data).toMatchObject({ seq: 107, client_id: 1, symbol: 6, quantity: 1 });
      // The bridge's gap (104 to 108) counts only what nobody stored: 104 to 106, sent while the whole system was down.
      await until(() => ((b.stats().status.clearing.covered ?? 0) >= 2 ? true : undefined), 'the gap taken back for the kept run');
      expect(b.stats().status.clearing).toMatchObject({ missed_messages: 3, covered: 2 });
      await until(() => (system.engine.fills.applied >= 7 ? true : undefined), 'every fill applied');
      expect(await holdings('team1')).toEqual({ STED: 5, DILN: 2 });
      expect(await holdings('team2')).toEqual({});
      expect(alerts.seen.filter((x) => x.kind === 'conflict')).toHaveLength(conflicts);
      alerts.stop();
      if (!problem) return expect(b.stats().status.problems?.find((p) => p.kind === 'conflict')).toBeUndefined();
      const health = await until(async () => {
        const h = (await api(system.url).send('GET', '/health')).body;
        return h.problems?.find((p: string) => p.startsWith('conflict on clearing [conflict-clearing, operator: ack]: ')) ?? undefined;
      }, 'the conflict on /health');
      expect(health).toBe(`conflict on clearing [conflict-clearing, operator: ack]: ${problem.detail}`);
      expect((await ack('conflict-clearing')).status).toBe(200);
      expect(b.stats().status.problems?.find((p) => p.id === 'conflict-clearing')).toBeUndefined();
    });
  }

  it("a conflict the standby heard outlives a standby restart, and a bridge takes it once into the problems the operator acknowledges", async () => {
    const { ex, sb } = await standbyAfterWholeStop();
    await ex.fills([[1, 6, 1]]); // 107: the run begins
    await ex.spoof([fillMsg(107, 2, 6, 50)]);
    const kv = await openBucket(nc, FEED_BUCKET);
    const stored = await until(async () => {
      const e = await kv.get(FEED_STANDBY_PROBLEMS_KEY);
      return e?.operation === 'PUT' ? decode<FeedProblem[]>(e.value) : undefined;
    }, "the standby's problem stored");
    expect(stored).toEqual([expect.objectContaining({ id: 'conflict-clearing', kind: 'conflict', count: 1 })]);
    await sb.close();
    const again = await standby();
    expect(again.status().problems).toEqual(stored);
    const b = await bridge();
    const taken = await until(() => b.stats().status.problems?.find((p) => p.id === 'conflict-clearing'), "the bridge to take the standby's problem");
    expect(taken).toEqual(stored[0]);
    await until(() => (again.status().problems === undefined ? true : undefined), 'the standby to see it taken');
    expect((await kv.get(FEED_STANDBY_PROBLEMS_KEY))?.operation).toBe('DEL');
    expect((await ack('conflict-clearing')).status).toBe(200);
    // Acknowledged, it is gone from the list a bridge restart loads, and nothing is left to take again.
    await until(async () => {
      const e = await kv.get(FEED_PROBLEMS_KEY);
      return e && !decode<FeedProblem[]>(e.value).some((p) => p.id === 'conflict-clearing') ? true : undefined;
    }, 'the acknowledgement saved');
    expect((await kv.get(FEED_STANDBY_PROBLEMS_KEY))?.operation).toBe('DEL');
  });

  for (const [policy, together] of [['reset', 1], ['keep', 1], ['keep', 2]] as const) {
    it(`the operator's new session at ${together === 1 ? 'a bridge start' : 'the start of two bridges at once'} while fills flow (${policy}): no fill is lost${policy === 'keep' ? ', none counted twice' : ''}`, async () => {
      const ex = await playExchange(opts);
      closers.push(() => ex.close());
      const b = await startBridge({ ...opts, sessionName: 'day-1', restartPolicy: policy, verdictWindowMs: TEST_VERDICT_MS }, quietLog);
      await ex.fills([[1, 4, 1]]);
      await storedCount(1, 'the first day\'s fill');
      await until(async () => ((await bridgeRecordSeq()) >= 1 ? true : undefined), 'the bridge to save the sender');
      // It looks at the session record seldom: it stores fills under session 1 throughout, before and after the new session's marker.
      const sb = await StandbyListener.start({ ...opts, statusIntervalMs: 30_000 }, quietLog);
      closers.push(() => sb.close());
      await following(sb, ex.source(), 1, 1);
      await b.close();
      // A fill every 2 ms while the bridge starts again with the new session's name: some before its marker, some while it opens, some after.
      let flowing = true;
      const flow = (async () => {
        while (flowing) {
          await ex.fills([[1, 4, 1]]);
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      // Two at once (a second host's bridge): both look at the session record before either begins the session.
      const started = await Promise.all(Array.from({ length: together }, () => startBridge({ ...opts, sessionName: 'day-2', restartPolicy: policy, verdictWindowMs: TEST_VERDICT_MS }, quietLog)));
      for (const b2 of started) closers.push(() => b2.close());
      await until(async () => ((await fills()).filter((m) => m.msgId?.startsWith('fill-2-')).length >= 10 ? true : undefined), 'the new session\'s fills');
      flowing = false;
      await flow;
      const sent = ex.clearingSeq;
      await until(async () => ((await fills()).some((m) => m.msgId === `fill-2-${sent}`) ? true : undefined), 'the last fill stored');
      await sb.idle();
      const stream = await fillStream(nc);
      const marker = stream.findIndex((m) => m.subject === SESSION_SUBJECT);
      const seqsOf = (prefix: string, from: number, to: number) => new Set(stream.slice(from, to).flatMap((m) => (m.msgId?.startsWith(prefix) ? [Number(m.msgId.slice(prefix.length))] : [])));
      // Counted in the first session (stored before the marker), and in the second.
      const before = seqsOf('fill-1-', 0, marker);
      const after = seqsOf('fill-2-', marker, stream.length);
      const lost = Array.from({ length: sent }, (_, i) => i + 1).filter((seq) => !before.has(seq) && !after.has(seq));
      expect(lost, 'fills stored only as stale copies, or not at all').toEqual([]);
      if (policy === 'keep') expect([...before].filter((seq) => after.has(seq)), 'fills counted in both sessions').toEqual([]);
      await until(() => (system.engine.state.fillSeq >= stream[stream.length - 1]!.seq ? true : undefined), 'the engine to pass the stream');
      expect(await holdings('team1')).toEqual({ STED: policy === 'keep' ? sent : after.size });
    });
  }

  it('two bridges beginning the operator\'s new session (keep): the one whose compare-and-set lost skips the old session\'s fills stored before the marker, as the one that began it does', async () => {
    const kv = await openBucket(nc, FEED_BUCKET);
    await SessionStore.open(kv, 'day-1');
    // The standby's copies under session 1, stored just before the new session's marker.
    const js = jetstream(nc);
    for (const seq of [1, 2, 3]) await js.publish(fillSubject(1), encode({ seq, client_id: 1, symbol: 4, side: 1, quantity: 1, price: 100 }), { msgID: fillMsgId('1', seq) });
    // Each bridge looked before either began it: each joined the groups early and heard those fills.
    expect(await beginsSession(kv, 'day-2')).toBe(true);
    const open = (joinedEarly: boolean) => ClearingSession.open(nc, kv, { sessionName: 'day-2', restartPolicy: 'keep', joinedEarly }, quietLog, () => {});
    const first = await open(true);
    expect(first.number).toBe(2);
    expect([...first.countedBefore].sort()).toEqual([1, 2, 3]);
    // Before, the second found the session begun, took nothing as counted, and stored the three again under session 2.
    const second = await open(true);
    expect(second.number).toBe(2);
    expect([...second.countedBefore].sort()).toEqual([1, 2, 3]);
    // One that joined only once it could judge (the session begun before it looked) heard none of them.
    expect((await open(false)).countedBefore.size).toBe(0);
  });

  it('an exchange restart (a new process, seq from 1): nothing of the new session before the bridge has begun it and stored its reset; then the standby covers it too', async () => {
    const ex = await playExchange(opts);
    closers.push(() => ex.close());
    await bridge();
    const sb = await standby();
    await ex.fills([[1, 4, 5], [1, 4, 5]]);
    await following(sb, ex.source());
    await storedCount(2, 'the old session\'s fills');
    await ex.restart();
    await ex.fills([[1, 6, 1]]);
    // Believed on market data after the verdict window; the standby follows once the bridge saved the new sender.
    await following(sb, ex.source(), 2);
    await ex.fills([[1, 6, 1], [1, 6, 1]]);
    await storedCount(5, 'the new session\'s fills');
    const stream = await fillStream(nc);
    const marker = stream.findIndex((m) => m.subject === SESSION_SUBJECT);
    expect(marker).toBeGreaterThan(-1);
    const newSession = stream.map((m, i) => [m.msgId ?? '', i] as const).filter(([id]) => id.startsWith('fill-2-'));
    expect(newSession.map(([id]) => id)).toEqual(['fill-2-1', 'fill-2-2', 'fill-2-3']);
    expect(newSession.every(([, i]) => i > marker)).toBe(true);
    await until(() => (system.engine.fills.applied >= 5 ? true : undefined), 'every fill applied');
    expect(await holdings('team1')).toEqual({ DILN: 3 });
  });
});

describe(`the run the standby keeps while no bridge listens outlives a standby restart (kept in ${HELD_STREAM})`, () => {
  const FIRST = ['fill-1-101', 'fill-1-102', 'fill-1-103'];

  /** The standby as its own process, so that it can be SIGKILLed. */
  async function standbyProcess(): Promise<{ stop(signal: NodeJS.Signals): Promise<void> }> {
    const s = await spawnService('feed-standby', 'feed/main.js', { ...feedProcessEnv(world.nats.url, opts), NDFEX_FEED_ROLE: 'standby', LOG_LEVEL: 'warn', NDFEX_STATUS_INTERVAL_MS: '100' });
    let stopped = false;
    const stop = async (signal: NodeJS.Signals) => {
      if (stopped) return;
      stopped = true;
      await s.stop(signal);
    };
    closers.push(() => stop('SIGKILL'));
    return { stop };
  }

  /** Messages of the standby's kept runs in the stream, and the seqs they hold. */
  async function keptStored(): Promise<number[]> {
    const seqs: number[] = [];
    const r = await readStream(nc, HELD_STREAM, 1, (m) => void (isStandbyKeptSubject(m.subject) && seqs.push(...decode<StandbyKeptEntry>(m.data).msgs.map((x) => x.seq))), { follow: false });
    await r.caughtUp;
    await r.stop();
    return seqs.sort((a, b) => a - b);
  }

  /**
   * The exchange filled 101 to 103 while a bridge ran; the whole system stopped (104 to 106 lost to everybody); a
   * standby, its own process, started first: 107 and 108 reach it alone, kept for the bridge to judge.
   */
  async function standbyKeepingARun() {
    const statuses = collect<StandbyStatus>(nc, FEED_STATUS_SUBJECT);
    const ex = await playExchange(opts, { clearingSeq: 100 });
    closers.push(() => ex.close());
    const b = await bridgeProcess();
    await ex.fills([[1, 4, 1], [1, 4, 1], [1, 4, 1]]);
    await storedCount(3, 'the first fills');
    await until(async () => ((await bridgeRecordSeq()) >= 103 ? true : undefined), 'the bridge to save its progress');
    await b.kill();
    ex.skip(3);
    const first = await standbyProcess();
    await statuses.next((x) => x.role === 'standby' && x.sender === ex.source() && x.last_seq >= 103);
    await ex.fills([[1, 6, 1], [1, 6, 1]]);
    await statuses.next((x) => x.role === 'standby' && x.suspended >= 2);
    statuses.stop();
    return { ex, first };
  }

  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    it(`restarted (${how === 'SIGTERM' ? 'a clean stop' : 'SIGKILL'}) while the bridge is still down: the next standby takes the run up, keeps it going, and once the bridge goes on past it the run is stored, each fill once, and applied once`, async () => {
      const { ex, first } = await standbyKeepingARun();
      // Killed, it leaves what JetStream has stored: the write follows the datagram by one event-loop turn.
      if (how === 'SIGKILL') await until(async () => ((await keptStored()).length >= 2 ? true : undefined), 'the kept run stored');
      await first.stop(how);
      const sb = await standby();
      expect(sb.status()).toMatchObject({ session: 1, sender: ex.source(), waiting: expect.stringMatching(/to go on past seq 107\)$/) });
      expect(sb.status().kept).toBe(2);
      expect(await keptStored()).toEqual([107, 108]);
      await ex.fills([[1, 6, 1]]); // 109: the run goes on
      await until(() => (sb.status().kept === 3 ? true : undefined), 'the run kept going');
      await sb.idle();
      expect(await fillIds()).toEqual(FIRST);
      const b = await bridge();
      await ex.fills([[1, 4, 1]]); // 110: the bridge's first, past the run
      await until(() => (sb.status().waiting === null ? true : undefined), 'the standby publishing again once the bridge went on');
      await ex.fills([[1, 4, 1]]); // 111
      await storedCount(8, 'the kept run and the fills after the bridge came back');
      await sb.idle();
      expect((await fillIds()).sort()).toEqual([...FIRST, 'fill-1-107', 'fill-1-108', 'fill-1-109', 'fill-1-110', 'fill-1-111']);
      await until(() => (system.engine.fills.applied >= 8 ? true : undefined), 'every fill applied');
      expect(await holdings('team1')).toEqual({ STED: 5, DILN: 3 });
      // The bridge's gap (104 to 109) counts only what nobody stored: 104 to 106.
      await until(() => ((b.stats().status.clearing.covered ?? 0) >= 3 ? true : undefined), 'the gap taken back for the kept run');
      expect(b.stats().status.clearing).toMatchObject({ missed_messages: 3, covered: 3 });
      // Stored, the run leaves the stream; the bridge took none of it for a held run of its own.
      await until(async () => ((await keptStored()).length === 0 ? true : undefined), 'the kept run purged');
      expect(b.stats().status.problems?.filter((p) => p.kind === 'held_store' || p.kind === 'verdict_pending') ?? []).toEqual([]);
    });
  }

  it('stopped while it keeps a run, and the bridge goes on past the run before it starts again: the next standby stores the run at its start, each fill once', async () => {
    const { ex, first } = await standbyKeepingARun();
    await first.stop('SIGTERM');
    const b = await bridge();
    await ex.fills([[1, 4, 1]]); // 109: the bridge's first, past the run
    await until(async () => ((await bridgeRecordSeq()) >= 109 ? true : undefined), 'the bridge to go on');
    const sb = await standby();
    await storedCount(6, 'the kept run stored by the next standby');
    await sb.idle();
    expect((await fillIds()).sort()).toEqual([...FIRST, 'fill-1-107', 'fill-1-108', 'fill-1-109']);
    expect(sb.status()).toMatchObject({ waiting: null, last_seq: 109 });
    expect(sb.status().kept).toBeUndefined();
    await until(() => (system.engine.fills.applied >= 6 ? true : undefined), 'every fill applied');
    expect(await holdings('team1')).toEqual({ STED: 4, DILN: 2 });
    await until(async () => ((await keptStored()).length === 0 ? true : undefined), 'the kept run purged');
    expect(b.stats().status.problems?.filter((p) => p.kind === 'held_store' || p.kind === 'verdict_pending') ?? []).toEqual([]);
  });
});

describe("the standby's problems, taken by a bridge", () => {
  it('raised before and after a take: each counted once in the bridge\'s, whatever the order', async () => {
    const kv = await openBucket(nc, FEED_BUCKET);
    const outbox = new ProblemOutbox(kv, quietLog);
    const book = new ProblemBook();
    const conflict = (n: number) => ({ id: 'conflict-clearing', kind: 'conflict' as const, feed: 'clearing' as const, detail: `latest: ${n}`, actions: ['ack' as const] });
    outbox.raise(conflict(1), 1000);
    await outbox.flush();
    expect(await takeStandbyProblems(kv, book, quietLog)).toHaveLength(1);
    expect(await takeStandbyProblems(kv, book, quietLog)).toEqual([]);
    // Written over the deletion that took the first.
    outbox.raise(conflict(2), 2000);
    outbox.raise(conflict(3), 3000);
    await outbox.flush();
    expect(outbox.list()).toEqual([expect.objectContaining({ count: 2, since: 2000, ts: 3000 })]);
    expect(await takeStandbyProblems(kv, book, quietLog)).toHaveLength(1);
    expect(book.list()).toEqual([{ ...conflict(3), count: 3, since: 1000, ts: 3000 }]);
    await outbox.flush();
    expect(outbox.list()).toEqual([]);
  });
});

describe('a gap the bridge heard, whose fills another bridge stored, is taken back', () => {
  /** Fills stored as another bridge (the standby) stores them: the bridge's msg ids, straight into the stream. */
  async function storedElsewhere(fillsBySeq: Array<[number, number, number, number]>): Promise<void> {
    const js = jetstream(nc);
    for (const [seq, client_id, symbol, q] of fillsBySeq) {
      await js.publish(fillSubject(client_id), encode({ seq, client_id, symbol, side: q >= 0 ? 1 : 2, quantity: Math.abs(q), price: 100 }), { msgID: fillMsgId('1', seq) });
    }
  }
  const gapProblem = (b: BridgeHandle) => b.stats().status.problems?.find((p) => p.id === 'gap-clearing');

  for (const [label, stored, left] of [
    ['all of them: the problem goes, nothing counted missed', [2, 3, 4], 0],
    ['some of them: the problem counts the others', [2, 4], 1],
    ['none of them: the problem stands as reported', [], 3],
  ] as const) {
    it(label, async () => {
      const ex = await playExchange(opts);
      closers.push(() => ex.close());
      const b = await bridge();
      await ex.fills([[1, 4, 1]]);
      await storedCount(1, 'the first fill');
      // Seqs 2-4 never reach this bridge; another stored the ones listed.
      ex.skip(3);
      await storedElsewhere(stored.map((seq) => [seq, 1, 4, 1]));
      await ex.fills([[1, 4, 1]]);
      const raised = await until(() => gapProblem(b), 'the gap reported at once');
      expect(raised).toMatchObject({ missed: 3 });
      await until(() => (b.stats().gapLooks >= 1 ? true : undefined), 'the look for the gap\'s fills');
      const c = b.stats().status.clearing;
      expect(c.missed_messages).toBe(left);
      expect(c.gaps).toBe(left === 0 ? 0 : 1);
      if (left === 0) expect(gapProblem(b)).toBeUndefined();
      else expect(gapProblem(b)).toMatchObject({ missed: left, detail: expect.stringMatching(new RegExp(`^clearing fills missed for good: ${left} `)) });
      await until(() => (system.engine.fills.applied >= 2 + stored.length ? true : undefined), 'every stored fill applied');
      expect(await holdings('team1')).toEqual({ STED: 2 + stored.length });
    });
  }
});

describe('a look for a gap\'s fills is bounded', () => {
  it('past the bound (a bridge far behind), the gap stands as reported; within it, the same gap is taken back', async () => {
    await ensureFillStream(nc);
    const js = jetstream(nc);
    for (const seq of [2, 3, 4]) await js.publish(fillSubject(1), encode({ seq, client_id: 1, symbol: 4, side: 1, quantity: 1, price: 100 }), { msgID: fillMsgId('1', seq) });
    const look = async (maxLook: number) => {
      const counters = { ...emptyCounters(), gaps: 1, missed_messages: 3 };
      let uncounted = 0;
      const cover = new GapCover({ nc, log: quietLog, counters, streamSeq: () => 0, uncount: (n) => (uncounted += n), graceMs: 60_000, maxLook });
      cover.heard({ kind: 'gap', detail: 'test', expected: 2, received: 5 }, '1');
      await cover.flush();
      return { counters, uncounted, looks: cover.looks };
    };
    expect(await look(2)).toMatchObject({ uncounted: 0, looks: 1, counters: { gaps: 1, missed_messages: 3 } });
    expect(await look(1000)).toMatchObject({ uncounted: 3, looks: 1, counters: { gaps: 0, missed_messages: 0, covered: 3 } });
  });

  it('fills of the gap stored after the first look (the standby\'s kept run, stored once it saw the bridge go on) are taken back at a second look, and none twice', async () => {
    await ensureFillStream(nc);
    const js = jetstream(nc);
    const store = (seq: number) => js.publish(fillSubject(1), encode({ seq, client_id: 1, symbol: 4, side: 1, quantity: 1, price: 100 }), { msgID: fillMsgId('1', seq) });
    await store(2);
    const counters = { ...emptyCounters(), gaps: 1, missed_messages: 4 };
    const uncounted: number[] = [];
    let told: (() => void) | null = null;
    const cover = new GapCover({ nc, log: quietLog, counters, streamSeq: () => 0, uncount: (n) => (uncounted.push(n), told?.()), graceMs: 10, lateMs: 60_000 });
    closers.push(async () => cover.stop());
    const next = () => new Promise<void>((r) => (told = r));
    let first = next();
    cover.heard({ kind: 'gap', detail: 'test', expected: 2, received: 6 }, '1');
    await first;
    expect(counters).toMatchObject({ gaps: 1, missed_messages: 3, covered: 1 });
    await store(3);
    await store(4);
    first = next();
    // The late look (a clean stop takes it at once): 3 and 4 found, 2 not counted again; 5 stays missed.
    await cover.flush();
    await first;
    expect(uncounted).toEqual([1, 2]);
    expect(counters).toMatchObject({ gaps: 1, missed_messages: 1, covered: 3 });
    expect(cover.looks).toBe(2);
  });
});
