import { afterAll, expect, it } from 'vitest';
import { SESSION_SUBJECT } from '../proto/subjects.js';
import { startBridge, type BridgeHandle } from '../src/feed/service.js';
import { startSimulator, type SimulatorHandle } from '../src/sim/service.js';
import { writeSimState } from '../src/sim/state.js';
import { join } from 'node:path';
import type { Fill } from '../proto/fill.js';
import { NDFEX_SYMBOLS } from '../proto/symbols.js';
import { api, expectedPositions, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, until } from './helpers/system.js';
import { TEST_VERDICT_MS, bridgeOpts, fillStream } from './helpers/feed.js';

/**
 * Issue 21: the exchange (the simulator, playing NDFEX) restarts while this
 * system's feed bridge is down, and by the time the bridge is back the new
 * session is past the old one's seq on both feeds, as after a long downtime:
 * nothing in the seq numbers or the (never going back) timestamps tells it
 * from a gap. Its fills must never be merged into the old session: either the
 * bridge declares a new session (a marker, positions reset before its fills)
 * or it holds them as a standing problem for the operator.
 */
const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function drive(sim: SimulatorHandle, done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) {
    await sim.step(50);
    // Let the bridge, in this same process, read its sockets between bursts.
    await new Promise((r) => setImmediate(r));
  }
}

/** A NATS server, the system (with an operator) and the bridge's options, each cleaned up after the file. */
async function setup() {
  const nats = await startTestNats();
  cleanups.push(async () => {
    await nats.stop();
    nats.remove();
  });
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const nc = await natsClient(nats.url);
  cleanups.push(() => nc.close());
  const system = await startSystem(nats.url, { ...testConfig(dir.path), operator: { username: 'instructor', password: 'instructorpass' } });
  cleanups.push(() => system.close());
  const opts = { ...(await bridgeOpts(nats.url)), verdictWindowMs: TEST_VERDICT_MS };
  return { nc, system, dir, opts };
}

it('an exchange restarted while the bridge was down, its new session past the old seqs: holdings never merge two sessions', async () => {
  const { nc, system, opts } = await setup();
  const simOpts = { clearing: opts.clearing, md: opts.marketData, snapshot: opts.snapshot, iface: '127.0.0.1', rate: 1, rosterIds: [1, 2], log: quietLog, manual: true };
  const bridges: BridgeHandle[] = [];
  cleanups.push(async () => {
    for (const b of bridges) await b.close();
  });

  // The old session, heard in full.
  let bridge = await startBridge(opts, quietLog);
  bridges.push(bridge);
  const old = await startSimulator({ ...simOpts, seed: 11 });
  await drive(old, () => old.stats().fills >= 40);
  await old.heartbeat();
  const oldFills = old.stats().fills;
  await until(() => bridge.stats().status.clearing.messages >= oldFills, `${oldFills} fills at the bridge`);
  await until(() => bridge.stats().status.market_data.messages >= old.stats().mdMessages, 'market data at the bridge');
  await bridge.idle();
  const oldSeqs = { clearing: old.market.lastClearingSeq, md: old.market.lastMdSeq };
  const before = await fillStream(nc);
  const storedBefore = before.length;
  const oldSession = before.at(-1)!.msgId!.split('-')[1];
  const team1Before = (await api(system.url).holdings('team1', 'team1pass')).body.holdings as Record<string, number>;

  // This system's bridge stops; the exchange restarts (a new session from seq 1) and trades past the old seqs.
  await bridge.close();
  bridges.splice(0);
  await old.close();
  const next = await startSimulator({ ...simOpts, seed: 12 });
  cleanups.push(() => next.close());
  await drive(next, () => next.market.lastClearingSeq > oldSeqs.clearing + 5 && next.market.lastMdSeq > oldSeqs.md + 5);
  expect(next.market.lastMdSeq).toBeGreaterThan(oldSeqs.md);
  expect(next.market.lastClearingSeq).toBeGreaterThan(oldSeqs.clearing);

  // The bridge starts again and hears the new session going on.
  bridge = await startBridge(opts, quietLog);
  bridges.push(bridge);
  const heardFrom = next.stats().fills;
  await drive(next, () => next.stats().fills >= heardFrom + 20);
  await next.heartbeat();
  // The bridge's decision: new-session fills stored (under which session?), or held for the operator.
  const decided = await until(async () => {
    const stored = (await fillStream(nc)).slice(storedBefore);
    const problems = (bridge.stats().status.problems ?? []).map((p) => p.kind);
    return stored.some((m) => m.subject !== SESSION_SUBJECT) || problems.includes('verdict_pending') ? { stored, problems } : undefined;
  }, 'the bridge to store the new session\'s fills or hold them');
  const { stored, problems } = decided;
  const markers = stored.filter((m) => m.subject === SESSION_SUBJECT);
  const oldSessionIds = stored.filter((m) => m.subject !== SESSION_SUBJECT && m.msgId?.startsWith(`fill-${oldSession}-`));
  // Never merged: no new-session fill stored under the old session's ids...
  expect({ mergedFills: oldSessionIds.length, markers: markers.length, problems }).toMatchObject({ mergedFills: 0 });
  // ...and (market data going on tells nothing: it comes from another exchange process) the fills wait for the operator.
  expect(markers).toEqual([]);
  const pending = bridge.stats().status.problems!.find((p) => p.kind === 'verdict_pending')!;
  expect(pending.detail).toMatch(/while no bridge listened.*market data now comes from/);
  expect((await api(system.url).holdings('team1', 'team1pass')).body.holdings).toEqual(team1Before);

  // The operator confirms a new session: positions reset, then only the new session's fills.
  const answer = await api(system.url).send('POST', '/operator/api/feed/verdict', { basic: ['instructor', 'instructorpass'], form: { id: pending.id, decision: 'confirm' } });
  expect(answer.status).toBe(200);
  const after = await until(async () => {
    const all = (await fillStream(nc)).slice(storedBefore);
    return all.some((m) => m.subject === SESSION_SUBJECT) && all.at(-1)!.subject !== SESSION_SUBJECT ? all : undefined;
  }, 'the session marker and the held fills');
  expect(after.findIndex((m) => m.subject === SESSION_SUBJECT)).toBe(0);
  await bridge.idle();
  const newFills = (await fillStream(nc)).slice(storedBefore + 1);
  expect(newFills.every((m) => m.subject !== SESSION_SUBJECT && !m.msgId!.startsWith(`fill-${oldSession}-`))).toBe(true);
  const want = expectedPositions(newFills.map((m) => m.data as Fill), []).get(1) ?? new Map<number, number>();
  expect(want.size).toBeGreaterThan(0);
  const byTicker = Object.fromEntries([...want].map(([id, q]) => [NDFEX_SYMBOLS.find((x) => x.id === id)!.ticker, q]));
  await until(async () => {
    const h = (await api(system.url).holdings('team1', 'team1pass')).body.holdings as Record<string, number>;
    return JSON.stringify(Object.entries(h).sort()) === JSON.stringify(Object.entries(byTicker).sort()) ? h : undefined;
  }, "team1's holdings to be the new session's fills alone");
});

