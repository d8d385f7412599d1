import { conversionRulesSchema, type ConversionRules } from './rules.js';
import { at, fields, INT, isInt, isMap, isNum, isStr, isStrOrNull, itemsProblem, NUM, shape, STR, STR_LIST, type Shape } from './shape.js';
import { ENGINE_REQUEST_ID_PATTERN, type AuditEntry } from './audit.js';

/**
 * Engine request/reply contract (subject ENGINE_COMMAND_SUBJECT). The gateway
 * packs every command of one event-loop turn into a CommandBatch, publishes it
 * with a reply subject of its own (replySubject: the gateway's, and the
 * batch's number), and the engine answers with one ReplyBatch per batch and
 * group commit. `id` is the gateway's, echoed back so it can match replies.
 *
 * Version 2: positions in conversion and holdings answers travel flat
 * (FlatPositions), without tickers; the gateway names them (namedPositions).
 * Audit entries (`request`, `history`) still carry named positions.
 * Version 3: refusals travel as codes and facts (Rejection), worded by the
 * edge (proto/messages.ts); position-limit warnings as `beyond_limit`.
 * Version 4: batches name the shared record shapes (proto/records.ts) instead
 * of defining them; a build without that list cannot read them. A batch of
 * another version is refused in self-contained records, which any build reads.
 */
export const ENGINE_PROTOCOL_VERSION = 4;

export type ConversionOp = 'create' | 'redeem';

/**
 * A password hash on the bus and in every stream is sealed: `s1:` then
 * base64url(12-byte IV | 16-byte GCM tag | AES-256-GCM of the bcrypt hash),
 * the username as associated data, under a key only the gateway and the
 * engine read from a file (src/shared/credentials-key.ts). The register
 * command, the journal's account events, snapshots and the credentials reply
 * carry it so; a bcrypt hash without the prefix is one journaled before
 * sealing existed, still accepted. Why: proto/roles.ts.
 */
export const SEALED_HASH_PREFIX = 's1:';

export type EngineCommand =
  /** Adds an account. The gateway bcrypt-hashes the password and seals the hash (SEALED_HASH_PREFIX); the engine never sees either in clear. */
  | { op: 'register'; username: string; passwordHash: string }
  /** Read: the account's client_id and sealed bcrypt hash, so the gateway can verify a password. */
  | { op: 'credentials'; username: string }
  /**
   * `key`: the caller's idempotency key; a retry with the same key returns the original result.
   * `dryRun`: decide and answer, but change and journal nothing.
   */
  | { op: ConversionOp; clientId: number; etf: string | null; amount: number; key?: string; dryRun?: boolean }
  /** Read: one of the account's requests, by engine request id or by the caller's key. */
  | { op: 'request'; clientId: number; id: string }
  /** Read: the account's audit entries, newest first, those with request ids below `before` when given. */
  | { op: 'history'; clientId: number; limit: number; before?: string }
  /** Read: the account's positions. */
  | { op: 'holdings'; clientId: number }
  /** Read: liveness and where the engine stands, for /health. */
  | { op: 'ping' }
  /** Operator (the gateway checks the operator's credentials): halt conversions of one ETF, or of all (etf null). */
  | { op: 'halt'; etf: string | null; reason: string; by: string }
  /** Operator: resume conversions of one ETF, or of all (etf null: every halt lifted). */
  | { op: 'resume'; etf: string | null; by: string }
  /** Read: the conversion rules in force. */
  | { op: 'rules' }
  /** Operator: a new basket for an ETF, used from `from` (ms) on; components by ticker. */
  | { op: 'set_basket'; etf: string; components: Record<string, number>; from: number; by: string }
  /** Operator: replace the conversion rules (validated by the gateway against proto/rules.ts). */
  | { op: 'set_rules'; rules: ConversionRules; by: string }
  /** Read (operators): every account's positions and the stream positions they reflect, for the consistency check. */
  | { op: 'dump' }
  /**
   * Engine shard to engine shard, on ShardNames.names only (proto/shards.ts): reserve `username` for the roster
   * account `clientId` of the asking shard. Sent to the shard the name hashes to, the one that decides every
   * /register of it, before the asker opens the account; answers who holds the name once it is decided.
   */
  | { op: 'claim'; username: string; clientId: number };

