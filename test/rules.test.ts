import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { JOURNAL_STREAM } from '../proto/subjects.js';
import type { JournalEvent } from '../proto/journal.js';
import { buildInstruments } from '../src/config/baskets.js';
import { PricingState } from '../src/pricing/core.js';
import { applyFill, applySessionReset, decide } from '../src/engine/core.js';
import { consistencyCheck, conservation } from '../src/engine/check.js';
import { exportAudit } from '../src/engine/audit-export.js';
import { loadBaskets } from '../src/config/baskets.js';
import { EngineClient } from '../src/shared/engine-client.js';
import type { ConversionAnswer, DumpResult, EngineRefusal, TickerOf } from '../proto/engine.js';
import { limitWarnings, refusalWords } from '../proto/messages.js';
import { MAX_WINDOW_SECONDS, conversionRulesSchema } from '../proto/rules.js';
import { applyEvent, emptyState, positionList } from '../src/engine/state.js';
import { buy, quietLog, until, useSystem } from './helpers/system.js';
import { openBucket } from '../src/shared/streams.js';
import { EtfClient, type LiveHoldings } from '../src/client/index.js';
import { encode } from '../proto/codec.js';
import { BBO_BUCKET, type Bbo } from '../proto/marketdata.js';

/** UNDY in creation units of 5, and a TECH basket without one. */
const baskets = join(mkdtempSync(join(tmpdir(), 'etf-rules-')), 'baskets.json');
const BASKETS: { etfs: { name: string; symbol: number; unit?: number; components: Record<string, number> }[] } = {
  etfs: [
    { name: 'UNDY', symbol: 13, unit: 5, components: { KNAN: 1, STED: 1, FISH: 1, DILN: 1, SORN: 1, RYAN: 1, LYON: 1, WLSH: 1, LEWI: 1, BDIN: 1 } },
    { name: 'TECH', symbol: 101, components: { KNAN: 2 } },
  ],
};
writeFileSync(baskets, JSON.stringify(BASKETS));
/** A decision's refusal in the words the edge gives it (proto/messages.ts): the core decides in codes. */
const words = (d: { error?: EngineRefusal }, cfg: { instruments: { tickerOf: TickerOf } }) => (d.error ? refusalWords(d.error, cfg.instruments.tickerOf) : undefined);
const basket10 = Object.fromEntries([3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 10]));

describe('conversion rules in the core', () => {
  const cfg = { instruments: buildInstruments(BASKETS, 'test'), maxAmount: 1000 };
  const state = () => {
    const s = emptyState();
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: [[3, 10], [4, 10], [5, 10], [6, 10], [7, 10], [8, 10], [9, 10], [10, 10], [11, 10], [12, 10]], ts: 0 });
    return s;
  };

  it('creation unit: a multiple passes, anything else is refused naming the unit (and journaled as a refusal)', () => {
    const s = state();
    expect(decide(s, cfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 10 }, 1).error).toBeUndefined();
    const off = decide(s, cfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 7 }, 1);
    expect(words(off, cfg)).toMatchObject({ code: 'invalid_amount', field: 'amount', unit: 5 });
    expect(words(off, cfg)!.message).toMatch(/multiple of UNDY's creation unit of 5/);
    expect(off.events).toHaveLength(1);
    // An ETF without a unit takes any whole number.
    expect(decide(s, cfg, { op: 'create', clientId: 1, etf: 'TECH', amount: 3 }, 1).error).toBeUndefined();
  });

  it('dry run: the same answer as for real, but no event, no request id, and its key stays free', () => {
    const s = state();
    const dry = decide(s, cfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5, key: 'k1', dryRun: true }, 1);
    expect(dry.events).toEqual([]);
    expect(dry.result).toMatchObject({ request_id: 'dry-run', dry_run: true, amount: 5 });
    const refused = decide(s, cfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 50, dryRun: true }, 1);
    expect(refused.error?.code).toBe('insufficient_holdings');
    expect(refused.events).toEqual([]);
    const real = decide(s, cfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5, key: 'k1' }, 1);
    expect(real.events).toHaveLength(1);
    expect((real.result as { deltas: unknown }).deltas).toEqual((dry.result as { deltas: unknown }).deltas);
  });
});

