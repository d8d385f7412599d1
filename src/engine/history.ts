import type { ConversionOp } from '../../proto/engine.js';
import type { Delta, JournalEvent } from '../../proto/journal.js';
import { countDeltas, packDeltas, unpackDeltas } from './delta-column.js';

/** Journal events that are audit entries of one account. */
export type AuditEvent = Extract<JournalEvent, { t: 'conversion' } | { t: 'rejected' }> | Extract<JournalEvent, { t: 'account' }>;
type Conversion = Extract<JournalEvent, { t: 'conversion' }>;

/**
 * Decisions kept in memory per account for /history, /requests and retries.
 * Older ones stay in the journal (the operator export reads them all); a
 * retry with a key older than this is treated as new.
 */
export const HISTORY_LIMIT = 1_000;

/** Widest row of the positions-after slab (symbol ids below it); the exchange's and configured ids are far below. */
const SLAB_SYMBOLS = 128;

const OP_OBJECT = 0;
const OP_CREATE = 1;
const OP_REDEEM = 2;

/**
 * One account's decisions, oldest first, in a ring of at most `limit`
 * entries. Compact conversions (the hot path) live in typed columns, with
 * the positions right after each in one slab row, so recording one allocates
 * nothing; other decisions (registrations, refusals, conversions read from
 * version-1 journals) are kept as their event objects. `keys` maps an
 * idempotency key to its request id and loses the key when its entry falls
 * out.
 */
export class History {
  private cap = 0;
  /** Physical index of the oldest entry. */
  private head = 0;
  private size = 0;
  private kind = new Uint8Array(0);
  private rid = new Float64Array(0);
  private tsCol = new Float64Array(0);
  private amount = new Float64Array(0);
  private fee = new Float64Array(0);
  private ver = new Int32Array(0);
  private etf: string[] = [];
  private key: (string | undefined)[] = [];
  private obj: (AuditEvent | undefined)[] = [];
  /** Positions after, `width` per entry (index = symbol id). */
  private width = 0;
  private after = new Float64Array(0);
  /** Positions after in symbols beyond the dense range (rare): per entry, or undefined. */
  private afterExtra: (Delta[] | undefined)[] = [];
  private readonly keyMap = new Map<string, number>();
  /** Loaded from a snapshot and not used since: kept as its image until first touched (most accounts are not, right after a start). */
  private image: HistoryImage | null = null;
  /** The image last taken (or laid out from), while nothing has been recorded since: a snapshot takes it again as it is. */
  private imaged: HistoryImage | null = null;

  constructor(private readonly limit = HISTORY_LIMIT) {}

  /** Idempotency key → request id of its entry. */
  get keys(): ReadonlyMap<string, number> {
    if (this.image) this.load();
    return this.keyMap;
  }

  get length(): number {
    if (this.image) this.load();
    return this.size;
  }

  /** Physical slot of logical entry i (0 = oldest). */
  private slot(i: number): number {
    const p = this.head + i;
    return p >= this.cap ? p - this.cap : p;
  }

  /** Makes room for one more entry: grows up to the limit, then evicts the oldest (and its key). */
  private claim(): number {
    this.imaged = null;
    if (this.size === this.cap && this.cap < this.limit) this.resize(Math.min(this.limit, Math.max(8, this.cap * 2)), this.width);
    if (this.size === this.limit) {
      const s = this.head;
      const k = this.key[s];
      if (k !== undefined && this.keyMap.get(k) === this.rid[s]) this.keyMap.delete(k);
      this.key[s] = undefined;
      this.obj[s] = undefined;
      this.afterExtra[s] = undefined;
      this.head = this.head + 1 === this.cap ? 0 : this.head + 1;
      this.size--;
    }
    const s = this.slot(this.size);
    this.size++;
    return s;
  }

  /** A column's entries oldest first, in a new column of `cap` entries of `per` values: at most two runs of the ring, [head, cap) then [0, rest). */
  private unrolled<T extends Float64Array | Int32Array | Uint8Array>(c: T, make: (n: number) => T, cap: number, per = 1): T {
    const first = Math.min(this.size, this.cap - this.head);
    const out = make(cap * per);
    out.set(c.subarray(this.head * per, (this.head + first) * per));
    if (this.size > first) out.set(c.subarray(0, (this.size - first) * per), first * per);
    return out;
  }

