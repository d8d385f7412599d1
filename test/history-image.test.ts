import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { History, type HistoryImage } from '../src/engine/history.js';
import { snapshotPackr } from '../src/engine/snapshot.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { conversion, fillHistory, type Conversion } from './fixtures/history-script.js';

/** A history ring through its snapshot image (History.toImage / fromImage): the same entries, keys and eviction after. */
const filled = (limit: number, entries: number): History => fillHistory(new History(limit), entries);

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

  it('grows and evicts after a load as a ring that was never imaged does', () => {
    for (const start of [3, 30]) {
      const h = filled(50, start);
      const back = History.fromImage(h.toImage(), 50);
      for (let r = start + 1; r <= start + 40; r++) {
        const pos = new Float64Array(16);
        pos[3] = r;
        for (const ring of [h, back]) ring.pushConversion(conversion(r, `k${r}`), pos, null);
      }
      expect(entries(back)).toEqual(entries(h));
      expect([...back.keys].sort()).toEqual([...h.keys].sort());
    }
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

  it('is laid out only when used, and images as it did until something is recorded', () => {
    const img = filled(50, 60).toImage();
    const untouched = History.fromImage(img, 50);
    expect(untouched.toImage()).toBe(img);
    // Read (laid out), not changed: the same image.
    const read = History.fromImage(img, 50);
    expect(read.keys.get('k59')).toBe(59);
    expect(read.toImage()).toBe(img);
    // One more entry: a new image, taken once, then kept until the next entry.
    read.pushConversion(conversion(61, 'k61'), new Float64Array(16), null);
    const next = read.toImage();
    expect(next).not.toBe(img);
    expect(read.toImage()).toBe(next);
    expect(entries(History.fromImage(next, 50))).toEqual(entries(read));
    // Laid out from an image with more entries than its limit: not that image any more.
    const shrunk = History.fromImage(img, 20);
    expect(shrunk.length).toBe(20);
    expect(shrunk.toImage()).not.toBe(img);
    expect(shrunk.toImage().n).toBe(20);
  });
});

describe('history images, packed', () => {
  it('packs whole-number columns as deltas, keeps a column with fractions raw, and loads both to the same entries', () => {
    const h = new History(10);
    const pos = new Float64Array(16);
    for (let r = 1; r <= 8; r++) {
      pos[3] = r * 1_000_003;
      pos[4] = r % 2 ? 2.5 : -7;
      h.pushConversion({ ...conversion(r, `k${r}`), fee: r === 4 ? 0.25 : 1 }, pos, null);
    }
    const img = h.toImage();
    expect(img.deltas).toEqual(expect.arrayContaining(['kind', 'rid', 'ts', 'amount', 'ver', 'etfIndex', 'keyIndex']));
    expect(img.deltas).not.toContain('fee');
    expect(img.deltas).not.toContain('after');
    expect(entries(History.fromImage(structuredClone(img), 10))).toEqual(entries(h));
    // Request ids and timestamps one apart take a byte each, not eight.
    expect(img.rid.byteLength).toBe(8);
    expect(img.ts.byteLength).toBe(13);
  });

  it('loads an image written before packing (snapshot version 4) to the same entries', () => {
    // Written by test/fixtures/gen-history-v4.ts at commit 3b4c10d from filled(50, 137).
    const fixture = JSON.parse(readFileSync(join(PROJECT_ROOT, 'test/fixtures/history-image-v4.json'), 'utf8')) as { image: string; entries: unknown[] };
    const img = snapshotPackr.unpack(Buffer.from(fixture.image, 'base64')) as HistoryImage;
    expect(img.deltas).toBeUndefined();
    const back = History.fromImage(img, 50);
    expect(entries(back)).toEqual(fixture.entries);
    expect(entries(back)).toEqual(entries(filled(50, 137)));
    expect(back.keys.get('k137')).toBe(137);
  });
});
