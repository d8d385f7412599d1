import { afterAll, beforeAll, expect, it } from 'vitest';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Config } from '../src/config/config.js';
import type { DumpResult, EngineCommand, HistoryResult } from '../proto/engine.js';
import { JOURNAL_STREAM } from '../proto/subjects.js';
import { SNAPSHOT_MANIFEST_SUBJECT, SNAPSHOT_STREAM } from '../proto/streams.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { readStream } from '../src/shared/stream-reader.js';
import { consistencyCheck, describeReport } from '../src/engine/check.js';
import { loadBaskets } from '../src/config/baskets.js';
import { buy, fillsFor, killProcess, natsClient, publishFills, quietLog, spawnEngine, startTestNats, tempDir, testConfig, undyBasket } from './helpers/system.js';

/**
 * The engine commits up to 128 events per journal write. On a nats-server
 * whose max_payload is 4 KB a full group is several times that: its publish
 * was refused by the client, and the engine went down through its fault path
 * (every answer of the group "unconfirmed", then a restart) at its first busy
 * moment. A group is now written as several journal messages, and what the
 * journal's sequence names (a snapshot is the replay of the journal up to one)
 * stays exact: a restart from a periodic snapshot, from the one a clean stop
 * leaves, and from the journal alone all rebuild the same state.
 */
const LIMIT = 4096;
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let cfg: Config;
let nc: NatsConnection;
let client: EngineClient;
const engines: ChildProcess[] = [];

beforeAll(async () => {
  nats = await startTestNats(undefined, { maxPayload: LIMIT });
  dir = tempDir();
  // A snapshot every 150 events: several are taken during the conversions, while split groups are in flight.
  cfg = testConfig(dir.path, { snapshotEvery: 150 });
  nc = await natsClient(nats.url);
  client = new EngineClient(nc, 30_000);
});

