import { describe, expect, it } from 'vitest';
import { countDeltas, packDeltas, unpackDeltas } from '../src/engine/delta-column.js';

/** History columns packed as zigzag varints of their differences (snapshot version 5). */
describe('delta columns', () => {
  const roundTrip = (values: number[], stride = 1) => {
    const bytes = packDeltas(values, stride)!;
    expect(countDeltas(bytes)).toBe(values.length);
    const out = new Float64Array(values.length);
    unpackDeltas(bytes, stride, out);
    return [...out];
  };

  it('gives back every whole number exactly, from 0 to ±(2^51 - 1), in lanes of any stride', () => {
    const edge = [0, 1, -1, 63, 64, -64, -65, 2 ** 27, 2 ** 28, -(2 ** 28), 2 ** 31, 2 ** 40 + 3, 2 ** 51 - 1, -(2 ** 51 - 1), 0, 1_764_000_000_123];
    expect(roundTrip(edge)).toEqual(edge);
    expect(roundTrip(edge, 4)).toEqual(edge);
    expect(roundTrip([-(2 ** 51 - 1), 2 ** 51 - 1, -(2 ** 51 - 1)])).toEqual([-(2 ** 51 - 1), 2 ** 51 - 1, -(2 ** 51 - 1)]);
    expect(roundTrip([])).toEqual([]);
  });

  it('takes a byte for a small change: a row against the row before it', () => {
    const rows = [100_000, -250, 7, 100_001, -251, 7, 100_002, -252, 7];
    expect(packDeltas(rows, 3)!.byteLength).toBe(3 + 2 + 1 + 6);
  });

  it('refuses what it cannot give back exactly: fractions, -0, 2^51 and beyond', () => {
    expect(packDeltas([1, 2.5], 1)).toBeNull();
    expect(packDeltas([1, -0], 1)).toBeNull();
    expect(packDeltas([2 ** 51], 1)).toBeNull();
    expect(packDeltas([-(2 ** 51)], 1)).toBeNull();
    expect(packDeltas([NaN], 1)).toBeNull();
    expect(packDeltas([Infinity], 1)).toBeNull();
  });

  it('drops the first values when asked, still counting the later ones from them', () => {
    const values = [5, 50, 6, 60, 7, 70, 8, 80];
    const out = new Int32Array(4);
    unpackDeltas(packDeltas(values, 2)!, 2, out, 4);
    expect([...out]).toEqual([7, 70, 8, 80]);
  });

  it('throws on a column cut inside a value or holding more values than asked for', () => {
    const bytes = packDeltas([1, 2 ** 40], 1)!;
    expect(() => unpackDeltas(bytes.subarray(0, bytes.length - 1), 1, new Float64Array(2))).toThrow(/ends inside a value/);
    expect(() => unpackDeltas(bytes, 1, new Float64Array(1))).toThrow(/more values/);
  });
});
