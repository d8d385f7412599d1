import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { decode, encode } from '../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, FEED_PROBLEMS_KEY, FEED_STATUS_KEY, type ClearingSessionRecord, type HeldEntry, type HeldVerdict } from '../proto/feed.js';
import { FEED_ALERT_SUBJECT, type FeedAlert, type FeedStatus } from '../proto/marketdata.js';
import { encodeMdDatagram, type ClearingMessage, type MdMessage } from '../proto/ndfex.js';
import { HELD_STREAM, SESSION_SUBJECT, fillMsgId, fillSubject, heldSubject } from '../proto/subjects.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { ensureHeldStream } from '../src/shared/streams.js';
import { readStream } from '../src/shared/stream-reader.js';
import { api, quietLog, until, type TestSystem } from './helpers/system.js';
import { collect, feedWorld, type FeedWorld, TEST_VERDICT_MS, fillMsg, fillStream, playExchange, sendClearing, spawnBridge, type Sender } from './helpers/feed.js';

/**
 * The clearing messages a pending exchange-session verdict holds survive the
 * bridge: a clean stop, a kill, several restarts before the decision, and a
 * kill while a decided run is being applied. Each ends with every held fill
 * applied exactly once (or, rejected, never), and the reset at most once.
 */
let world: FeedWorld;
let nc: NatsConnection;
let sender: Sender;
let opts: BridgeOptions;
let system: TestSystem;
const bridges: BridgeHandle[] = [];
const children: Array<{ stop(signal?: NodeJS.Signals): Promise<unknown> }> = [];

beforeEach(async () => {
  world = await feedWorld();
  ({ nc, sender, opts, system } = world);
});

afterEach(async () => {
  for (const c of children.splice(0)) await c.stop('SIGKILL');
  for (const b of bridges.splice(0)) await b.close();
  await world.close();
});

async function bridge(): Promise<BridgeHandle> {
  const b = await startBridge({ ...opts, verdictWindowMs: TEST_VERDICT_MS }, quietLog);
  bridges.push(b);
  return b;
}

/** The bridge as its own process, so that it can be SIGKILLed. */
async function bridgeProcess(statusIntervalMs = 100) {
  const s = await spawnBridge(world.nats.url, opts, statusIntervalMs);
  children.push(s);
  return {
    kill: async () => {
      children.splice(children.indexOf(s), 1);
      await s.stop('SIGKILL');
    },
  };
}

const holdings = async (user: string) => (await api(system.url).holdings(user, `${user}pass`)).body.holdings as Record<string, number>;
const markers = async () => (await fillStream(nc)).filter((m) => m.subject === SESSION_SUBJECT);
const fillIds = async () => (await fillStream(nc)).filter((m) => m.subject !== SESSION_SUBJECT).map((m) => m.msgId);
const decide = (id: string, decision: string) => api(system.url).send('POST', '/operator/api/feed/verdict', { basic: ['instructor', 'instructorpass'], form: { id, decision } });
const heldStored = async () => (await (await jetstreamManager(nc)).streams.info(HELD_STREAM)).state.messages;
/** The held store's entries, in stream order. */
async function heldEntries(): Promise<HeldEntry[]> {
  const out: HeldEntry[] = [];
  const r = await readStream(nc, HELD_STREAM, 1, (m) => void out.push(decode<HeldEntry>(m.data)), { follow: false });
  await r.caughtUp;
  await r.stop();
  return out;
}

/** The status the running bridge (in this process or not) last published. */
async function status(): Promise<FeedStatus> {
  const kv = await new Kvm(nc).open(FEED_BUCKET);
  const e = await kv.get(FEED_STATUS_KEY);
  return decode<FeedStatus>(e!.value);
}
/** The pending verdict's problem, once the bridge started after `since` shows it. */
const pending = (since: number) =>
  until(async () => {
    const s = await status();
    return s.ts >= since ? s.problems?.find((p) => p.kind === 'verdict_pending' && p.actions.includes('confirm')) : undefined;
  }, 'a pending verdict the operator can decide');

