import { afterEach, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { decode, encode } from '../proto/codec.js';
import { JOURNAL_VERSION_CLAIMS, type JournalBatch } from '../proto/journal.js';
import { SESSION_SUBJECT, fillMsgId, fillSubject } from '../proto/subjects.js';
import { sessionMarkerMsgId } from '../proto/feed.js';
import { shardNames } from '../proto/shards.js';
import type { Fill, SessionMarker } from '../proto/fill.js';
import { startEngine } from '../src/engine/service.js';
import { applyEvent, applyFill, applySessionReset, decide } from '../src/engine/core.js';
import { rebuild } from '../src/engine/check.js';
import { loadBaskets } from '../src/config/baskets.js';
import { MAX_UNCLAIMED, emptyState, positionList, type EngineState } from '../src/engine/state.js';
import { snapshotPackr, takeSnapshot } from '../src/engine/snapshot.js';
import { SnapshotStore } from '../src/engine/snapshot-store.js';
import { fillStreamWorld, quietLog, testConfig } from './helpers/system.js';

/**
 * The exchange fills every client_id in its own accounts file; the engine
 * learns its teams from the roster, read at each start. A team the instructor
 * adds to the roster after the exchange began filling it must start from
 * those fills (the exchange's books), not from the next one: the engine keeps
 * fills of client_ids without an account aside, and a roster line naming the
 * client_id claims them, journaled with their amounts.
 */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function world() {
  const { nats, dir, nc, js } = await fillStreamWorld(cleanups);
  let session = 1;
  return {
    nats,
    dir,
    nc,
    fill: (seq: number, client_id: number, symbol: number, side: 1 | 2, quantity: number, price: number) =>
      js.publish(fillSubject(client_id), encode({ seq, client_id, symbol, side, quantity, price } satisfies Fill), { msgID: fillMsgId(String(session), seq) }),
    marker: (reset: boolean) => {
      session++;
      return js.publish(SESSION_SUBJECT, encode({ v: 1, kind: 'exchange_restart', reset, session, detail: 'test', ts: Date.now() } satisfies SessionMarker), {
        msgID: sessionMarkerMsgId(session),
      });
    },
    start: (roster: string) =>
      startEngine(testConfig(dir.path, { roster }), nats.url, quietLog, (err) => {
        throw err;
      }),
  };
}

const holdings = (state: EngineState, clientId: number) => {
  const acc = state.accounts.get(clientId);
  return acc ? { positions: positionList(acc), cash: acc.cash } : null;
};

describe('a team added to the roster after its client_id traded', () => {
  it('starts from those fills, once, across a start from a snapshot, a replay of the whole journal and a consistency rebuild', async () => {
    const w = await world();
    // Stored before the engine ever ran: the roster (team1 only) is journaled first, so client_id 7's fills are nobody's yet.
    await w.fill(1, 7, 4, 1, 5, 100);
    await w.fill(2, 1, 4, 1, 1, 100);
    await w.fill(3, 7, 4, 2, 2, 110);
    await w.fill(4, 9, 4, 1, 1, 100);
    let engine = await w.start('1 team1 team1pass\n');
    expect(engine.state.accounts.has(7)).toBe(false);
    expect(engine.fills.unknownAccount).toBe(3);
    // A clean stop saves a snapshot, which must keep what was set aside.
    await engine.close();
    // While the engine is down: one more fill of 7's, after the snapshot.
    await w.fill(5, 7, 6, 1, 3, 50);

    const roster = '1 team1 team1pass\n7 team7 team7pass\n';
    engine = await w.start(roster);
    // 4: 5 - 2; 6: 3. Cash: -500 + 220 - 150.
    const team7 = { positions: [[4, 3], [6, 3]], cash: -430 };
    expect(holdings(engine.state, 7)).toEqual(team7);
    expect(holdings(engine.state, 1)).toEqual({ positions: [[4, 1]], cash: -100 });
    // 9 is still nobody's; 7's are claimed.
    expect([...engine.state.unclaimed.keys()]).toEqual([9]);
    await engine.close();
    // Journaled as a version an engine that would replay the account without its claim refuses.
    const jsm = await jetstreamManager(w.nc);
    const names = shardNames(0, 1);
    const claim = decode<JournalBatch>((await jsm.streams.getMessage(names.journalStream, { last_by_subj: names.journalSubject }))!.data);
    expect(claim.v).toBe(JOURNAL_VERSION_CLAIMS);
    expect(claim.events).toMatchObject([{ t: 'account', clientId: 7, claimed: { positions: [[4, 3], [6, 3]], cash: -430, fills: 3 } }]);

    // Fills after the claim are the account's, as any team's.
    await w.fill(6, 7, 4, 1, 1, 100);
    const after = { positions: [[4, 4], [6, 3]], cash: -530 };
    engine = await w.start(roster);
    expect(holdings(engine.state, 7)).toEqual(after);
    await engine.close();

    // No snapshot: the whole journal and fill stream replayed credit the claim once, where it was made.
    await jsm.streams.purge(names.snapshotStream);
    engine = await w.start(roster);
    cleanups.push(() => engine.close());
    expect(holdings(engine.state, 7)).toEqual(after);
    const rebuilt = await rebuild(w.nc, engine.state.journalSeq, engine.state.fillSeq, quietLog, loadBaskets(undefined));
    expect(holdings(rebuilt.state, 7)).toEqual(after);
    expect(rebuilt.acknowledged).toEqual([]);
  });

  it('after an upgrade from a snapshot taken before they were kept, the start replays the journal and fill stream to find them', async () => {
    const w = await world();
    await w.fill(1, 7, 4, 1, 5, 100);
    await w.fill(2, 1, 4, 1, 1, 100);
    let engine = await w.start('1 team1 team1pass\n');
    await engine.close();
    // The snapshot as an engine from before the ledger wrote it: no `unclaimed`.
    const [head, ...slices] = snapshotPackr.unpackMultiple(Buffer.from(takeSnapshot(engine.state, engine.state.journalSeq, Date.now()))) as [Record<string, unknown>, ...unknown[]];
    delete head.unclaimed;
    const store = await SnapshotStore.open(w.nc);
    await store.save([head, ...slices].map((part) => snapshotPackr.pack(part)), engine.state.journalSeq, Date.now());

    engine = await w.start('1 team1 team1pass\n7 team7 team7pass\n');
    cleanups.push(() => engine.close());
    // Before, it started from that snapshot with nothing set aside: team7 opened empty, its 5 KNAN lost for good.
    expect(engine.ready.snapshot).toBeNull();
    expect(holdings(engine.state, 7)).toEqual({ positions: [[4, 5]], cash: -500 });
    expect(holdings(engine.state, 1)).toEqual({ positions: [[4, 1]], cash: -100 });
  });

  it('claims only the fills of the session in force: a reset marker zeroes what was set aside, a kept session keeps it', async () => {
    const w = await world();
    let engine = await w.start('1 team1 team1pass\n');
    await engine.close();
    await w.fill(1, 7, 4, 1, 5, 100);
    await w.fill(2, 8, 5, 1, 2, 100);
    // A new exchange session under the reset policy: every team from 0, and so those set aside.
    await w.marker(true);
    await w.fill(1, 7, 4, 1, 2, 100);
    // Under the keep policy, positions carry on: so do those set aside.
    await w.marker(false);
    await w.fill(1, 7, 6, 2, 1, 30);
    engine = await w.start('1 team1 team1pass\n7 team7 team7pass\n8 team8 team8pass\n');
    cleanups.push(() => engine.close());
    expect(holdings(engine.state, 7)).toEqual({ positions: [[4, 2], [6, -1]], cash: -200 + 30 });
    expect(holdings(engine.state, 8)).toEqual({ positions: [], cash: 0 });
  });

  it('claims nothing for a line without a client_id (an id handed out here may be a market maker\'s) nor for a /register-style id', async () => {
    const w = await world();
    let engine = await w.start('1 team1 team1pass\n');
    await engine.close();
    // client_id 2 is the next one the engine hands out.
    await w.fill(1, 2, 4, 1, 5, 100);
    engine = await w.start('1 team1 team1pass\nlate latepass1\n');
    cleanups.push(() => engine.close());
    const late = engine.state.byUsername.get('late')!;
    expect(late.clientId).toBe(2);
    expect(holdings(engine.state, 2)).toEqual({ positions: [], cash: 0 });
    // The id has an account now: nothing of it stays aside.
    expect(engine.state.unclaimed.has(2)).toBe(false);
  });
});

describe('fills set aside (pure core)', () => {
  it('nets each client_id\'s fills, drops a position that returns to 0, clears at a reset, and keeps at most MAX_UNCLAIMED ids', () => {
    const s = emptyState();
    const f = (seq: number, client_id: number, side: 1 | 2, quantity: number): Fill => ({ seq, client_id, symbol: 3, side, quantity, price: 10 });
    applyFill(s, f(1, 5, 1, 4), 1);
    applyFill(s, f(2, 5, 2, 4), 2);
    expect(s.unclaimed.get(5)).toEqual({ pos: new Map(), cash: 0, fills: 2 });
    for (let id = 100; id < 100 + MAX_UNCLAIMED + 10; id++) applyFill(s, f(id, id, 1, 1), id);
    expect(s.unclaimed.size).toBe(MAX_UNCLAIMED);
    // An id already kept goes on being kept past the bound.
    applyFill(s, f(1e6, 5, 1, 1), 1e6);
    expect(s.unclaimed.get(5)!.pos.get(3)).toBe(1);
    applySessionReset(s, 1e6 + 1);
    expect(s.unclaimed.size).toBe(0);
  });

  it('a registration skips a client_id whose fills are set aside, on one engine and on a shard of several', () => {
    const cfg = { instruments: loadBaskets(undefined), maxAmount: 1000 };
    const register = (s: EngineState, shard?: { shard: number; shards: number }) => {
      const d = decide(s, shard ? { ...cfg, shard: { ...shard, rosterUsernames: new Set<string>() } } : cfg, { op: 'register', username: `u${s.accounts.size}`, passwordHash: 'h' }, 0);
      if (d.kind !== 'accepted') throw new Error(d.kind);
      for (const ev of d.events) applyEvent(s, ev);
      return (d.result as { client_id: number }).client_id;
    };
    const f = (client_id: number): Fill => ({ seq: 1, client_id, symbol: 3, side: 1, quantity: 1, price: 1 });
    const one = emptyState();
    applyFill(one, f(1), 1);
    applyFill(one, f(2), 2);
    applyFill(one, f(4), 3);
    expect([register(one), register(one), register(one)]).toEqual([3, 5, 6]);
    // Shard 1 of 2 hands out odd ids; 3 is the exchange's.
    const shard = emptyState();
    applyFill(shard, f(3), 1);
    expect([register(shard, { shard: 1, shards: 2 }), register(shard, { shard: 1, shards: 2 })]).toEqual([1, 5]);
  });
});
