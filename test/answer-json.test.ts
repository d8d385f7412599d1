import { describe, expect, it } from 'vitest';
import type { ConversionAnswer, TickerOf } from '../proto/engine.js';
import { ConversionAnswerWriter } from '../src/gateway/answer-json.js';
import { conversionBody } from '../src/gateway/routes.js';

/** A small deterministic generator: the same cases on every run. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const TICKERS: Record<number, string> = { 1: 'UNDY', 3: 'KNAN', 4: 'ZAPP', 5: 'SGO"D', 6: 'naïve', 7: 'a\\b' };
const tickerOf: TickerOf = (s) => TICKERS[s] ?? String(s);

function flat(rnd: () => number, symbols: number[]): number[] {
  const out: number[] = [];
  for (const s of symbols) if (rnd() < 0.8) out.push(s, Math.round((rnd() - 0.5) * 1e9) / (rnd() < 0.2 ? 7 : 1));
  return out;
}

function answer(rnd: () => number, symbols: number[]): ConversionAnswer {
  const a: ConversionAnswer = {
    request_id: `r${Math.floor(rnd() * 1e6)}`,
    op: rnd() < 0.5 ? 'create' : 'redeem',
    etf: 'UNDY',
    amount: Math.floor(rnd() * 1000),
    deltas: flat(rnd, symbols),
    fee: rnd() < 0.5 ? 0 : rnd() * 10,
    basket_version: Math.floor(rnd() * 3),
    holdings: { client_id: Math.floor(rnd() * 100), username: rnd() < 0.1 ? 'tëam "quoted"' : 'team1', seq: Math.floor(rnd() * 1e5), positions: flat(rnd, symbols), cash: (rnd() - 0.5) * 1e7 },
  };
  if (rnd() < 0.3) a.client_request_id = `k-${Math.floor(rnd() * 1e6)}`;
  if (rnd() < 0.2) a.replayed = true;
  if (rnd() < 0.2) a.dry_run = true;
  return a;
}

describe('the conversion answer written from templates', () => {
  it('is exactly the JSON of the general path, over many answers', () => {
    const rnd = random(24);
    const writer = new ConversionAnswerWriter(tickerOf);
    for (let n = 0; n < 2_000; n++) {
      const a = answer(rnd, [1, 3, 4, 5, 6, 7]);
      const withKey = rnd() < 0.5;
      const text = writer.conversion(a, withKey);
      expect(text).not.toBeNull();
      expect(text).toBe(JSON.stringify(conversionBody(a, withKey, tickerOf)));
    }
  });

  it('leaves to the general path what an object would order or merge differently, and values not of their types', () => {
    const writer = new ConversionAnswerWriter(tickerOf);
    const base = answer(random(1), [1, 3, 4]);
    // A symbol without a ticker is named by its number: an object puts such keys first.
    expect(writer.conversion({ ...base, deltas: [...base.deltas, 99, 5] }, false)).toBeNull();
    // Two symbols of one ticker, and `__proto__`, which an object does not keep as a key.
    const dup = new ConversionAnswerWriter((s) => (s === 8 || s === 9 ? 'TWIN' : s === 10 ? '__proto__' : tickerOf(s)));
    expect(dup.conversion({ ...base, deltas: [8, 1] }, false)).not.toBeNull();
    expect(dup.conversion({ ...base, deltas: [8, 1, 9, 2] }, false)).toBeNull();
    expect(dup.conversion({ ...base, deltas: [8, 1] }, false)).toBeNull();
    expect(dup.conversion({ ...base, deltas: [10, 1] }, false)).toBeNull();
    // Not a number, not a list, a field missing, warnings to word.
    expect(writer.conversion({ ...base, deltas: [3, '1' as unknown as number] }, false)).toBeNull();
    expect(writer.conversion({ ...base, deltas: [3] }, false)).toBeNull();
    expect(writer.conversion({ ...base, fee: undefined as unknown as number }, false)).toBeNull();
    expect(writer.conversion({ ...base, client_request_id: 7 as unknown as string }, true)).toBeNull();
    expect(writer.conversion({ ...base, beyond_limit: { limit: 5, symbols: [3] } }, false)).toBeNull();
    // What it does write matches, NaN and all.
    const odd = { ...base, amount: Number.NaN, holdings: { ...base.holdings, cash: Number.POSITIVE_INFINITY } };
    expect(writer.conversion(odd, false)).toBe(JSON.stringify(conversionBody(odd, false, tickerOf)));
  });
});
