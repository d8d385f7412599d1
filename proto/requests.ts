import { namedPositions, type ConversionOp, type EngineError, type FlatPositions, type Position, type EngineRefusal, type TickerOf } from './engine.js';
import { refusalWords } from './messages.js';
import { fields, INT, INT_LIST, isInt, isIntList, isMap, isNum, isStr, NUM, oneOf, optional, STR, STR_OR_NULL, type Check } from './shape.js';

/**
 * Outcome of every create/redeem the engine decided, accepted or rejected,
 * published in the engine's NoticeBatch (proto/holdings.ts) once durable.
 * `request_id` is the engine's id for the request (what GET /requests/<id>
 * takes); `client_request_id` echoes the caller's idempotency key, if any.
 *
 * On NATS an outcome travels as an OutcomeNotice (deltas flat, no tickers);
 * RequestOutcome (v 1) is the same outcome named, as the gateway hands it to
 * WebSocket clients (proto/ws.ts).
 */
export interface RequestOutcome<P = Position[], E = EngineError> {
  v: 1;
  request_id: string;
  client_request_id?: string;
  client_id: number;
  op: ConversionOp;
  etf: string | null;
  amount: number;
  status: 'accepted' | 'rejected';
  /** Worded for WebSocket clients; in codes on NATS (proto/messages.ts words it). */
  error?: E;
  /** Signed change per symbol when accepted. */
  deltas?: P;
  ts: number;
}

/** A RequestOutcome as a NoticeBatch carries it. */
export type OutcomeNotice = Omit<RequestOutcome<FlatPositions, EngineRefusal>, 'v'> & {
  /**
   * Fee charged in cash when accepted (0 when fees are off), from notice
   * batches version 3. Absent from version 2: the desk then takes it from the
   * cash change beside the outcome, which is wrong for an account it has not
   * read yet (it starts from cash 0).
   */
  fee?: number;
};

export function namedOutcome(n: OutcomeNotice, tickerOf: TickerOf): RequestOutcome {
  // The fee is the desk's: WebSocket outcomes keep their shape (proto/ws.ts), and a client has it in the answer.
  const { deltas, error, fee: _fee, ...rest } = n;
  // In the notice's key order: the error last of its fields, as ever.
  return { ...rest, ...(error ? { error: refusalWords(error, tickerOf) } : {}), v: 1, ...(deltas ? { deltas: namedPositions(deltas, tickerOf) } : {}) };
}


const REFUSAL: Check = { ok: (v) => isMap(v) && isStr(v.code), what: 'not a refusal' };

const outcomeFields = fields({
  request_id: STR,
  client_id: INT,
  op: STR,
  etf: STR_OR_NULL,
  amount: NUM,
  status: oneOf('accepted', 'rejected'),
  error: optional(REFUSAL),
  deltas: optional(INT_LIST),
  ts: NUM,
  fee: optional(NUM),
});

/** Why an outcome in a NoticeBatch cannot be shown. */
export const outcomeNoticeProblem = (n: unknown): string | null =>
  isMap(n) &&
  isStr(n.request_id) &&
  isInt(n.client_id) &&
  isStr(n.op) &&
  (n.etf === null || isStr(n.etf)) &&
  isNum(n.amount) &&
  (n.status === 'accepted' || n.status === 'rejected') &&
  (n.error === undefined || REFUSAL.ok(n.error)) &&
  (n.deltas === undefined || isIntList(n.deltas)) &&
  isNum(n.ts) &&
  (n.fee === undefined || isNum(n.fee))
    ? null
    : outcomeFields(n);