export interface CommandEnvelope {
  id: number;
  cmd: EngineCommand;
}

export interface CommandBatch {
  v: number;
  cmds: CommandEnvelope[];
}

const CLIENT_ID = 'clientId: not an integer';
const BY = 'by: not a string';
const ETF_OR_NULL = 'etf: not a string or null';

/**
 * Why a command is not an EngineCommand of its kind, or null. Its fields of
 * their types only: the engine judges their values (ranges, units, names),
 * and a command of no known kind passes here for the core to refuse as it
 * refuses any unknown op. A switch, not a table: this runs per command.
 */
export function commandProblem(c: unknown): string | null {
  if (!isMap(c)) return 'not a map';
  switch (c.op) {
    case 'create':
    case 'redeem':
      if (!isInt(c.clientId)) return CLIENT_ID;
      if (c.etf !== null && typeof c.etf !== 'string') return ETF_OR_NULL;
      // Any number: a fraction or one out of range is the core's invalid_amount, as from the HTTP edge.
      if (typeof c.amount !== 'number') return 'amount: not a number';
      if (c.key !== undefined && typeof c.key !== 'string') return 'key: not a string';
      // Also refused at the HTTP edge: an engine id as a key would make GET /requests/<id> ambiguous.
      if (typeof c.key === 'string' && ENGINE_REQUEST_ID_PATTERN.test(c.key)) return 'key: has the form of an engine request id';
      return c.dryRun !== undefined && typeof c.dryRun !== 'boolean' ? 'dryRun: not a boolean' : null;
    case 'holdings':
      return isInt(c.clientId) ? null : CLIENT_ID;
    case 'register':
      return !isStr(c.username) ? 'username: not a string' : !isStr(c.passwordHash) ? 'passwordHash: not a string' : null;
    case 'credentials':
      return isStr(c.username) ? null : 'username: not a string';
    case 'claim':
      return !isStr(c.username) ? 'username: not a string' : !isInt(c.clientId) ? CLIENT_ID : null;
    case 'request':
      return !isInt(c.clientId) ? CLIENT_ID : !isStr(c.id) ? 'id: not a string' : null;
    case 'history':
      if (!isInt(c.clientId)) return CLIENT_ID;
      if (c.limit !== undefined && !isNum(c.limit)) return 'limit: not a number';
      return c.before !== undefined && !isStr(c.before) ? 'before: not a string' : null;
    case 'halt':
      return !isStrOrNull(c.etf) ? ETF_OR_NULL : !isStr(c.reason) ? 'reason: not a string' : !isStr(c.by) ? BY : null;
    case 'resume':
      return !isStrOrNull(c.etf) ? ETF_OR_NULL : !isStr(c.by) ? BY : null;
    case 'set_basket':
      return !isStr(c.etf) ? 'etf: not a string' : !isMap(c.components) ? 'components: not a map' : !isNum(c.from) ? 'from: not a number' : !isStr(c.by) ? BY : null;
    case 'set_rules':
      // Cold (an operator's write): the gateway's own schema, checked again where the rules take effect.
      return !conversionRulesSchema.safeParse(c.rules).success ? 'rules: not conversion rules (proto/rules.ts)' : !isStr(c.by) ? BY : null;
    default:
      return isStr(c.op) ? null : 'op: not a string';
  }
}

const envelopeProblem = (e: unknown): string | null => (!isMap(e) ? 'not a map' : !isInt(e.id) ? 'id: not an integer' : null);

/**
 * A command batch as far as every version shares it: `v`, and envelopes
 * whose ids an answer can name. Each command is checked on its own
 * (commandProblem), so one bad command is refused and the rest decided.
 */
