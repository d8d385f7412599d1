import { Packr } from 'msgpackr';
import type { ClaimedFills, Delta } from '../../proto/journal.js';
import { addPosition, emptyState, newAccount, positionList, unclaimedFills, type Account, type AccountCapture, type AuditEvent, type EngineState } from './state.js';
import type { Instruments } from '../config/baskets.js';
import { FillsSeen, type FillsSeenImage } from './fills-seen.js';
import { History, type HistoryImage } from './history.js';
import { WindowLedger, type WindowLedgerImage } from './window-ledger.js';

/**
 * 6: a sequence of msgpack values, the snapshot without its accounts first,
 * then its accounts in slices (packed a slice at a time, between commands).
 * 5: one value; history columns packed as deltas where they hold whole
 * numbers (src/engine/delta-column.ts; about a third of the bytes). 4 (each
 * account's history as raw columns, History.toImage), 3 (history as events,
 * compact conversions with flat `held`) and 2 (every conversion with its
 * deltas and `after`) still load.
 */
export const SNAPSHOT_VERSION = 6;
const SNAPSHOT_VERSIONS_READ: readonly number[] = [2, 3, 4, 5, 6];

/** The snapshot in force cannot be used; start-up rebuilds from the journal instead. */
export class SnapshotUnusable extends Error {}

/**
 * Snapshots are read only by the engine, so they use msgpackr records: the
 * thousands of same-shaped history entries share one structure definition,
 * which makes the image smaller and several times faster to write and read
 * than self-describing maps (the wire codec in proto/codec.ts keeps maps for
 * other languages' sake).
 */
export const snapshotPackr = new Packr({ useRecords: true, structuredClone: false, int64AsType: 'number' });

interface AccountImage {
  clientId: number;
  username: string;
  source: Account['source'];
  /** Registered accounts only: roster passwords are hashed from the roster at each start. */
  passwordHash?: string;
  positions: Delta[];
  /** Absent in snapshots from before cash was kept: 0. */
  cash?: number;
  version: number;
  /** Versions 2 and 3. */
  history?: AuditEvent[];
  /** Versions 4 and 5. */
  historyImage?: HistoryImage;
  /** Account.window (absent in older snapshots: an engine start replays instead, restoreSnapshot `complete`). */
  window?: WindowLedgerImage;
}

export interface EngineSnapshot {
  v: number;
  journalSeq: number;
  fillSeq: number;
  requestSeq: number;
  maxClientId: number;
  takenAt: number;
  /** Versions 2 to 5; from 6 the accounts follow the snapshot as slices (arrays of AccountImage). */
  accounts?: AccountImage[];
  /** Version 6: how many slices of accounts follow. */
  slices?: number;
  /** Operator halts in force (absent in older snapshots: none). */
  halts?: [string, { reason: string; by: string; since: number }][];
  /** The operator's rules (absent: the config's). */
  rules?: EngineState['rules'];
  /** The baskets file's baskets as journaled (absent in version 2: none). */
  configBaskets?: EngineState['configBaskets'];
  /** The operator's basket versions (absent: none). */
  baskets?: [string, { version: number; from: number; by: string; components: Delta[] }[]][];
  /** EngineState.exchangeSession (absent in older snapshots: 0, unknown until the next marker). */
  exchangeSession?: number;
  /** EngineState.unclaimed by client_id (absent in older snapshots: an engine start replays instead, restoreSnapshot `complete`). */
  unclaimed?: [number, ClaimedFills][];
  /** EngineState.fillsSeen (absent in older snapshots: an engine start replays instead, restoreSnapshot `complete`). */
  fillsSeen?: FillsSeenImage;
  /** EngineState.names (absent in older snapshots: none, as no engine that wrote them journaled any). */
  names?: [string, number][];
  /** EngineState.lastReset, null without one (absent in older snapshots: an engine start replays instead, restoreSnapshot `complete`). */
  lastReset?: EngineState['lastReset'];
}

/** Serializes the state as the replay of `journalSeq` (which may be ahead of what is durable yet: see the actor). */
export function takeSnapshot(state: EngineState, journalSeq: number, now: number): Uint8Array {
  return Buffer.concat(snapshotParts(state, journalSeq, now));
}

/** The same in one go, as the parts SnapshotStore.save takes (no copy of the whole). */
export function snapshotParts(state: EngineState, journalSeq: number, now: number): Uint8Array[] {
  const capture = new SnapshotCapture(state, journalSeq, now);
  capture.step(Infinity);
  capture.pack(Infinity);
  return capture.parts();
}