afterAll(async () => {
  client?.close();
  for (const e of engines) await killProcess(e);
  await nc?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

const start = async () => {
  const e = await spawnEngine(nats.url, cfg);
  engines.push(e);
  return e;
};

/** What a restart must give back: every account's positions and cash, and its whole history (held positions included). */
async function engineState(): Promise<{ accounts: DumpResult['accounts']; histories: HistoryResult['entries'][] }> {
  const dump = await client.call({ op: 'dump' });
  if (!dump.ok) throw new Error(`dump refused: ${JSON.stringify(dump.error)}`);
  const { accounts } = dump.result as DumpResult;
  const histories: HistoryResult['entries'][] = [];
  for (const a of accounts) {
    const entries: HistoryResult['entries'] = [];
    // In pages that fit the server's limit.
    for (let before: string | undefined; ; ) {
      const h = await client.call({ op: 'history', clientId: a.client_id, limit: 5, ...(before ? { before } : {}) });
      if (!h.ok) throw new Error(`history refused: ${JSON.stringify(h.error)}`);
      entries.push(...h.result.entries);
      if (!(before = h.result.next)) break;
    }
    histories.push(entries);
  }
  return { accounts, histories };
}

it('a burst of conversions is journaled in messages under max_payload, all acknowledged, and every restart rebuilds the same state', async () => {
  let snapshotSaved!: () => void;
  const aSnapshot = new Promise<void>((r) => (snapshotSaved = r));
  const snapshots = nc.subscribe(SNAPSHOT_MANIFEST_SUBJECT, { callback: () => snapshotSaved() });
  const first = await start();
  const exited = once(first, 'exit');
  await buy(nc, 1, undyBasket(1000));
  await buy(nc, 2, undyBasket(1000));

  // 600 creates and redeems of two teams in one turn (the engine groups them 128 a write), fills arriving among
  // them (groups span fill positions), and redeems team 2 has no units for (refusals are journaled too).
  // Among them, dumps: each names the journal sequence its state is the replay of, with split groups not yet sent.
  const cmds: EngineCommand[] = Array.from({ length: 600 }, (_, i) =>
    i % 150 === 149
      ? { op: 'dump' }
      : i % 3 === 2
        ? { op: 'redeem', clientId: 1 + (i % 2), etf: 'UNDY', amount: 1, key: `k-${i}` }
        : { op: 'create', clientId: 1 + (i % 2), etf: 'UNDY', amount: 1, key: `k-${i}` },
  );
  const answers = Promise.all(cmds.map((c) => client.call(c)));
  await publishFills(nc, [...fillsFor(1, { 3: 7, 4: -2 }), ...fillsFor(2, { 5: 3 })]);
  const replies = await answers;
  const unanswered = replies.filter((r) => !r.ok && r.error.code !== 'insufficient_holdings');
  expect(unanswered, 'answers other than accepted or refused for want of units').toEqual([]);
  expect(replies.filter((r) => r.ok).length).toBeGreaterThan(400);
  // The journal up to each dump's sequence rebuilds exactly the state it showed.
  const dumps = replies.flatMap((r, i) => (r.ok && cmds[i]!.op === 'dump' ? [r.result as DumpResult] : []));
  expect(dumps).toHaveLength(4);
  for (const d of dumps) {
    const report = await consistencyCheck(nc, d, loadBaskets(undefined), quietLog);
    expect(describeReport(report), `the dump at journal ${d.journal_seq}`).toEqual([]);
  }

  // The engine stayed up: no fault, no warning (a snapshot not saved would be one).
  expect(first.exitCode).toBeNull();
  expect(first.logs.filter((l) => l.level >= 40)).toEqual([]);
  // More journal messages than groups: groups were split, and every message is under the limit.
  const jsm = await jetstreamManager(nc);
  const records = (await jsm.streams.info(JOURNAL_STREAM)).state.messages;
  expect(records).toBeGreaterThan(600 / 128 + 2);
  let largest = 0;
  const reader = await readStream(nc, JOURNAL_STREAM, 1, (m) => void (largest = Math.max(largest, m.data.byteLength)), { follow: false });
  await reader.caughtUp;
  await reader.stop();
  expect(largest).toBeLessThanOrEqual(LIMIT);
  const before = await engineState();

  // A crash: the next start is from the last periodic snapshot (taken mid-burst) and the journal after it.
  await aSnapshot;
  await killProcess(first, 'SIGKILL');
  await exited;
  const second = await start();
  expect(second.ready.snapshot, 'a start from a snapshot').not.toBeNull();
  expect(second.ready.snapshot.journalSeq).toBeGreaterThan(0);
  expect(await engineState()).toEqual(before);

  // A clean stop leaves a snapshot of everything; the start after it replays nothing.
  const stopped = once(second, 'exit');
  second.kill('SIGTERM');
  expect((await stopped)[0]).toBe(0);
  const third = await start();
  expect(third.ready.snapshot?.journalSeq).toBe(third.ready.journalSeq);
  expect(await engineState()).toEqual(before);

  // No snapshot at all: the whole journal, split groups and all.
  await killProcess(third, 'SIGKILL');
  snapshots.unsubscribe();
  await jsm.streams.purge(SNAPSHOT_STREAM);
  const fourth = await start();
  expect(fourth.ready.snapshot).toBeNull();
  expect(await engineState()).toEqual(before);
}, 120_000);

/**
 * A command that fits one message whose journal record does not (the event
 * carries more than the command, and JetStream adds its headers): applied, it
 * could never be written, and the engine went down with its whole group; a
 * client retrying it would take the engine down at every start. It is refused
 * before anything is done, and the commands beside it go on.
 */
it('a command whose journal record alone would be over max_payload is refused, and nothing else is', async () => {
  for (const e of engines) await killProcess(e);
  const engine = await start();
  await buy(nc, 1, undyBasket(5));
  // Each command fits the server's 4 KB; the halt's event and the create's (its key, its positions after) do not.
  const [halt, longKey, ping, create, fits] = await Promise.all([
    client.call({ op: 'halt', etf: null, reason: 'x'.repeat(3900), by: 'operator' }),
    client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'k'.repeat(3900) }),
    client.call({ op: 'ping' }),
    client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'beside-them' }),
    // Long, but its record fits: counted, not guessed.
    client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'f'.repeat(1500) }),
  ]);
  for (const refused of [halt, longKey]) {
    expect(refused).toMatchObject({ ok: false, error: { code: 'payload_too_large', journal: true, limit: LIMIT } });
    expect((refused as { error: { bytes: number } }).error.bytes).toBeGreaterThan(LIMIT);
  }
  expect(ping.ok).toBe(true);
  expect(create.ok).toBe(true);
  expect(fits.ok).toBe(true);
  // Nothing of them was done: no halt in force, no create under the long key.
  const rules = await client.call({ op: 'rules' });
  expect(rules.ok && rules.result.halts).toEqual([]);
  const found = await client.call({ op: 'request', clientId: 1, id: 'k'.repeat(3900) });
  expect(found).toMatchObject({ ok: false, error: { code: 'not_found' } });
  expect(engine.exitCode).toBeNull();
  expect(engine.logs.filter((l) => l.level >= 50)).toEqual([]);
  expect(engine.logs.filter((l) => l.level === 40).map((l) => l.op)).toEqual(['halt', 'create']);

  // And the journal replays: the create beside them is there after a restart.
  await killProcess(engine, 'SIGKILL');
  await start();
  expect(await client.call({ op: 'request', clientId: 1, id: 'beside-them' })).toMatchObject({ ok: true, result: { status: 'accepted' } });
}, 60_000);