  /** Re-lays the columns out oldest first with a new capacity and row width (rare: growth only). */
  private resize(cap: number, width: number): void {
    const order = Array.from({ length: this.size }, (_, i) => this.slot(i));
    this.kind = this.unrolled(this.kind, (n) => new Uint8Array(n), cap);
    this.rid = this.unrolled(this.rid, (n) => new Float64Array(n), cap);
    this.tsCol = this.unrolled(this.tsCol, (n) => new Float64Array(n), cap);
    this.amount = this.unrolled(this.amount, (n) => new Float64Array(n), cap);
    this.fee = this.unrolled(this.fee, (n) => new Float64Array(n), cap);
    this.ver = this.unrolled(this.ver, (n) => new Int32Array(n), cap);
    const list = <T>(old: T[]): T[] => {
      const next = new Array<T>(cap);
      order.forEach((s, i) => (next[i] = old[s]!));
      return next;
    };
    this.etf = list(this.etf);
    this.key = list(this.key);
    this.obj = list(this.obj);
    this.afterExtra = list(this.afterExtra);
    const after = new Float64Array(cap * width);
    order.forEach((s, i) => after.set(this.after.subarray(s * this.width, s * this.width + Math.min(width, this.width)), i * width));
    this.after = after;
    this.width = width;
    this.cap = cap;
    this.head = 0;
  }

  /** Records a decision kept as its event object. */
  pushEvent(ev: AuditEvent, requestId: number): void {
    if (this.image) this.load();
    const s = this.claim();
    this.kind[s] = OP_OBJECT;
    this.rid[s] = requestId;
    this.tsCol[s] = ev.ts;
    this.obj[s] = ev;
    const k = ev.t === 'account' ? undefined : ev.key;
    this.key[s] = k;
    if (k !== undefined) this.keyMap.set(k, requestId);
  }

  /**
   * Records a compact conversion with the positions right after it: `pos` (by
   * symbol id) and `extra` (symbols beyond it), or `held` (flat [symbol,
   * quantity, ...], as a replayed record carries them).
   */
  pushConversion(ev: Conversion, pos: Float64Array | null, extra: ReadonlyMap<number, number> | null, held?: readonly number[]): void {
    if (this.image) this.load();
    let need = pos ? Math.min(pos.length, SLAB_SYMBOLS) : 0;
    if (held) for (let i = 0; i < held.length; i += 2) if (held[i]! < SLAB_SYMBOLS && held[i]! + 1 > need) need = held[i]! + 1;
    if (need > this.width) this.resize(Math.max(this.cap, 8), need);
    const s = this.claim();
    this.kind[s] = ev.op === 'create' ? OP_CREATE : OP_REDEEM;
    this.rid[s] = ev.requestId;
    this.tsCol[s] = ev.ts;
    this.amount[s] = ev.amount;
    this.fee[s] = ev.fee ?? 0;
    this.ver[s] = ev.basketVersion ?? 0;
    this.etf[s] = ev.etf;
    this.obj[s] = undefined;
    this.key[s] = ev.key;
    if (ev.key !== undefined) this.keyMap.set(ev.key, ev.requestId);
    const w = this.width;
    const row = s * w;
    // Symbols past the slab's width (none but stray ones) go to a list beside it.
    let beyond: Delta[] | undefined;
    if (held) {
      this.after.fill(0, row, row + w);
      for (let i = 0; i < held.length; i += 2) {
        const sym = held[i]!;
        if (sym < w) this.after[row + sym] = held[i + 1]!;
        else (beyond ??= []).push([sym, held[i + 1]!]);
      }
    } else {
      const p = pos!;
      const n = Math.min(p.length, w);
      this.after.set(n === p.length ? p : p.subarray(0, n), row);
      if (n < w) this.after.fill(0, row + n, row + w);
      for (let sym = n; sym < p.length; sym++) if (p[sym] !== 0) (beyond ??= []).push([sym, p[sym]!]);
      if (extra && extra.size > 0) (beyond ??= []).push(...[...extra].sort((a, b) => a[0] - b[0]));
    }
    this.afterExtra[s] = beyond;
  }

  requestIdAt(i: number): number {
    if (this.image) this.load();
    return this.rid[this.slot(i)]!;
  }

