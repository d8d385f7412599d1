import { afterAll, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { encode } from '../proto/codec.js';
import type { Fill } from '../proto/fill.js';
import type { DumpResult } from '../proto/engine.js';
import type { Delta, JournalEvent } from '../proto/journal.js';
import { fillSubject } from '../proto/subjects.js';
import { shardNames, shardOfClient } from '../proto/shards.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { EngineClient } from '../src/gateway/engine-client.js';
import { consistencyCheck, rebuild } from '../src/engine/check.js';
import { loadBaskets } from '../src/config/baskets.js';
import { ensureFillStream } from '../src/shared/streams.js';
import { connectNats } from '../src/shared/nats.js';
import { api, expectedPositions, killProcess, quietLog, spawnEngine, tempDir, testConfig } from './helpers/system.js';

/**
 * Crash safety under load: creates, redeems and fills stream in while the
 * engine is SIGKILLed several times and nats-server once, at random moments.
 * Clients retry with the same idempotency key (and fills with the same
 * message id) until they get a definitive answer, as the README tells teams to.
 */
const TEAMS = 4;
const WORKERS = 8;
const dir = tempDir();
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  dir.remove();
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

it.each([
  { shards: 1, gateways: 1 },
  // The same load over two engine shards (each killed in turn) and two gateways taking turns.
  { shards: 2, gateways: 2 },
])('loses no acknowledged operation and applies none twice across SIGKILLs of the engine and of nats-server ($shards shard(s), $gateways gateway(s))', async ({ shards, gateways: gatewayCount }) => {
  const port = await freePort();
  const home = `${dir.path}/${shards}x${gatewayCount}`;
  const storeDir = `${home}/nats`;
  let nats: NatsServer = await startNatsServer({ port, storeDir });
  cleanups.push(() => nats.stop('SIGKILL'));
  const roster = Array.from({ length: TEAMS }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n');
  const cfg = testConfig(home, { roster, requestTimeoutMs: 1000, ...(shards > 1 ? { engine: { shards } } : {}) });

  // Each engine shard, restarted whenever it dies (the launcher's supervisor does this in production).
  const engines: (ChildProcess | undefined)[] = [];
  let stopping = false;
  const engineUp: Promise<void>[] = [];
  const startEngineLoop = (shard: number): Promise<void> =>
    (engineUp[shard] = (async () => {
      for (;;) {
        try {
          const engine = await spawnEngine(nats.url, shards === 1 ? cfg : { ...cfg, engine: { shards, shard } });
          engines[shard] = engine;
          engine.once('exit', () => {
            if (!stopping) void startEngineLoop(shard);
          });
          return;
        } catch {
          await pause(100); // nats-server may be restarting
        }
      }
    })());
  for (let shard = 0; shard < shards; shard++) await startEngineLoop(shard);
  const allUp = () => Promise.all(engineUp);
  cleanups.push(async () => {
    stopping = true;
    for (const engine of engines) if (engine) await killProcess(engine);
  });

  const gateways: GatewayHandle[] = [];
  for (let i = 0; i < gatewayCount; i++) gateways.push(await startGateway(cfg, nats.url, quietLog));
  cleanups.push(async () => {
    for (const g of gateways) await g.close();
  });
  const http = api(gateways.map((g) => `http://127.0.0.1:${g.port}`));
  const nc: NatsConnection = await connectNats(nats.url, 'crash-test');
  cleanups.push(() => nc.close());
  await ensureFillStream(nc);
  const js = jetstream(nc);

  let loadRunning = true;
  const ackedFills: Fill[] = [];
  const fillLoop = (async () => {
    for (let k = 1; loadRunning; k++) {
      const fill: Fill = { seq: k, client_id: 1 + (k % TEAMS), symbol: 3 + (Math.floor(k / TEAMS) % 10), side: 1, quantity: 20, price: 100 };
      for (;;) {
        try {
          await js.publish(fillSubject(fill.client_id), encode(fill), { msgID: `crash-fill-${k}`, timeout: 1000 });
          ackedFills.push(fill);
          break;
        } catch {
          await pause(50); // same msgID: a fill stored before the failure is not stored twice
        }
      }
      await pause(2);
    }
  })();

  const outcomes = new Map<string, number>(); // idempotency key → final HTTP status
  const workers = Array.from({ length: WORKERS }, async (_, w) => {
    const team = (w % TEAMS) + 1;
    for (let i = 0; loadRunning; i++) {
      const key = `w${w}-${i}`;
      const op = i % 3 === 2 ? '/redeem' : '/create';
      for (let attempt = 0; ; attempt++) {
        const status = await http.convertOnce(op, `team${team}`, `team${team}pass`, key);
        if (status === 200 || status === 400 || status === 409) {
          outcomes.set(key, status);
          break;
        }
        if (!loadRunning && attempt > 200) break;
        await pause(30);
      }
    }
  });

  // The crashes (with several shards, each in turn).
  for (let i = 0; i < 3; i++) {
    await pause(jitter(600, 1500));
    await allUp();
    await killProcess(engines[i % shards]!, 'SIGKILL');
  }
  await pause(jitter(600, 1500));
  await nats.stop('SIGKILL');
  await pause(300);
  nats = await startNatsServer({ port, storeDir });
  await pause(jitter(500, 1200));
  await allUp();
  await killProcess(engines[shards - 1]!, 'SIGKILL');
  // Steady load after the last crash, so the run ends with the system serving.
  await allUp();
  await pause(1500);

  loadRunning = false;
  await Promise.all([fillLoop, ...workers]);
  await allUp();

  // The engine has applied every acked fill once it reports a fill position at the stream's end.
  const client = new EngineClient(nc, 10_000, { shards });
  cleanups.push(() => client.close());
  let dump: DumpResult;
  for (;;) {
    const r = await client.call({ op: 'dump' });
    if (r.ok && (r.result as DumpResult).fill_seq >= ackedFills.length) {
      dump = r.result as DumpResult;
      break;
    }
    await pause(50);
  }

  // 1. Every acknowledged operation is in the journal exactly once, and nothing appears twice.
  const events: JournalEvent[] = [];
  /** Each conversion's deltas, by the basket version its own shard journaled. */
  const conversionDeltas = new Map<JournalEvent, Delta[]>();
  for (const s of dump.shards ?? [{ shard: 0, journal_seq: dump.journal_seq }]) {
    const shard = shards === 1 ? undefined : { names: shardNames(s.shard, shards), owns: (id: number) => shardOfClient(id, shards) === s.shard };
    const part = await rebuild(nc, s.journal_seq, 0, quietLog, loadBaskets(undefined), shard);
    for (const ev of part.events) if (ev.t === 'conversion') conversionDeltas.set(ev, part.state.catalog.deltas(ev));
    events.push(...part.events);
  }
  const byKey = new Map<string, JournalEvent[]>();
  for (const ev of events) {
    if (ev.t === 'conversion' || ev.t === 'rejected') {
      if ('key' in ev && ev.key) byKey.set(ev.key, [...(byKey.get(ev.key) ?? []), ev]);
    }
  }
  for (const [key, evs] of byKey) expect(evs, key).toHaveLength(1);
  let accepted = 0;
  for (const [key, status] of outcomes) {
    const ev = byKey.get(key)?.[0];
    if (status === 200) {
      expect(ev?.t, key).toBe('conversion');
      accepted++;
    }
    if (status === 400) expect(ev?.t, key).toBe('rejected');
  }
  const statuses = [...outcomes.values()];
  expect(accepted, `outcomes: ${statuses.filter((s) => s === 200).length} ok, ${statuses.filter((s) => s === 400).length} refused, ${ackedFills.length} fills`).toBeGreaterThan(20);

  // 2. Final positions are exactly the acked fills plus the journaled conversions (so nothing half-applied).
  const expected = expectedPositions(ackedFills, events.flatMap((ev) => (ev.t === 'conversion' ? [[ev.clientId, conversionDeltas.get(ev)!] as const] : [])));
  for (let id = 1; id <= TEAMS; id++) {
    const h = await http.holdings(`team${id}`, `team${id}pass`);
    expect(h.status).toBe(200);
    const got = Object.fromEntries((h.body.positions as { symbol: number; quantity: number }[]).map((p) => [p.symbol, p.quantity]));
    expect(got, `team${id}`).toEqual(Object.fromEntries(expected.get(id) ?? []));
    for (const q of Object.values(got)) expect(q).toBeGreaterThanOrEqual(0);
  }

  // 3. The operator consistency check agrees.
  const report = await consistencyCheck(nc, dump, loadBaskets(undefined), quietLog);
  expect(report.mismatches).toEqual([]);
  expect(report.conservation).toEqual([]);
  expect(report.ok).toBe(true);
}, 120_000);