describe('cash and fees in the core', () => {
  const fees = { create: { fixed: 5, per_unit: 2 }, redeem: { fixed: 1, per_unit: 0 } };
  const cfg = { instruments: buildInstruments(BASKETS, 'test'), maxAmount: 1000, rules: { fees } };

  it('fills move cash by quantity × price the other way; an exchange reset starts cash from 0', () => {
    const s = emptyState();
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', ts: 0 });
    applyFill(s, { seq: 1, client_id: 1, symbol: 3, side: 1, quantity: 10, price: 100 }, 1);
    applyFill(s, { seq: 2, client_id: 1, symbol: 3, side: 2, quantity: 4, price: 120 }, 2);
    expect(s.accounts.get(1)!.cash).toBe(-1000 + 480);
    applySessionReset(s, 3);
    expect(s.accounts.get(1)!.cash).toBe(0);
  });

  it('a conversion fee (fixed + per unit, by side) is charged in cash, shown, journaled, and replays to the same cash', () => {
    const s = emptyState();
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: [[3, 20], [4, 20], [5, 20], [6, 20], [7, 20], [8, 20], [9, 20], [10, 20], [11, 20], [12, 20]], ts: 0 });
    const journal: JournalEvent[] = [];
    const run = (cmd: Parameters<typeof decide>[2]) => {
      const d = decide(s, cfg, cmd, 1);
      for (const ev of d.events) {
        applyEvent(s, ev);
        journal.push(ev);
      }
      return d;
    };
    const created = run({ op: 'create', clientId: 1, etf: 'UNDY', amount: 10 });
    expect(created.result).toMatchObject({ fee: 25, holdings: { cash: -25 } });
    expect(created.events[0]).toMatchObject({ t: 'conversion', fee: 25 });
    run({ op: 'redeem', clientId: 1, etf: 'UNDY', amount: 5 });
    expect(s.accounts.get(1)!.cash).toBe(-26);
    // A dry run says what it would cost and charges nothing.
    expect(decide(s, cfg, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5, dryRun: true }, 1).result).toMatchObject({ fee: 15 });
    expect(s.accounts.get(1)!.cash).toBe(-26);
    // Replay of the journal alone (fees config gone) reproduces the cash: the fee is in the event.
    const replay = emptyState(cfg.instruments);
    applyEvent(replay, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: [[3, 20], [4, 20], [5, 20], [6, 20], [7, 20], [8, 20], [9, 20], [10, 20], [11, 20], [12, 20]], ts: 0 });
    for (const ev of journal) applyEvent(replay, ev);
    expect(replay.accounts.get(1)!.cash).toBe(-26);
  });
});

describe('cash and fees over HTTP', () => {
  const sys = useSystem({ rules: { fees: { create: { fixed: 10, per_unit: 1 }, redeem: { fixed: 0, per_unit: 3 } } } });
  const t1: [string, string] = ['team1', 'team1pass'];

  it('holdings show cash from fills; a create shows and charges its fee; history has it; the consistency check agrees', async () => {
    await buy(sys.nc, 1, { 3: 4, 4: 4, 5: 4, 6: 4, 7: 4, 8: 4, 9: 4, 10: 4, 11: 4, 12: 4 });
    const h = (await sys.http.holdings(...t1)).body;
    expect(h.cash).toBe(-40 * 100); // 40 units bought at 100
    const c = await sys.http.send('POST', '/create', { basic: t1, form: { amount: 2 } });
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ fee: 12, cash: -4000 - 12 });
    const r = await sys.http.send('POST', '/redeem', { basic: t1, form: { amount: 1 } });
    expect(r.body).toMatchObject({ fee: 3, cash: -4015 });
    const history = (await sys.http.send('GET', '/history', { basic: t1 })).body.entries;
    expect(history.map((e: { fee?: number }) => e.fee)).toEqual([3, 12]);
    const engine = new EngineClient(sys.nc, 5000);
    const dump = await engine.call({ op: 'dump' });
    engine.close();
    if (!dump.ok) throw new Error(dump.error.message);
    const report = await consistencyCheck(sys.nc, dump.result as DumpResult, loadBaskets(undefined), quietLog);
    expect(report.mismatches).toEqual([]);
    expect(report.ok).toBe(true);
  });
});

describe('conversion rules over HTTP', () => {
  const sys = useSystem({ basketsFile: baskets });
  const t1: [string, string] = ['team1', 'team1pass'];

  it('a creation unit refusal names the unit', async () => {
    await buy(sys.nc, 1, basket10);
    const r = await sys.http.send('POST', '/create', { basic: t1, form: { etf_name: 'UNDY', amount: 3 } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'invalid_amount', field: 'amount', unit: 5 });
    expect((await sys.http.send('POST', '/create', { basic: t1, form: { etf_name: 'UNDY', amount: 5 } })).status).toBe(200);
  });

  it('a dry run answers what would happen and leaves the journal and the holdings untouched', async () => {
    const jsm = await jetstreamManager(sys.nc);
    const journal = (await jsm.streams.info(JOURNAL_STREAM)).state.last_seq;
    const before = (await sys.http.holdings(...t1)).body;
    const dry = await sys.http.send('POST', '/create', { basic: t1, json: { etf_name: 'UNDY', amount: 5, dry_run: true } });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dry_run: true, request_id: 'dry-run', deltas: { KNAN: -5, UNDY: 5 } });
    expect(dry.body.holdings.UNDY).toBe((before.holdings.UNDY ?? 0) + 5);
    const refused = await sys.http.send('POST', '/redeem', { basic: t1, form: { etf_name: 'UNDY', amount: 500, dry_run: 'true' } });
    expect(refused.status).toBe(400);
    expect(refused.body.error.code).toBe('insufficient_holdings');
    expect((await sys.http.send('POST', '/create', { basic: t1, form: { amount: 5, etf_name: 'UNDY', dry_run: 'maybe' } })).body.error.field).toBe('dry_run');
    expect((await jsm.streams.info(JOURNAL_STREAM)).state.last_seq).toBe(journal);
    expect((await sys.http.holdings(...t1)).body).toEqual(before);
  });
});

