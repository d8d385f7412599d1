import type { AuditEntry } from './audit.js';
import type { AuditRecord, EngineError, Rejection, EngineRefusal, TickerOf } from './engine.js';

/**
 * The words of the engine's refusals: the engine decides in codes and facts
 * (proto/engine.ts Rejection), and every edge that shows one (the gateway's
 * HTTP and WebSocket answers, the operator's pages, the CLI through them, the
 * audit export) words it here, so one refusal reads the same everywhere.
 * A refusal journaled with its words by an older engine is shown as recorded.
 */
export function refusalWords(r: EngineRefusal, tickerOf: TickerOf = bySymbolNumber): EngineError {
  if (r.message !== undefined) return r;
  const w = words(r, tickerOf);
  const out: EngineError = { code: r.code, message: w.message };
  // In the order the answers always had: field, unit, limit, symbol, shortfalls.
  if (w.field !== undefined) out.field = w.field;
  if (r.code === 'invalid_amount' && r.why === 'unit') out.unit = r.unit;
  if (r.code === 'limit_exceeded' || r.code === 'payload_too_large') out.limit = r.limit;
  if (r.code === 'limit_exceeded' && r.why === 'position') out.symbol = tickerOf(r.symbols[0]!);
  if (r.code === 'insufficient_holdings') out.shortfalls = r.shortfalls.map((s) => ({ symbol: s.symbol, ticker: tickerOf(s.symbol), have: s.have, need: s.need }));
  return out;
}

/** The message alone. */
export const refusalMessage = (r: EngineRefusal, tickerOf?: TickerOf): string => refusalWords(r, tickerOf).message;

/** Where no instruments are at hand (a tool, the gateway's login path): a symbol named by its number. */
const bySymbolNumber: TickerOf = (symbol) => `#${symbol}`;

/** An audit entry as people read it: its refusal, if any, worded. */
export function entryWords(e: AuditRecord, tickerOf: TickerOf): AuditEntry {
  if (!e.error) return e as AuditEntry;
  return { ...e, error: refusalWords(e.error, tickerOf) };
}

/** The warnings of a conversion accepted beyond the position limit in `warn` mode. */
export const limitWarnings = (beyond: { limit: number; symbols: readonly number[] }, tickerOf: TickerOf): string[] =>
  beyond.symbols.map((s) => `${tickerOf(s)} beyond the position limit of ${beyond.limit}`);

const etfList = (etfs: readonly string[]) => etfs.join(', ');

const UNAVAILABLE: Record<Extract<Rejection, { code: 'engine_unavailable' }>['why'], string> = {
  unconfirmed: 'the engine could not confirm this operation was recorded; check /holdings before retrying',
  timeout: 'the engine did not answer in time; the operation may or may not have happened: check /holdings before retrying',
  unreadable: "the engine's answer could not be read; the operation may or may not have happened: check /holdings before retrying",
  withdrawn: 'the request was withdrawn: its connection closed before it was sent',
  not_delivered: 'no engine took this operation (none running, or the gateway stopping); nothing was done: retry shortly',
  too_large: "the engine's answer is larger than a NATS message may be: ask for less (a smaller limit)",
};

/** An engine_unavailable error, as worded, for an operation no engine ever received (UnavailableCause not_delivered): certainly not done. */
export const neverDelivered = (e: { code: string; message?: string; why?: string }): boolean =>
  e.code === 'engine_unavailable' && (e.why === 'not_delivered' || e.message === UNAVAILABLE.not_delivered);

/** The message, and the parameter it is about. */
function words(r: Rejection, tickerOf: TickerOf): { message: string; field?: string } {
  switch (r.code) {
    case 'bad_request':
      return badRequest(r, tickerOf);
    case 'username_taken':
      return { message: `username ${r.username} is taken`, field: 'username' };
    case 'unknown_account':
      return { message: 'authentication failed' };
    case 'unknown_etf':
      return {
        message: r.etf === null ? `etf_name is required: one of ${etfList(r.etfs)}` : `unknown etf_name ${JSON.stringify(r.etf)}: one of ${etfList(r.etfs)}`,
        field: 'etf_name',
      };
    case 'invalid_amount':
      return {
        message: r.why === 'range' ? `amount must be a whole number from 1 to ${r.max}` : `amount must be a multiple of ${r.etf}'s creation unit of ${r.unit}`,
        field: 'amount',
      };
    case 'insufficient_holdings': {
      const list = r.shortfalls.map((s) => `${tickerOf(s.symbol)} have ${s.have} need ${s.need}`).join(', ');
      return { message: `insufficient holdings to ${r.op} ${r.amount} ${r.etf}: ${list}` };
    }
    case 'idempotency_conflict':
      return { message: `request id ${r.key} was already used for a different request (${r.earlier})`, field: 'request_id' };
    case 'not_found':
      return { message: `no request ${r.id} for this account` };
    case 'halted':
      return { message: `conversions of ${r.etf ?? 'every ETF'} are halted by the operator${r.reason ? `: ${r.reason}` : ''}` };
    case 'limit_exceeded':
      if (r.why === 'per_conversion') return { message: `at most ${r.limit} units per conversion`, field: 'amount' };
      if (r.why === 'per_window') return { message: `at most ${r.limit} units per ${r.seconds} s: ${r.used} already converted, ${r.limit - r.used} left`, field: 'amount' };
      return { message: `the ${r.op} would leave ${r.symbols.map(tickerOf).join(', ')} beyond the position limit of ${r.limit}` };
    case 'outside_window':
      return { message: `conversions are open only ${r.windows.map((w) => `${w.from}-${w.to}`).join(', ')} UTC` };
    case 'forbidden':
      return { message: `only ${r.answered.join(', ')} are answered on the operators' read-only subject` };
    case 'unsupported_version':
      return { message: `engine speaks protocol v${r.speaks}` };
    case 'engine_unavailable':
      return { message: UNAVAILABLE[r.why] };
    case 'payload_too_large':
      if (r.journal) return { message: `its journal record would be ${r.bytes} bytes, over the NATS message limit of ${r.limit} bytes on this system: nothing was done (send less)` };
      return { message: `the command is ${r.bytes} bytes, over the NATS message limit of ${r.limit} bytes on this system: nothing was done (send less)` };
  }
}

function badRequest(r: Extract<Rejection, { code: 'bad_request' }>, tickerOf: TickerOf): { message: string; field?: string } {
  switch (r.why) {
    case 'malformed':
      return { message: 'malformed command' };
    case 'before':
      return { message: 'before must be a request id like r42', field: 'before' };
    case 'unknown_component':
      return { message: `unknown component symbol ${r.component}`, field: 'components' };
    case 'contains_itself':
      return { message: `${r.etf} cannot contain itself`, field: 'components' };
    case 'component_weight':
      return { message: `weight of ${r.component} must be a whole number above 0`, field: 'components' };
    case 'duplicate_component':
      return { message: `components ${r.earlier} and ${r.component} are both ${tickerOf(r.symbol)}: list each component once`, field: 'components' };
    case 'no_components':
      return { message: 'a basket needs at least one component', field: 'components' };
    case 'from_before':
      return { message: `version ${r.version} applies from ${new Date(r.from).toISOString()}: a new one cannot apply before it`, field: 'from' };
  }
}