export const commandBatchShape: Shape<CommandBatch> = shape('command batch', (b) => {
  if (!isMap(b)) return 'not a map';
  if (!isNum(b.v)) return 'v: not a number';
  return at('cmds', itemsProblem(b.cmds, envelopeProblem));
});

/** Why the engine refused a command. The gateway maps codes to HTTP statuses (proto/http.ts). */
export type EngineErrorCode = Rejection['code'];

/** What the account lacks for a conversion: a symbol it holds too little of. */
export interface Shortfall {
  symbol: number;
  have: number;
  need: number;
}

/** Why a write has no outcome: unknown (the engine could not journal it, no answer in time, an answer unreadable), or known not done (withdrawn unsent, no engine took it). */
export type UnavailableCause = 'unconfirmed' | 'timeout' | 'unreadable' | 'withdrawn' | 'not_delivered' | 'too_large';

/**
 * A refusal as the engine decides it: a code and that code's own facts, no
 * words. The edge that shows it (gateway, CLI, pages, the audit export)
 * writes the message from them, in one place (proto/messages.ts). `message`
 * is absent by type: only a RecordedRejection (journaled with its words)
 * carries one.
 */
export type Rejection = { message?: undefined } & (
  | { code: 'bad_request'; why: 'malformed' | 'before' | 'no_components' }
  | { code: 'bad_request'; why: 'unknown_component' | 'component_weight'; component: string }
  /** A symbol listed twice in a basket (`earlier` named it first: tickers are case-blind, and a symbol id names it too). */
  | { code: 'bad_request'; why: 'duplicate_component'; component: string; earlier: string; symbol: number }
  | { code: 'bad_request'; why: 'contains_itself'; etf: string }
  /** A new basket version dated before the last one (`version`, in force from `from` ms). */
  | { code: 'bad_request'; why: 'from_before'; version: number; from: number }
  | { code: 'username_taken'; username: string }
  | { code: 'unknown_account' }
  /** `etf` null: none named where several exist; `etfs`: the ones there are. */
  | { code: 'unknown_etf'; etf: string | null; etfs: string[] }
  | { code: 'invalid_amount'; why: 'range'; max: number }
  /** Not a multiple of the ETF's creation unit. */
  | { code: 'invalid_amount'; why: 'unit'; etf: string; unit: number }
  | { code: 'insufficient_holdings'; op: ConversionOp; amount: number; etf: string; shortfalls: Shortfall[] }
  /** `earlier`: the engine request id the key was first used for. */
  | { code: 'idempotency_conflict'; key: string; earlier: string }
  | { code: 'not_found'; id: string }
  /** Conversions are halted by the operator, of `etf` (null: of every ETF). */
  | { code: 'halted'; etf: string | null; reason: string }
  /** A conversion limit of the rules: units per conversion. */
  | { code: 'limit_exceeded'; why: 'per_conversion'; limit: number }
  /** Units per window of `seconds`, `used` of them already. */
  | { code: 'limit_exceeded'; why: 'per_window'; limit: number; seconds: number; used: number }
  /** The position limit, which the conversion would leave `symbols` beyond. */
  | { code: 'limit_exceeded'; why: 'position'; op: ConversionOp; limit: number; symbols: number[] }
  /** Outside the rules' conversion windows (UTC). */
  | { code: 'outside_window'; windows: { from: string; to: string }[] }
  /** Not answered on the subject it came on (a write on the operators' read-only subject): `answered`, the ops that are. */
  | { code: 'forbidden'; answered: string[] }
  | { code: 'unsupported_version'; speaks: number }
  /** The outcome is unknown (e.g. the journal write failed and the engine restarts). */
  | { code: 'engine_unavailable'; why: UnavailableCause }
  /**
   * A command larger than one NATS message may be on this system (`limit`, the server's max_payload): the
   * gateway's engine client refuses it unsent, so nothing was done, and sending it again cannot help.
   * `journal`: the command fit, but the engine's record of it would not (a journal message is the event with
   * JetStream's headers): the engine refused it before doing anything.
   */
  | { code: 'payload_too_large'; bytes: number; limit: number; journal?: true }
);

