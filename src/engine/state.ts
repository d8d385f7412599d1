import type { ClaimedFills, Delta, JournalEvent } from '../../proto/journal.js';
import type { ConversionRules } from '../../proto/rules.js';
import type { Instruments } from '../config/baskets.js';
import { Catalog, type CompiledBasket, type ConfigBaskets } from './catalog.js';
import { History, type AuditEvent } from './history.js';
import { FillsSeen } from './fills-seen.js';
import { WindowLedger } from './window-ledger.js';
import type { FlatPositions, RosterRefusal, ScoreboardFailing } from '../../proto/engine.js';

export { HISTORY_LIMIT, type AuditEvent } from './history.js';

export interface Account {
  clientId: number;
  username: string;
  /** bcrypt hash; never the password. */
  passwordHash: string;
  /**
   * A roster account whose line is not in the file (taken out, or refused):
   * it can neither sign in nor convert, so a request a gateway let through
   * just before it heard (SignInChanges) changes nothing. Not persisted: every
   * start reads the file again.
   */
  closed: boolean;
  source: 'register' | 'roster';
  /**
   * Signed quantity by symbol id (dense: ids are small integers from the
   * instruments config); read and change it through position/addPosition.
   * A zero is an absent position.
   */
  pos: Float64Array;
  /** Positions in symbol ids at or beyond DENSE_SYMBOLS (only a stray fill makes one); null while none. */
  extra: Map<number, number> | null;
  /** Price units: fills move it by quantity × price the other way, conversion fees take from it. */
  cash: number;
  /** +1 per change of this account's positions, for holdings streams. */
  version: number;
  /** The account's decisions (its registration, creates and redeems), oldest first, at most HISTORY_LIMIT; keys by idempotency key. */
  history: History;
  /** Its accepted conversions' units by second, for `units_per_window`: refusals and the history's limit do not touch it. */
  window: WindowLedger;
  /** Its positions as answers list them, at `version`: built once per change, shared by the reply, the holdings notice and reads (frozen). */
  view: { version: number; positions: FlatPositions } | null;
}

/** Everything the engine knows. Mutated only by apply* below, which the actor alone calls. */
export interface EngineState {
  accounts: Map<number, Account>;
  byUsername: Map<string, Account>;
  /** Highest client_id in use: registrations take the next one. */
  maxClientId: number;
  /** Stream sequence of the last fill applied from the fill stream. */
  fillSeq: number;
  /** Stream sequence of the last journal batch applied. */
  journalSeq: number;
  /** Last engine request id handed out. */
  requestSeq: number;
  /** Conversion halts in force, by ETF name ('*': all), from the operator's journaled commands. */
  halts: Map<string, { reason: string; by: string; since: number }>;
  /** Basket versions the operator set, per ETF, oldest first. */
  baskets: Map<string, { version: number; from: number; by: string; components: Delta[] }[]>;
  /** The baskets file's baskets as journaled (config_baskets), each with the first request id it applies to. */
  configBaskets: { from: number; baskets: ConfigBaskets }[];
  /** Every basket version compiled (the config's and the operator's): not persisted, rebuilt from the above and the config. */
  catalog: Catalog;
  /** The operator's rules, once set (journaled): they replace the config's. */
  rules: { rules: ConversionRules; by: string; ts: number } | null;
  /** A snapshot being taken (src/engine/snapshot.ts): told before any account changes. */
  capture: AccountCapture | null;
  /**
   * The exchange session of the last marker in the fill stream (0: none yet, or a snapshot from before this was
   * kept). A fill stored after it under an older session's msg id is stale: a second bridge (the standby) still
   * following the old session while the bridge began the new one. Applied, it would count twice.
   */
  exchangeSession: number;
  /** The exchange seqs of the fills applied, per session of their msg ids: a copy stored later is skipped (fills-seen.ts). */
  fillsSeen: FillsSeen;
  /**
   * The last exchange reset applied (null: none), as holdings reads report it (proto/engine.ts LastReset): when the
   * fill stream stored its marker (ms), and requestSeq as it stood then. Both come from the streams, not the clock
   * of the moment, so a replay of the journal and the fill stream gives them back as the engine had them.
   */
  lastReset: { ts: number; requestSeq: number } | null;
  /**
   * Fills for client_ids no account has, since the last reset (at most
   * MAX_UNCLAIMED ids): a roster account added later that names one of these
   * ids takes them as it opens (JournalEvent `claimed`), so a team put on the
   * roster after it began trading starts from the exchange's books.
   */
  unclaimed: Map<number, Unclaimed>;
  /** Roster lines refused at the last reading of the file (not persisted: every start reads the file again). */
  rosterRefused: RosterRefusal[];
  /**
   * Usernames this shard decides that another shard's roster account holds, with its client_id (journaled `name`
   * events): /register refuses them, as it refuses the names of this shard's own accounts.
   */
  names: Map<string, number>;
  /** The scoreboard file's writes failing now (not persisted: a start rewrites it from the journal). */
  scoreboardFailing: ScoreboardFailing | null;
}

