import type { ConversionRules } from './rules.js';
import type { ConversionOp, EngineError, Position } from './engine.js';

/**
 * One line of the audit trail: every registration, creation and redemption
 * the engine decided, accepted or rejected with its reason. GET /history
 * returns a team's own entries newest first; GET /requests/<id> one of them;
 * the operator export writes them all as NDJSON.
 */
/** An operator's change in the audit export (npm run export-audit): who did what, when. */
export interface OperatorAuditEntry {
  kind: 'halt' | 'resume' | 'rules' | 'basket';
  etf: string | null;
  reason?: string;
  /** The rules set, for kind 'rules'. */
  rules?: ConversionRules;
  /** The basket version set, for kind 'basket'. */
  basket?: { version: number; from: number; components: Record<string, number> };
  by: string;
  ts: number;
}

/** `E`: the refusal as the edge shows it (words); the engine's wire carries AuditRecord (proto/engine.ts), in codes. */
export interface AuditEntry<E = EngineError> {
  /** The engine's id: `r<n>`, increasing in decision order. */
  request_id: string;
  kind: 'register' | ConversionOp;
  status: 'accepted' | 'rejected';
  /** null for a registration refused before any account existed. */
  client_id: number | null;
  username?: string;
  etf?: string | null;
  amount?: number;
  /** Signed change per symbol when accepted. */
  deltas?: Position[];
  /** Fee charged in cash when accepted and fees are on. */
  fee?: number;
  /** The account's positions right after the decision. */
  holdings?: Position[];
  error?: E;
  /** The caller's idempotency key, if it sent one. */
  client_request_id?: string;
  /** Engine wall-clock ms of the decision. */
  ts: number;
}

/** Allowed idempotency keys (body `request_id` or `Idempotency-Key` header). */
export const CLIENT_REQUEST_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * The engine's own request ids (`r42`). A caller's key of this form is
 * refused: GET /requests/<id> takes either, and a key `r2` on one request
 * with the engine's r2 on another answered the wrong one, which a client
 * that lost an answer would act on (resend and convert twice).
 */
export const ENGINE_REQUEST_ID_PATTERN = /^r[1-9][0-9]{0,15}$/;

/** Why `key` cannot be a caller's idempotency key, or null when it can. */
export function clientKeyProblem(key: string): string | null {
  if (!CLIENT_REQUEST_ID_PATTERN.test(key)) return 'request_id must be 1-64 characters of A-Z a-z 0-9 _ . : -';
  return ENGINE_REQUEST_ID_PATTERN.test(key) ? `request_id ${key} has the form of the engine's own request ids (r<number>): choose another key` : null;
}

/**
 * The export's lines for grading (npm run export-audit), besides the
 * AuditEntry and OperatorAuditEntry lines: an accepted conversion's entry
 * carries its `scorecard` (proto/http.ts Scorecard, as in GET /history) when
 * the desk scored it, and after every entry comes one PnlSplitEntry per team
 * the desk charted or that converted.
 */
export interface PnlSplitEntry {
  kind: 'pnl_split';
  client_id: number;
  username: string | null;
  /** Cash + positions at the mids of the desk's newest sample (`ts`); null when the desk never charted the team, or not since the last exchange reset (`since`). */
  pnl: number | null;
  /** Σ scorecard.edge over its scored conversions: what converting earned at the marks of each moment, fees included. */
  conversion_edge: number;
  /** pnl − conversion_edge: everything else (trading on the exchange, the legs included, and marks moving since). */
  other: number | null;
  /** Its accepted conversions, and those without a scorecard (the desk was down, or a leg had no two-sided market). */
  conversions: number;
  unscored: number;
  /** Σ fees of its accepted conversions. */
  fees: number;
  /** Mean of its scored conversions' legs_sold (0..1), weighted by amount: how much of what they gave it the team sold on the exchange; null with none scored. */
  legs_sold: number | null;
  /** When `pnl` was marked (the desk's newest sample), ms; null without one. */
  ts: number | null;
  /**
   * When the exchange session the split covers began: the last exchange reset
   * (ms, when the fill stream stored it), which started every team's cash and
   * positions, so its P&L, from 0. The counts and sums above are of the
   * conversions decided after it, and `pnl` is null when the desk has no sample
   * since. null: no reset, the whole journal.
   */
  since: number | null;
}
