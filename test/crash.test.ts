import { afterAll, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { encode } from '../proto/codec.js';
import type { Fill } from '../proto/fill.js';
import type { DumpResult } from '../proto/engine.js';
import type { JournalEvent } from '../proto/journal.js';
import { fillSubject } from '../proto/subjects.js';
import { freePort, startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { EngineClient } from '../src/gateway/engine-client.js';
import { consistencyCheck, rebuild } from '../src/engine/check.js';
import { loadBaskets } from '../src/config/baskets.js';
import { ensureFillStream } from '../src/shared/streams.js';
import { connectNats } from '../src/shared/nats.js';
import { api, killProcess, quietLog, spawnEngine, tempDir, testConfig } from './helpers/system.js';

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

it('loses no acknowledged operation and applies none twice across SIGKILLs of the engine and of nats-server', async () => {
  const port = await freePort();
  const storeDir = `${dir.path}/nats`;
  let nats: NatsServer = await startNatsServer({ port, storeDir });
  cleanups.push(() => nats.stop('SIGKILL'));
  const roster = Array.from({ length: TEAMS }, (_, i) => `${i + 1} team${i + 1} team${i + 1}pass`).join('\n');
  const cfg = testConfig(dir.path, { roster, requestTimeoutMs: 1000 });

  // The engine, restarted whenever it dies (the launcher's supervisor does this in production).
  let engine: ChildProcess | undefined;
  let stopping = false;
  let engineUp: Promise<void> = Promise.resolve();
  const startEngineLoop = (): Promise<void> =>
    (engineUp = (async () => {
      for (;;) {
        try {
          engine = await spawnEngine(nats.url, cfg);
          engine.once('exit', () => {
            if (!stopping) void startEngineLoop();
          });
          return;
        } catch {
          await pause(100); // nats-server may be restarting
        }
      }
    })());
  await startEngineLoop();
  cleanups.push(async () => {
    stopping = true;
    if (engine) await killProcess(engine);
  });

  const gateway: GatewayHandle = await startGateway(cfg, nats.url, quietLog);
  cleanups.push(() => gateway.close());
  const http = api(`http://127.0.0.1:${gateway.port}`);
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
        let status: number;
        try {
          status = (await http.send('POST', op, { basic: [`team${team}`, `team${team}pass`], json: { amount: 1, request_id: key } })).status;
        } catch {
          status = 0;
        }
        if (status === 200 || status === 400 || status === 409) {
          outcomes.set(key, status);
          break;
        }
        if (!loadRunning && attempt > 200) break;
        await pause(30);
      }
    }
  });

  // The crashes.
  for (let i = 0; i < 3; i++) {
    await pause(jitter(600, 1500));
    await engineUp;
    await killProcess(engine!, 'SIGKILL');
  }
  await pause(jitter(600, 1500));
  await nats.stop('SIGKILL');
  await pause(300);
  nats = await startNatsServer({ port, storeDir });
  await pause(jitter(500, 1200));
  await engineUp;
  await killProcess(engine!, 'SIGKILL');
  // Steady load after the last crash, so the run ends with the system serving.
  await engineUp;
  await pause(1500);

  loadRunning = false;
  await Promise.all([fillLoop, ...workers]);
  await engineUp;

  // The engine has applied every acked fill once it reports a fill position at the stream's end.
  const client = new EngineClient(nc, 10_000);
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
  const { events, state: rebuilt } = await rebuild(nc, dump.journal_seq, 0, quietLog, loadBaskets(undefined));
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
  const expected = new Map<number, Map<number, number>>();
  const add = (id: number, symbol: number, d: number) => {
    const m = expected.get(id) ?? new Map<number, number>();
    m.set(symbol, (m.get(symbol) ?? 0) + d);
    if (m.get(symbol) === 0) m.delete(symbol);
    expected.set(id, m);
  };
  for (const f of ackedFills) add(f.client_id, f.symbol, f.quantity);
  for (const ev of events) if (ev.t === 'conversion') for (const [s, d] of rebuilt.catalog.deltas(ev)) add(ev.clientId, s, d);
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
