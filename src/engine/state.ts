import type { Delta, JournalEvent } from '../../proto/journal.js';

export interface Account {
  clientId: number;
  username: string;
  /** bcrypt hash; never the password. */
  passwordHash: string;
  source: 'register' | 'roster';
  /** symbol id → signed quantity; zero positions are deleted. */
  positions: Map<number, number>;
  /** +1 per change of this account's positions, for holdings streams. */
  version: number;
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
}

export function emptyState(): EngineState {
  return { accounts: new Map(), byUsername: new Map(), maxClientId: 0, fillSeq: 0, journalSeq: 0 };
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
        version: 0,
      };
      state.accounts.set(acc.clientId, acc);
      state.byUsername.set(acc.username, acc);
      if (acc.clientId > state.maxClientId) state.maxClientId = acc.clientId;
      if (ev.opening && ev.opening.length > 0) applyDeltas(acc, ev.opening);
      return;
    }
    case 'conversion': {
      const acc = state.accounts.get(ev.clientId);
      // A conversion is only ever journaled for a known account; a missing one means a corrupt journal.
      if (!acc) throw new Error(`journal: conversion for unknown client_id ${ev.clientId}`);
      applyDeltas(acc, ev.deltas);
      return;
    }
  }
}
