import type { Position } from './engine.js';

/**
 * Holdings changes, published by the engine on `etf.holdings.<client_id>`
 * (HOLDINGS_SUBJECT_PREFIX in proto/subjects.ts) once the change is durable:
 * a fill as soon as it is applied (it is already in the fill stream), a
 * conversion after its journal write. `seq` is the account's own change
 * counter: +1 per change, the same after an engine restart, so a consumer can
 * tell it missed nothing. `positions` is the whole account after the change.
 */
export interface HoldingsChange {
  v: 1;
  client_id: number;
  seq: number;
  cause: 'fill' | 'create' | 'redeem' | 'opening' | 'session_reset';
  /** Signed change per symbol in this step. */
  deltas: Position[];
  positions: Position[];
  /** Cash after the change (absent from engines before cash was kept). */
  cash?: number;
  /** Engine wall-clock ms when applied. */
  ts: number;
  /** For cause 'fill': the fill's exchange seq and price. */
  fill?: { seq: number; price: number };
}
