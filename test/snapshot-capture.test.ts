import { describe, expect, it } from 'vitest';
import { applyEvent, applyFill, applySessionReset, decide } from '../src/engine/core.js';
import { emptyState, type EngineState } from '../src/engine/state.js';
import { SnapshotCapture, restoreSnapshot, takeSnapshot } from '../src/engine/snapshot.js';
import { loadBaskets } from '../src/config/baskets.js';
import type { EngineCommand } from '../proto/engine.js';
import { MULTI_BASKETS } from './helpers/system.js';

/**
 * A snapshot imaged a few accounts at a time while commands and fills go on
 * (the actor's SnapshotCapture) is the state as it stood when it began: the
 * same bytes as a snapshot taken at that moment in one go.
 */
const cfg = { instruments: loadBaskets(MULTI_BASKETS), maxAmount: 1000 };
let now = 1;
let fillSeq = 0;

/** Packs a capture slice by slice, as the actor does between turns, into the snapshot's bytes. */
function packed(capture: SnapshotCapture): Buffer {
  while (!capture.pack(1));
  return Buffer.concat(capture.parts());
}

function run(state: EngineState, cmds: EngineCommand[]): void {
  for (const cmd of cmds) for (const ev of decide(state, cfg, cmd, now++).events) applyEvent(state, ev);
}
const fill = (state: EngineState, clientId: number, symbol: number, quantity: number) =>
  applyFill(state, { seq: ++fillSeq, client_id: clientId, symbol, side: 1, quantity, price: 2 }, fillSeq);

/** Six teams, each with holdings and a history of creates, redeems and refusals. */
function busyState(): EngineState {
  const s = emptyState(cfg.instruments);
  for (let i = 1; i <= 6; i++) run(s, [{ op: 'register', username: `team${i}`, passwordHash: `h${i}` }]);
  for (let i = 1; i <= 6; i++) {
    for (const symbol of [3, 4, 5]) fill(s, i, symbol, 100);
    run(s, [
      { op: 'create', clientId: i, etf: 'TECH', amount: 2, key: `a${i}` },
      { op: 'redeem', clientId: i, etf: 'TECH', amount: 1, key: `b${i}` },
      { op: 'create', clientId: i, etf: 'TECH', amount: 900, key: `c${i}` },
    ]);
  }
  return s;
}

/** Changes to accounts imaged and not yet imaged, a new account, an operator halt and a password. */
function changes(s: EngineState): (() => void)[] {
  return [
    () => fill(s, 1, 3, 7),
    () => run(s, [{ op: 'create', clientId: 6, etf: 'TECH', amount: 1, key: 'd6' }]),
    () => run(s, [{ op: 'register', username: 'late', passwordHash: 'h7' }]),
    () => run(s, [{ op: 'halt', etf: 'TECH', reason: 'check', by: 'op' }]),
    () => run(s, [{ op: 'create', clientId: 2, etf: 'TECH', amount: 5000, key: 'e2' }]),
    () => run(s, [{ op: 'register', username: 'team3', passwordHash: 'new' }]),
    () => fill(s, 5, 4, 1),
  ];
}

describe('snapshot capture', () => {
  it('taken one account at a time while accounts change, it is the state as it stood when it began', () => {
    const s = busyState();
    const atStart = takeSnapshot(s, 42, 1000);
    const capture = new SnapshotCapture(s, 42, 1000);
    s.capture = capture;
    const pending = changes(s);
    while (!capture.step(1)) pending.shift()?.();
    for (const change of pending) change();
    s.capture = null;
    const bytes = packed(capture);
    expect(bytes.equals(Buffer.from(atStart))).toBe(true);
    expect(restoreSnapshot(bytes, cfg.instruments).accounts.size).toBe(6);
    expect(s.accounts.size).toBe(7);
  });

  it('a session reset in the middle of a capture changes nothing in it', () => {
    const s = busyState();
    const atStart = takeSnapshot(s, 9, 5);
    const capture = new SnapshotCapture(s, 9, 5);
    s.capture = capture;
    capture.step(2);
    applySessionReset(s, ++fillSeq);
    while (!capture.step(1));
    s.capture = null;
    expect(packed(capture).equals(Buffer.from(atStart))).toBe(true);
  });

  it('is told of every change: without being told, the same steps give another snapshot', () => {
    const s = busyState();
    const atStart = takeSnapshot(s, 42, 1000);
    const capture = new SnapshotCapture(s, 42, 1000);
    const pending = changes(s);
    while (!capture.step(1)) pending.shift()?.();
    expect(packed(capture).equals(Buffer.from(atStart))).toBe(false);
  });

  it('refuses to pack before every account is imaged', () => {
    const capture = new SnapshotCapture(busyState(), 1, 1);
    capture.step(3);
    expect(() => capture.pack(1)).toThrow(/not imaged yet/);
  });
});