describe('operator halt and resume', () => {
  const sys = useSystem({ operator: { username: 'instructor', password: 'instructorpass' } });
  const t1: [string, string] = ['team1', 'team1pass'];
  const op: [string, string] = ['instructor', 'instructorpass'];

  it('halts one ETF or all with a reason, refuses conversions with a clear status, resumes; journaled with who and when', async () => {
    await buy(sys.nc, 1, { 3: 5, 4: 5, 5: 5, 6: 5, 7: 5, 8: 5, 9: 5, 10: 5, 11: 5, 12: 5 });
    expect((await sys.http.send('POST', '/operator/api/halt', { basic: t1, form: { etf_name: 'UNDY' } })).status).toBe(401);
    const halted = await sys.http.send('POST', '/operator/api/halt', { basic: op, form: { etf_name: 'UNDY', reason: 'price feed under review' } });
    expect(halted.status).toBe(200);
    expect(halted.body.halts).toEqual([{ etf: 'UNDY', reason: 'price feed under review', by: 'instructor', since: expect.any(Number) }]);
    const refused = await sys.http.send('POST', '/create', { basic: t1, form: { amount: 1 } });
    expect(refused.status).toBe(403);
    expect(refused.body.error).toMatchObject({ code: 'halted', message: 'conversions of UNDY are halted by the operator: price feed under review' });
    expect((await sys.http.send('GET', '/operator/api/rules', { basic: op })).body.halts).toHaveLength(1);
    expect((await sys.http.send('POST', '/operator/api/halt', { basic: op, form: { etf_name: 'NOPE' } })).body.error.code).toBe('unknown_etf');
    const resumed = await sys.http.send('POST', '/operator/api/resume', { basic: op, form: { etf_name: 'UNDY' } });
    expect(resumed.body.halts).toEqual([]);
    expect((await sys.http.send('POST', '/create', { basic: t1, form: { amount: 1 } })).status).toBe(200);
    // Every change is in the audit export, with who and when.
    const lines: string[] = [];
    await exportAudit(sys.nc, loadBaskets(undefined), (l) => lines.push(l));
    const changes = lines.map((l) => JSON.parse(l)).filter((e) => e.kind === 'halt' || e.kind === 'resume');
    expect(changes).toMatchObject([{ kind: 'halt', etf: 'UNDY', reason: 'price feed under review', by: 'instructor' }, { kind: 'resume', etf: 'UNDY', by: 'instructor' }]);
  });
});

describe('replaying the journal reproduces every decision after rule changes', () => {
  it('halt, refused create, resume, accepted create: a fresh state from the events alone ends the same', () => {
    const cfg = { instruments: buildInstruments(BASKETS, 'test'), maxAmount: 1000, rules: { fees: { create: { fixed: 1, per_unit: 1 }, redeem: { fixed: 0, per_unit: 0 } } } };
    const opening: [number, number][] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => [s, 20]);
    const live = emptyState();
    const journal: JournalEvent[] = [{ t: 'account', clientId: 1, username: 't', source: 'roster', opening, ts: 0 }];
    applyEvent(live, journal[0]!);
    const answers: unknown[] = [];
    const cmds: Parameters<typeof decide>[2][] = [
      { op: 'halt', etf: null, reason: 'lunch', by: 'op' },
      { op: 'create', clientId: 1, etf: 'UNDY', amount: 5 },
      { op: 'resume', etf: null, by: 'op' },
      { op: 'create', clientId: 1, etf: 'UNDY', amount: 5 },
      { op: 'halt', etf: 'TECH', reason: 'rebalancing', by: 'op' },
      { op: 'create', clientId: 1, etf: 'TECH', amount: 1 },
      { op: 'create', clientId: 1, etf: 'UNDY', amount: 7 },
    ];
    cmds.forEach((cmd, i) => {
      const d = decide(live, cfg, cmd, 100 + i);
      answers.push(d.error?.code ?? 'ok');
      for (const ev of d.events) {
        applyEvent(live, ev);
        journal.push(ev);
      }
    });
    expect(answers).toEqual(['ok', 'halted', 'ok', 'ok', 'ok', 'halted', 'invalid_amount']);
    const replayed = emptyState(cfg.instruments);
    for (const ev of journal) applyEvent(replayed, ev);
    const view = (s: typeof live) => ({ halts: [...s.halts], positions: positionList(s.accounts.get(1)!), cash: s.accounts.get(1)!.cash, requestSeq: s.requestSeq, history: s.accounts.get(1)!.history.length });
    expect(view(replayed)).toEqual(view(live));
    expect(view(live).halts).toEqual([['TECH', { reason: 'rebalancing', by: 'op', since: 104 }]]);
  });
});