/** A session at clearing seq 11 (team1 STED 5, team2 STED 5); the bridge stops; the clearing feed resumes at 20 with no market data heard: held for the operator. */
async function heldAfterDowntime(): Promise<{ id: string }> {
  const b = await bridge();
  await sendClearing(sender, opts.clearing, [[fillMsg(10, 1, 4, 5)], [fillMsg(11, 2, 4, 5)]]);
  await until(() => system.engine.fills.applied >= 2, 'fills applied');
  await b.close();
  bridges.splice(0);
  const b2 = await bridge();
  await sendClearing(sender, opts.clearing, [[fillMsg(20, 1, 6, 1)]]);
  const p = await until(() => b2.stats().status.problems?.find((x) => x.kind === 'verdict_pending'), 'a standing problem for the operator');
  await until(async () => (await heldStored()) >= 1, 'the held fill kept');
  return { id: p.id };
}

describe('held fills survive the bridge', () => {
  it('a clean stop before the decision: the restarted bridge restores the verdict; confirmed, reset once and the fill applied once', async () => {
    const { id } = await heldAfterDowntime();
    await bridges.splice(0)[0]!.close();
    const b = await bridge();
    const p = b.stats().status.problems!.find((x) => x.id === id)!;
    expect(p).toMatchObject({ kind: 'verdict_pending', actions: ['confirm', 'reject'] });
    expect(p.detail).toMatch(/kept across a bridge restart/);
    expect(p.detail).not.toMatch(/lost/);
    expect(b.stats().status.clearing.held).toBe(1);
    expect((await decide(id, 'confirm')).status).toBe(200);
    await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ DILN: 1 });
    expect(await holdings('team2')).toEqual({});
    expect(await markers()).toHaveLength(1);
  });

  it('SIGKILLed before the decision, twice: restored each time; rejected, the fill is the old session\'s after a gap, applied once, nothing reset', async () => {
    // The first part runs in this process, the kills on the bridge's own process.
    const { id } = await heldAfterDowntime();
    await bridges.splice(0)[0]!.close();
    for (let i = 0; i < 2; i++) {
      const since = Date.now();
      const child = await bridgeProcess();
      await pending(since);
      await child.kill();
    }
    const b = await bridge();
    expect(b.stats().status.problems!.find((x) => x.id === id)).toMatchObject({ kind: 'verdict_pending', actions: ['confirm', 'reject'] });
    expect((await decide(id, 'reject')).status).toBe(200);
    await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ STED: 5, DILN: 1 });
    expect(await markers()).toHaveLength(0);
    expect(await fillIds()).toEqual(['fill-1-10', 'fill-1-11', 'fill-1-20']);
  });

  it('an exchange restart the bridge was stopped in the middle of: the next bridge believes it on the new market data it hears, and applies the kept fills once after one reset', async () => {
    const x = await playExchange(opts, { mdSeq: 4000 });
    const b = await bridge();
    await x.fills([[1, 4, 5], [2, 4, 5]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    await until(() => b.stats().status.market_data.messages >= 2, 'market data heard');
    // The exchange restarts with its market data quiet: the new session's first fill is held, waiting for market data.
    await x.restart({ paused: true });
    await x.fills([[1, 6, 1]]);
    await until(async () => (await heldStored()) >= 1, 'the held fill kept');
    await bridges.splice(0)[0]!.close();
    const again = await bridge();
    await x.fills([[2, 6, 2]]);
    await until(() => again.stats().status.clearing.held === 2, 'the next fill joins the restored run');
    x.resume();
    await until(async () => (await markers()).length === 1, 'the restart believed on evidence', 15_000);
    await until(() => system.engine.fills.applied >= 4, 'the kept fills applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ DILN: 1 });
    expect(await holdings('team2')).toEqual({ DILN: 2 });
    expect(await fillIds()).toEqual(['fill-1-1', 'fill-1-2', 'fill-2-1', 'fill-2-2']);
    await x.close();
  });

  it('the held run goes on after the restart (the same sender, the next seqs): confirmed, all of it is applied in order after one reset', async () => {
    const { id } = await heldAfterDowntime();
    await bridges.splice(0)[0]!.close();
    const b = await bridge();
    await sendClearing(sender, opts.clearing, [[fillMsg(21, 2, 6, 2)], [fillMsg(22, 1, 6, 3)]]);
    await until(() => b.stats().status.clearing.held === 3, 'the next fills join the restored run');
    await until(async () => (await heldStored()) >= 2, 'the new fills kept too');
    // Once more, with the grown run.
    await bridges.splice(0)[0]!.close();
    const b2 = await bridge();
    expect(b2.stats().status.clearing.held).toBe(3);
    expect((await decide(id, 'confirm')).status).toBe(200);
    await until(() => system.engine.fills.applied >= 5, 'the held fills applied');
    expect(await holdings('team1')).toEqual({ DILN: 4 });
    expect(await holdings('team2')).toEqual({ DILN: 2 });
    expect(await markers()).toHaveLength(1);
    expect(await fillIds()).toEqual(['fill-1-10', 'fill-1-11', 'fill-2-20', 'fill-2-21', 'fill-2-22']);
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
  });

  it('SIGKILLed right after the operator confirms: the next start finishes or redoes the application, never twice', async () => {
    const { id } = await heldAfterDowntime();
    await bridges.splice(0)[0]!.close();
    const since = Date.now();
    const child = await bridgeProcess();
    await pending(since);
    const answered = decide(id, 'confirm');
    // Killed whenever the answer comes: before, between or after the marker, the fill and the purge.
    expect((await answered).status).toBe(200);
    await child.kill();
    await bridge();
    await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ DILN: 1 });
    expect(await holdings('team2')).toEqual({});
    expect(await markers()).toHaveLength(1);
    expect(await fillIds()).toEqual(['fill-1-10', 'fill-1-11', 'fill-2-20']);
  });
});

