import { afterEach, beforeEach, expect, it } from 'vitest';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, type ClearingSessionRecord } from '../proto/feed.js';
import { SESSION_SUBJECT, fillSubject } from '../proto/subjects.js';
import type { Fill } from '../proto/fill.js';
import { lastMarker } from '../src/feed/clearing-session.js';
import { startBridge, type BridgeHandle } from '../src/feed/service.js';
import { StandbyListener } from '../src/feed/standby.js';
import { openBucket } from '../src/shared/streams.js';
import { api, quietLog, until } from './helpers/system.js';
import { feedWorld, fillStream, type FeedWorld } from './helpers/feed.js';

/**
 * The fill stream's last session marker, when it does not read (another
 * version's, a foreign or damaged write), was taken for "no marker" (session
 * 0) without a word. A bridge starting in session 2 then wrote session 2's
 * marker again, after that session's fills: under the reset policy the engine
 * reset every position at it, wiping them.
 */
let world: FeedWorld;
let js: JetStreamClient;
const stops: Array<() => Promise<unknown>> = [];

beforeEach(async () => {
  world = await feedWorld();
  js = jetstream(world.nc);
  // Session 2 is the one in force, its sender known (so a standby gets as far as its marker).
  const record: ClearingSessionRecord = { v: 1, session: 2, name: '', last_seq: 1, ts: Date.now(), clearing_sender: '127.0.0.1:1' };
  await (await openBucket(world.nc, FEED_BUCKET)).put(FEED_CLEARING_KEY, encode(record));
});

afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
  await world.close();
});

const knan = async () => ((await api(world.system.url).holdings('team1', 'team1pass')).body.holdings?.KNAN as number | undefined) ?? 0;
const fill = (seq: number, quantity: number): Fill => ({ seq, client_id: 1, symbol: 3, side: 1, quantity, price: 100 });

/** A fill of session 2 as a bridge stores it, applied by the engine before this returns. */
async function storeFill(seq: number, quantity: number): Promise<void> {
  const ack = await js.publish(fillSubject(1), encode(fill(seq, quantity)), { msgID: `fill-2-${seq}` });
  await until(async () => ((await api(world.system.url).send('GET', '/health')).body.fill_seq as number) >= ack.seq, 'the engine to apply the fill');
}

const problems = async () => ((await api(world.system.url).send('GET', '/health')).body.problems as string[] | undefined) ?? [];
const markers = async () => (await fillStream(world.nc)).filter((m) => m.subject === SESSION_SUBJECT);

async function bridge(): Promise<BridgeHandle> {
  const b = await startBridge(world.opts, quietLog);
  stops.push(() => b.close());
  return b;
}

it('a marker that does not read, with fills after it: no second reset is written, the positions stand, and /health says why', async () => {
  await js.publish(SESSION_SUBJECT, new Uint8Array([0xc1]));
  await storeFill(1, 5);
  expect(await knan()).toBe(5);
  expect(await lastMarker(world.nc)).toMatchObject({ session: null, unreadable: expect.stringMatching(/does not read/) });

  await bridge();
  const said = await until(async () => (await problems()).find((p) => p.startsWith('marker_unreadable')), 'the problem on /health');
  expect(said).toMatch(/the session marker at stream seq \d+ does not read .*nor does its msg id say which session it opened.*No marker was written for session 2/);
  expect(await markers()).toHaveLength(1);
  // A fill after the bridge's start: had a reset been written, it alone would be left.
  await storeFill(2, 2);
  expect(await knan()).toBe(7);

  // The standby cannot know session 2's reset is stored: it publishes nothing, and says why.
  const s = await StandbyListener.start(world.opts, quietLog);
  stops.push(() => s.close());
  expect(s.status()).toMatchObject({ session: 0, waiting: expect.stringMatching(/^session 2: the session marker at stream seq \d+ does not read .*not following until a marker that reads/) });
});

it("a marker whose payload does not read but whose msg id names the session is taken for that session's, loudly", async () => {
  await js.publish(SESSION_SUBJECT, encode({ v: 2, session: 'two' }), { msgID: 'session-2' });
  await storeFill(1, 5);
  expect(await lastMarker(world.nc)).toMatchObject({ session: 2, unreadable: expect.stringMatching(/its session is "two"/) });

  await bridge();
  const said = await until(async () => (await problems()).find((p) => p.startsWith('marker_unreadable')), 'the problem on /health');
  expect(said).toMatch(/its msg id says session 2.*positions were not reset at it/);
  expect(await markers()).toHaveLength(1);
  await storeFill(2, 2);
  expect(await knan()).toBe(7);
});

it('a marker that does not read with nothing stored after it: session 2 gets its marker (a second one changes nothing)', async () => {
  await js.publish(SESSION_SUBJECT, new Uint8Array([0xc1]));
  await bridge();
  const said = await until(async () => (await problems()).find((p) => p.startsWith('marker_unreadable')), 'the problem on /health');
  expect(said).toMatch(/A marker for session 2 was written after it/);
  expect((await markers()).map((m) => m.data?.session)).toEqual([undefined, 2]);
  expect(await lastMarker(world.nc)).toMatchObject({ session: 2, unreadable: null });
});