/**
 * A refusal in words, as people and scripts read it (HTTP error bodies, the
 * audit trail, WebSocket outcomes): the message and the facts a script
 * reads, tickers named. Journals written before rejections carried codes
 * hold these (a RecordedRejection), and replay shows them as recorded.
 */
export interface EngineError {
  code: EngineErrorCode;
  message: string;
  /** Parameter the error is about, for a 400 that names it. */
  field?: string;
  /** The ETF's creation unit, when `amount` is not a multiple of it. */
  unit?: number;
  /** The limit a refusal is about, and the ticker for a position limit. */
  limit?: number;
  symbol?: string;
  shortfalls?: (Shortfall & { ticker: string })[];
}

/** A refusal journaled with its words, before rejections carried codes and facts. */
export type RecordedRejection = EngineError;

/** A refusal on the engine's wire, in the journal and in the audit trail: decided (codes), or recorded with words by an older engine. */
export type EngineRefusal = Rejection | RecordedRejection;

export interface Position {
  symbol: number;
  ticker: string;
  quantity: number;
}

/**
 * Positions as the engine's wire carries them: [symbol, quantity, symbol,
 * quantity, ...] in symbol order (an account's: zeros left out). A list of
 * numbers is a fraction of the cost of a list of objects to encode, decode
 * and collect, and the edge that shows it adds the tickers.
 */
export type FlatPositions = readonly number[];

/** A symbol's ticker, from the instruments in force (src/config/baskets.ts). */
export type TickerOf = (symbol: number) => string;

/** Flat positions with their tickers: what people and scripts read. */
export function namedPositions(flat: FlatPositions, tickerOf: TickerOf): Position[] {
  // Pushed, not preallocated: a packed array, which JSON.stringify walks on its fast path.
  const out: Position[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ symbol: flat[i]!, ticker: tickerOf(flat[i]!), quantity: flat[i + 1]! });
  return out;
}

/** `{KNAN: 10, UNDY: 2}`, from flat positions: what scripts index by ticker. */
export function positionsByTicker(flat: FlatPositions, tickerOf: TickerOf): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < flat.length; i += 2) out[tickerOf(flat[i]!)] = flat[i + 1]!;
  return out;
}

/** `P`: Position[] where people read it; FlatPositions on the engine's wire (HoldingsAnswer). */
export interface HoldingsView<P = Position[]> {
  client_id: number;
  username: string;
  /** The account's change counter at this view (the `seq` of proto/holdings.ts). */
  seq: number;
  positions: P;
  /** Cash in price units: fills move it by quantity × price the other way, fees take from it. */
  cash: number;
  /**
   * A holdings read's answer only (not a conversion's holdings): the last exchange reset the engine applied, absent
   * while there has been none (and from engines before it was kept). The shared record shape of this view
   * (proto/records.ts) is the answer without it, the common case.
   */
  last_reset?: LastReset;
}

/**
 * The last exchange reset an engine applied (a session marker with `reset`, proto/fill.ts): it zeroed every
 * account, cash too, so every team's P&L starts again from 0 there, and what its conversions before it earned went
 * with it. GET /holdings and the WebSocket stream carry it so a page can split the P&L of the session since.
 */
export interface LastReset {
  /** When the fill stream stored the marker (ms): the same on every engine shard, and after any restart. */
  ts: number;
  /**
   * The last request id the engine had handed out when it applied the reset (null: none yet). The engine numbers
   * requests in the order it decides them, and applies fills and resets in that same order, so a request with a
   * higher id (of this account) was decided after the reset, whatever its `ts` says.
   */
  last_request_id: string | null;
}

export interface RegisterResult {
  request_id: string;
  client_id: number;
  username: string;
}