describe('limits and windows in the core, at the edge of each', () => {
  const base = { instruments: buildInstruments(BASKETS, 'test'), maxAmount: 1000 };
  const fresh = () => {
    const s = emptyState(base.instruments);
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: [[3, 100], [4, 100], [5, 100], [6, 100], [7, 100], [8, 100], [9, 100], [10, 100], [11, 100], [12, 100]], ts: 0 });
    return s;
  };
  const apply = (s: ReturnType<typeof fresh>, d: ReturnType<typeof decide>) => {
    for (const ev of d.events) applyEvent(s, ev);
    return d;
  };
  const create = (amount: number) => ({ op: 'create' as const, clientId: 1, etf: 'UNDY', amount });
  const H = 3_600_000;

  it('units per conversion: the limit passes, one more is refused naming it', () => {
    const cfg = { ...base, rules: { max_units_per_conversion: 10 } };
    expect(decide(fresh(), cfg, create(10), 0).error).toBeUndefined();
    expect(words(decide(fresh(), cfg, create(15), 0), cfg)).toMatchObject({ code: 'limit_exceeded', field: 'amount', limit: 10 });
  });

  it('units per window: up to the limit inside the window, refused past it, free again once the window has moved on', () => {
    const cfg = { ...base, rules: { units_per_window: { units: 20, seconds: 60 } } };
    const s = fresh();
    expect(apply(s, decide(s, cfg, create(15), 1_000)).error).toBeUndefined();
    expect(apply(s, decide(s, cfg, create(5), 2_000)).error).toBeUndefined();
    const over = apply(s, decide(s, cfg, create(5), 60_999));
    expect(words(over, cfg)).toMatchObject({ code: 'limit_exceeded', limit: 20 });
    expect(words(over, cfg)!.message).toMatch(/20 already converted, 0 left/);
    // 61 s after the first: its 15 units have left the window.
    expect(apply(s, decide(s, cfg, create(15), 61_001)).error).toBeUndefined();
  });

  it('units per window: refusals journaled for the team do not push its conversions out of the count', () => {
    const cfg = { ...base, rules: { units_per_window: { units: 20, seconds: 3600 } } };
    const s = fresh();
    expect(apply(s, decide(s, cfg, create(20), 1_000)).error).toBeUndefined();
    // Each refusal is journaled for the team (the audit trail, retries): the window's own, and cheap ones (not a multiple of the creation unit).
    for (let i = 0; i < 1_000; i++) {
      const d = apply(s, decide(s, cfg, create(i % 2 === 0 ? 5 : 7), 2_000 + i));
      expect(d.error?.code).toBe(i % 2 === 0 ? 'limit_exceeded' : 'invalid_amount');
      expect(d.events).toHaveLength(1);
    }
    expect(s.accounts.get(1)!.history.length).toBe(1_000);
    // Before, the history ring held only those refusals by now: the 20 units had left it, and this was accepted.
    expect(apply(s, decide(s, cfg, create(5), 10_000)).error).toMatchObject({ code: 'limit_exceeded', why: 'per_window', used: 20 });
    // The window still moves on: an hour after the 20, they no longer count.
    expect(apply(s, decide(s, cfg, create(20), 3_601_001)).error).toBeUndefined();
  });

  it('units per window: every conversion in the window counts, however many more than the history keeps', () => {
    const cfg = { ...base, rules: { units_per_window: { units: 5_000, seconds: 3600 } } };
    const s = emptyState(base.instruments);
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: [[3, 1_000_000]], ts: 0 });
    const tech = (amount: number) => ({ op: 'create' as const, clientId: 1, etf: 'TECH', amount });
    // 1,250 conversions of 4, one a second: 5,000 units, the limit.
    for (let i = 0; i < 1_250; i++) expect(apply(s, decide(s, cfg, tech(4), i * 1000)).error).toBeUndefined();
    // Before, only the history's last 1,000 (4,000 units) were counted: the limit could never be reached.
    expect(apply(s, decide(s, cfg, tech(1), 1_250_000)).error).toMatchObject({ code: 'limit_exceeded', used: 5_000 });
    // An hour after the first (at 0), its 4 units have left the window, and 4 more fit, not 5.
    expect(apply(s, decide(s, cfg, tech(5), 3_600_000)).error).toMatchObject({ code: 'limit_exceeded', used: 4_996 });
    expect(apply(s, decide(s, cfg, tech(4), 3_600_000)).error).toBeUndefined();
  });

  it('units per window: conversions made while no rule was in force count once one is; a replay gives the same count', () => {
    const s = fresh();
    const journal: JournalEvent[] = [];
    const run = (c: typeof base & { rules?: object }, cmd: Parameters<typeof decide>[2], now: number) => {
      const d = decide(s, c, cmd, now);
      for (const ev of d.events) {
        applyEvent(s, ev);
        journal.push(ev);
      }
      return d;
    };
    expect(run(base, create(15), 1_000).error).toBeUndefined();
    const limited = { ...base, rules: { units_per_window: { units: 20, seconds: 60 } } };
    expect(run(limited, create(10), 2_000).error).toMatchObject({ code: 'limit_exceeded', used: 15 });
    const replayed = fresh();
    for (const ev of journal) applyEvent(replayed, ev);
    expect(decide(replayed, limited, create(10), 3_000).error).toMatchObject({ code: 'limit_exceeded', used: 15 });
  });

  it('units per window: conversions within one second are counted together, until the last of them leaves the window', () => {
    const cfg = { ...base, rules: { units_per_window: { units: 10, seconds: 60 } } };
    const s = fresh();
    expect(apply(s, decide(s, cfg, create(5), 1_000)).error).toBeUndefined();
    expect(apply(s, decide(s, cfg, create(5), 1_999)).error).toBeUndefined();
    // The first 5 alone have left the window at 61,000: kept with the second's, they count up to 999 ms longer (never less).
    expect(decide(s, cfg, create(5), 61_500).error).toMatchObject({ code: 'limit_exceeded', used: 10 });
    expect(decide(s, cfg, create(10), 61_999).error).toBeUndefined();
  });

  it('units per window: at most a day (validated on input); a longer rule journaled before the cap replays and counts a day', () => {
    expect(conversionRulesSchema.safeParse({ units_per_window: { units: 10, seconds: MAX_WINDOW_SECONDS } }).success).toBe(true);
    expect(conversionRulesSchema.safeParse({ units_per_window: { units: 10, seconds: MAX_WINDOW_SECONDS + 1 } }).success).toBe(false);
    const s = fresh();
    applyEvent(s, { t: 'rules', rules: { units_per_window: { units: 10, seconds: 2 * MAX_WINDOW_SECONDS } }, by: 'op', ts: 0 });
    expect(apply(s, decide(s, base, create(10), 1_000)).error).toBeUndefined();
    expect(decide(s, base, create(5), 999 + MAX_WINDOW_SECONDS * 1000).error).toMatchObject({ code: 'limit_exceeded', seconds: MAX_WINDOW_SECONDS, used: 10 });
    expect(decide(s, base, create(5), 1_000 + MAX_WINDOW_SECONDS * 1000).error).toBeUndefined();
  });

  it('position limit: refuse names the symbol; warn accepts and says so; exactly at the limit passes', () => {
    const s = fresh();
    applyEvent(s, { t: 'conversion', requestId: 1, op: 'create', clientId: 1, etf: 'UNDY', amount: 95, deltas: [[13, 95]], after: [], ts: 0 });
    const refuse = { ...base, rules: { position_limit: { limit: 100, mode: 'refuse' as const } } };
    expect(decide(s, refuse, create(5), 0).error).toBeUndefined(); // UNDY to exactly 100
    expect(words(decide(s, refuse, create(10), 0), refuse)).toMatchObject({ code: 'limit_exceeded', symbol: 'UNDY', limit: 100 });
    const warn = { ...base, rules: { position_limit: { limit: 100, mode: 'warn' as const } } };
    const warned = decide(s, warn, create(10), 0);
    expect(warned.error).toBeUndefined();
    expect(limitWarnings((warned.result as ConversionAnswer).beyond_limit!, warn.instruments.tickerOf)).toEqual(['UNDY beyond the position limit of 100']);
  });

  it('windows: open from `from` (inclusive) to `to` (exclusive), also across midnight', () => {
    const cfg = { ...base, rules: { windows: [{ from: '09:00', to: '17:00' }, { from: '22:00', to: '02:00' }] } };
    const s = fresh();
    expect(decide(s, cfg, create(5), 9 * H).error).toBeUndefined();
    expect(decide(s, cfg, create(5), 9 * H - 1).error).toMatchObject({ code: 'outside_window' });
    expect(decide(s, cfg, create(5), 17 * H - 1).error).toBeUndefined();
    expect(decide(s, cfg, create(5), 17 * H).error).toMatchObject({ code: 'outside_window' });
    expect(decide(s, cfg, create(5), 23 * H).error).toBeUndefined();
    expect(decide(s, cfg, create(5), 1 * H).error).toBeUndefined();
    expect(words(decide(s, cfg, create(5), 3 * H), cfg)!.message).toBe('conversions are open only 09:00-17:00, 22:00-02:00 UTC');
  });

  it("rules set by the operator replace the config's, and a replay reproduces the decisions after the change", () => {
    const cfg = { ...base, rules: { max_units_per_conversion: 100 } };
    const s = fresh();
    const journal: JournalEvent[] = [];
    const run = (cmd: Parameters<typeof decide>[2], now: number) => {
      const d = decide(s, cfg, cmd, now);
      for (const ev of d.events) {
        applyEvent(s, ev);
        journal.push(ev);
      }
      return d.error?.code ?? 'ok';
    };
    expect(run(create(50), 1)).toBe('ok');
    expect(run({ op: 'set_rules', rules: { max_units_per_conversion: 10, fees: { create: { fixed: 3, per_unit: 0 }, redeem: { fixed: 0, per_unit: 0 } } }, by: 'op' }, 2)).toBe('ok');
    expect(run(create(50), 3)).toBe('limit_exceeded');
    expect(run(create(10), 4)).toBe('ok');
    const replay = fresh();
    for (const ev of journal) applyEvent(replay, ev);
    expect(replay.rules).toEqual(s.rules);
    expect(positionList(replay.accounts.get(1)!)).toEqual(positionList(s.accounts.get(1)!));
    expect(replay.accounts.get(1)!.cash).toBe(-3);
  });
});