  /** Logical index of the entry with this request id (entries are in request-id order), or -1. */
  indexOf(requestId: number): number {
    if (this.image) this.load();
    let lo = 0;
    let hi = this.size - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = this.rid[this.slot(mid)]!;
      if (m === requestId) return mid;
      if (m < requestId) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /**
   * Entry i as its journal event. A compact conversion comes back with
   * `held`, its positions after (flat), so the answer, the audit entry and a
   * snapshot all read it the same way.
   */
  eventAt(i: number, clientId: number): AuditEvent {
    if (this.image) this.load();
    const s = this.slot(i);
    const k = this.kind[s]!;
    if (k === OP_OBJECT) return this.obj[s]!;
    const held: number[] = [];
    const row = s * this.width;
    for (let sym = 0; sym < this.width; sym++) {
      const q = this.after[row + sym]!;
      if (q !== 0) held.push(sym, q);
    }
    for (const [sym, q] of this.afterExtra[s] ?? []) held.push(sym, q);
    const ev: Conversion = {
      t: 'conversion',
      requestId: this.rid[s]!,
      ...(this.key[s] !== undefined ? { key: this.key[s] } : {}),
      op: (k === OP_CREATE ? 'create' : 'redeem') as ConversionOp,
      clientId,
      etf: this.etf[s]!,
      amount: this.amount[s]!,
      ...(this.fee[s] !== 0 ? { fee: this.fee[s]! } : {}),
      ...(this.ver[s] !== 0 ? { basketVersion: this.ver[s]! } : {}),
      held,
      ts: this.tsCol[s]!,
    };
    return ev;
  }

  /**
   * The ring as columns, oldest first, for a snapshot: typed columns as raw
   * bytes, so loading one is a copy per column rather than an object per
   * entry (2,500 accounts' full rings took 8 s to load as event objects).
   */
  toImage(): HistoryImage {
    // Untouched since it was loaded, or since the last snapshot: that image is still exactly it.
    if (this.image) return this.image;
    if (this.imaged) return this.imaged;
    const n = this.size;
    const deltas: DeltaColumn[] = [];
    /** A column packed as deltas (delta-column.ts) when it holds whole numbers only, else as its raw bytes. */
    const pack = (name: DeltaColumn, values: Float64Array | Int32Array | Uint16Array | Uint8Array): Uint8Array => {
      const packed = packDeltas(values, 1);
      if (!packed) return bytesOf(values);
      deltas.push(name);
      return packed;
    };
    const col = <T extends Float64Array | Int32Array | Uint8Array>(name: DeltaColumn, c: T, make: (n: number) => T): Uint8Array => pack(name, this.unrolled(c, make, n));
    const w = this.width;
    const etfTable: string[] = [];
    const etfIndex = new Uint16Array(n);
    const keyIndex: number[] = [];
    const keyText: string[] = [];
    const objects: [number, AuditEvent][] = [];
    const afterExtra: [number, Delta[]][] = [];
    for (let i = 0; i < n; i++) {
      const s = this.slot(i);
      const e = this.etf[s] ?? '';
      let t = etfTable.indexOf(e);
      if (t < 0) t = etfTable.push(e) - 1;
      etfIndex[i] = t;
      const k = this.key[s];
      if (k !== undefined) {
        keyIndex.push(i);
        keyText.push(k);
      }
      const o = this.obj[s];
      if (o !== undefined) objects.push([i, o]);
      const x = this.afterExtra[s];
      if (x !== undefined) afterExtra.push([i, x]);
    }
    // Each symbol's position against its own in the entry before: a row apart.
    const after = this.unrolled(this.after, (k) => new Float64Array(k), n, w);
    const afterDeltas = packDeltas(after, Math.max(1, w));
    if (afterDeltas) deltas.push('after');
    return (this.imaged = {
      n,
      kind: col('kind', this.kind, (k) => new Uint8Array(k)),
      rid: col('rid', this.rid, (k) => new Float64Array(k)),
      ts: col('ts', this.tsCol, (k) => new Float64Array(k)),
      amount: col('amount', this.amount, (k) => new Float64Array(k)),
      fee: col('fee', this.fee, (k) => new Float64Array(k)),
      ver: col('ver', this.ver, (k) => new Int32Array(k)),
      width: w,
      ...(afterDeltas ? { after: afterDeltas } : afterImage(after)),
      etfTable,
      etfIndex: pack('etfIndex', etfIndex),
      keyIndex: pack('keyIndex', Int32Array.from(keyIndex)),
      // Idempotency keys never hold a NUL (CLIENT_REQUEST_ID_PATTERN in proto/http.ts, and the gateway's own).
      keyText: keyText.join('\u0000'),
      objects,
      afterExtra,
      deltas,
    });
  }

  /** A ring from its image (toImage), at most `limit` entries kept (the newest, should the limit have shrunk); laid out when first used. */
  static fromImage(img: HistoryImage, limit = HISTORY_LIMIT): History {
    const h = new History(limit);
    h.image = img;
    return h;
  }

  private load(): void {
    const img = this.image!;
    this.image = null;
    const limit = this.limit;
    const n = img.n;
    const skip = Math.max(0, n - limit);
    // Room to grow, as claim() would leave it: an account is laid out when first used, and that is mostly to record one more entry.
    const kept = n - skip;
    const cap = Math.max(8, Math.min(limit, kept < limit ? kept * 2 : kept));
    this.cap = cap;
    this.size = kept;
    this.head = 0;
    this.width = img.width;
    const packed = new Set(img.deltas ?? []);
    // One copy per column into a ring of `cap`, straight from the decoded bytes (which need not be aligned), or unpacked from its deltas.
    const fit = <T extends Float64Array | Int32Array | Uint8Array>(name: DeltaColumn, bytes: Uint8Array, make: (k: number) => T, per = 1): T => {
      const out = make(cap * per);
      if (packed.has(name)) unpackDeltas(bytes, Math.max(1, per), out, skip * per);
      else {
        const size = out.BYTES_PER_ELEMENT * per;
        new Uint8Array(out.buffer).set(bytes.subarray(skip * size, n * size));
      }
      return out;
    };
    this.kind = fit('kind', img.kind, (k) => new Uint8Array(k));
    this.rid = fit('rid', img.rid, (k) => new Float64Array(k));
    this.tsCol = fit('ts', img.ts, (k) => new Float64Array(k));
    this.amount = fit('amount', img.amount, (k) => new Float64Array(k));
    this.fee = fit('fee', img.fee, (k) => new Float64Array(k));
    this.ver = fit('ver', img.ver, (k) => new Int32Array(k));
    if (img.afterInt32) {
      const narrow = fit('after', img.afterInt32, (k) => new Int32Array(k), img.width);
      this.after = Float64Array.from(narrow);
    } else this.after = fit('after', img.after!, (k) => new Float64Array(k), img.width);
    const etfIndex = packed.has('etfIndex') ? unpacked(img.etfIndex, Uint16Array) : typed(img.etfIndex, Uint16Array);
    this.etf = new Array<string>(cap);
    for (let i = skip; i < n; i++) this.etf[i - skip] = img.etfTable[etfIndex[i]!]!;
    this.key = new Array<string | undefined>(cap);
    this.obj = new Array<AuditEvent | undefined>(cap);
    this.afterExtra = new Array<Delta[] | undefined>(cap);
    const keyIndex = packed.has('keyIndex') ? unpacked(img.keyIndex, Int32Array) : typed(img.keyIndex, Int32Array);
    const keyText = keyIndex.length > 0 ? img.keyText.split('\u0000') : [];
    for (let j = 0; j < keyIndex.length; j++) {
      const i = keyIndex[j]!;
      if (i < skip) continue;
      this.key[i - skip] = keyText[j];
      this.keyMap.set(keyText[j]!, this.rid[i - skip]!);
    }
    for (const [i, ev] of img.objects) if (i >= skip) this.obj[i - skip] = ev;
    for (const [i, d] of img.afterExtra) if (i >= skip) this.afterExtra[i - skip] = d;
    // Laid out whole, it is still exactly its image until something is recorded.
    if (skip === 0) this.imaged = img;
  }
}

/** A History as a snapshot keeps it (History.toImage). */
export interface HistoryImage {
  n: number;
  /** Typed columns, oldest entry first: packed as deltas when named in `deltas`, else as their bytes (little-endian, this machine's layout). */
  kind: Uint8Array;
  rid: Uint8Array;
  ts: Uint8Array;
  amount: Uint8Array;
  fee: Uint8Array;
  ver: Uint8Array;
  width: number;
  /** Positions after, `width` per entry: packed as deltas (each against the same symbol's in the entry before) when named in `deltas`; else as Int32 when every one is a whole number that fits, else Float64. */
  after?: Uint8Array;
  afterInt32?: Uint8Array;
  /** Each entry's ETF as an index (Uint16) into the table. */
  etfTable: string[];
  etfIndex: Uint8Array;
  /** The entries with an idempotency key (Int32 indexes), and their keys joined by NUL. */
  keyIndex: Uint8Array;
  keyText: string;
  /** [entry index, value] for the entries that have one. */
  objects: [number, AuditEvent][];
  afterExtra: [number, Delta[]][];
  /** The columns packed as deltas (src/engine/delta-column.ts); absent in images from before (snapshot version 4): none. */
  deltas?: DeltaColumn[];
}

type DeltaColumn = 'kind' | 'rid' | 'ts' | 'amount' | 'fee' | 'ver' | 'after' | 'etfIndex' | 'keyIndex';

function afterImage(after: Float64Array): Pick<HistoryImage, 'after' | 'afterInt32'> {
  for (let i = 0; i < after.length; i++) {
    const v = after[i]!;
    if ((v | 0) !== v) return { after: bytesOf(after) };
  }
  return { afterInt32: bytesOf(Int32Array.from(after)) };
}

const bytesOf = (a: Float64Array | Int32Array | Uint16Array | Uint8Array): Uint8Array => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** A whole typed column from its deltas. */
function unpacked<T extends Int32Array | Uint16Array>(bytes: Uint8Array, kind: { new (length: number): T }): T {
  const out = new kind(countDeltas(bytes));
  unpackDeltas(bytes, 1, out);
  return out;
}

/** A typed column from its bytes: copied, since a decoded buffer need not be aligned for its element size. */
function typed<T extends Float64Array | Int32Array | Uint16Array | Uint8Array>(bytes: Uint8Array, kind: { new (buffer: ArrayBuffer): T; BYTES_PER_ELEMENT: number }): T {
  return new kind(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
}
