import { describe, expect, it } from 'vitest';
import type { HistoryResult } from '../proto/engine.js';
import { encodeRecords } from '../proto/codec.js';
import { useSystem } from './helpers/system.js';

/**
 * Answers of one gateway batch are published by the engine together: past
 * NATS's payload limit (1 MB by default) that publish threw, the engine
 * exited, and every answer of its group was lost (503s for conversions
 * already journaled).
 */
const f = useSystem();

describe('answers over the NATS payload limit', () => {
  it('go out in several messages; the engine stays up and answers everything, a conversion in the same batch included', async () => {
    const engine = f.sys.gateway.engine;
    // 500 history entries for team1: refusals are journaled and kept as entries too.
    const refusals = await Promise.all(Array.from({ length: 500 }, () => engine.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1 })));
    expect(refusals.every((r) => !r.ok && r.error.code === 'insufficient_holdings')).toBe(true);
    const one = await engine.call({ op: 'history', clientId: 1, limit: 500 });
    expect(one.ok && one.result.entries.length).toBe(500);
    // About 58 KB each: 24 of them are 1.4 MB.
    expect(encodeRecords(one).byteLength).toBeGreaterThan(50_000);
    // Issued in one turn: one command batch, its answers together several times the limit.
    const calls = [
      ...Array.from({ length: 24 }, () => engine.call({ op: 'history', clientId: 1, limit: 500 })),
      engine.call({ op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'with-the-histories' }),
    ];
    const answers = await Promise.all(calls);
    for (const a of answers.slice(0, 24)) expect(a.ok && (a.result as HistoryResult).entries).toEqual(one.ok && one.result.entries);
    expect(answers[24]).toMatchObject({ ok: false, error: { code: 'insufficient_holdings' } });
    // Still up, and the conversion's outcome is the one recorded.
    const found = await engine.call({ op: 'request', clientId: 1, id: 'with-the-histories' });
    expect(found).toMatchObject({ ok: true, result: { status: 'rejected' } });
    expect((await engine.call({ op: 'ping' })).ok).toBe(true);
  });
});
