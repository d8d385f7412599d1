import type { ConversionOp } from './engine.js';

/**
 * The engine's journal (stream ETF_JOURNAL, subject JOURNAL_SUBJECT): every
 * state change the engine accepted, one JournalBatch per group commit. Replay
 * applies events without re-deciding them, so the journal alone (plus the fill
 * stream) rebuilds the state.
 */
export const JOURNAL_VERSION = 1;

/** [symbol id, signed quantity] */
export type Delta = [number, number];

export type JournalEvent =
  /** An account the engine now knows. Roster accounts carry no hash: their password comes from the roster at each start. */
  | {
      t: 'account';
      clientId: number;
      username: string;
      source: 'register' | 'roster';
      passwordHash?: string;
      /** Opening holdings from an ETF-format roster line, applied once. */
      opening?: Delta[];
      ts: number;
    }
  | { t: 'conversion'; op: ConversionOp; clientId: number; etf: string; amount: number; deltas: Delta[]; ts: number };

export interface JournalBatch {
  v: number;
  events: JournalEvent[];
}
