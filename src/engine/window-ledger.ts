import { MAX_WINDOW_SECONDS } from '../../proto/rules.js';
import { countDeltas, packDeltas, unpackDeltas } from './delta-column.js';

/** How far back the ledger keeps conversions: the longest window a rule may have. */
export const WINDOW_HORIZON_MS = MAX_WINDOW_SECONDS * 1000;

/** Past this the running totals are taken back to 0, so they stay exact in a double (a day of units is far below it). */
const REBASE_AT = 2 ** 40;

/**
 * One account's accepted conversions for `units_per_window`: units by second
 * of their time, for the last WINDOW_HORIZON_MS. Kept apart from the history
 * ring, which holds refusals too and only its last 1,000 entries: counted
 * from it, a team's refused requests pushed its conversions out of the count,
 * and no window counted more than 1,000 conversions. Built in applyEvent from
 * conversion events alone, so a replay and a snapshot give the same count.
 *
 * An entry holds the time of the latest conversion in its second and a running
 * total of units up to it, so the units after any time are one binary search.
 * Summing a second into one entry counts the earlier ones in it up to a second
 * longer than their own time would: a window is never undercounted.
 */
export class WindowLedger {
  /** Entry i at 2i: its time, then the units converted up to and including it (from `base`); side by side, so an add touches one cache line at each end. */
  private e: Float64Array = new Float64Array(0);
  private cap = 0;
  private head = 0;
  private size = 0;
  /** The running total before the oldest entry kept. */
  private base = 0;
  /** Loaded from a snapshot and not used since: kept as its image until first touched (as History is). */
  private image: WindowLedgerImage | null = null;
  /** The image last taken, while nothing has been added since. */
  private imaged: WindowLedgerImage | null = null;

  get length(): number {
    if (this.image) this.load();
    return this.size;
  }

  private slot(i: number): number {
    const p = this.head + i;
    return p >= this.cap ? p - this.cap : p;
  }

  /** Records an accepted conversion of `units` at `ts` (ms), and forgets what no window can reach any more. */
  add(ts: number, units: number): void {
    if (this.image) this.load();
    this.imaged = null;
    if (this.size > 0) {
      const last = 2 * this.slot(this.size - 1);
      // Not in a later second than the newest (the same one, or a clock stepped back): summed into it, so entries stay in time order.
      if (Math.floor(ts / 1000) <= Math.floor(this.e[last]! / 1000)) {
        if (ts > this.e[last]!) this.e[last] = ts;
        this.e[last + 1]! += units;
        this.prune();
        return;
      }
    }
    if (this.size === this.cap) this.grow();
    const s = 2 * this.slot(this.size);
    this.e[s] = ts;
    this.e[s + 1] = (this.size > 0 ? this.e[2 * this.slot(this.size - 1) + 1]! : this.base) + units;
    this.size++;
    this.prune();
  }

  /** Units converted after `since` (ms): read only. */
  unitsSince(since: number): number {
    if (this.image) this.load();
    const n = this.size;
    if (n === 0) return 0;
    const newest = this.e[2 * this.slot(n - 1) + 1]!;
    // The last entry at or before `since`: every one after it is in the window.
    let lo = 0;
    let hi = n - 1;
    let before = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.e[2 * this.slot(mid)]! <= since) {
        before = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return newest - (before < 0 ? this.base : this.e[2 * this.slot(before) + 1]!);
  }

  private prune(): void {
    const cut = this.e[2 * this.slot(this.size - 1)]! - WINDOW_HORIZON_MS;
    while (this.size > 1 && this.e[2 * this.head]! <= cut) {
      this.base = this.e[2 * this.head + 1]!;
      this.head = this.head + 1 === this.cap ? 0 : this.head + 1;
      this.size--;
    }
    if (this.base >= REBASE_AT) {
      const b = this.base;
      for (let i = 0; i < this.size; i++) this.e[2 * this.slot(i) + 1]! -= b;
      this.base = 0;
    }
  }

  private grow(): void {
    const cap = Math.max(8, this.cap * 2);
    const e = new Float64Array(2 * cap);
    // Oldest first: at most two runs of the ring, [head, cap) then [0, rest).
    const first = Math.min(this.size, this.cap - this.head);
    e.set(this.e.subarray(2 * this.head, 2 * (this.head + first)));
    e.set(this.e.subarray(0, 2 * (this.size - first)), 2 * first);
    this.e = e;
    this.cap = cap;
    this.head = 0;
  }

  /** Entries oldest first: each one's time and its own units (not the running total, so a snapshot packs small numbers). */
  toImage(): WindowLedgerImage {
    if (this.image) return this.image;
    if (this.imaged) return this.imaged;
    const n = this.size;
    const ts = new Float64Array(n);
    const units = new Float64Array(n);
    let prev = this.base;
    for (let i = 0; i < n; i++) {
      const s = 2 * this.slot(i);
      ts[i] = this.e[s]!;
      units[i] = this.e[s + 1]! - prev;
      prev = this.e[s + 1]!;
    }
    return (this.imaged = { n, ts: column(ts), units: column(units) });
  }

  static fromImage(img: WindowLedgerImage): WindowLedger {
    const w = new WindowLedger();
    w.image = img;
    return w;
  }

  private load(): void {
    const img = this.image!;
    this.image = null;
    const n = img.n;
    const cap = Math.max(8, n);
    const ts = uncolumn(img.ts, n);
    const units = uncolumn(img.units, n);
    this.e = new Float64Array(2 * cap);
    let total = 0;
    for (let i = 0; i < n; i++) {
      total += units[i]!;
      this.e[2 * i] = ts[i]!;
      this.e[2 * i + 1] = total;
    }
    this.cap = cap;
    this.head = 0;
    this.size = n;
    this.base = 0;
    this.imaged = img;
  }
}

/** A WindowLedger as a snapshot keeps it: `n` entries, oldest first. */
export interface WindowLedgerImage {
  n: number;
  /** Each column packed as deltas (delta-column.ts), or as Float64 bytes when a value is not a whole number that packs. */
  ts: WindowColumn;
  units: WindowColumn;
}

type WindowColumn = { deltas: Uint8Array } | { raw: Uint8Array };

function column(values: Float64Array): WindowColumn {
  const deltas = packDeltas(values, 1);
  return deltas ? { deltas } : { raw: Buffer.from(values.buffer, values.byteOffset, values.byteLength) };
}

function uncolumn(c: WindowColumn, n: number): Float64Array {
  const out = new Float64Array(n);
  if ('deltas' in c) {
    if (countDeltas(c.deltas) !== n) throw new Error(`window ledger image: ${countDeltas(c.deltas)} values where it says ${n}`);
    unpackDeltas(c.deltas, 1, out);
  } else {
    if (c.raw.byteLength !== n * 8) throw new Error(`window ledger image: ${c.raw.byteLength} bytes where it says ${n} entries`);
    // Copied byte for byte: a decoded buffer need not be aligned for Float64.
    new Uint8Array(out.buffer).set(c.raw);
  }
  return out;
}