describe('rules at run time over HTTP', () => {
  const sys = useSystem({ operator: { username: 'instructor', password: 'instructorpass' } });
  const t1: [string, string] = ['team1', 'team1pass'];
  const op: [string, string] = ['instructor', 'instructorpass'];

  it('PUT /operator/api/rules replaces the rules (journaled, in the export); bad rules are a 400 naming the field', async () => {
    await buy(sys.nc, 1, { 3: 10, 4: 10, 5: 10, 6: 10, 7: 10, 8: 10, 9: 10, 10: 10, 11: 10, 12: 10 });
    // A window from a time to itself is empty (not all day): every conversion would be refused.
    const empty = await sys.http.send('PUT', '/operator/api/rules', { basic: op, json: { windows: [{ from: '00:00', to: '00:00' }] } });
    expect(empty.status).toBe(400);
    expect(empty.body.error.message).toMatch(/window from a time to the same time is empty/);
    const bad = await sys.http.send('PUT', '/operator/api/rules', { basic: op, json: { max_units_per_conversion: -1 } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('max_units_per_conversion');
    expect((await sys.http.send('PUT', '/operator/api/rules', { basic: op, json: { nonsense: 1 } })).status).toBe(400);
    // Longer than a day: the engine counts each team's conversions for a day at most.
    const long = await sys.http.send('PUT', '/operator/api/rules', { basic: op, json: { units_per_window: { units: 100, seconds: 86_401 } } });
    expect(long.status).toBe(400);
    expect(long.body.error).toMatchObject({ field: 'units_per_window', message: expect.stringMatching(/86400/) });
    const set = await sys.http.send('PUT', '/operator/api/rules', { basic: op, json: { max_units_per_conversion: 5, position_limit: { limit: 8, mode: 'refuse' } } });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ rules: { max_units_per_conversion: 5 }, set_by: { by: 'instructor' } });
    const big = await sys.http.send('POST', '/create', { basic: t1, form: { amount: 6 } });
    expect(big.status).toBe(400);
    expect(big.body.error).toMatchObject({ code: 'limit_exceeded', field: 'amount', limit: 5 });
    expect((await sys.http.send('POST', '/create', { basic: t1, form: { amount: 5 } })).status).toBe(200);
    const limit = await sys.http.send('POST', '/create', { basic: t1, form: { amount: 5 } });
    expect(limit.body.error).toMatchObject({ code: 'limit_exceeded', symbol: 'UNDY', limit: 8 });
    const lines: string[] = [];
    await exportAudit(sys.nc, loadBaskets(undefined), (l) => lines.push(l));
    expect(lines.map((l) => JSON.parse(l)).find((e) => e.kind === 'rules')).toMatchObject({ by: 'instructor', rules: { max_units_per_conversion: 5 } });
  });
});

