/**
 * Whole-number columns as zigzag varints of each value's difference from the
 * one `stride` places before it (from 0 for the first `stride`). A history's
 * request ids and timestamps climb by little, and its positions after each
 * entry change by a basket's quantities, so most values take a byte or two
 * instead of four or eight. Large classes' snapshots are mostly these columns,
 * and a snapshot is read over NATS at every start: its size is start-up time.
 */

/** Below this, a difference of two values and its zigzag (under 2^53) stay exact. */
const LIMIT = 2 ** 51;

/** Reused between columns: a column is copied out of it once its size is known. */
let scratch = new Uint8Array(1 << 16);

/** `values` packed, or null when one is not a whole number below 2^51 in size, or is -0 (such a column is kept raw). */
export function packDeltas(values: ArrayLike<number>, stride: number): Uint8Array | null {
  const n = values.length;
  // A zigzag under 2^53 takes at most 8 varint bytes.
  if (scratch.length < n * 8) scratch = new Uint8Array(n * 8);
  const out = scratch;
  let p = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v >= LIMIT || v <= -LIMIT || Object.is(v, -0)) return null;
    const d = i >= stride ? v - values[i - stride]! : v;
    let z = d >= 0 ? d * 2 : -d * 2 - 1;
    if (z < 0x80) {
      out[p++] = z;
      continue;
    }
    if (z < 0x10000000) {
      while (z >= 0x80) {
        out[p++] = (z & 0x7f) | 0x80;
        z >>>= 7;
      }
    } else {
      while (z >= 0x80) {
        out[p++] = (z % 0x80) | 0x80;
        z = Math.floor(z / 0x80);
      }
    }
    out[p++] = z;
  }
  return out.slice(0, p);
}

/** How many values `bytes` holds (one per byte without the continuation bit). */
export function countDeltas(bytes: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! < 0x80) n++;
  return n;
}

/**
 * Unpacks `bytes` (packDeltas with the same stride) into `out`: value j goes
 * to out[j - skip], and the first `skip` values are only read (a ring that
 * keeps fewer entries than were saved drops its oldest).
 */
export function unpackDeltas(bytes: Uint8Array, stride: number, out: Float64Array | Int32Array | Uint16Array | Uint8Array, skip = 0): void {
  if (out instanceof Float64Array) return unpackInto(bytes, stride, out, skip);
  // Narrow columns are short (one value per entry): unpacked as numbers, then copied.
  const wide = new Float64Array(out.length);
  unpackInto(bytes, stride, wide, skip);
  out.set(wide);
}

/** One element type only, so the loop stays monomorphic (the positions slab is most of a snapshot's values). */
function unpackInto(bytes: Uint8Array, stride: number, out: Float64Array, skip: number): void {
  // The last value in each of the `stride` lanes: what the next one in that lane differs from.
  const last = new Float64Array(stride);
  let lane = 0;
  let j = -skip;
  const end = bytes.length;
  for (let p = 0; p < end; ) {
    let b = bytes[p++]!;
    let d: number;
    if (b < 0x80) d = (b >>> 1) ^ -(b & 1);
    else {
      let z = b & 0x7f;
      for (let scale = 0x80; b >= 0x80; scale *= 0x80) {
        if (p >= end) throw new Error('delta column ends inside a value');
        b = bytes[p++]!;
        z += (b & 0x7f) * scale;
      }
      d = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    }
    const v = last[lane]! + d;
    last[lane] = v;
    if (++lane === stride) lane = 0;
    if (j >= 0) {
      if (j >= out.length) throw new Error('delta column holds more values than its column');
      out[j] = v;
    }
    j++;
  }
}