it('the held store away: a standing problem says held fills are not kept (not silent); back, they are kept, and a run whose first entry was lost is restored and purged where it lives', async () => {
  const { id } = await heldAfterDowntime();
  const b = bridges[0]!;
  // Someone deletes the stream under the running bridge: fill 20's entry goes with it.
  await (await jetstreamManager(nc)).streams.delete(HELD_STREAM);
  await sendClearing(sender, opts.clearing, [[fillMsg(21, 2, 6, 2)]]);
  const p = await until(() => b.stats().status.problems?.find((x) => x.kind === 'held_store'), 'a held_store problem');
  expect(p.detail).toMatch(/a bridge stop now would lose them/);
  await ensureHeldStream(nc);
  await until(() => !b.stats().status.problems?.some((x) => x.kind === 'held_store'), 'the problem resolved once kept');
  expect(await heldStored()).toBe(1);
  await bridges.splice(0)[0]!.close();
  const again = await bridge();
  expect(again.stats().status.clearing.held).toBe(1);
  expect((await decide(id, 'confirm')).status).toBe(200);
  await until(() => system.engine.fills.applied >= 3, 'the kept fill applied');
  await until(async () => (await heldStored()) === 0, 'purged where it lives');
  expect(await holdings('team2')).toEqual({ DILN: 2 });
  expect(await markers()).toHaveLength(1);
});

