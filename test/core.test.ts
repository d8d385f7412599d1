import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyEvent, applyFill, applySessionReset, decide } from '../src/engine/core.js';
import { addPosition, emptyState, flatPositions, HISTORY_LIMIT, position, positionList, type EngineState } from '../src/engine/state.js';
import { restoreSnapshot, takeSnapshot } from '../src/engine/snapshot.js';
import { conservation } from '../src/engine/check.js';
import { ReplayMerge, type UnpositionedOrder } from '../src/engine/replay.js';
import { buildInstruments, loadBaskets } from '../src/config/baskets.js';
import { configBaskets } from '../src/engine/catalog.js';
import { scoreboardLines } from '../src/engine/scoreboard.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { JOURNAL_VERSION, type JournalBatch, type JournalEvent } from '../proto/journal.js';
import { namedConversion, namedHoldings, type AuditRecord, type ConversionAnswer, type EngineCommand, type HistoryResult, type HoldingsAnswer } from '../proto/engine.js';
import { entryWords, refusalWords } from '../proto/messages.js';
import type { AuditEntry } from '../proto/audit.js';
import type { Fill } from '../proto/fill.js';
import { decode, encode } from '../proto/codec.js';
import { MULTI_BASKETS } from './helpers/system.js';
import { OLD_FORMAT_SCRIPT, oldFormatReads } from './fixtures/old-format-script.js';

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

  it('a reset changes a flat account that holds cash too: a new seq, cash 0, no deltas; an untouched one not at all', () => {
    const s = emptyState();
    run(s, [
      { op: 'register', username: 'flat', passwordHash: 'h' },
      { op: 'register', username: 'idle', passwordHash: 'h' },
    ]);
    // Bought 10 at 100 and sold them at 110: flat, with cash 100.
    applyFill(s, { seq: 1, client_id: 1, symbol: 3, side: 1, quantity: 10, price: 100 }, 1);
    applyFill(s, { seq: 2, client_id: 1, symbol: 3, side: 2, quantity: 10, price: 110 }, 2);
    const flat = s.accounts.get(1)!;
    expect([positionList(flat), flat.cash]).toEqual([[], 100]);
    const version = flat.version;
    const idle = s.accounts.get(2)!.version;
    const changed = applySessionReset(s, 3);
    // Before: cash zeroed under the same seq, and no change told anyone.
    expect(changed.map((c) => [c.acc.clientId, c.deltas])).toEqual([[1, []]]);
    expect([flat.cash, flat.version]).toEqual([0, version + 1]);
    expect(s.accounts.get(2)!.version).toBe(idle);
  });

  it('ignores fills for unknown accounts without storing anything', () => {
    const s = emptyState();
    expect(applyFill(s, { seq: 1, client_id: 999, symbol: 3, side: 1, quantity: 1, price: 1 }, 1)).toBeUndefined();
    expect(s.accounts.size).toBe(0);
    expect(s.fillSeq).toBe(1);
  });
});

const undyCfg = { instruments: loadBaskets(undefined), maxAmount: 1000 };
const UNDY_PARTS = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
type Conversion = Extract<JournalEvent, { t: 'conversion' }>;

/** Decides and applies like the actor, including what it adds as it journals (a conversion's positions after). */
function actorRun(s: EngineState, cmd: EngineCommand, now: number, journal: JournalEvent[]) {
  const d = decide(s, undyCfg, cmd, now);
  for (const ev of d.events) {
    applyEvent(s, ev);
    if (ev.t === 'conversion' && !ev.deltas) ev.held = flatPositions(s.accounts.get(ev.clientId)!);
    journal.push(ev);
  }
  return d;
}

