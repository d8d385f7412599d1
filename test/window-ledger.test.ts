import { afterEach, describe, expect, it } from 'vitest';
import { MAX_WINDOW_SECONDS } from '../proto/rules.js';
import { loadBaskets } from '../src/config/baskets.js';
import { startEngine } from '../src/engine/service.js';
import { SnapshotUnusable, restoreSnapshot, snapshotPackr, takeSnapshot } from '../src/engine/snapshot.js';
import { SnapshotStore } from '../src/engine/snapshot-store.js';
import { applyEvent, emptyState } from '../src/engine/state.js';
import { WindowLedger, type WindowLedgerImage } from '../src/engine/window-ledger.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { buy, fillStreamWorld, quietLog, testConfig, undyBasket } from './helpers/system.js';

const DAY = MAX_WINDOW_SECONDS * 1000;
const roundTrip = (w: WindowLedger) => WindowLedger.fromImage(snapshotPackr.unpack(snapshotPackr.pack(w.toImage())) as WindowLedgerImage);

describe('window ledger (pure)', () => {
  it('counts what a scan of every conversion counts, to within the second that holds it', () => {
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const w = new WindowLedger();
    const all: [ts: number, units: number][] = [];
    let t = 0;
    // Two and a half days of conversions, several a second at times, seconds apart at others.
    while (t < 2.5 * DAY) {
      t += random() < 0.7 ? Math.floor(random() * 400) : Math.floor(random() * 20_000);
      const units = 1 + Math.floor(random() * 50);
      w.add(t, units);
      all.push([t, units]);
      if (all.length % 997 === 0) {
        for (const seconds of [1, 60, 3_600, MAX_WINDOW_SECONDS]) {
          const since = t - seconds * 1000;
          const exact = all.reduce((k, [ts, u]) => (ts > since ? k + u : k), 0);
          const uptoASecondMore = all.reduce((k, [ts, u]) => (ts > since - 1000 ? k + u : k), 0);
          const counted = w.unitsSince(since);
          expect(counted).toBeGreaterThanOrEqual(exact);
          expect(counted).toBeLessThanOrEqual(uptoASecondMore);
        }
      }
    }
    expect(all.length).toBeGreaterThan(50_000);
  });

  it('keeps one entry a second for a day at most, however often a team converts', () => {
    const w = new WindowLedger();
    for (let t = 0; t < 1.5 * DAY; t += 250) w.add(t, 1);
    expect(w.length).toBeLessThanOrEqual(MAX_WINDOW_SECONDS + 1);
    expect(w.length).toBeGreaterThanOrEqual(MAX_WINDOW_SECONDS);
    expect(w.unitsSince(1.5 * DAY - 250 - DAY)).toBe(4 * MAX_WINDOW_SECONDS);
  });

  it('a clock stepped back adds to the newest second, so nothing counts for less time than its own', () => {
    const w = new WindowLedger();
    w.add(10_000, 1);
    w.add(5_000, 2);
    expect(w.length).toBe(1);
    expect(w.unitsSince(9_999)).toBe(3);
    expect(w.unitsSince(10_000)).toBe(0);
  });

  it('stays exact when its running totals grow past what a double holds exactly (they are taken back to 0)', () => {
    const w = new WindowLedger();
    const big = 2 ** 39;
    for (let d = 0; d < 40; d++) w.add(d * DAY + 1, big + d);
    expect(w.length).toBe(1);
    expect(w.unitsSince(39 * DAY)).toBe(big + 39);
    w.add(39 * DAY + 1_000, 3);
    expect(w.unitsSince(39 * DAY)).toBe(big + 42);
    expect(w.unitsSince(39 * DAY + 1)).toBe(3);
  });

  it('comes back from its snapshot image (packed, or raw for times that are not whole ms) and goes on from there', () => {
    for (const step of [1_000, 1_000.5]) {
      const w = new WindowLedger();
      for (let i = 0; i < 50; i++) w.add(i * step, i + 1);
      const back = roundTrip(w);
      for (const since of [-1, 0, 10_000, 40_000, 60_000]) expect(back.unitsSince(since)).toBe(w.unitsSince(since));
      expect(roundTrip(back).unitsSince(-1)).toBe(w.unitsSince(-1));
      back.add(50 * step, 100);
      w.add(50 * step, 100);
      expect(back.unitsSince(20_000)).toBe(w.unitsSince(20_000));
      expect(back.length).toBe(w.length);
    }
  });
});

describe('window ledger in snapshots', () => {
  const instruments = loadBaskets(undefined);
  const opening: [number, number][] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 10]);

  it('a snapshot keeps each account\'s ledger; one from before the ledger is refused where a start needs it complete', () => {
    const s = emptyState(instruments);
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening, ts: 0 });
    for (let i = 0; i < 5; i++) applyEvent(s, { t: 'conversion', requestId: i + 1, op: 'create', clientId: 1, etf: 'UNDY', amount: 1, ts: 1_000 * i });
    const bytes = takeSnapshot(s, 9, 10);
    expect(restoreSnapshot(bytes, instruments, { complete: true }).accounts.get(1)!.window.unitsSince(999)).toBe(4);
    // As an engine from before the ledger wrote it: its accounts without `window`.
    const [head, ...slices] = snapshotPackr.unpackMultiple(Buffer.from(bytes)) as [Record<string, unknown>, ...Record<string, unknown>[][]];
    for (const slice of slices) for (const a of slice) delete a.window;
    const old = Buffer.concat([head, ...slices].map((part) => snapshotPackr.pack(part)));
    expect(() => restoreSnapshot(old, instruments, { complete: true })).toThrow(SnapshotUnusable);
    expect(restoreSnapshot(old, instruments).accounts.get(1)!.window.length).toBe(0);
  });
});

describe('an engine started on a snapshot from before the ledger', () => {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('replays the journal instead, so the count of conversions made before the upgrade holds', async () => {
    const { nats, dir, nc } = await fillStreamWorld(cleanups);
    const cfg = testConfig(dir.path, { rules: { units_per_window: { units: 10, seconds: 3_600 } } });
    const start = () =>
      startEngine(cfg, nats.url, quietLog, (err) => {
        throw err;
      });
    let engine = await start();
    const client = new EngineClient(nc, 10_000);
    cleanups.push(() => client.close());
    const create = (amount: number) => client.call({ op: 'create', clientId: 1, etf: 'UNDY', amount });
    await buy(nc, 1, undyBasket(20));
    expect(await create(8)).toMatchObject({ ok: true });
    await engine.close();
    const [head, ...slices] = snapshotPackr.unpackMultiple(Buffer.from(takeSnapshot(engine.state, engine.state.journalSeq, Date.now()))) as [
      Record<string, unknown>,
      ...Record<string, unknown>[][],
    ];
    for (const slice of slices) for (const a of slice) delete a.window;
    const store = await SnapshotStore.open(nc);
    await store.save([head, ...slices].map((part) => snapshotPackr.pack(part)), engine.state.journalSeq, Date.now());

    engine = await start();
    cleanups.push(() => engine.close());
    // Started from that snapshot, the team's 8 units would have been forgotten and 10 more let through.
    expect(engine.ready.snapshot).toBeNull();
    expect(await create(3)).toMatchObject({ ok: false, error: { code: 'limit_exceeded', used: 8 } });
    expect(await create(2)).toMatchObject({ ok: true });
  });
});