export interface CredentialsResult {
  client_id: number;
  passwordHash: string;
}

/**
 * Who holds a username on the shard that decides it (the `claim` answer):
 * the asker's own line when `source` is roster and `client_id` its own;
 * otherwise the line conflicts, as a line naming a registered or otherwise
 * numbered username does on one engine.
 */
export interface NameHolder {
  username: string;
  client_id: number;
  source: 'register' | 'roster';
}

/** `P` as in HoldingsView: the engine answers a ConversionAnswer. */
export interface ConversionResult<P = Position[]> {
  request_id: string;
  client_request_id?: string;
  /** True when this is the stored result of an earlier request with the same key. */
  replayed?: boolean;
  /** Accepted despite a position limit in `warn` mode: the symbols beyond it (the edge words them as warnings). */
  beyond_limit?: { limit: number; symbols: number[] };
  /** A dry run: what would happen; nothing changed and nothing was journaled. */
  dry_run?: true;
  op: ConversionOp;
  etf: string;
  amount: number;
  /** Signed change per symbol, ETF units included. */
  deltas: P;
  /** Fee charged in cash for this conversion (0 when fees are off). */
  fee: number;
  /** The basket version used (0: the config's). */
  basket_version: number;
  holdings: HoldingsView<P>;
}

/** On the engine's wire. */
export type HoldingsAnswer = HoldingsView<FlatPositions>;
export type ConversionAnswer = ConversionResult<FlatPositions>;

export const namedHoldings = (h: HoldingsAnswer, tickerOf: TickerOf): HoldingsView => ({ ...h, positions: namedPositions(h.positions, tickerOf) });
export const namedConversion = (r: ConversionAnswer, tickerOf: TickerOf): ConversionResult => ({
  ...r,
  deltas: namedPositions(r.deltas, tickerOf),
  holdings: namedHoldings(r.holdings, tickerOf),
});

/** A line of the roster file the engine did not take, and why (never its password). Line 0: the file itself. */
export interface RosterRefusal {
  line: number;
  reason: string;
}

export interface ScoreboardFailing {
  error: string;
  since: number;
  /** The engine shard whose file it is (several shards: each writes its own). */
  shard?: number;
}

export interface PingResult {
  accounts: number;
  journal_seq: number;
  fill_seq: number;
  /** Roster lines the engine refused at its last reading of the file (each as if absent until fixed); absent when none. */
  roster_refused?: RosterRefusal[];
  /**
   * The scoreboard file (NDFEX's record of conversions) stopped taking lines:
   * what failed and since when (ms). Its lines are tried again, and rewritten
   * from the journal at the next start; absent while it is written.
   */
  scoreboard_failing?: ScoreboardFailing;
  /** With several engine shards (proto/shards.ts): each one's own, in shard order; the fields above are their sums and lowest fill_seq. */
  shards?: { shard: number; accounts: number; journal_seq: number; fill_seq: number }[];
}

export interface HistoryResult<E = AuditRecord> {
  entries: E[];
  /** Pass as `before` for the next page; absent on the last page. */
  next?: string;
}

export interface DumpResult {
  /** The journal sequence and fill-stream sequence this state is exactly the replay of. */
  journal_seq: number;
  fill_seq: number;
  accounts: { client_id: number; username: string; positions: [number, number][]; cash: number }[];
  /** With several engine shards: each shard's sequences (its own journal), in shard order; accounts are all shards'. */
  shards?: { shard: number; journal_seq: number; fill_seq: number }[];
}

/** The conversion rules in force (`rules` op). */
export interface RulesResult {
  /** Halts in force: etf null halts every ETF. */
  halts: { etf: string | null; reason: string; by: string; since: number }[];
  /** The rules in force, and whether they are the config's or the operator's (with who and when). */
  rules: ConversionRules;
  set_by: { by: string; ts: number } | null;
  units: Record<string, number>;
  /** Basket versions the operator set, per ETF (version 0, the config's, is not listed). */
  baskets: Record<string, { version: number; from: number; by: string; components: Record<string, number> }[]>;
}

