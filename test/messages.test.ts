import { describe, expect, it } from 'vitest';
import { applyEvent, decide } from '../src/engine/core.js';
import { emptyState } from '../src/engine/state.js';
import { loadBaskets } from '../src/config/baskets.js';
import type { JournalEvent } from '../proto/journal.js';
import type { AuditRecord, EngineCommand, HistoryResult, Rejection } from '../proto/engine.js';
import { entryWords, refusalWords } from '../proto/messages.js';

const cfg = { instruments: loadBaskets(undefined), maxAmount: 1000 };
const tickerOf = cfg.instruments.tickerOf;
const UNDY_PARTS = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

function account() {
  const s = emptyState(cfg.instruments);
  applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', opening: UNDY_PARTS.map((sym) => [sym, 2]), ts: 0 });
  return s;
}

/** Decides and applies, as the actor does; returns the decision and its events. */
function run(s: ReturnType<typeof account>, cmd: EngineCommand, now = 1) {
  const d = decide(s, cfg, cmd, now);
  for (const ev of d.events) applyEvent(s, ev);
  return d;
}

describe('refusals: codes in the core and the journal, words at the edge', () => {
  it('the core journals a refusal as its code and facts, no message; the edge words it as the engine always did', () => {
    const s = account();
    const d = run(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5, key: 'k1' });
    expect(d.kind).toBe('rejected');
    const ev = d.events[0] as Extract<JournalEvent, { t: 'rejected' }>;
    expect(ev.error).toEqual({ code: 'insufficient_holdings', op: 'create', amount: 5, etf: 'UNDY', shortfalls: UNDY_PARTS.map((symbol) => ({ symbol, have: 2, need: 5 })) });
    expect(ev.error.message).toBeUndefined();
    const words = refusalWords(ev.error, tickerOf);
    expect(words.message).toBe('insufficient holdings to create 5 UNDY: KNAN have 2 need 5, STED have 2 need 5, FISH have 2 need 5, DILN have 2 need 5, SORN have 2 need 5, RYAN have 2 need 5, LYON have 2 need 5, WLSH have 2 need 5, LEWI have 2 need 5, BDIN have 2 need 5');
    expect(words.shortfalls![0]).toEqual({ symbol: 3, ticker: 'KNAN', have: 2, need: 5 });
    // /requests and /history show it worded; a retry answers the same refusal.
    const entry = run(s, { op: 'request', clientId: 1, id: 'k1' }).result as AuditRecord;
    expect(entryWords(entry, tickerOf).error).toEqual(words);
    expect(refusalWords(run(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5, key: 'k1' }).error!, tickerOf)).toEqual(words);
  });

  it('a journal written with words (before codes) replays and shows its words as recorded, in /requests, /history and on a retry', () => {
    const s = account();
    const recorded = { code: 'halted' as const, message: 'conversions of UNDY are halted by the operator: an older wording' };
    applyEvent(s, { t: 'rejected', requestId: 7, key: 'old', kind: 'create', clientId: 1, etf: 'UNDY', amount: 5, error: recorded, holdings: [], ts: 5 });
    const entry = run(s, { op: 'request', clientId: 1, id: 'r7' }).result as AuditRecord;
    expect(entryWords(entry, tickerOf).error).toEqual(recorded);
    const page = run(s, { op: 'history', clientId: 1, limit: 10 }).result as HistoryResult;
    expect(page.entries.map((e) => entryWords(e, tickerOf).error)).toEqual([recorded]);
    expect(refusalWords(run(s, { op: 'create', clientId: 1, etf: 'UNDY', amount: 5, key: 'old' }).error!, tickerOf)).toEqual(recorded);
  });

  it('every refusal reads in words, with the field and facts scripts read', () => {
    const cases: [Rejection, ReturnType<typeof refusalWords>][] = [
      [{ code: 'unknown_etf', etf: null, etfs: ['UNDY', 'TECH'] }, { code: 'unknown_etf', message: 'etf_name is required: one of UNDY, TECH', field: 'etf_name' }],
      [{ code: 'unknown_etf', etf: 'NOPE', etfs: ['UNDY'] }, { code: 'unknown_etf', message: 'unknown etf_name "NOPE": one of UNDY', field: 'etf_name' }],
      [{ code: 'invalid_amount', why: 'unit', etf: 'UNDY', unit: 5 }, { code: 'invalid_amount', message: "amount must be a multiple of UNDY's creation unit of 5", field: 'amount', unit: 5 }],
      [{ code: 'limit_exceeded', why: 'position', op: 'create', limit: 100, symbols: [13, 3] }, { code: 'limit_exceeded', message: 'the create would leave UNDY, KNAN beyond the position limit of 100', limit: 100, symbol: 'UNDY' }],
      [{ code: 'limit_exceeded', why: 'per_window', limit: 20, seconds: 60, used: 20 }, { code: 'limit_exceeded', message: 'at most 20 units per 60 s: 20 already converted, 0 left', field: 'amount', limit: 20 }],
      [{ code: 'halted', etf: null, reason: '' }, { code: 'halted', message: 'conversions of every ETF are halted by the operator' }],
      [{ code: 'idempotency_conflict', key: 'k', earlier: 'r3' }, { code: 'idempotency_conflict', message: 'request id k was already used for a different request (r3)', field: 'request_id' }],
      [{ code: 'bad_request', why: 'from_before', version: 2, from: 0 }, { code: 'bad_request', message: 'version 2 applies from 1970-01-01T00:00:00.000Z: a new one cannot apply before it', field: 'from' }],
      [{ code: 'forbidden', answered: ['dump', 'ping'] }, { code: 'forbidden', message: "only dump, ping are answered on the operators' read-only subject" }],
      [{ code: 'engine_unavailable', why: 'unconfirmed' }, { code: 'engine_unavailable', message: 'the engine could not confirm this operation was recorded; check /holdings before retrying' }],
      [{ code: 'payload_too_large', bytes: 5000, limit: 4096 }, { code: 'payload_too_large', message: 'the command is 5000 bytes, over the NATS message limit of 4096 bytes on this system: nothing was done (send less)', limit: 4096 }],
    ];
    for (const [r, words] of cases) expect(JSON.stringify(refusalWords(r, tickerOf))).toBe(JSON.stringify(words));
  });
});