const reads = (s: EngineState, cmds: EngineCommand[]) =>
  cmds.map((cmd) => {
    const d = decide(s, undyCfg, cmd, 10_000);
    // Named and worded as the gateway does: the fixture holds the old engine's answers, which carried tickers and words.
    const tickerOf = undyCfg.instruments.tickerOf;
    if (d.error) return { error: refusalWords(d.error, tickerOf) };
    if (cmd.op === 'request') return { result: entryWords(d.result as AuditRecord, tickerOf) };
    if (cmd.op === 'history') {
      const page = d.result as HistoryResult;
      return { result: { ...page, entries: page.entries.map((e) => entryWords(e, tickerOf)) } };
    }
    if (cmd.op === 'create' || cmd.op === 'redeem') return { result: namedConversion(d.result as ConversionAnswer, tickerOf) };
    if (cmd.op === 'holdings') return { result: namedHoldings(d.result as HoldingsAnswer, tickerOf) };
    return { result: d.result };
  });

describe('journal and snapshot formats', () => {
  const fixture = JSON.parse(readFileSync(join(PROJECT_ROOT, 'test/fixtures/old-format.json'), 'utf8')) as { journal: string[]; fills: Fill[]; snapshot: string; reads: unknown[] };

  it('replays a version-1 journal (conversions with deltas and positions after) to the answers the engine that wrote it gave', () => {
    const s = emptyState(undyCfg.instruments);
    for (const b64 of fixture.journal) {
      const batch = decode<JournalBatch>(Buffer.from(b64, 'base64'));
      expect(batch.v).toBe(1);
      for (const ev of batch.events) applyEvent(s, ev);
    }
    fixture.fills.forEach((f, i) => applyFill(s, f, i + 1));
    expect(reads(s, oldFormatReads)).toEqual(fixture.reads);
    // Compact records after the old ones: a snapshot of the mix (version 3) loads to the same answers.
    const later: JournalEvent[] = [];
    actorRun(s, { op: 'redeem', clientId: 1, etf: 'UNDY', amount: 1, key: 'new-1' }, 300, later);
    actorRun(s, { op: 'create', clientId: 2, etf: 'UNDY', amount: 9, key: 'new-2' }, 301, later);
    expect(later.map((e) => e.t)).toEqual(['conversion', 'rejected']);
    const mixed = [...oldFormatReads, { op: 'request', clientId: 1, id: 'new-1' }, { op: 'history', clientId: 2, limit: 3 }] as EngineCommand[];
    expect(reads(restoreSnapshot(takeSnapshot(s, 0, 0), undyCfg.instruments), mixed)).toEqual(reads(s, mixed));
  });

  it('loads a version-2 snapshot to the same answers', () => {
    const s = restoreSnapshot(Buffer.from(fixture.snapshot, 'base64'), undyCfg.instruments);
    expect(s.journalSeq).toBe(fixture.journal.length);
    s.journalSeq = 0; // the engine that wrote the fixture counted no journal writes
    expect(reads(s, oldFormatReads)).toEqual(fixture.reads);
  });

  it('compact records (version 2) replay, through the codec and with fills in another order, to the same answers as live; a snapshot too', () => {
    const live = emptyState(undyCfg.instruments);
    const journal: JournalEvent[] = [];
    const fills: Fill[] = [];
    const fill = (f: Fill) => {
      fills.push(f);
      applyFill(live, f, fills.length);
    };
    for (const step of OLD_FORMAT_SCRIPT) {
      if ('fill' in step) fill(step.fill);
      else if ('events' in step) for (const ev of step.events) (applyEvent(live, ev), journal.push(ev));
      else for (const [cmd, now] of step.cmds) actorRun(live, cmd, now, journal);
    }
    const conversions = journal.filter((e): e is Conversion => e.t === 'conversion');
    expect(conversions.length).toBeGreaterThan(3);
    for (const ev of conversions) {
      expect(ev.deltas).toBeUndefined();
      expect(ev.after).toBeUndefined();
      expect(ev.held).toBeDefined();
    }
    const bytes = encode({ v: JOURNAL_VERSION, events: journal } satisfies JournalBatch);
    const replayed = emptyState(undyCfg.instruments);
    for (const ev of decode<JournalBatch>(bytes).events) applyEvent(replayed, ev);
    fills.forEach((f, i) => applyFill(replayed, f, i + 1));
    expect(reads(replayed, oldFormatReads)).toEqual(reads(live, oldFormatReads));
    // Same answers as the old engine for the same scenario, except where the old records said more (nothing here).
    expect(reads(live, oldFormatReads)).toEqual(fixture.reads);
    const restored = restoreSnapshot(takeSnapshot(live, 0, 10_000), undyCfg.instruments);
    expect(reads(restored, oldFormatReads)).toEqual(reads(live, oldFormatReads));
    // The scoreboard and the conservation check read compact records through the catalog.
    expect(conservation(journal, undyCfg.instruments)).toEqual([]);
  });
});

