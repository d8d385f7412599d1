import type { ConversionOp, EngineError, Position } from './engine.js';

/**
 * Outcome of every create/redeem the engine decided, accepted or rejected,
 * published on `etf.requests.<client_id>` (requestsSubject) once durable.
 * `request_id` is the engine's id for the request (what GET /requests/<id>
 * takes); `client_request_id` echoes the caller's idempotency key, if any.
 */
export interface RequestOutcome {
  v: 1;
  request_id: string;
  client_request_id?: string;
  client_id: number;
  op: ConversionOp;
  etf: string | null;
  amount: number;
  status: 'accepted' | 'rejected';
  error?: EngineError;
  /** Signed change per symbol when accepted. */
  deltas?: Position[];
  ts: number;
}

export const REQUESTS_SUBJECT_PREFIX = 'etf.requests';
export const requestsSubject = (clientId: number): string => `${REQUESTS_SUBJECT_PREFIX}.${clientId}`;