/** One client_id's fills heard before any account had it. */
export interface Unclaimed {
  /** Net quantity by symbol id; a zero is dropped. */
  pos: Map<number, number>;
  cash: number;
  fills: number;
}

/**
 * Client_ids whose fills are kept for a later account. The exchange clears
 * its market makers and bots too, a handful of ids; a bound keeps a flood of
 * ids from growing memory (further ids are only counted, as before).
 */
export const MAX_UNCLAIMED = 10_000;

/** What a new account with this client_id would claim (JournalEvent `claimed`), or undefined when no fill was heard for it. */
export function unclaimedFills(state: EngineState, clientId: number): ClaimedFills | undefined {
  const u = state.unclaimed.get(clientId);
  if (!u) return undefined;
  return { positions: [...u.pos].sort((a, b) => a[0] - b[0]), cash: u.cash, fills: u.fills };
}

/** What must see an account as it was before it changes. */
export interface AccountCapture {
  before(acc: Account): void;
}

/** The key of a halt of every ETF in EngineState.halts. */
export const ALL_ETFS = '*';

/** Symbol ids below this are kept in each account's dense array; the exchange's and the config's are far below it. */
export const DENSE_SYMBOLS = 1024;
const INITIAL_SYMBOLS = 16;

/**
 * `instruments`: the config whose baskets are version 0. Replaying compact
 * conversion records needs it (their deltas come from the basket version);
 * decide binds its config itself.
 */
export function emptyState(instruments?: Instruments): EngineState {
  const catalog = new Catalog();
  if (instruments) catalog.bindConfig(instruments);
  return { accounts: new Map(), byUsername: new Map(), maxClientId: 0, fillSeq: 0, journalSeq: 0, requestSeq: 0, halts: new Map(), baskets: new Map(), configBaskets: [], catalog, rules: null, capture: null, exchangeSession: 0, fillsSeen: new FillsSeen(), lastReset: null, unclaimed: new Map(), rosterRefused: [], names: new Map(), scoreboardFailing: null };
}

/** Binds the config's baskets (version 0) to a state that does not have them yet. */
export function bindInstruments(state: EngineState, instruments: Instruments): void {
  if (state.catalog.instruments !== instruments) state.catalog.bindConfig(instruments);
}

export function newAccount(clientId: number, username: string, passwordHash: string, source: Account['source']): Account {
  return { clientId, username, passwordHash, closed: false, source, pos: new Float64Array(INITIAL_SYMBOLS), extra: null, cash: 0, version: 0, history: new History(), window: new WindowLedger(), view: null };
}

export function position(acc: Account, symbol: number): number {
  if (symbol < acc.pos.length) return acc.pos[symbol]!;
  return acc.extra?.get(symbol) ?? 0;
}

/** Adds `d` to one position (no version change: see applyDeltas). */
export function addPosition(acc: Account, symbol: number, d: number): void {
  if (symbol < acc.pos.length) {
    acc.pos[symbol]! += d;
    return;
  }
  if (symbol < DENSE_SYMBOLS) {
    let n = acc.pos.length;
    while (n <= symbol) n *= 2;
    const grown = new Float64Array(Math.min(n, DENSE_SYMBOLS));
    grown.set(acc.pos);
    acc.pos = grown;
    acc.pos[symbol]! += d;
    return;
  }
  const extra = (acc.extra ??= new Map());
  const q = (extra.get(symbol) ?? 0) + d;
  if (q === 0) extra.delete(symbol);
  else extra.set(symbol, q);
}

/** Calls `f` for every non-zero position, in symbol order. */
export function forEachPosition(acc: Account, f: (symbol: number, quantity: number) => void): void {
  const pos = acc.pos;
  for (let s = 0; s < pos.length; s++) if (pos[s] !== 0) f(s, pos[s]!);
  if (acc.extra && acc.extra.size > 0) for (const [s, q] of [...acc.extra].sort((a, b) => a[0] - b[0])) f(s, q);
}

/** Every non-zero position as [symbol, quantity], in symbol order. */
export function positionList(acc: Account): Delta[] {
  const out: Delta[] = [];
  forEachPosition(acc, (s, q) => out.push([s, q]));
  return out;
}

export function hasPositions(acc: Account): boolean {
  for (let s = 0; s < acc.pos.length; s++) if (acc.pos[s] !== 0) return true;
  return (acc.extra?.size ?? 0) > 0;
}

