import type { EngineCommand, EngineError, EngineResult, HoldingsView, Shortfall } from '../../proto/engine.js';
import type { Delta, JournalEvent } from '../../proto/journal.js';
import { fillDelta, type Fill } from '../../proto/fill.js';
import type { Instruments, Basket } from '../config/baskets.js';
import { applyDeltas, applyEvent, position, type Account, type EngineState } from './state.js';

/**
 * The engine's pure core: state + command → result + events. No I/O, no clock
 * (the caller passes `now`), no async. The actor journals the events before it
 * releases the result.
 */
export interface Decision {
  result?: EngineResult;
  error?: EngineError;
  events: JournalEvent[];
}

export interface CoreConfig {
  instruments: Instruments;
  maxAmount: number;
}

const refuse = (error: EngineError): Decision => ({ error, events: [] });

export function holdingsView(acc: Account, instruments: Instruments): HoldingsView {
  const positions = [...acc.positions]
    .sort((a, b) => a[0] - b[0])
    .map(([symbol, quantity]) => ({ symbol, ticker: instruments.tickerOf(symbol), quantity }));
  return { client_id: acc.clientId, username: acc.username, seq: acc.version, positions };
}

function pickBasket(cfg: CoreConfig, etf: string | null): Basket | EngineError {
  const { baskets } = cfg.instruments;
  if (etf === null) {
    if (baskets.size === 1) return baskets.values().next().value!;
    return { code: 'unknown_etf', field: 'etf_name', message: `etf_name is required: one of ${[...baskets.keys()].join(', ')}` };
  }
  return (
    baskets.get(etf) ?? {
      code: 'unknown_etf',
      field: 'etf_name',
      message: `unknown etf_name ${JSON.stringify(etf)}: one of ${[...baskets.keys()].join(', ')}`,
    }
  );
}

/** Deltas of converting `amount` units: create debits the basket and credits the ETF; redeem the reverse. */
export function conversionDeltas(basket: Basket, op: 'create' | 'redeem', amount: number): Delta[] {
  const sign = op === 'create' ? 1 : -1;
  return [...basket.components.map((c): Delta => [c.symbol, -sign * c.weight * amount]), [basket.symbol, sign * amount]];
}

export function decide(state: EngineState, cfg: CoreConfig, cmd: EngineCommand, now: number): Decision {
  switch (cmd.op) {
    case 'register': {
      if (state.byUsername.has(cmd.username)) {
        return refuse({ code: 'username_taken', field: 'username', message: `username ${cmd.username} is taken` });
      }
      const clientId = state.maxClientId + 1;
      const ev: JournalEvent = {
        t: 'account',
        clientId,
        username: cmd.username,
        source: 'register',
        passwordHash: cmd.passwordHash,
        ts: now,
      };
      return { result: { client_id: clientId, username: cmd.username }, events: [ev] };
    }
    case 'credentials': {
      const acc = state.byUsername.get(cmd.username);
      if (!acc) return refuse({ code: 'unknown_account', message: 'authentication failed' });
      return { result: { client_id: acc.clientId, passwordHash: acc.passwordHash }, events: [] };
    }
    case 'ping':
      return { result: { accounts: state.accounts.size, journal_seq: state.journalSeq, fill_seq: state.fillSeq }, events: [] };
    case 'holdings': {
      const acc = state.accounts.get(cmd.clientId);
      if (!acc) return refuse({ code: 'unknown_account', message: 'authentication failed' });
      return { result: holdingsView(acc, cfg.instruments), events: [] };
    }
    case 'create':
    case 'redeem': {
      const acc = state.accounts.get(cmd.clientId);
      if (!acc) return refuse({ code: 'unknown_account', message: 'authentication failed' });
      if (!Number.isSafeInteger(cmd.amount) || cmd.amount < 1 || cmd.amount > cfg.maxAmount) {
        return refuse({ code: 'invalid_amount', field: 'amount', message: `amount must be a whole number from 1 to ${cfg.maxAmount}` });
      }
      const basket = pickBasket(cfg, cmd.etf);
      if ('code' in basket) return refuse(basket);
      const deltas = conversionDeltas(basket, cmd.op, cmd.amount);
      const shortfalls: Shortfall[] = [];
      for (const [symbol, d] of deltas) {
        if (d >= 0) continue;
        const have = position(acc, symbol);
        if (have < -d) shortfalls.push({ symbol, ticker: cfg.instruments.tickerOf(symbol), have, need: -d });
      }
      if (shortfalls.length > 0) {
        const list = shortfalls.map((s) => `${s.ticker} have ${s.have} need ${s.need}`).join(', ');
        return refuse({ code: 'insufficient_holdings', message: `insufficient holdings to ${cmd.op} ${cmd.amount} ${basket.name}: ${list}`, shortfalls });
      }
      const ev: JournalEvent = { t: 'conversion', op: cmd.op, clientId: acc.clientId, etf: basket.name, amount: cmd.amount, deltas, ts: now };
      // The view must show the state after the event; build it from a copy so decide stays pure.
      const after: Account = { ...acc, positions: new Map(acc.positions) };
      applyDeltas(after, deltas);
      return {
        result: {
          op: cmd.op,
          etf: basket.name,
          amount: cmd.amount,
          deltas: deltas.map(([symbol, quantity]) => ({ symbol, ticker: cfg.instruments.tickerOf(symbol), quantity })),
          holdings: holdingsView(after, cfg.instruments),
        },
        events: [ev],
      };
    }
  }
}

/** Applies a fill from the stream at `streamSeq`. Returns the account it changed, if the engine knows it. */
export function applyFill(state: EngineState, fill: Fill, streamSeq: number): Account | undefined {
  state.fillSeq = streamSeq;
  const acc = state.accounts.get(fill.client_id);
  if (!acc) return undefined;
  applyDeltas(acc, [[fill.symbol, fillDelta(fill)]]);
  return acc;
}

/** The competition's rule at an exchange restart: every position of every account back to 0. Returns each changed account with its deltas. */
export function applySessionReset(state: EngineState, streamSeq: number): { acc: Account; deltas: Delta[] }[] {
  state.fillSeq = streamSeq;
  const changed: { acc: Account; deltas: Delta[] }[] = [];
  for (const acc of state.accounts.values()) {
    if (acc.positions.size === 0) continue;
    const deltas: Delta[] = [...acc.positions].map(([symbol, q]): Delta => [symbol, -q]);
    applyDeltas(acc, deltas);
    changed.push({ acc, deltas });
  }
  return changed;
}

export { applyEvent };