describe('history ring', () => {
  it('keeps the last HISTORY_LIMIT decisions; keys leave with their entries, so an evicted key is a new request', () => {
    const s = emptyState(undyCfg.instruments);
    const journal: JournalEvent[] = [];
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: UNDY_PARTS.map((p) => [p, 1e6]), ts: 0 });
    const extra = 7;
    for (let i = 0; i < HISTORY_LIMIT + extra; i++) expect(actorRun(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: `k${i}` }, i, journal).error).toBeUndefined();
    const acc = s.accounts.get(1)!;
    expect(acc.history.length).toBe(HISTORY_LIMIT);
    expect(acc.history.keys.size).toBe(HISTORY_LIMIT);
    expect(acc.history.keys.has(`k${extra - 1}`)).toBe(false);
    expect(acc.history.keys.has(`k${extra}`)).toBe(true);
    // The oldest kept and the newest are found by id and key; the evicted ones are not.
    expect(decide(s, undyCfg, { op: 'request', clientId: 1, id: `k${extra}` }, 0).result).toMatchObject({ request_id: `r${extra + 1}` });
    expect(decide(s, undyCfg, { op: 'request', clientId: 1, id: `r${extra}` }, 0).error?.code).toBe('not_found');
    expect(decide(s, undyCfg, { op: 'request', clientId: 1, id: `k0` }, 0).error?.code).toBe('not_found');
    const page = decide(s, undyCfg, { op: 'history', clientId: 1, limit: 500, before: `r${extra + 3}` }, 0).result as HistoryResult;
    expect(page.entries.map((e) => e.request_id)).toEqual([`r${extra + 2}`, `r${extra + 1}`]);
    expect(page.next).toBeUndefined();
    // A retry with a kept key replays; with an evicted key it is decided anew (and takes a new id).
    const kept = decide(s, undyCfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: `k${extra}` }, 0);
    expect(kept.result).toMatchObject({ replayed: true, request_id: `r${extra + 1}` });
    expect(kept.events).toEqual([]);
    const evicted = actorRun(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'k0' }, 5000, journal);
    expect(evicted.result).toMatchObject({ request_id: `r${HISTORY_LIMIT + extra + 1}` });
    expect((evicted.result as { replayed?: boolean }).replayed).toBeUndefined();
    // A snapshot keeps the ring as it is, keys included.
    const restored = restoreSnapshot(takeSnapshot(s, 0, 0), undyCfg.instruments);
    const h = (st: EngineState) => decide(st, undyCfg, { op: 'history', clientId: 1, limit: 500 }, 0).result;
    expect(h(restored)).toEqual(h(s));
    expect(restored.accounts.get(1)!.history.keys).toEqual(acc.history.keys);
    expect(decide(restored, undyCfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'k0' }, 0).result).toMatchObject({ replayed: true });
  });
});

