import type { ClearingMessage } from './ndfex.js';
/**
 * The exchange position feed contract: one message per fill on
 * `ndfex.fill.<client_id>`, msgpack map mirroring the NDFEX clearing fill.
 */
export const FILL_SIDE_BUY = 1;
export const FILL_SIDE_SELL = 2;

export interface Fill {
  /** The exchange's clearing seq_num (informational; dedupe is by JetStream msg id). */
  seq: number;
  client_id: number;
  symbol: number;
  /** 1 buy (adds quantity), 2 sell (subtracts). */
  side: number;
  quantity: number;
  price: number;
}

const isU32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
const isI32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= -0x80000000 && (v as number) <= 0x7fffffff;

/** Returns the reason a decoded payload is not a valid Fill, or null when it is. */
export function fillProblem(f: unknown): string | null {
  if (typeof f !== 'object' || f === null) return 'not a map';
  const m = f as Record<string, unknown>;
  if (!isU32(m.seq)) return 'seq is not a u32';
  if (!isU32(m.client_id)) return 'client_id is not a u32';
  if (!isU32(m.symbol)) return 'symbol is not a u32';
  if (m.side !== FILL_SIDE_BUY && m.side !== FILL_SIDE_SELL) return 'side is not 1 or 2';
  if (!isU32(m.quantity) || m.quantity === 0) return 'quantity is not a positive u32';
  if (!isI32(m.price)) return 'price is not an i32';
  return null;
}

/** Signed position change of a fill. */
/** The fill a clearing datagram's fill message carries (proto/ndfex.ts), checked by fillProblem before it goes anywhere. */
export const clearingFill = (m: Extract<ClearingMessage, { type: 'fill' }>): Fill => ({ seq: m.seq, client_id: m.client_id, symbol: m.symbol, side: m.side, quantity: m.quantity, price: m.price });

export const fillDelta = (f: Fill): number => (f.side === FILL_SIDE_BUY ? f.quantity : -f.quantity);

/**
 * Exchange session marker, on subject SESSION_SUBJECT in the same stream as
 * the fills, so its order relative to them is fixed: when the exchange
 * restarts (clearing seq_num back to 1) the bridge publishes one. With
 * `reset` (the competition's rule) the engine sets every position of every
 * account to 0 at that point of the stream; without it, it only records it.
 */
export interface SessionMarker {
  v: 1;
  kind: 'exchange_restart';
  reset: boolean;
  /** The bridge's count of exchange sessions seen; msg id `session-<n>` de-duplicates it. */
  session: number;
  detail: string;
  ts: number;
}
