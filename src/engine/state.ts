import type { Delta, JournalEvent } from '../../proto/journal.js';
import type { ConversionRules } from '../../proto/rules.js';

export interface Account {
  clientId: number;
  username: string;
  /** bcrypt hash; never the password. */
  passwordHash: string;
  source: 'register' | 'roster';
  /** symbol id → signed quantity; zero positions are deleted. */
  positions: Map<number, number>;
  /** Price units: fills move it by quantity × price the other way, conversion fees take from it. */
  cash: number;
  /** +1 per change of this account's positions, for holdings streams. */
  version: number;
  /** The account's decisions (its registration, creates and redeems), oldest first, at most HISTORY_LIMIT. */
  history: AuditEvent[];
  /** Idempotency key → the decision it produced. */
  keys: Map<string, AuditEvent>;
}

/** Journal events that are audit entries of one account. */
export type AuditEvent = Extract<JournalEvent, { t: 'conversion' } | { t: 'rejected' }> | Extract<JournalEvent, { t: 'account' }>;

/**
 * Decisions kept in memory per account for /history, /requests and retries.
 * Older ones stay in the journal (the operator export reads them all); a
 * retry with a key older than this is treated as new.
 */
export const HISTORY_LIMIT = 1_000;

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
  /** The operator's rules, once set (journaled): they replace the config's. */
  rules: { rules: ConversionRules; by: string; ts: number } | null;
}

/** The key of a halt of every ETF in EngineState.halts. */
export const ALL_ETFS = '*';

export function emptyState(): EngineState {
  return { accounts: new Map(), byUsername: new Map(), maxClientId: 0, fillSeq: 0, journalSeq: 0, requestSeq: 0, halts: new Map(), baskets: new Map(), rules: null };
}

export function position(acc: Account, symbol: number): number {
  return acc.positions.get(symbol) ?? 0;
}

export function applyDeltas(acc: Account, deltas: readonly Delta[]): void {
  for (const [symbol, d] of deltas) {
    const q = (acc.positions.get(symbol) ?? 0) + d;
    if (q === 0) acc.positions.delete(symbol);
    else acc.positions.set(symbol, q);
  }
  acc.version++;
}

/** Applies one accepted event. Used both live and on replay, so it never re-decides. */
export function applyEvent(state: EngineState, ev: JournalEvent): void {
  switch (ev.t) {
    case 'account': {
      const existing = state.accounts.get(ev.clientId);
      if (existing) {
        if (ev.passwordHash) existing.passwordHash = ev.passwordHash;
        return;
      }
      const acc: Account = {
        clientId: ev.clientId,
        username: ev.username,
        passwordHash: ev.passwordHash ?? '',
        source: ev.source,
        positions: new Map(),
        cash: 0,
        version: 0,
        history: [],
        keys: new Map(),
      };
      state.accounts.set(acc.clientId, acc);
      state.byUsername.set(acc.username, acc);
      if (acc.clientId > state.maxClientId) state.maxClientId = acc.clientId;
      if (ev.opening && ev.opening.length > 0) applyDeltas(acc, ev.opening);
      if (ev.requestId !== undefined) record(state, acc, ev, ev.requestId);
      return;
    }
    case 'conversion': {
      const acc = state.accounts.get(ev.clientId);
      // A conversion is only ever journaled for a known account; a missing one means a corrupt journal.
      if (!acc) throw new Error(`journal: conversion for unknown client_id ${ev.clientId}`);
      acc.cash -= ev.fee ?? 0;
      applyDeltas(acc, ev.deltas);
      record(state, acc, ev, ev.requestId);
      return;
    }
    case 'rules':
      state.rules = { rules: ev.rules, by: ev.by, ts: ev.ts };
      return;
    case 'basket': {
      const versions = state.baskets.get(ev.etf) ?? [];
      versions.push({ version: ev.version, from: ev.from, by: ev.by, components: ev.components });
      state.baskets.set(ev.etf, versions);
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
  if (requestId > state.requestSeq) state.requestSeq = requestId;
  acc.history.push(ev);
  if ('key' in ev && ev.key !== undefined) acc.keys.set(ev.key, ev);
  if (acc.history.length > HISTORY_LIMIT * 1.25) {
    // Trim in chunks so the amortized cost per request stays O(1).
    for (const old of acc.history.splice(0, acc.history.length - HISTORY_LIMIT)) {
      if ('key' in old && old.key !== undefined && acc.keys.get(old.key) === old) acc.keys.delete(old.key);
    }
  }
}