/** Positions as [symbol, quantity, ...] (symbol order): the journal's compact "positions after". */
export function flatPositions(acc: Account): number[] {
  const out: number[] = [];
  forEachPosition(acc, (s, q) => out.push(s, q));
  return out;
}

export function applyDeltas(acc: Account, deltas: readonly Delta[]): void {
  for (const [symbol, d] of deltas) addPosition(acc, symbol, d);
  acc.version++;
}

/** Applies a compiled basket `amount` times, in place: create debits the components and credits the ETF; redeem the reverse. */
export function applyBasket(acc: Account, b: CompiledBasket, op: 'create' | 'redeem', amount: number): void {
  const units = op === 'create' ? amount : -amount;
  const { syms, weights } = b;
  for (let i = 0; i < syms.length; i++) addPosition(acc, syms[i]!, -weights[i]! * units);
  addPosition(acc, b.symbol, units);
  acc.version++;
}

/** Applies one accepted event. Used both live and on replay, so it never re-decides. */
export function applyEvent(state: EngineState, ev: JournalEvent): void {
  switch (ev.t) {
    case 'account': {
      const existing = state.accounts.get(ev.clientId);
      if (existing) {
        state.capture?.before(existing);
        if (ev.passwordHash) existing.passwordHash = ev.passwordHash;
        return;
      }
      const acc = newAccount(ev.clientId, ev.username, ev.passwordHash ?? '', ev.source);
      state.accounts.set(acc.clientId, acc);
      state.byUsername.set(acc.username, acc);
      if (acc.clientId > state.maxClientId) state.maxClientId = acc.clientId;
      if (ev.opening && ev.opening.length > 0) applyDeltas(acc, ev.opening);
      if (ev.claimed) {
        // The recorded amounts, not the ledger's: a replay from a snapshot older than the ledger credits the same.
        applyDeltas(acc, ev.claimed.positions);
        acc.cash += ev.claimed.cash;
      }
      state.unclaimed.delete(acc.clientId);
      if (ev.requestId !== undefined) record(state, acc, ev, ev.requestId);
      return;
    }
    case 'conversion': {
      const acc = state.accounts.get(ev.clientId);
      // A conversion is only ever journaled for a known account; a missing one means a corrupt journal.
      if (!acc) throw new Error(`journal: conversion for unknown client_id ${ev.clientId}`);
      state.capture?.before(acc);
      acc.cash -= ev.fee ?? 0;
      if (ev.requestId > state.requestSeq) state.requestSeq = ev.requestId;
      acc.window.add(ev.ts, ev.amount);
      if (ev.deltas) {
        // A version-1 record: its deltas and positions after are spelled out; kept as it is.
        applyDeltas(acc, ev.deltas);
        acc.history.pushEvent(ev, ev.requestId);
        return;
      }
      applyBasket(acc, state.catalog.of(ev), ev.op, ev.amount);
      acc.history.pushConversion(ev, acc.pos, acc.extra, ev.held);
      return;
    }
    case 'name':
      state.names.set(ev.username, ev.clientId);
      return;
    case 'rules':
      state.rules = { rules: ev.rules, by: ev.by, ts: ev.ts };
      return;
    case 'config_baskets': {
      // Request ids are handed out in journal order: it applies to every request after this point.
      const from = state.requestSeq + 1;
      state.configBaskets.push({ from, baskets: ev.baskets });
      state.catalog.addConfig(ev.baskets, from);
      return;
    }
    case 'basket': {
      const versions = state.baskets.get(ev.etf) ?? [];
      versions.push({ version: ev.version, from: ev.from, by: ev.by, components: ev.components });
      state.baskets.set(ev.etf, versions);
      state.catalog.add(ev.etf, ev.version, ev.from, ev.components);
      return;
    }
    case 'operator':
      if (ev.action === 'halt') state.halts.set(ev.etf ?? ALL_ETFS, { reason: ev.reason ?? '', by: ev.by, since: ev.ts });
      else if (ev.etf === null) state.halts.clear(); // resume all: every halt lifted
      else state.halts.delete(ev.etf);
      return;
    case 'rejected': {
      const acc = ev.clientId === null ? undefined : state.accounts.get(ev.clientId);
      if (acc) record(state, acc, ev, ev.requestId);
      else if (ev.requestId > state.requestSeq) state.requestSeq = ev.requestId;
      return;
    }
  }
}

function record(state: EngineState, acc: Account, ev: AuditEvent, requestId: number): void {
  state.capture?.before(acc);
  if (requestId > state.requestSeq) state.requestSeq = requestId;
  acc.history.pushEvent(ev, requestId);
}