describe('P&L and the leaderboard', () => {
  const sys = useSystem();

  it('P&L is cash plus positions at mid prices; the leaderboard ranks teams by it', async () => {
    // Best bid/ask as the feed bridge keeps them: KNAN 110/120 (mid 115), STED 85/95 (mid 90).
    const bbo = await openBucket(sys.nc, BBO_BUCKET);
    await bbo.put('3', encode({ symbol: 3, bid: 110, bid_qty: 1, ask: 120, ask_qty: 1, ts: 0, md_seq: 1 } satisfies Bbo));
    await bbo.put('4', encode({ symbol: 4, bid: 85, bid_qty: 1, ask: 95, ask_qty: 1, ts: 0, md_seq: 2 } satisfies Bbo));
    await buy(sys.nc, 1, { 3: 10 }); // 10 KNAN at 100: cash -1000, worth 1150
    await buy(sys.nc, 2, { 4: 5, 5: 1 }); // 5 STED at 100 (worth 450) and 1 FISH with no market
    const one = await until(async () => {
      const h = (await sys.http.holdings('team1', 'team1pass')).body;
      return h.pnl.unmarked.length === 0 ? h : undefined;
    }, 'the marks to be followed');
    expect(one.pnl).toEqual({ cash: -1000, marked: 1150, total: 150, unmarked: [] });
    expect((await sys.http.holdings('team2', 'team2pass')).body.pnl).toEqual({ cash: -600, marked: 450, total: -150, unmarked: ['FISH'] });
    // The stream carries cash and P&L too.
    const live = await new Promise<LiveHoldings>((resolve) => {
      const stream = new EtfClient({ url: sys.sys.url, username: 'team1', password: 'team1pass' }).stream({
        onHoldings: (h) => {
          stream.close();
          resolve({ ...h });
        },
      });
    });
    expect(live).toMatchObject({ cash: -1000, pnl: { cash: -1000, marked: 1150, total: 150, unmarked: [] } });
    // A team that has done nothing ranks after every team that traded, even those at a loss.
    expect((await sys.http.send('POST', '/register', { form: { username: 'idle', password: 'idlepass1' } })).status).toBe(200);
    const board = (await sys.http.send('GET', '/leaderboard')).body;
    expect(board.teams.map((t: { rank: number; username: string; total: number; traded: boolean }) => [t.rank, t.username, t.total, t.traded])).toEqual([
      [1, 'team1', 150, true],
      [2, 'team2', -150, true],
      [3, 'idle', 0, false],
    ]);
  });
});

