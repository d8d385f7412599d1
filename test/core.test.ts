import { describe, expect, it } from 'vitest';
import { applyEvent, applyFill, applySessionReset, decide } from '../src/engine/core.js';
import { emptyState, position, positionList, type EngineState } from '../src/engine/state.js';
import { loadBaskets } from '../src/config/baskets.js';
import type { JournalEvent } from '../proto/journal.js';
import type { EngineCommand } from '../proto/engine.js';
import { MULTI_BASKETS } from './helpers/system.js';

const cfg = { instruments: loadBaskets(MULTI_BASKETS), maxAmount: 1000 };

/** Runs commands the way the actor does; returns the journal it would have written. */
function run(state: EngineState, cmds: EngineCommand[]): JournalEvent[] {
  const journal: JournalEvent[] = [];
  for (const cmd of cmds) {
    const d = decide(state, cfg, cmd, 1);
    for (const ev of d.events) {
      applyEvent(state, ev);
      journal.push(ev);
    }
  }
  return journal;
}

const snapshot = (s: EngineState) => [...s.accounts.values()].map((a) => ({ id: a.clientId, u: a.username, pos: positionList(a), v: a.version }));

describe('engine core', () => {
  it('decide is pure: a refused or accepted command changes nothing until its events are applied', () => {
    const s = emptyState();
    run(s, [{ op: 'register', username: 'a', passwordHash: 'h' }]);
    applyFill(s, { seq: 1, client_id: 1, symbol: 3, side: 1, quantity: 4, price: 1 }, 1);
    applyFill(s, { seq: 2, client_id: 1, symbol: 4, side: 1, quantity: 2, price: 1 }, 2);
    applyFill(s, { seq: 3, client_id: 1, symbol: 5, side: 1, quantity: 6, price: 1 }, 3);
    const before = JSON.stringify(snapshot(s));
    const ok = decide(s, cfg, { op: 'create', clientId: 1, etf: 'TECH', amount: 2 }, 1);
    expect(ok.error).toBeUndefined();
    expect(JSON.stringify(snapshot(s))).toBe(before);
    const no = decide(s, cfg, { op: 'create', clientId: 1, etf: 'TECH', amount: 3 }, 1);
    expect(no.error?.code).toBe('insufficient_holdings');
    expect(JSON.stringify(snapshot(s))).toBe(before);
  });

  it('replaying the journal and the fills rebuilds the same state', () => {
    const live = emptyState();
    const fills = [
      { seq: 1, client_id: 1, symbol: 3, side: 1, quantity: 10, price: 1 },
      { seq: 2, client_id: 1, symbol: 4, side: 1, quantity: 5, price: 1 },
      { seq: 3, client_id: 1, symbol: 5, side: 1, quantity: 15, price: 1 },
      { seq: 4, client_id: 2, symbol: 5, side: 2, quantity: 3, price: 1 },
    ];
    const journal = run(live, [
      { op: 'register', username: 'a', passwordHash: 'h1' },
      { op: 'register', username: 'b', passwordHash: 'h2' },
      { op: 'register', username: 'a', passwordHash: 'h3' },
    ]);
    fills.forEach((f, i) => applyFill(live, f, i + 1));
    journal.push(
      ...run(live, [
        { op: 'create', clientId: 1, etf: 'TECH', amount: 4 },
        { op: 'redeem', clientId: 1, etf: 'TECH', amount: 1 },
        { op: 'create', clientId: 2, etf: 'TECH', amount: 1 },
      ]),
    );
    // Refusals are journaled too (audit trail), but change no position.
    expect(journal.map((e) => e.t)).toEqual(['account', 'account', 'rejected', 'conversion', 'conversion', 'rejected']);

    // Replay order differs (fills after the whole journal): conversions carry their deltas, so the sum is the same.
    const replayed = emptyState(cfg.instruments);
    for (const ev of journal) applyEvent(replayed, ev);
    fills.forEach((f, i) => applyFill(replayed, f, i + 1));
    const pos = (s: EngineState) => snapshot(s).map(({ v: _v, ...rest }) => rest);
    expect(pos(replayed)).toEqual(pos(live));
    expect(replayed.fillSeq).toBe(4);
    expect(position(replayed.accounts.get(1)!, 101)).toBe(3);
    expect(position(replayed.accounts.get(2)!, 5)).toBe(-3);
  });

  it('resets every position at an exchange restart with the reset policy', () => {
    const s = emptyState();
    run(s, [{ op: 'register', username: 'a', passwordHash: 'h' }]);
    applyFill(s, { seq: 1, client_id: 1, symbol: 3, side: 1, quantity: 10, price: 1 }, 1);
    const changed = applySessionReset(s, 2);
    expect(changed.map((c) => c.deltas)).toEqual([[[3, -10]]]);
    expect(positionList(s.accounts.get(1)!)).toEqual([]);
    expect(s.fillSeq).toBe(2);
  });

  it('ignores fills for unknown accounts without storing anything', () => {
    const s = emptyState();
    expect(applyFill(s, { seq: 1, client_id: 999, symbol: 3, side: 1, quantity: 1, price: 1 }, 1)).toBeUndefined();
    expect(s.accounts.size).toBe(0);
    expect(s.fillSeq).toBe(1);
  });
});