describe('in-place conversion check', () => {
  it('a create short of one component, or a redeem short of units, changes no position even once its refusal is applied', () => {
    const s = emptyState(undyCfg.instruments);
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: [...UNDY_PARTS.map((p): [number, number] => [p, 5]), [13, 1]], ts: 0 });
    addPosition(s.accounts.get(1)!, 12, -1); // BDIN 4: short of a create of 5
    const acc = s.accounts.get(1)!;
    const before = { pos: positionList(acc), version: acc.version, cash: acc.cash };
    const journal: JournalEvent[] = [];
    const create = actorRun(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5 }, 1, journal);
    expect(refusalWords(create.error!, undyCfg.instruments.tickerOf)).toMatchObject({ code: 'insufficient_holdings', shortfalls: [{ symbol: 12, ticker: 'BDIN', have: 4, need: 5 }] });
    const redeem = actorRun(s, { op: 'redeem', clientId: 1, etf: 'UNDY', amount: 2 }, 2, journal);
    expect(refusalWords(redeem.error!, undyCfg.instruments.tickerOf)).toMatchObject({ code: 'insufficient_holdings', shortfalls: [{ symbol: 13, ticker: 'UNDY', have: 1, need: 2 }] });
    expect(journal.map((e) => e.t)).toEqual(['rejected', 'rejected']);
    expect({ pos: positionList(acc), version: acc.version, cash: acc.cash }).toEqual(before);
    // Exactly enough is enough: the whole basket moves, then nothing is left of it.
    expect(actorRun(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 4 }, 3, journal).error).toBeUndefined();
    expect(positionList(acc)).toEqual([...UNDY_PARTS.slice(0, -1).map((p) => [p, 1]), [13, 5]]);
  });

  it('keeps positions in symbols far beyond the configured ones, and lists none that went back to zero', () => {
    const s = emptyState(undyCfg.instruments);
    run(s, [{ op: 'register', username: 'a', passwordHash: 'h' }]);
    applyFill(s, { seq: 1, client_id: 1, symbol: 4_000_000_000, side: 1, quantity: 3, price: 1 }, 1);
    applyFill(s, { seq: 2, client_id: 1, symbol: 700, side: 2, quantity: 2, price: 1 }, 2);
    applyFill(s, { seq: 3, client_id: 1, symbol: 3, side: 1, quantity: 1, price: 1 }, 3);
    applyFill(s, { seq: 4, client_id: 1, symbol: 3, side: 2, quantity: 1, price: 1 }, 4);
    const acc = s.accounts.get(1)!;
    expect(positionList(acc)).toEqual([[700, -2], [4_000_000_000, 3]]);
    expect(position(acc, 4_000_000_000)).toBe(3);
    expect((decide(s, cfg, { op: 'holdings', clientId: 1 }, 0).result as HoldingsAnswer).positions).toEqual([700, -2, 4_000_000_000, 3]);
    expect(applySessionReset(s, 5).map((c) => c.deltas)).toEqual([[[700, 2], [4_000_000_000, -3]]]);
    expect(positionList(acc)).toEqual([]);
  });

  it('a conversion by a team holding far symbols keeps them in its positions after, live, replayed and in a snapshot', () => {
    const s = emptyState(undyCfg.instruments);
    const journal: JournalEvent[] = [];
    const fills: Fill[] = [5, 200, 4_000_000_000, ...UNDY_PARTS].map((symbol, i) => ({ seq: i + 1, client_id: 1, symbol, side: 1, quantity: 2, price: 1 }));
    actorRun(s, { op: 'register', username: 'a', passwordHash: 'h' }, 0, journal);
    fills.forEach((f, i) => applyFill(s, f, i + 1));
    actorRun(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'far' }, 1, journal);
    const entry = (st: EngineState) => decide(st, undyCfg, { op: 'request', clientId: 1, id: 'far' }, 0).result as AuditEntry;
    expect(entry(s).holdings!.map((p) => [p.symbol, p.quantity])).toEqual([...UNDY_PARTS.map((p) => [p, p === 5 ? 3 : 1]), [13, 1], [200, 2], [4_000_000_000, 2]]);
    const replayed = emptyState(undyCfg.instruments);
    for (const ev of decode<JournalBatch>(encode({ v: JOURNAL_VERSION, events: journal })).events) applyEvent(replayed, ev);
    expect(entry(replayed)).toEqual(entry(s));
    expect(entry(restoreSnapshot(takeSnapshot(s, 0, 0), undyCfg.instruments))).toEqual(entry(s));
  });
});

