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