describe('a restored run\'s believable gap counts from when it was heard, not from the restore', () => {
  it('the bridge keeps when a held run\'s first and last fills were heard', async () => {
    const before = Date.now();
    await heldAfterDowntime();
    const firstKept = Date.now();
    await sendClearing(sender, opts.clearing, [[fillMsg(21, 2, 6, 2)]]);
    await until(async () => (await heldStored()) >= 2, 'the next fill kept');
    const entries = (await heldEntries()).filter((e) => e.kind === 'msgs');
    expect(entries.map((e) => e.msgs.map((m) => m.seq))).toEqual([[20], [21]]);
    const [a, b] = entries;
    expect(a!.first_at).toBe(a!.last_at);
    expect(a!.first_at).toBeGreaterThanOrEqual(before);
    expect(a!.first_at).toBeLessThanOrEqual(firstKept);
    expect(b!.first_at).toBe(a!.first_at);
    expect(b!.last_at).toBeGreaterThanOrEqual(firstKept);
    expect(b!.last_at).toBeLessThanOrEqual(Date.now());
  });

  it('a run last heard a minute before this start: the exchange\'s next fill 5,000 seqs on (lost while no bridge listened) joins it, as it joins the run never restored', async () => {
    await bridge();
    await sendClearing(sender, opts.clearing, [[fillMsg(10, 1, 4, 5)], [fillMsg(11, 2, 4, 5)]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    await bridges.splice(0)[0]!.close();
    // The store as a bridge left it that heard fill 20 (past the saved seq: held, a restart while none listened?) a minute ago.
    await ensureHeldStream(nc);
    const heardAt = Date.now() - 60_000;
    const v: HeldVerdict = { id: 'v-test-3', kind: 'restart', status: 'pending', downtime: true, impostor: false, opened_at: heardAt, waiting: 'test' };
    const entry: HeldEntry = { v: 1, kind: 'msgs', verdict: v, sender: `127.0.0.1:${sender.port()}`, msgs: [fillMsg(20, 1, 6, 1)], first_at: heardAt, last_at: heardAt };
    await jetstream(nc).publish(heldSubject(v.id, 20), encode(entry));
    const b = await bridge();
    expect(b.stats().status.clearing.held).toBe(1);
    // Past 1,000 + 1,000/s of the moments since the restore; within that of the minute since fill 20 was heard.
    await sendClearing(sender, opts.clearing, [[fillMsg(5020, 2, 6, 2)]]);
    await until(() => b.stats().status.clearing.datagrams >= 1, 'the fill handled');
    expect(b.stats().status.clearing.held).toBe(2);
    expect(b.stats().status.problems!.filter((p) => p.kind !== 'late_join').map((p) => p.id)).toEqual([v.id]);
    expect((await decide(v.id, 'confirm')).status).toBe(200);
    await until(() => system.engine.fills.applied >= 4, 'the held run applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ DILN: 1 });
    expect(await holdings('team2')).toEqual({ DILN: 2 });
    expect(await markers()).toHaveLength(1);
    expect(await fillIds()).toEqual(['fill-1-10', 'fill-1-11', 'fill-2-20', 'fill-2-5020']);
    // The seqs between them were never heard: a gap once applied, as for a run never restored.
    expect(b.stats().status.clearing).toMatchObject({ gaps: 1, missed_messages: 4999 });
  });
});

describe('a copy with other content of a fill inside a held run (forged, or corrupted on the way)', () => {
  for (const restored of [false, true]) {
    for (const from of ["the exchange's socket", 'another sender'] as const) {
      const seen = from === "the exchange's socket" ? 'a conflict (counted, alerted naming the verdict, a standing problem)' : 'held apart for the operator';
      it(`from ${from}${restored ? ', the run restored by a bridge restart' : ''}: ${seen}; the held fill kept, and only it applied once confirmed`, async () => {
        const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
        await alerts.flushed();
        // Held: fill 20 (team1 DILN 1), then 21 (team2 DILN 2), from the exchange's socket.
        const { id } = await heldAfterDowntime();
        await sendClearing(sender, opts.clearing, [[fillMsg(21, 2, 6, 2)]]);
        await until(async () => (await heldStored()) >= 2, 'both held fills kept');
        let b = bridges[0]!;
        if (restored) {
          await bridges.splice(0)[0]!.close();
          b = await bridge();
        }
        expect(b.stats().status.clearing.held).toBe(2);
        const copy = fillMsg(20, 2, 6, 999);
        if (from === "the exchange's socket") {
          await sendClearing(sender, opts.clearing, [[copy]]);
          const c = await alerts.next((a) => a.kind === 'conflict');
          expect(c).toMatchObject({ feed: 'clearing', received: 20, verdict: id });
          expect(c.fingerprints).toHaveLength(2);
          expect(c.fingerprints![0]).not.toBe(c.fingerprints![1]);
          expect(c.detail).toContain(`in the run of verdict ${id}, kept`);
          expect(c.detail).toContain('"quantity":999'); // the copy, shown to whoever decides the verdict
          expect(b.stats().status.clearing).toMatchObject({ conflicts: 1, held: 2 });
          expect(b.stats().status.problems!.find((p) => p.kind === 'conflict')).toMatchObject({ id: 'conflict-clearing', actions: ['ack'] });
        } else {
          const other = await multicastSender('127.0.0.2');
          try {
            await sendClearing(other, opts.clearing, [[copy]]);
          } finally {
            await other.close();
          }
          const p = await alerts.next((a) => a.kind === 'verdict_pending' && a.verdict !== id);
          expect(p.detail).toContain('127.0.0.2');
          expect(p.detail).toContain(`while the possible restart ${id} holds one`);
          expect(b.stats().status.clearing.held).toBe(3);
        }
        expect(b.stats().status.problems!.find((p) => p.id === id)).toMatchObject({ kind: 'verdict_pending' });
        expect((await decide(id, 'confirm')).status).toBe(200);
        await until(() => system.engine.fills.applied >= 4, 'the held fills applied');
        // The exchange goes on: a copy held apart is a stray, never applied.
        await sendClearing(sender, opts.clearing, [[fillMsg(22, 1, 6, 3)]]);
        await until(() => system.engine.fills.applied >= 5, "the exchange's next fill applied");
        await until(() => b.stats().status.clearing.held === 0, 'nothing held');
        expect(await holdings('team1')).toEqual({ DILN: 4 });
        expect(await holdings('team2')).toEqual({ DILN: 2 });
        expect(await markers()).toHaveLength(1);
        expect(await fillIds()).toEqual(['fill-1-10', 'fill-1-11', 'fill-2-20', 'fill-2-21', 'fill-2-22']);
        alerts.stop();
      });
    }
  }
});

it('an entry of the held store that cannot be read is a standing problem at the start, not skipped in silence', async () => {
  await ensureHeldStream(nc);
  await jetstream(nc).publish(heldSubject('v-bad-1', 5), new TextEncoder().encode('not msgpack of a held entry'));
  const b = await bridge();
  expect(b.stats().status.problems!.find((p) => p.id === 'held-unreadable')).toMatchObject({ kind: 'held_store', actions: ['ack'] });
  expect(b.stats().status.clearing.held ?? 0).toBe(0);
});

it('a run replaced before its purge was stored (killed in between): only the verdict\'s newest run comes back, the older one is purged', async () => {
  await bridge();
  await sendClearing(sender, opts.clearing, [[fillMsg(10, 1, 4, 5)]]);
  await until(() => system.engine.fills.applied >= 1, 'fill applied');
  await bridges.splice(0)[0]!.close();
  await ensureHeldStream(nc);
  const js = jetstream(nc);
  const v: HeldVerdict = { id: 'v-test-2', kind: 'restart', status: 'pending', downtime: true, impostor: false, opened_at: Date.now(), waiting: 'test' };
  await js.publish(heldSubject(v.id, 20), encode({ v: 1, kind: 'msgs', verdict: v, sender: '127.0.0.1:40000', msgs: [fillMsg(20, 1, 6, 1)] } satisfies HeldEntry));
  await js.publish(heldSubject(v.id, 25), encode({ v: 1, kind: 'msgs', verdict: v, sender: '127.0.0.1:40001', msgs: [fillMsg(25, 2, 6, 2), fillMsg(26, 2, 6, 2)] } satisfies HeldEntry));
  const b = await bridge();
  expect(b.stats().status.problems!.filter((p) => p.id === v.id)).toHaveLength(1);
  expect(b.stats().status.clearing.held).toBe(2);
  await until(async () => (await heldStored()) === 1, 'the replaced run purged');
});

describe('standing problems survive a kill', () => {
  it('a gap (fills lost for good) is saved as it is raised, not at the next status tick: SIGKILLed right after, the next bridge still shows it', async () => {
    // No status tick for a minute: only the save on raising can keep it.
    const child = await bridgeProcess(60_000);
    const kv = await new Kvm(nc).open(FEED_BUCKET);
    await sendClearing(sender, opts.clearing, [[fillMsg(1, 1, 4, 5)], [fillMsg(5, 1, 4, 5)]]);
    await until(async () => {
      const e = await kv.get(FEED_PROBLEMS_KEY);
      return e && e.value.length > 0 && decode<Array<{ kind: string }>>(e.value).some((p) => p.kind === 'gap');
    }, 'the gap saved');
    await child.kill();
    const b = await bridge();
    expect(b.stats().status.problems!.find((p) => p.kind === 'gap')).toMatchObject({ id: 'gap-clearing', actions: ['ack'] });
  });
});

describe('two bridges: a run held live by one is restored by the other when it starts', () => {
  async function twoHolding() {
    const { id } = await heldAfterDowntime();
    const live = bridges[0]!;
    const restored = await bridge();
    expect(restored.stats().status.problems!.find((p) => p.id === id)).toMatchObject({ kind: 'verdict_pending' });
    expect(restored.stats().status.clearing.held).toBe(1);
    return { id, live, restored };
  }

  it('confirmed: both act on the operator\'s decision, and the fill is stored once after one reset', async () => {
    const { id } = await twoHolding();
    expect((await decide(id, 'confirm')).status).toBe(200);
    await until(() => system.engine.fills.applied >= 3, 'the held fill applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ DILN: 1 });
    expect(await markers()).toHaveLength(1);
    expect(await fillIds()).toEqual(['fill-1-10', 'fill-1-11', 'fill-2-20']);
  });

  it('decided by the live one alone (its run purged): the restored copy goes within a tick, so it can never be applied from there', async () => {
    const { id, restored } = await twoHolding();
    // What the live bridge does once it has applied or dropped the run.
    await (await jetstreamManager(nc)).streams.purge(HELD_STREAM, { filter: heldSubject(id, 20) });
    await until(() => restored.stats().status.clearing.held === 0, 'the restored copy dropped');
    expect(restored.stats().status.problems?.find((p) => p.id === id && p.kind === 'verdict_pending')).toBeUndefined();
  });
});

describe('a run the last bridge was applying when it died (the stream as the kill left it)', () => {
  const verdict = (kind: 'restart' | 'jump'): HeldVerdict => ({ id: 'v-test-1', kind, status: 'pending', downtime: kind === 'restart', impostor: false, opened_at: Date.now(), waiting: 'test' });
  const SENDER = '127.0.0.1:40000';

  /** Session 1 ran to clearing seq 11; the held run is fills 1..4 (team1 DILN 1 each). */
  async function leftBehind(kind: 'restart' | 'jump', opts2: { begun: boolean; stored: number[] }) {
    const b = await bridge();
    await sendClearing(sender, opts.clearing, [[fillMsg(10, 1, 4, 5)], [fillMsg(11, 2, 4, 5)]]);
    await until(() => system.engine.fills.applied >= 2, 'fills applied');
    await bridges.splice(0)[0]!.close();
    const js = jetstream(nc);
    await ensureHeldStream(nc);
    const first = kind === 'restart' ? 1 : 5000;
    const msgs: ClearingMessage[] = [0, 1, 2, 3].map((i) => fillMsg(first + i, 1, 6, 1));
    const subject = heldSubject('v-test-1', first);
    const after = (await (await jetstreamManager(nc)).streams.info('NDFEX_FILLS')).state.last_seq;
    await js.publish(subject, encode({ v: 1, kind: 'msgs', verdict: verdict(kind), sender: SENDER, msgs } satisfies HeldEntry));
    await js.publish(subject, encode({ v: 1, kind: 'applying', session_before: 1, restart: kind === 'restart', after_stream_seq: after, at: Date.now() } satisfies HeldEntry));
    let session = 1;
    if (opts2.begun) {
      // What the killed bridge got done: the session begun (record and marker), some fills stored.
      session = 2;
      const kv = await new Kvm(nc).open(FEED_BUCKET);
      const rec = decode<ClearingSessionRecord>((await kv.get(FEED_CLEARING_KEY))!.value);
      await kv.put(FEED_CLEARING_KEY, encode({ ...rec, session: 2, last_seq: first, ts: Date.now() } satisfies ClearingSessionRecord));
      await js.publish(SESSION_SUBJECT, encode({ v: 1, kind: 'exchange_restart', reset: true, session: 2, detail: 'test', ts: Date.now() }), { msgID: 'session-2' });
    }
    for (const seq of opts2.stored) {
      const m = msgs.find((x) => x.seq === seq)! as Extract<ClearingMessage, { type: 'fill' }>;
      await js.publish(fillSubject(1), encode({ seq, client_id: 1, symbol: 6, side: 1, quantity: 1, price: 100 }), { msgID: fillMsgId(String(session), m.seq) });
    }
    await until(() => system.engine.fills.applied >= 2 + opts2.stored.length, 'the stored part applied');
    return { first };
  }

  it('a restart with the session begun and two of four fills stored (the second one out of order): the other two are published, once', async () => {
    await leftBehind('restart', { begun: true, stored: [1, 3] });
    await bridge();
    await until(() => system.engine.fills.applied >= 6, 'the rest applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(await holdings('team1')).toEqual({ DILN: 4 });
    expect(await markers()).toHaveLength(1);
    expect((await fillIds()).slice(2).sort()).toEqual(['fill-2-1', 'fill-2-2', 'fill-2-3', 'fill-2-4']);
  });

  it('a restart killed before its session began: the session begins once (one marker, positions reset), then every fill', async () => {
    await leftBehind('restart', { begun: false, stored: [] });
    const b = await bridge();
    await until(() => system.engine.fills.applied >= 6, 'the run applied');
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    expect(b.stats().session).toBe(2);
    expect(await holdings('team1')).toEqual({ DILN: 4 });
    expect(await holdings('team2')).toEqual({});
    expect(await markers()).toHaveLength(1);
  });

  it('a jump in the same session with every fill already stored: nothing is published again, and the followed run stands after it', async () => {
    await leftBehind('jump', { begun: false, stored: [5000, 5001, 5002, 5003] });
    const b = await bridge();
    await until(async () => (await heldStored()) === 0, 'the kept copy purged');
    // Market data from the exchange, then its next fill: the run goes on after 5003, no gap, no verdict.
    let ts = 9_000_000_000n;
    const hb = (seq: number): MdMessage => ({ type: 'heartbeat', seq, timestamp: (ts += 1_000_000n) });
    await sender.send(opts.marketData, encodeMdDatagram([hb(10)]));
    await until(() => b.stats().status.market_data.messages >= 1, 'market data heard');
    await sendClearing(sender, opts.clearing, [[fillMsg(5004, 2, 6, 7)]]);
    await until(() => system.engine.fills.applied >= 7, 'the next fill applied');
    expect(await holdings('team1')).toEqual({ STED: 5, DILN: 4 });
    expect(await holdings('team2')).toEqual({ STED: 5, DILN: 7 });
    expect(b.stats().status.clearing.gaps).toBe(0);
    // Only the first bridge's late join (it first heard seq 10).
    expect((b.stats().status.problems ?? []).map((p) => p.kind)).toEqual(['late_join']);
    expect(await markers()).toHaveLength(0);
  });
});
