import { afterEach, expect, it } from 'vitest';
import { encode } from '../proto/codec.js';
import { FILL_STREAM, SESSION_SUBJECT, fillMsgId, fillSubject } from '../proto/subjects.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { sessionMarkerMsgId } from '../proto/feed.js';
import type { Fill, SessionMarker } from '../proto/fill.js';
import { startEngine, type EngineHandle } from '../src/engine/service.js';
import { position } from '../src/engine/state.js';
import { fillStreamWorld, quietLog, testConfig, until } from './helpers/system.js';

/**
 * The launcher starts the engine and the feed bridge side by side, so on a
 * fresh system the bridge may store the exchange's first fills before the
 * engine has ever run. The engine's first start journals the roster before it
 * replays any fill: those fills are the teams', not unknown client_ids.
 */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const world = () => fillStreamWorld(cleanups);

it('fills stored before the engine ever ran are applied to the roster\'s teams, and stay so at the next start', async () => {
  const { nats, dir, js } = await world();
  const fills: Fill[] = [
    { seq: 1, client_id: 1, symbol: 4, side: 1, quantity: 5, price: 100 },
    { seq: 2, client_id: 2, symbol: 6, side: 1, quantity: 3, price: 100 },
    { seq: 3, client_id: 1, symbol: 4, side: 2, quantity: 2, price: 100 },
    // Not a team: counted and ignored, as ever.
    { seq: 4, client_id: 99, symbol: 4, side: 1, quantity: 1, price: 100 },
  ];
  for (const f of fills) await js.publish(fillSubject(f.client_id), encode(f), { msgID: fillMsgId('1', f.seq) });

  const cfg = testConfig(dir.path);
  const check = (engine: EngineHandle) => {
    const team1 = engine.state.accounts.get(1)!;
    const team2 = engine.state.accounts.get(2)!;
    expect(position(team1, 4)).toBe(3);
    expect(position(team2, 6)).toBe(3);
    expect(team1.cash).toBe(-300);
    expect(engine.state.accounts.has(99)).toBe(false);
  };
  let engine = await startEngine(cfg, nats.url, quietLog, (err) => {
    throw err;
  });
  check(engine);
  await engine.close();
  engine = await startEngine(cfg, nats.url, quietLog, (err) => {
    throw err;
  });
  cleanups.push(() => engine.close());
  check(engine);
});

it('a fill stored under an earlier exchange session after a later one\'s marker is not applied, also after a start from a snapshot', async () => {
  const { nats, dir, js } = await world();
  const fill = (session: number, seq: number, quantity: number) =>
    js.publish(fillSubject(1), encode({ seq, client_id: 1, symbol: 4, side: 1, quantity, price: 100 } satisfies Fill), { msgID: fillMsgId(String(session), seq) });
  const marker = (session: number) =>
    js.publish(SESSION_SUBJECT, encode({ v: 1, kind: 'exchange_restart', reset: true, session, detail: 'test', ts: Date.now() } satisfies SessionMarker), { msgID: sessionMarkerMsgId(session) });
  await fill(1, 1, 5);
  await marker(2);
  // A bridge still following session 1 (a standby that had not looked yet) and the bridge that began session 2 store the same fill.
  await fill(1, 2, 3);
  await fill(2, 2, 3);
  const cfg = testConfig(dir.path);
  const start = () =>
    startEngine(cfg, nats.url, quietLog, (err) => {
      throw err;
    });
  let engine = await start();
  expect(position(engine.state.accounts.get(1)!, 4)).toBe(3);
  expect(engine.fills.stale).toBe(1);
  // A clean stop saves a snapshot; the next start goes on from it.
  await engine.close();
  await fill(1, 3, 1);
  await fill(2, 3, 1);
  engine = await start();
  cleanups.push(() => engine.close());
  expect(engine.state.exchangeSession).toBe(2);
  expect(position(engine.state.accounts.get(1)!, 4)).toBe(4);
});

it('a fill of a session and seq already applied, stored again after the duplicate window, is not applied: live, at a replay and after a start from a snapshot', async () => {
  const { nats, dir, nc, js } = await world();
  // JetStream drops a repeated msg id only within the fill stream's duplicate window (an hour): shortened here, the copies
  // below are stored as a recorded datagram replayed from the exchange's socket after a bridge restart would be.
  const jsm = await jetstreamManager(nc);
  await jsm.streams.update(FILL_STREAM, { duplicate_window: 100_000_000 });
  const fill = (seq: number, quantity: number) => js.publish(fillSubject(1), encode({ seq, client_id: 1, symbol: 4, side: 1, quantity, price: 100 } satisfies Fill), { msgID: fillMsgId('1', seq) });
  const storedAgain = (seq: number, quantity: number) =>
    until(async () => {
      const ack = await fill(seq, quantity);
      return ack.duplicate ? undefined : ack;
    }, `a copy of seq ${seq} stored`);
  await fill(1, 5);
  await fill(2, 3);
  await storedAgain(1, 5);
  const cfg = testConfig(dir.path);
  const start = () =>
    startEngine(cfg, nats.url, quietLog, (err) => {
      throw err;
    });
  // At the replay of a first start.
  let engine = await start();
  expect(position(engine.state.accounts.get(1)!, 4)).toBe(8);
  expect(engine.fills.duplicates).toBe(1);
  // Live.
  const copy = await storedAgain(2, 3);
  await until(() => engine.state.fillSeq >= copy.seq, 'the engine to read the copy');
  expect(position(engine.state.accounts.get(1)!, 4)).toBe(8);
  // After a start from the snapshot a clean stop saves: the seqs applied are in it.
  await engine.close();
  await storedAgain(1, 5);
  await fill(3, 1);
  engine = await start();
  cleanups.push(() => engine.close());
  expect(engine.ready.snapshot).not.toBeNull();
  expect(position(engine.state.accounts.get(1)!, 4)).toBe(9);
  expect(engine.fills.duplicates).toBe(1);
});