describe('version 0 of a basket across edits of the baskets file', () => {
  it('compact conversions replay with the basket journaled when they were decided, not the file of the day', () => {
    const fileA = undyCfg.instruments;
    const fileB = buildInstruments({ etfs: [{ name: 'UNDY', symbol: 13, components: { KNAN: 2 } }] }, 'edited');
    const journal: JournalEvent[] = [];
    // First run, file A: the engine journals it before serving.
    const live = emptyState(fileA);
    expect(live.catalog.configChanged(configBaskets(fileA))).toBe(true);
    for (const ev of [{ t: 'config_baskets', baskets: configBaskets(fileA), ts: 0 } as JournalEvent, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: UNDY_PARTS.map((p) => [p, 10]), ts: 0 } as JournalEvent]) {
      applyEvent(live, ev);
      journal.push(ev);
    }
    expect(live.catalog.configChanged(configBaskets(fileA))).toBe(false);
    actorRun(live, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1 }, 1, journal);
    // Second run, file B: replay, then B is journaled because it differs.
    const second = emptyState(fileB);
    for (const ev of journal) applyEvent(second, ev);
    expect(positionList(second.accounts.get(1)!)).toEqual(positionList(live.accounts.get(1)!));
    expect(second.catalog.configChanged(configBaskets(fileB))).toBe(true);
    const edit: JournalEvent = { t: 'config_baskets', baskets: configBaskets(fileB), ts: 2 };
    applyEvent(second, edit);
    journal.push(edit);
    const cfgB = { instruments: fileB, maxAmount: 1000 };
    const d = decide(second, cfgB, { op: 'create', clientId: 1, etf: 'UNDY', amount: 1 }, 3);
    expect((d.result as ConversionAnswer).deltas).toEqual([3, -2, 13, 1]);
    for (const ev of d.events) (applyEvent(second, ev), journal.push(ev));
    // A third start, from the whole journal or from a snapshot, with either file: the same positions and audit trail.
    for (const file of [fileA, fileB]) {
      const again = emptyState(file);
      for (const ev of journal) applyEvent(again, ev);
      expect(positionList(again.accounts.get(1)!)).toEqual(positionList(second.accounts.get(1)!));
      const restored = restoreSnapshot(takeSnapshot(second, 0, 0), file);
      const cfgFile = { instruments: file, maxAmount: 1000 };
      const history = (st: EngineState) => decide(st, cfgFile, { op: 'history', clientId: 1, limit: 10 }, 0).result;
      expect(history(restored)).toEqual(history(again));
    }
    expect(positionList(second.accounts.get(1)!)).toEqual([[3, 7], ...UNDY_PARTS.slice(1).map((p) => [p, 9]), [13, 2]]);
    expect(scoreboardLines(journal, (ev) => second.catalog.flatDeltas(ev)).trim().split('\n').map((l) => l.split(' ').slice(1).join(' '))).toEqual([
      ...UNDY_PARTS.map((p) => `create 1 ${p} -1`),
      'create 1 13 1',
      'create 1 3 -2',
      'create 1 13 1',
    ]);
    expect(conservation(journal, fileB)).toEqual([]);
  });
});