describe('basket changes', () => {
  it('in the core: a new version applies from its time, each conversion records the version it used, conservation holds per version', () => {
    const cfg = { instruments: buildInstruments(BASKETS, 'test'), maxAmount: 1000 };
    const s = emptyState();
    const journal: JournalEvent[] = [{ t: 'account', clientId: 1, username: 't', source: 'roster', opening: [[3, 100], [4, 100], [5, 100], [6, 100], [7, 100], [8, 100], [9, 100], [10, 100], [11, 100], [12, 100]], ts: 0 }];
    applyEvent(s, journal[0]!);
    const run = (cmd: Parameters<typeof decide>[2], now: number) => {
      const d = decide(s, cfg, cmd, now);
      for (const ev of d.events) {
        applyEvent(s, ev);
        journal.push(ev);
      }
      return d;
    };
    expect(run({ op: 'set_basket', etf: 'UNDY', components: { KNAN: 2, STED: 1 }, from: 1000, by: 'op' }, 10).error).toBeUndefined();
    expect(words(run({ op: 'set_basket', etf: 'UNDY', components: { KNAN: 1 }, from: 500, by: 'op' }, 11), cfg)).toMatchObject({ field: 'from' });
    // The same basket again (an operator's retry after a 503, or a shard that missed it): no second version, nothing journaled.
    const again = run({ op: 'set_basket', etf: 'UNDY', components: { STED: 1, KNAN: 2 }, from: 1500, by: 'op' }, 12);
    expect(again.events).toEqual([]);
    expect((again.result as { baskets: Record<string, unknown[]> }).baskets.UNDY).toHaveLength(1);
    const before = run({ op: 'create', clientId: 1, etf: 'UNDY', amount: 5 }, 999);
    expect((before.result as { basket_version: number }).basket_version).toBe(0);
    const after = run({ op: 'create', clientId: 1, etf: 'UNDY', amount: 5 }, 1000);
    expect(after.result).toMatchObject({ basket_version: 1 });
    // A compact record: its deltas follow from the version it names.
    expect(after.events[0]).toMatchObject({ basketVersion: 1 });
    expect(s.catalog.deltas(after.events[0] as Extract<JournalEvent, { t: 'conversion' }>)).toEqual([[3, -10], [4, -5], [13, 5]]);
    expect(run({ op: 'redeem', clientId: 1, etf: 'UNDY', amount: 10 }, 2000).error).toBeUndefined();
    expect(conservation(journal, cfg.instruments)).toEqual([]);
  });

  it('in the core: a component listed twice (a ticker in another case, or its symbol id) is refused, and nothing is journaled', () => {
    const cfg = { instruments: buildInstruments(BASKETS, 'test'), maxAmount: 1000 };
    const s = emptyState();
    for (const components of [{ KNAN: 1, knan: 1 }, { KNAN: 1, '3': 1 }, { STED: 2, KNAN: 1, Knan: 1, '3': 1 }] as Record<string, number>[]) {
      const d = decide(s, cfg, { op: 'set_basket', etf: 'UNDY', components, from: 1000, by: 'op' }, 10);
      expect(d.events, JSON.stringify(components)).toEqual([]);
      // Before: accepted, shown as one KNAN, and a create debited each (a team holding 1 KNAN was left at -2).
      expect(words(d, cfg)).toMatchObject({ code: 'bad_request', field: 'components', message: expect.stringMatching(/^components \S+ and \S+ are both KNAN: list each component once$/) });
    }
  });

});