/** An audit entry on the engine's wire: its refusal, if any, in codes (or as recorded). */
export type AuditRecord = AuditEntry<EngineRefusal>;

export type EngineResult = RulesResult | RegisterResult | CredentialsResult | NameHolder | ConversionAnswer | HoldingsAnswer | PingResult | AuditRecord | HistoryResult | DumpResult;

/** What each command answers, by its op: a reply's result is typed by the command that asked. */
export interface ResultByOp {
  register: RegisterResult;
  credentials: CredentialsResult;
  create: ConversionAnswer;
  redeem: ConversionAnswer;
  request: AuditRecord;
  history: HistoryResult;
  holdings: HoldingsAnswer;
  ping: PingResult;
  halt: RulesResult;
  resume: RulesResult;
  rules: RulesResult;
  set_basket: RulesResult;
  set_rules: RulesResult;
  dump: DumpResult;
  claim: NameHolder;
}

/** The reply to command `C`. */
export type ReplyTo<C extends EngineCommand> = { id: number; ok: true; result: ResultByOp[C['op']] } | { id: number; ok: false; error: EngineRefusal; replayed?: string };

/** `replayed`: a retry refused again as its key's first request was (that request's engine id). */
export type EngineReply =
  | { id: number; ok: true; result: EngineResult }
  | { id: number; ok: false; error: EngineRefusal; replayed?: string };

export interface ReplyBatch {
  v: number;
  replies: EngineReply[];
}

/** Published on engineFaultSubject(shard) as an engine shard exits on a fault; GET /health shows the last one. */
export interface EngineFault {
  shard: number;
  /** The loop that failed, e.g. "fill stream" or "journal write". */
  what: string;
  /** The error's name and message. */
  cause: string;
  /** Wall-clock ms. */
  ts: number;
}

/** Why one answer of a ReplyBatch cannot be used: without its id it answers nobody, and a result or a refusal must be there. */
export function engineReplyProblem(r: unknown): string | null {
  if (!isMap(r)) return 'not a map';
  if (!isInt(r.id)) return 'id: not an integer';
  if (r.ok === true) return r.result === undefined ? 'result: missing' : null;
  if (r.ok !== false) return 'ok: not a boolean';
  return !isMap(r.error) ? 'error: not a map' : !isStr(r.error.code) ? 'error.code: not a string' : null;
}

/**
 * An answer batch's envelope: the gateway checks each answer on its own
 * (engineReplyProblem), so one bad answer fails only its own request.
 */
export const replyBatchShape: Shape<ReplyBatch> = shape('reply batch', (b) =>
  !isMap(b) ? 'not a map' : !isNum(b.v) ? 'v: not a number' : !Array.isArray(b.replies) ? 'replies: not a list' : null,
);

/** What ShardNames.signin carries: the usernames whose sign-in changed outside the journal (proto/subjects.ts SIGNIN_SUBJECT_PREFIX). */
export interface SignInChanges {
  v: 1;
  usernames: string[];
}
export const signInChangesShape: Shape<SignInChanges> = shape('sign-in changes', fields({ v: INT, usernames: STR_LIST }));

/**
 * Published on ShardNames.started once an engine shard serves (its start-up
 * replay done, its commands subscribed). What it applied while starting was
 * published to nobody; a gateway re-snapshots that shard's streamed accounts.
 */
export interface EngineStarted {
  v: 1;
  shard: number;
  shards: number;
  /** Wall-clock ms. */
  ts: number;
}
export const engineStartedShape: Shape<EngineStarted> = shape('engine started', fields({ v: INT, shard: INT, shards: INT, ts: NUM }));

export const engineFaultShape: Shape<EngineFault> = shape('engine fault', fields({ shard: INT, what: STR, cause: STR, ts: NUM }));