describe('replay order (ReplayMerge)', () => {
  const ev = (n: number): JournalEvent => ({ t: 'operator', action: 'halt', etf: null, by: `e${n}`, ts: n });
  type F = { seq: number; ns: bigint };
  /** Pushes journal records and fills in the given interleaving; returns what was applied, in order. */
  function merge(unpositioned: UnpositionedOrder, batches: { seq: number; ns: bigint; batch: JournalBatch }[], fills: F[], order: ('j' | 'f')[], fillsFirst = false): string[] {
    const out: string[] = [];
    let fillSeq = 0;
    const m = new ReplayMerge<F>(
      {
        event: (e) => out.push((e as { by: string }).by),
        batchDone: () => {},
        fill: (f) => {
          out.push(`f${f.seq}`);
          fillSeq = f.seq;
        },
        fillSeq: () => fillSeq,
      },
      unpositioned,
    );
    const j = [...batches];
    const f = [...fills];
    for (const o of order) {
      if (o === 'j' && j.length > 0) m.pushBatch(j[0]!.seq, j[0]!.ns, j.shift()!.batch);
      if (o === 'f' && f.length > 0) m.pushFill(f.shift()!);
      // The fill stream read to its end while journal records are still to come.
      if (fillsFirst && f.length === 0) m.endFills();
    }
    // Either stream may end first, with the other's items still queued.
    if (fillsFirst) {
      for (const x of f) m.pushFill(x);
      m.endFills();
    }
    for (const b of j) m.pushBatch(b.seq, b.ns, b.batch);
    m.endJournal();
    for (const x of f) if (!fillsFirst) m.pushFill(x);
    m.endFills();
    expect(m.waiting).toBe(0);
    return out;
  }
  /** Every interleaving of pushing `a` journal records and `b` fills (a few hundred at most here). */
  function interleavings(a: number, b: number): ('j' | 'f')[][] {
    if (a === 0) return [Array(b).fill('f')];
    if (b === 0) return [Array(a).fill('j')];
    return [...interleavings(a - 1, b).map((r) => ['j' as const, ...r]), ...interleavings(a, b - 1).map((r) => ['f' as const, ...r])];
  }
  const fills = (seqs: number[]): F[] => seqs.map((seq) => ({ seq, ns: BigInt(seq * 10) }));

  it('puts each event after the fills up to its recorded position and before the rest, however the two streams arrive', () => {
    const batches = [
      { seq: 1, ns: 0n, batch: { v: 3, events: [ev(1)], fills: [0, 2] } },
      // Two positions in one group commit: e3 was applied after fills 3..5 came in.
      { seq: 2, ns: 0n, batch: { v: 3, events: [ev(2), ev(3)], fills: [0, 2, 1, 5] } },
    ];
    const want = ['f1', 'f2', 'e1', 'e2', 'f3', 'f4', 'f5', 'e3', 'f6'];
    for (const order of interleavings(2, 6)) {
      expect(merge('journal-first', batches, fills([1, 2, 3, 4, 5, 6]), order)).toEqual(want);
      expect(merge('journal-first', batches, fills([1, 2, 3, 4, 5, 6]), order, true)).toEqual(want);
    }
  });

  it('goes on past fills that are not in the stream (deleted), and puts records without positions first, or by storage time', () => {
    const batches = [{ seq: 1, ns: 0n, batch: { v: 3, events: [ev(1)], fills: [0, 3] } }];
    for (const order of interleavings(1, 3)) expect(merge('journal-first', batches, fills([1, 2, 4]), order)).toEqual(['f1', 'f2', 'e1', 'f4']);
    const old = [
      { seq: 1, ns: 15n, batch: { v: 2, events: [ev(1)] } },
      { seq: 2, ns: 35n, batch: { v: 2, events: [ev(2)] } },
    ];
    for (const order of interleavings(2, 4)) {
      expect(merge('journal-first', old, fills([1, 2, 3, 4]), order)).toEqual(['e1', 'e2', 'f1', 'f2', 'f3', 'f4']);
      expect(merge('stream-time', old, fills([1, 2, 3, 4]), order)).toEqual(['f1', 'e1', 'f2', 'f3', 'e2', 'f4']);
    }
  });
});