describe('basket changes over HTTP', () => {
  const sys = useSystem({ operator: { username: 'instructor', password: 'instructorpass' } });
  const t1: [string, string] = ['team1', 'team1pass'];
  const op: [string, string] = ['instructor', 'instructorpass'];

  it('a basket change applies from its time: conversions from then on use it and say so; the export has it', async () => {
    await buy(sys.nc, 1, { 3: 20, 4: 20, 5: 20, 6: 20, 7: 20, 8: 20, 9: 20, 10: 20, 11: 20, 12: 20 });
    // Version 1 from now: in force at once.
    const set = await sys.http.send('POST', '/operator/api/basket', { basic: op, json: { etf_name: 'UNDY', components: { KNAN: 3 } } });
    expect(set.status).toBe(200);
    expect(set.body.baskets.UNDY).toMatchObject([{ version: 1, components: { KNAN: 3 }, by: 'instructor' }]);
    const v1 = await sys.http.send('POST', '/create', { basic: t1, form: { amount: 2 } });
    expect(v1.body).toMatchObject({ basket_version: 1, deltas: { KNAN: -6, UNDY: 2 } });
    // GET /etfs shows the basket in force, from the versions the engine published.
    await until(async () => {
      const etfs = (await sys.http.send('GET', '/etfs')).body.etfs as { name: string; components: { ticker: string; weight: number }[] }[];
      const undy = etfs.find((e) => e.name === 'UNDY')!;
      return undy.components.length === 1 && undy.components[0]!.ticker === 'KNAN' && undy.components[0]!.weight === 3;
    }, 'GET /etfs to show version 1');
    // Version 2 from an hour ahead: not in force yet, version 1 still is.
    const later = new Date(Date.now() + 3_600_000).toISOString();
    expect((await sys.http.send('POST', '/operator/api/basket', { basic: op, json: { etf_name: 'UNDY', components: { KNAN: 2, STED: 1 }, from: later } })).status).toBe(200);
    expect((await sys.http.send('POST', '/create', { basic: t1, form: { amount: 1 } })).body).toMatchObject({ basket_version: 1, deltas: { KNAN: -3, UNDY: 1 } });
    const bad = await sys.http.send('POST', '/operator/api/basket', { basic: op, json: { etf_name: 'UNDY', components: { NOPE: 1 } } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/unknown component symbol NOPE/);
    const lines: string[] = [];
    await exportAudit(sys.nc, loadBaskets(undefined), (l) => lines.push(l));
    expect(lines.map((l) => JSON.parse(l)).filter((e) => e.kind === 'basket').map((e) => e.basket.version)).toEqual([1, 2]);
  });
});

describe('pricing follows basket versions', () => {
  it('prices an ETF by the basket in force at the time: the configured one before a version\'s from, the version after', () => {
    const instruments = buildInstruments(BASKETS, 'test');
    const state = new PricingState(instruments.baskets);
    state.apply({ symbol: 3, bid: 100, bid_qty: 1, ask: 102, ask_qty: 1, ts: 0, md_seq: 1 });
    state.apply({ symbol: 4, bid: 300, bid_qty: 1, ask: 310, ask_qty: 1, ts: 0, md_seq: 2 });
    expect(state.price('TECH', 0)).toMatchObject({ create_cost: 204, redeem_proceeds: 200 }); // 2 × KNAN
    state.setVersions('TECH', [{ version: 1, from: 1000, components: [{ symbol: 4, ticker: 'STED', weight: 1 }] }]);
    expect(state.price('TECH', 999)).toMatchObject({ create_cost: 204, redeem_proceeds: 200 });
    expect(state.price('TECH', 1000)).toMatchObject({ create_cost: 310, redeem_proceeds: 300 }); // 1 × STED
    // A new component's quotes now move the ETF.
    expect(state.apply({ symbol: 4, bid: 301, bid_qty: 1, ask: 311, ask_qty: 1, ts: 0, md_seq: 3 })).toContain('TECH');
  });
});

