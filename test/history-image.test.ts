import { describe, expect, it } from 'vitest';
import { History } from '../src/engine/history.js';
import type { JournalEvent } from '../proto/journal.js';

/** A history ring through its snapshot image (History.toImage / fromImage): the same entries, keys and eviction after. */
type Conversion = Extract<JournalEvent, { t: 'conversion' }>;
const conversion = (requestId: number, key?: string): Conversion => ({
  t: 'conversion',
  requestId,
  ...(key ? { key } : {}),
  op: requestId % 2 ? 'create' : 'redeem',
  clientId: 7,
  etf: 'UNDY',
  amount: requestId % 5 + 1,
  ...(requestId % 3 === 0 ? { fee: 2, basketVersion: 1 } : {}),
  ts: 1_700_000_000_000 + requestId,
});

function filled(limit: number, entries: number): History {
  const h = new History(limit);
  for (let r = 1; r <= entries; r++) {
    if (r % 7 === 0) h.pushEvent({ t: 'rejected', requestId: r, key: `k${r}`, kind: 'create', clientId: 7, etf: 'UNDY', amount: 1, error: { code: 'insufficient_holdings', message: 'no' }, ts: r }, r);
    else {
      const pos = new Float64Array(16);
      pos[3] = r;
      pos[13] = -r;
      // A stray symbol beyond the slab now and then.
      h.pushConversion(conversion(r, r % 2 ? `k${r}` : undefined), pos, r % 11 === 0 ? new Map([[5000, r]]) : null);
    }
  }
  return h;
}

const entries = (h: History) => Array.from({ length: h.length }, (_, i) => h.eventAt(i, 7));

describe('history images', () => {
  it('round-trips a wrapped ring: entries, keys and lookups', () => {
    const h = filled(50, 137);
    const back = History.fromImage(structuredClone(h.toImage()), 50);
    expect(entries(back)).toEqual(entries(h));
    expect([...back.keys]).toEqual(expect.arrayContaining([...h.keys]));
    expect(back.keys.size).toBe(h.keys.size);
    expect(back.indexOf(137)).toBe(h.indexOf(137));
    expect(back.indexOf(80)).toBe(-1);
  });

  it('keeps evicting oldest entries and their keys after a load', () => {
    const h = filled(50, 60);
    const back = History.fromImage(h.toImage(), 50);
    for (let r = 61; r <= 70; r++) back.pushConversion(conversion(r, `k${r}`), new Float64Array(16), null);
    expect(back.length).toBe(50);
    expect(back.requestIdAt(0)).toBe(21);
    expect(back.keys.has('k11')).toBe(false);
    expect(back.keys.get('k21')).toBe(21);
    expect(back.keys.get('k69')).toBe(69);
  });

  it('keeps the newest entries when the limit shrank', () => {
    const h = filled(50, 50);
    const back = History.fromImage(h.toImage(), 20);
    expect(back.length).toBe(20);
    expect(entries(back)).toEqual(entries(h).slice(30));
    expect(back.keys.has('k29')).toBe(false);
  });

  it('keeps positions that are not whole numbers, or beyond 32 bits, exactly', () => {
    const h = new History(10);
    const pos = new Float64Array(16);
    pos[3] = 2.5;
    pos[4] = 2 ** 40;
    h.pushConversion(conversion(1), pos, null);
    const back = History.fromImage(h.toImage(), 10);
    expect(back.eventAt(0, 7)).toEqual(h.eventAt(0, 7));
    expect((back.eventAt(0, 7) as Conversion).held).toEqual([3, 2.5, 4, 2 ** 40]);
  });

  it('is laid out only when used: an untouched history snapshots as the image it came from', () => {
    const img = filled(50, 60).toImage();
    const untouched = History.fromImage(img, 50);
    expect(untouched.toImage()).toBe(img);
    const touched = History.fromImage(img, 50);
    expect(touched.keys.get('k59')).toBe(59);
    expect(touched.toImage()).not.toBe(img);
    expect(touched.toImage()).toEqual(img);
  });
});
