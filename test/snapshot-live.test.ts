import { expect, it, vi } from 'vitest';
import { startEngine, type EngineHandle } from '../src/engine/service.js';
import { EngineClient } from '../src/gateway/engine-client.js';
import { positionList, type EngineState } from '../src/engine/state.js';
import { SnapshotStore } from '../src/engine/snapshot-store.js';
import type { Fill } from '../proto/fill.js';
import { fillsFor, natsClient, publishFills, quietLog, startTestNats, tempDir, testConfig, undyBasket } from './helpers/system.js';

/**
 * Periodic snapshots are taken a few accounts per turn while the engine goes
 * on (src/engine/snapshot.ts, SnapshotCapture). Taken under registrations,
 * creates, redeems and fills for 1,500 teams, and started from after the
 * engine is cut off without a clean stop, they give back the state the engine
 * had: every position, cash, version and history entry.
 */
const TEAMS = 1500;

/** Everything an account holds, as a start-up must rebuild it. */
const accountsOf = (state: EngineState) =>
  [...state.accounts.values()].map((a) => ({
    id: a.clientId,
    username: a.username,
    positions: positionList(a),
    cash: a.cash,
    version: a.version,
    history: Array.from({ length: a.history.length }, (_, i) => a.history.eventAt(i, a.clientId)),
  }));

it('periodic snapshots taken while the engine works restore to the state it had', async () => {
  const dir = tempDir();
  const nats = await startTestNats();
  const cfg = testConfig(dir.path, { snapshotEvery: 400, requestTimeoutMs: 30_000 });
  const fatal = (err: unknown) => {
    throw err;
  };
  let engine: EngineHandle | undefined = await startEngine(cfg, nats.url, quietLog, fatal);
  const nc = await natsClient(nats.url);
  const client = new EngineClient(nc, 30_000);
  try {
    const registered = await Promise.all(Array.from({ length: TEAMS }, (_, i) => client.call({ op: 'register', username: `live${i}`, passwordHash: 'x' })));
    const ids = registered.map((r) => (r.ok ? r.result.client_id : 0));
    expect(ids.every((id) => id > 0)).toBe(true);
    const registeredAt = engine.state.journalSeq;
    // Rounds of fills and conversions for every team at once: snapshots are taken every 400 events, among them.
    const fills: Fill[] = [];
    for (let round = 0; round < 3; round++) {
      const these = ids.flatMap((id) => fillsFor(id, undyBasket(3)));
      fills.push(...these);
      const published = publishFills(nc, these);
      const conversions = ids.flatMap((id) => [
        client.call({ op: 'create', clientId: id, etf: 'UNDY', amount: 1, key: `c${round}-${id}` }),
        client.call({ op: round === 0 ? 'create' : 'redeem', clientId: id, etf: 'UNDY', amount: 1, key: `r${round}-${id}` }),
      ]);
      await Promise.all([published, ...conversions]);
    }
    const live = engine;
    await vi.waitFor(() => expect(live.state.fillSeq).toBe(fills.length), { timeout: 30_000, interval: 20 });
    const before = accountsOf(engine.state);
    const journalSeq = engine.state.journalSeq;

    // Cut off, no clean stop: the next start has the last periodic snapshot and the journal after it.
    await engine.nc.close();
    engine = undefined;
    const store = await SnapshotStore.open(nc);
    const snapshot = (await store.load())!;
    // Taken among the conversions (journal sequences count group commits, not events).
    expect(snapshot.journalSeq).toBeGreaterThan(registeredAt);
    engine = await startEngine(cfg, nats.url, quietLog, fatal);
    expect(engine.state.journalSeq).toBe(journalSeq);
    expect(accountsOf(engine.state)).toEqual(before);
  } finally {
    client.close();
    await nc.close();
    await engine?.close();
    await nats.stop();
    nats.remove();
    dir.remove();
  }
}, 120_000);