const accountImage = (a: Account): AccountImage => ({
  clientId: a.clientId,
  username: a.username,
  source: a.source,
  ...(a.source === 'register' ? { passwordHash: a.passwordHash } : {}),
  positions: positionList(a),
  cash: a.cash,
  version: a.version,
  historyImage: a.history.toImage(),
  window: a.window.toImage(),
});

/**
 * A snapshot taken a few accounts at a time while the engine goes on (a
 * shard of 2,500 teams took 0.7 s to image in one go, answering nothing
 * meanwhile). It is the state as it stood when the capture began: the rest is
 * copied at once, and an account about to change (state.capture.before, called
 * by every change to an account) is imaged first, as it stood. Accounts made
 * after the start are not in it: their events come after its journal sequence.
 */
export class SnapshotCapture implements AccountCapture {
  private readonly order: Account[];
  private readonly waiting: Set<Account>;
  private readonly images = new Map<Account, AccountImage>();
  private readonly head: EngineSnapshot;
  private readonly packed: Uint8Array[] = [];
  private packedUpTo = 0;

  constructor(state: EngineState, journalSeq: number, now: number) {
    this.order = [...state.accounts.values()];
    this.waiting = new Set(this.order);
    // Copies: halts change in place, and basket versions and config baskets are appended to.
    this.head = {
      v: SNAPSHOT_VERSION,
      journalSeq,
      fillSeq: state.fillSeq,
      requestSeq: state.requestSeq,
      maxClientId: state.maxClientId,
      takenAt: now,
      slices: Math.ceil(this.order.length / SLICE_ACCOUNTS),
      halts: [...state.halts],
      rules: state.rules,
      baskets: [...state.baskets].map(([etf, versions]) => [etf, [...versions]]),
      configBaskets: [...state.configBaskets],
      exchangeSession: state.exchangeSession,
      // Copied now: fills for these ids go on arriving while the accounts are imaged.
      unclaimed: [...state.unclaimed.keys()].map((id) => [id, unclaimedFills(state, id)!]),
      fillsSeen: state.fillsSeen.toImage(),
      names: [...state.names],
      lastReset: state.lastReset,
    };
  }

  before(acc: Account): void {
    if (this.waiting.delete(acc)) this.images.set(acc, accountImage(acc));
  }

  /** Images up to `n` more accounts; true once every one is. */
  step(n: number): boolean {
    for (const acc of this.waiting) {
      if (n-- <= 0) return false;
      this.before(acc);
    }
    return true;
  }

  /** Once every account is imaged: packs up to `n` more slices of SLICE_ACCOUNTS; true once all are. */
  pack(n: number): boolean {
    if (this.waiting.size > 0) throw new Error(`snapshot capture: ${this.waiting.size} accounts not imaged yet`);
    if (this.packed.length === 0) this.packed.push(snapshotPackr.pack(this.head));
    while (this.packedUpTo < this.order.length) {
      if (n-- <= 0) return false;
      const slice = this.order.slice(this.packedUpTo, this.packedUpTo + SLICE_ACCOUNTS).map((a) => this.images.get(a)!);
      this.packedUpTo += slice.length;
      // Into a buffer of about its size: msgpackr's own, grown as it fills, is copied over and over (40% of packing 2,500 teams in one go).
      snapshotPackr.useBuffer(Buffer.allocUnsafe(4096 + slice.reduce((k, a) => k + roughBytes(a), 0)));
      this.packed.push(snapshotPackr.pack(slice));
    }
    return true;
  }

  /** The snapshot's bytes, in order, once pack() said it is done: the snapshot is their concatenation. */
  parts(): Uint8Array[] {
    if (this.packedUpTo < this.order.length || this.packed.length === 0) throw new Error('snapshot capture: not packed yet');
    return this.packed;
  }
}

/** Accounts per packed slice of a snapshot: a few milliseconds of packing at full histories. */
const SLICE_ACCOUNTS = 32;

/** About what an account's image packs to (a little more): its binary columns and keys, and a margin for the rest. */
function roughBytes(a: AccountImage): number {
  let n = 256 + a.username.length + (a.passwordHash?.length ?? 0) + 24 * a.positions.length;
  const h = a.historyImage;
  if (h) {
    for (const col of [h.kind, h.rid, h.ts, h.amount, h.fee, h.ver, h.after, h.afterInt32, h.etfIndex, h.keyIndex]) n += (col?.byteLength ?? 0) + 8;
    n += h.keyText.length + 256 * (h.objects.length + h.afterExtra.length) + 64 * h.etfTable.length;
  }
  const w = a.window;
  if (w) for (const col of [w.ts, w.units]) n += ('deltas' in col ? col.deltas : col.raw).byteLength + 16;
  return n;
}

