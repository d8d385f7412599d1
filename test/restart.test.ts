import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../src/config/config.js';
import { loadBaskets } from '../src/config/baskets.js';
import { exportAudit } from '../src/engine/audit-export.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import {
  api,
  fillsFor,
  killProcess,
  natsClient,
  publishFills,
  quietLog,
  spawnEngine,
  startTestNats,
  tempDir,
  testConfig,
  undyBasket,
  until,
} from './helpers/system.js';
import { awaitHoldingsSeq } from './helpers/events.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { decode } from '../proto/codec.js';
import { SNAPSHOT_MANIFEST_SUBJECT, SNAPSHOT_STREAM, type SnapshotManifest } from '../proto/streams.js';

let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let cfg: Config;
let engine: ChildProcess | undefined;
let gateway: GatewayHandle | undefined;

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  cfg = testConfig(dir.path, { requestTimeoutMs: 1000, roster: '1 team1 team1pass\n# ETF-engine format with opening holdings:\nopener openerpass KNAN 4 UNDY 2\n' });
});

afterAll(async () => {
  await gateway?.close();
  if (engine) await killProcess(engine);
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

it('keeps registrations, conversions and fills across a SIGKILL of the engine, and applies fills published while it was down', async () => {
  engine = await spawnEngine(nats.url, cfg);
  gateway = await startGateway(cfg, nats.url, quietLog);
  const http = api(`http://127.0.0.1:${gateway.port}`);
  const nc = await natsClient(nats.url);

  const reg = await http.register('durable', 'durablepass');
  expect(reg.status).toBe(200);
  const fills = fillsFor(1, undyBasket(10));
  const applied = awaitHoldingsSeq(nc, 1, fills.length);
  await publishFills(nc, fills);
  await applied;
  expect((await http.create('team1', 'team1pass', 4, 'UNDY')).status).toBe(200);
  expect((await http.redeem('team1', 'team1pass', 1)).status).toBe(200);
  const opener = await http.holdings('opener', 'openerpass');
  expect(opener.body.holdings).toEqual({ KNAN: 4, UNDY: 2 });

  await killProcess(engine, 'SIGKILL');
  // The exchange keeps trading while the engine is down.
  await publishFills(nc, fillsFor(1, { 3: 5, 13: -1 }));
  const down = await http.send('GET', '/health');
  expect(down.status).toBe(503);

  engine = await spawnEngine(nats.url, cfg);
  // A fresh gateway has no cached credentials: the registered account's hash must have survived too.
  await gateway.close();
  gateway = await startGateway(cfg, nats.url, quietLog);
  const http2 = api(`http://127.0.0.1:${gateway.port}`);

  const h = await http2.holdings('team1', 'team1pass');
  expect(h.status).toBe(200);
  expect(h.body.holdings).toEqual({ KNAN: 12, STED: 7, FISH: 7, DILN: 7, SORN: 7, RYAN: 7, LYON: 7, WLSH: 7, LEWI: 7, BDIN: 7, UNDY: 2 });
  const d = await http2.holdings('durable', 'durablepass');
  expect(d.status).toBe(200);
  expect(d.body.client_id).toBe(reg.body.client_id);
  expect((await http2.register('durable', 'anotherpass')).status).toBe(400);
  // Opening holdings are applied once, not again at each start.
  expect((await http2.holdings('opener', 'openerpass')).body.holdings).toEqual({ KNAN: 4, UNDY: 2 });
  // And the next registration does not reuse a client_id.
  const next = await http2.register('after', 'afterpass1');
  expect(next.body.client_id).toBeGreaterThan(reg.body.client_id);
  await nc.close();
});

it('restarts from a snapshot plus the journal after it, with history and idempotency keys intact', async () => {
  const snapDir = tempDir();
  const snapNats = await startTestNats();
  const scfg = testConfig(snapDir.path, { requestTimeoutMs: 1000, snapshotEvery: 4 });
  let child = await spawnEngine(snapNats.url, scfg);
  const gw = await startGateway(scfg, snapNats.url, quietLog);
  const http = api(`http://127.0.0.1:${gw.port}`);
  const nc = await natsClient(snapNats.url);
  try {
    const fills = fillsFor(1, undyBasket(20));
    const applied = awaitHoldingsSeq(nc, 1, fills.length);
    await publishFills(nc, fills);
    await applied;
    for (let i = 0; i < 12; i++) {
      const r = await http.send('POST', i % 3 === 2 ? '/redeem' : '/create', { basic: ['team1', 'team1pass'], json: { amount: 1, request_id: `k${i}` } });
      expect(r.status).toBe(200);
    }
    const before = (await http.holdings('team1', 'team1pass')).body;
    const historyBefore = (await http.send('GET', '/history', { basic: ['team1', 'team1pass'], query: { limit: '500' } })).body;

    await killProcess(child, 'SIGKILL');
    child = await spawnEngine(snapNats.url, scfg);
    // It started from a snapshot, not from the first journal entry.
    expect(child.ready.snapshot?.journalSeq).toBeGreaterThan(1);
    expect((await http.holdings('team1', 'team1pass')).body).toEqual(before);
    expect((await http.send('GET', '/history', { basic: ['team1', 'team1pass'], query: { limit: '500' } })).body).toEqual(historyBefore);
    const retry = await http.send('POST', '/create', { basic: ['team1', 'team1pass'], json: { amount: 1, request_id: 'k0' } });
    expect(retry.body.replayed).toBe(true);
    expect((await http.holdings('team1', 'team1pass')).body).toEqual(before);

    // The exchange scoreboard file has each conversion leg once, even across the SIGKILL. Lines the killed engine had
    // not appended yet come back from the journal in the new one's catch-up, which runs in the background after its start.
    const scoreboard = () => readFileSync(join(snapDir.path, 'conversions.log'), 'utf8').trim().split('\n');
    const lines = await until(() => {
      const now = scoreboard();
      return now.length >= 12 * 11 && now;
    }, 'the scoreboard catch-up');
    expect(lines).toHaveLength(12 * 11);
    expect(lines[0]).toMatch(/^\d{19} create 1 3 -1$/);
    expect(lines.filter((l) => / 1 13 1$/.test(l) && l.includes(' create '))).toHaveLength(8);
    expect(lines.filter((l) => / 1 13 -1$/.test(l) && l.includes(' redeem '))).toHaveLength(4);

    // The operator export lists every decision of the journal.
    const exported: string[] = [];
    await exportAudit(nc, loadBaskets(undefined), (l) => exported.push(l));
    const entries = exported.map((l) => JSON.parse(l) as { kind: string; client_request_id?: string });
    expect(entries.filter((e) => e.client_request_id?.startsWith('k'))).toHaveLength(12);

    // A clean stop snapshots everything: the next start replays no journal at all.
    await killProcess(child, 'SIGTERM');
    child = await spawnEngine(snapNats.url, scfg);
    expect(child.ready.snapshot?.journalSeq).toBe(child.ready.journalSeq);
    expect((await http.holdings('team1', 'team1pass')).body).toEqual(before);
  } finally {
    await nc.close();
    await gw.close();
    await killProcess(child);
    await snapNats.stop();
    snapNats.remove();
    snapDir.remove();
  }
});

it('comes back after clean stops on the same store, the first snapshot at stream sequence 1 (nats-server 2.9 purge)', async () => {
  const d = tempDir();
  const n = await startTestNats();
  // Snapshots only at a clean stop: the first one's single chunk is the stream's first message.
  const c = testConfig(d.path, { requestTimeoutMs: 1000, snapshotEvery: 0 });
  let child = await spawnEngine(n.url, c);
  const gw = await startGateway(c, n.url, quietLog);
  const http = api(`http://127.0.0.1:${gw.port}`);
  const nc = await natsClient(n.url);
  try {
    const fills = fillsFor(1, undyBasket(5));
    const applied = awaitHoldingsSeq(nc, 1, fills.length);
    await publishFills(nc, fills);
    await applied;
    expect((await http.create('team1', 'team1pass', 2, 'UNDY')).status).toBe(200);
    const before = (await http.holdings('team1', 'team1pass')).body;

    for (let stop = 1; stop <= 3; stop++) {
      await killProcess(child, 'SIGTERM');
      child = await spawnEngine(n.url, c);
      expect(child.ready.snapshot?.journalSeq).toBe(child.ready.journalSeq);
      expect((await http.holdings('team1', 'team1pass')).body).toEqual(before);
    }
    expect((await http.create('team1', 'team1pass', 1, 'UNDY')).status).toBe(200);
    const after = (await http.holdings('team1', 'team1pass')).body;
    expect(after.holdings.UNDY).toBe(3);

    // A snapshot whose chunk is gone (as a 2.9 purge left it) is reported and the journal rebuilds the same state.
    await killProcess(child, 'SIGTERM');
    const jsm = await jetstreamManager(nc);
    const manifest = decode<SnapshotManifest>((await jsm.streams.getMessage(SNAPSHOT_STREAM, { last_by_subj: SNAPSHOT_MANIFEST_SUBJECT }))!.data);
    await jsm.streams.deleteMessage(SNAPSHOT_STREAM, manifest.firstSeq);
    child = await spawnEngine(n.url, c);
    expect(child.ready.snapshot).toBeNull();
    expect(child.startLog.some((l) => l.msg === 'snapshot unusable: rebuilding from the whole journal' && /no longer in/.test(l.reason))).toBe(true);
    expect((await http.holdings('team1', 'team1pass')).body).toEqual(after);
  } finally {
    await nc.close();
    await gw.close();
    await killProcess(child);
    await n.stop();
    n.remove();
    d.remove();
  }
});

it("a team's units_per_window count survives a SIGKILL (a snapshot, then the journal after it) and a clean stop (a snapshot alone)", async () => {
  const d = tempDir();
  const n = await startTestNats();
  // Snapshots every 300 events: the SIGKILLed engine's last one is among the conversions below, the rest replayed.
  const c = testConfig(d.path, { requestTimeoutMs: 5000, snapshotEvery: 300, rules: { units_per_window: { units: 1_200, seconds: 3_600 } } });
  let child = await spawnEngine(n.url, c);
  const nc = await natsClient(n.url);
  const client = new EngineClient(nc, 30_000);
  const create = (amount: number) => client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount });
  try {
    const fills = fillsFor(1, undyBasket(1_300));
    const applied = awaitHoldingsSeq(nc, 1, fills.length);
    await publishFills(nc, fills);
    await applied;
    // More conversions in the window than the history keeps (1,000), 100 at a time.
    for (let i = 0; i < 11; i++) {
      const replies = await Promise.all(Array.from({ length: 100 }, () => create(1)));
      expect(replies.every((r) => r.ok)).toBe(true);
    }
    const over = { ok: false, error: { code: 'limit_exceeded', why: 'per_window', limit: 1_200, seconds: 3_600, used: 1_100 } };
    expect(await create(101)).toMatchObject(over);

    await killProcess(child, 'SIGKILL');
    child = await spawnEngine(n.url, c);
    expect(child.ready.snapshot?.journalSeq).toBeGreaterThan(1);
    expect(child.ready.snapshot?.journalSeq).toBeLessThan(child.ready.journalSeq);
    // Before, the count came from the history ring, which holds the last 1,000: this was accepted.
    expect(await create(101)).toMatchObject(over);
    expect(await create(100)).toMatchObject({ ok: true });

    // A clean stop snapshots everything: the count comes from the snapshot alone.
    await killProcess(child, 'SIGTERM');
    child = await spawnEngine(n.url, c);
    expect(child.ready.snapshot?.journalSeq).toBe(child.ready.journalSeq);
    expect(await create(1)).toMatchObject({ ok: false, error: { code: 'limit_exceeded', used: 1_200 } });
  } finally {
    client.close();
    await nc.close();
    await killProcess(child);
    await n.stop();
    n.remove();
    d.remove();
  }
});