it('the simulator (playing one exchange session) crashes and continues its session, with the bridge down meanwhile: it sends from the same socket port again, so its fills go on as the same session with a gap, no operator needed', async () => {
  const { nc, system, dir, opts } = await setup();
  const stateFile = join(dir.path, 'sim-state.json');
  const simOpts = { clearing: opts.clearing, md: opts.marketData, snapshot: opts.snapshot, iface: '127.0.0.1', rate: 1, rosterIds: [1, 2], log: quietLog, manual: true, stateFile, seed: 21 };
  let bridge = await startBridge(opts, quietLog);
  cleanups.push(() => bridge.close());

  const first = await startSimulator(simOpts);
  await drive(first, () => first.stats().fills >= 20);
  // Its last periodic save; what it sends after that is lost with the crash (the restart skips past it).
  writeSimState(stateFile, first.market.exportState(), false, first.port());
  await drive(first, () => first.stats().fills >= 30);
  await first.heartbeat();
  await until(() => bridge.stats().status.clearing.messages >= first.stats().fills, 'the first run\'s fills at the bridge');
  await bridge.idle();
  const session = (await fillStream(nc)).at(-1)!.msgId!.split('-')[1];
  const lastSeq = first.market.lastClearingSeq;
  // Everything stops at once (the launcher killed outright): the simulator without a clean stop.
  await bridge.close();
  const port = first.port();
  cleanups.push(() => first.close());

  const second = await startSimulator(simOpts);
  cleanups.push(() => second.close());
  expect(second.port()).toBe(port);
  bridge = await startBridge(opts, quietLog);
  await drive(second, () => second.stats().fills >= 20);
  await second.heartbeat();
  await until(async () => (await fillStream(nc)).some((m) => m.data && (m.data as Fill).seq > lastSeq), 'the continued session\'s fills stored');
  await bridge.idle();
  const problems = (bridge.stats().status.problems ?? []).map((p) => p.kind);
  expect(problems).not.toContain('verdict_pending');
  expect(problems).toContain('gap');
  const after = (await fillStream(nc)).filter((m) => (m.data as Fill | undefined)?.seq !== undefined && (m.data as Fill).seq > lastSeq);
  expect(after.length).toBeGreaterThan(0);
  expect(after.every((m) => m.msgId!.startsWith(`fill-${session}-`))).toBe(true);
  expect((await fillStream(nc)).filter((m) => m.subject === SESSION_SUBJECT)).toEqual([]);
});
