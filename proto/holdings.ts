import { namedPositions, type FlatPositions, type Position, type TickerOf } from './engine.js';

/**
 * Holdings changes, published by the engine on `etf.holdings.<client_id>`
 * (HOLDINGS_SUBJECT_PREFIX in proto/subjects.ts) once the change is durable:
 * a fill as soon as it is applied (it is already in the fill stream), a
 * conversion after its journal write. `seq` is the account's own change
 * counter: +1 per change, the same after an engine restart, so a consumer can
 * tell it missed nothing. `positions` is the whole account after the change.
 *
 * On NATS a change travels as a HoldingsNotice (v 2: positions flat, no
 * tickers); HoldingsChange (v 1) is the same change named, as the gateway
 * hands it to WebSocket clients (proto/ws.ts).
 */
export interface HoldingsChange<P = Position[]> {
  v: 1;
  client_id: number;
  seq: number;
  cause: 'fill' | 'create' | 'redeem' | 'opening' | 'session_reset';
  /** Signed change per symbol in this step. */
  deltas: P;
  positions: P;
  /** Cash after the change (absent from engines before cash was kept). */
  cash?: number;
  /** Engine wall-clock ms when applied. */
  ts: number;
  /** For cause 'fill': the fill's exchange seq and price. */
  fill?: { seq: number; price: number };
}

export const HOLDINGS_NOTICE_VERSION = 2;

/** A HoldingsChange on the engine's NATS subject. */
export type HoldingsNotice = Omit<HoldingsChange<FlatPositions>, 'v'> & { v: typeof HOLDINGS_NOTICE_VERSION };

export const namedChange = (n: HoldingsNotice, tickerOf: TickerOf): HoldingsChange => ({
  ...n,
  v: 1,
  deltas: namedPositions(n.deltas, tickerOf),
  positions: namedPositions(n.positions, tickerOf),
});