/**
 * `instruments`: the config, whose baskets are version 0 (see emptyState).
 * `complete`: refuse (SnapshotUnusable) a snapshot taken before the engine
 * kept what it keeps now, so that a start replays the journal and the fill
 * stream instead of starting without it: fills for client_ids no account had
 * (EngineState.unclaimed), which a roster line added later claims; the
 * seqs of the fills applied (EngineState.fillsSeen); each account's accepted
 * conversions for units_per_window (Account.window); the last exchange reset
 * (EngineState.lastReset).
 */
export function restoreSnapshot(bytes: Uint8Array, instruments?: Instruments, opts: { complete?: boolean } = {}): EngineState {
  const [snap, ...slices] = snapshotPackr.unpackMultiple(bytes) as [EngineSnapshot, ...AccountImage[][]];
  if (!SNAPSHOT_VERSIONS_READ.includes(snap.v)) throw new Error(`snapshot version ${snap.v} is not one of ${SNAPSHOT_VERSIONS_READ.join(', ')}`);
  if (opts.complete && snap.unclaimed === undefined) {
    throw new SnapshotUnusable('it was taken before fills for client_ids without an account were kept: the journal and the fill stream are replayed to find them');
  }
  if (opts.complete && snap.fillsSeen === undefined) {
    throw new SnapshotUnusable("it was taken before the exchange seqs of applied fills were kept: the journal and the fill stream are replayed to find them");
  }
  // Where the requests stood at it is known only to a replay: the streams hold the marker, not the moment it was applied.
  if (opts.complete && snap.lastReset === undefined) {
    throw new SnapshotUnusable('it was taken before the last exchange reset was kept: the journal and the fill stream are replayed to find it');
  }
  if (snap.v >= 6 && slices.length !== snap.slices) throw new SnapshotUnusable(`it says ${snap.slices} slices of accounts and holds ${slices.length}`);
  const accounts = snap.v >= 6 ? slices.flat() : (snap.accounts ?? []);
  // Started without them, every team's units_per_window would count from 0 again.
  if (opts.complete && accounts.some((a) => a.window === undefined)) {
    throw new SnapshotUnusable("it was taken before each team's accepted conversions were kept for units_per_window: the journal is replayed to count them");
  }
  const state = emptyState(instruments);
  state.journalSeq = snap.journalSeq;
  state.fillSeq = snap.fillSeq;
  state.requestSeq = snap.requestSeq;
  state.maxClientId = snap.maxClientId;
  state.halts = new Map(snap.halts ?? []);
  state.rules = snap.rules ?? null;
  state.baskets = new Map(snap.baskets ?? []);
  for (const [etf, versions] of state.baskets) for (const v of versions) state.catalog.add(etf, v.version, v.from, v.components);
  state.configBaskets = snap.configBaskets ?? [];
  state.exchangeSession = snap.exchangeSession ?? 0;
  if (snap.fillsSeen) state.fillsSeen = FillsSeen.fromImage(snap.fillsSeen);
  for (const [id, u] of snap.unclaimed ?? []) state.unclaimed.set(id, { pos: new Map(u.positions), cash: u.cash, fills: u.fills });
  state.names = new Map(snap.names ?? []);
  state.lastReset = snap.lastReset ?? null;
  for (const c of state.configBaskets) state.catalog.addConfig(c.baskets, c.from);
  for (const img of accounts) {
    const acc = newAccount(img.clientId, img.username, img.passwordHash ?? '', img.source);
    for (const [symbol, q] of img.positions) addPosition(acc, symbol, q);
    acc.cash = img.cash ?? 0;
    acc.version = img.version;
    if (img.historyImage) acc.history = History.fromImage(img.historyImage);
    if (img.window) acc.window = WindowLedger.fromImage(img.window);
    for (const ev of img.history ?? []) {
      if (ev.t === 'conversion' && !ev.deltas) acc.history.pushConversion(ev, null, null, ev.held ?? []);
      else acc.history.pushEvent(ev, ev.t === 'account' ? (ev.requestId ?? 0) : ev.requestId);
    }
    state.accounts.set(acc.clientId, acc);
    state.byUsername.set(acc.username, acc);
  }
  return state;
}
