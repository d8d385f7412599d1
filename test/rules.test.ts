import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { JOURNAL_STREAM } from '../proto/subjects.js';
import { buildInstruments } from '../src/config/baskets.js';
import { decide } from '../src/engine/core.js';
import { applyEvent, emptyState } from '../src/engine/state.js';
import { buy, useSystem } from './helpers/system.js';

/** UNDY in creation units of 5, and a TECH basket without one. */
const baskets = join(mkdtempSync(join(tmpdir(), 'etf-rules-')), 'baskets.json');
const BASKETS: { etfs: { name: string; symbol: number; unit?: number; components: Record<string, number> }[] } = {
  etfs: [
    { name: 'UNDY', symbol: 13, unit: 5, components: { KNAN: 1, STED: 1, FISH: 1, DILN: 1, SORN: 1, RYAN: 1, LYON: 1, WLSH: 1, LEWI: 1, BDIN: 1 } },
    { name: 'TECH', symbol: 101, components: { KNAN: 2 } },
  ],
};
writeFileSync(baskets, JSON.stringify(BASKETS));
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
    expect(off.error).toMatchObject({ code: 'invalid_amount', field: 'amount', unit: 5 });
    expect(off.error!.message).toMatch(/multiple of UNDY's creation unit of 5/);
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
