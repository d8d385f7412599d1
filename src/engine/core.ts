import {
  namedPositions,
  type AuditRecord,
  type ConversionAnswer,
  type ConversionOp,
  type EngineCommand,
  type EngineResult,
  type FlatPositions,
  type HoldingsAnswer,
  type LastReset,
  type Position,
  type EngineRefusal,
  type Rejection,
  type ResultByOp,
  type RulesResult,
  type Shortfall,
} from '../../proto/engine.js';
import type { Delta, JournalEvent } from '../../proto/journal.js';
import { ENGINE_REQUEST_ID_PATTERN } from '../../proto/audit.js';
import { fillDelta, type Fill } from '../../proto/fill.js';
import type { Instruments, Basket } from '../config/baskets.js';
import type { BasketVersions } from '../../proto/marketdata.js';
import { MAX_WINDOW_SECONDS, type ConversionRules } from '../../proto/rules.js';
import {
  ALL_ETFS,
  addPosition,
  applyDeltas,
  applyEvent,
  bindInstruments,
  flatPositions,
  forEachPosition,
  hasPositions,
  position,
  positionList,
  MAX_UNCLAIMED,
  type Account,
  type AuditEvent,
  type EngineState,
} from './state.js';
import { answerDeltas, basketDeltas, type Catalog, type CompiledBasket } from './catalog.js';

type Conversion = Extract<JournalEvent, { t: 'conversion' }>;

/**
 * The engine's pure core: state + command → decision + events. No I/O, no
 * clock (the caller passes `now`), no async. The actor journals the events
 * before it releases the answer. decide changes no state (it may compile the
 * config's baskets into the state's catalog, a cache); an accepted
 * conversion's `result` is built when read, from the account as it is then.
 *
 * A decision is one of three: `accepted` (a write; its events, none for a dry
 * run or a change already in force), `rejected` (a refusal; for conversions
 * and registrations its journaled record) or `read`. The absent side is typed
 * `undefined`, so `d.error === undefined` means "not refused".
 */
export type Decision<R extends EngineResult = EngineResult> = Accepted<R> | Rejected | Read<R>;
export interface Accepted<R extends EngineResult = EngineResult> {
  readonly kind: 'accepted';
  readonly result: R;
  readonly events: JournalEvent[];
  readonly error?: undefined;
}
export interface Rejected {
  readonly kind: 'rejected';
  readonly error: EngineRefusal;
  readonly events: JournalEvent[];
  readonly result?: undefined;
  /** A retry's answer: the engine request id of the refusal stored under its key (the answer says it is a replay). */
  readonly replayOf?: number;
}
export interface Read<R extends EngineResult = EngineResult> {
  readonly kind: 'read';
  readonly result: R;
  readonly events: JournalEvent[];
  readonly error?: undefined;
}

/** A conversion's fee in cash: `fixed` plus `per_unit` × amount (price units). */
export interface Fee {
  fixed: number;
  per_unit: number;
}

export interface CoreConfig {
  instruments: Instruments;
  maxAmount: number;
  /** The config's conversion rules (every one off when absent); the operator's, once journaled, replace them. */
  rules?: ConversionRules;
  /** One engine shard of several (proto/shards.ts): the client_ids it hands out, and the roster's usernames, which live on any shard. */
  shard?: { shard: number; shards: number; rosterUsernames: ReadonlySet<string> };
}

/** The next client_id a registration gets: above every one in use, and of this shard's residue. */
export function nextClientId(maxClientId: number, shard: CoreConfig['shard']): number {
  if (!shard || shard.shards === 1) return maxClientId + 1;
  const next = maxClientId + 1;
  return next + ((shard.shard - (next % shard.shards) + shard.shards) % shard.shards);
}

const NO_RULES: ConversionRules = Object.freeze({});

/** The rules in force: the operator's last (journaled), else the config's. */
export const effectiveRules = (state: EngineState, cfg: CoreConfig): ConversionRules => state.rules?.rules ?? cfg.rules ?? NO_RULES;

export const conversionFee = (rules: ConversionRules, op: 'create' | 'redeem', amount: number): number => {
  const f = rules.fees?.[op];
  return f ? f.fixed + f.per_unit * amount : 0;
};

const minuteOfDay = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3));

/** Whether `now` (ms, UTC) is inside one of the windows; `to` before `from` wraps past midnight. */
export function insideWindows(windows: NonNullable<ConversionRules['windows']>, now: number): boolean {
  const m = Math.floor(now / 60_000) % 1440;
  return windows.some((w) => {
    const from = minuteOfDay(w.from);
    const to = minuteOfDay(w.to);
    return from <= to ? m >= from && m < to : m >= from || m < to;
  });
}

const refuse = (error: EngineRefusal): Rejected => ({ kind: 'rejected', error, events: [] });
const read = <R extends EngineResult>(result: R): Read<R> => ({ kind: 'read', result, events: [] });
const MAX_HISTORY_PAGE = 500;

export const requestIdString = (n: number): string => `r${n}`;
const parseRequestId = (s: string): number | undefined => (ENGINE_REQUEST_ID_PATTERN.test(s) ? Number(s.slice(1)) : undefined);

function positionsOf(deltas: readonly Delta[], instruments: Instruments): Position[] {
  return deltas.map(([symbol, quantity]) => ({ symbol, ticker: instruments.tickerOf(symbol), quantity }));
}

/** The account's positions as answers and notices carry them (flat, proto/engine.ts FlatPositions). */
export function accountPositions(acc: Account): FlatPositions {
  // Every change of positions bumps the version: the list built for it serves until the next one.
  if (acc.view && acc.view.version === acc.version) return acc.view.positions;
  // Shared by every answer of this version: frozen, so a caller that changed it would fail loudly instead of corrupting the others.
  const out = Object.freeze(flatPositions(acc));
  acc.view = { version: acc.version, positions: out };
  return out;
}

export function holdingsView(acc: Account): HoldingsAnswer {
  return { client_id: acc.clientId, username: acc.username, seq: acc.version, positions: accountPositions(acc), cash: acc.cash };
}

function pickBasket(cfg: CoreConfig, etf: string | null): Basket | Rejection {
  const { baskets } = cfg.instruments;
  if (etf === null && baskets.size === 1) return baskets.values().next().value!;
  return (etf !== null && baskets.get(etf)) || { code: 'unknown_etf', etf, etfs: [...baskets.keys()] };
}

/** Deltas of converting `amount` units: create debits the basket and credits the ETF; redeem the reverse. */
export function conversionDeltas(basket: Pick<Basket, 'symbol' | 'components'>, op: 'create' | 'redeem', amount: number): Delta[] {
  const sign = op === 'create' ? 1 : -1;
  return [...basket.components.map((c): Delta => [c.symbol, -sign * c.weight * amount]), [basket.symbol, sign * amount]];
}

/** The operator's basket versions of an ETF with their components spelled out. */
export function basketVersions(state: EngineState, etf: string, instruments: Instruments): BasketVersions['versions'] {
  return (state.baskets.get(etf) ?? []).map((v) => ({
    version: v.version,
    from: v.from,
    components: v.components.map(([symbol, weight]) => ({ symbol, ticker: instruments.tickerOf(symbol), weight })),
  }));
}

/** A journaled conversion's positions right after it (version 1: pairs; version 2: flat), if the record has them. */
function heldAfter(ev: Conversion): FlatPositions | undefined {
  return ev.held ?? ev.after?.flat();
}

/**
 * The audit entry of a journaled decision: its positions named, as teams and
 * operators read them; its refusal, if any, in codes (the edge words it,
 * proto/messages.ts). `catalog` gives a compact conversion's deltas (by its
 * basket version).
 */
export function auditEntry(ev: AuditEvent, instruments: Instruments, catalog: Catalog): AuditRecord {
  switch (ev.t) {
    case 'account':
      return { request_id: requestIdString(ev.requestId ?? 0), kind: 'register', status: 'accepted', client_id: ev.clientId, username: ev.username, ts: ev.ts };
    case 'conversion': {
      const held = heldAfter(ev);
      const holdings = held ? namedPositions(held, instruments.tickerOf) : undefined;
      return {
        request_id: requestIdString(ev.requestId),
        kind: ev.op,
        status: 'accepted',
        client_id: ev.clientId,
        etf: ev.etf,
        amount: ev.amount,
        deltas: positionsOf(catalog.deltas(ev), instruments),
        ...(ev.fee ? { fee: ev.fee } : {}),
        ...(holdings ? { holdings } : {}),
        ...(ev.key !== undefined ? { client_request_id: ev.key } : {}),
        ts: ev.ts,
      };
    }
    case 'rejected':
      return {
        request_id: requestIdString(ev.requestId),
        kind: ev.kind,
        status: 'rejected',
        client_id: ev.clientId,
        ...(ev.username !== undefined ? { username: ev.username } : {}),
        ...(ev.etf !== undefined ? { etf: ev.etf } : {}),
        ...(ev.amount !== undefined ? { amount: ev.amount } : {}),
        ...(ev.holdings ? { holdings: positionsOf(ev.holdings, instruments) } : {}),
        error: ev.error,
        ...(ev.key !== undefined ? { client_request_id: ev.key } : {}),
        ts: ev.ts,
      };
  }
}

function rulesView(halts: EngineState['halts'], set: EngineState['rules'], cfg: CoreConfig, baskets: EngineState['baskets']): RulesResult {
  return {
    baskets: Object.fromEntries(
      [...baskets].map(([etf, versions]) => [
        etf,
        versions.map((v) => ({ version: v.version, from: v.from, by: v.by, components: Object.fromEntries(v.components.map(([s, w]) => [cfg.instruments.tickerOf(s), w])) })),
      ]),
    ),
    halts: [...halts].map(([etf, h]) => ({ etf: etf === ALL_ETFS ? null : etf, reason: h.reason, by: h.by, since: h.since })),
    rules: set?.rules ?? cfg.rules ?? {},
    set_by: set ? { by: set.by, ts: set.ts } : null,
    units: Object.fromEntries([...cfg.instruments.baskets.values()].map((b) => [b.name, b.unit])),
  };
}

/** A retry's answer, rebuilt from the stored decision: the same fields as the first answer, the holdings' seq and cash as they are now. */
function replayedOutcome(ev: AuditEvent, acc: Account, state: EngineState): Decision<ConversionAnswer> {
  // Said to be a replay, as an accepted one is: a refusal of then (insufficient holdings, a halt) may no longer hold now.
  if (ev.t === 'rejected') return { kind: 'rejected', error: ev.error, events: [], replayOf: ev.requestId };
  if (ev.t !== 'conversion') throw new Error('not a conversion');
  const result: ConversionAnswer = {
    request_id: requestIdString(ev.requestId),
    ...(ev.key !== undefined ? { client_request_id: ev.key } : {}),
    replayed: true,
    op: ev.op,
    etf: ev.etf,
    amount: ev.amount,
    deltas: state.catalog.flatDeltas(ev),
    fee: ev.fee ?? 0,
    basket_version: ev.basketVersion ?? 0,
    holdings: { client_id: acc.clientId, username: acc.username, seq: acc.version, positions: heldAfter(ev) ?? [], cash: acc.cash },
  };
  return { kind: 'accepted', result, events: [] };
}

/**
 * An accepted conversion. Its answer (flat position lists) is built only
 * when the edge that replies reads `result`, not for every decision; read it
 * before the account changes again (the actor reads it at once).
 */
class AcceptedConversion implements Accepted<ConversionAnswer> {
  readonly kind = 'accepted';
  readonly events: JournalEvent[];
  private built: ConversionAnswer | undefined;
  constructor(
    private readonly acc: Account,
    private readonly ev: Conversion,
    private readonly basket: CompiledBasket,
    /** The account's version when decided: the event is applied once it is one more. */
    private readonly decidedAt: number,
    private readonly beyond: ConversionAnswer['beyond_limit'],
    dryRun: boolean,
  ) {
    this.events = dryRun ? [] : [ev];
  }

  get result(): ConversionAnswer {
    return (this.built ??= this.build());
  }

  private build(): ConversionAnswer {
    const { acc, ev, basket } = this;
    const applied = acc.version > this.decidedAt;
    const units = ev.op === 'create' ? ev.amount : -ev.amount;
    const deltas = answerDeltas(basket, units);
    let positions: FlatPositions;
    if (applied) positions = accountPositions(acc);
    else {
      // Not applied yet (or a dry run): the positions it leaves, without changing any.
      const after = new Map(positionList(acc));
      for (let i = 0; i < deltas.length; i += 2) after.set(deltas[i]!, (after.get(deltas[i]!) ?? 0) + deltas[i + 1]!);
      positions = [...after].filter(([, q]) => q !== 0).sort((a, b) => a[0] - b[0]).flat();
    }
    const fee = ev.fee ?? 0;
    const result: ConversionAnswer = {
      request_id: requestIdString(ev.requestId),
      ...(ev.key !== undefined ? { client_request_id: ev.key } : {}),
      op: ev.op,
      etf: ev.etf,
      amount: ev.amount,
      deltas,
      fee,
      basket_version: ev.basketVersion ?? 0,
      // The view is of the state after the event: one change later than when decided.
      holdings: { client_id: acc.clientId, username: acc.username, seq: this.decidedAt + 1, positions, cash: applied ? acc.cash : acc.cash - fee },
    };
    if (this.beyond) result.beyond_limit = this.beyond;
    if (this.events.length === 0) {
      // What would happen: the positions after, but no request id taken, nothing changed.
      result.request_id = 'dry-run';
      result.dry_run = true;
      result.holdings.seq = this.decidedAt;
    }
    return result;
  }
}

/** The stored decision of a request, by engine id (`r42`) or idempotency key. */
function findRequest(acc: Account, id: string): AuditEvent | undefined {
  const h = acc.history;
  const n = parseRequestId(id);
  let i = n !== undefined ? h.indexOf(n) : -1;
  if (i < 0) {
    const byKey = h.keys.get(id);
    if (byKey !== undefined) i = h.indexOf(byKey);
  }
  return i < 0 ? undefined : h.eventAt(i, acc.clientId);
}

type Op = EngineCommand['op'];
/** The command of kind `O` (the conversion variant is shared by create and redeem). */
type CommandOf<O extends Op> = EngineCommand & { op: O };
/** Decides one kind of command: typed by the command, answering that command's result (proto/engine.ts ResultByOp). */
type Handler<O extends Op> = (state: EngineState, cfg: CoreConfig, cmd: CommandOf<O>, now: number) => Decision<ResultByOp[O]>;

const unknownEtf = (cfg: CoreConfig, etf: string): Rejection => ({ code: 'unknown_etf', etf, etfs: [...cfg.instruments.baskets.keys()] });
const unknownAccount = (): Rejected => refuse({ code: 'unknown_account' });

/** A refused conversion, journaled (unless a dry run) for the audit trail and retries. */
function rejectConversion(cmd: CommandOf<ConversionOp>, acc: Account, requestId: number, now: number, error: Rejection): Rejected {
  if (cmd.dryRun) return refuse(error);
  const ev: JournalEvent = {
    t: 'rejected',
    requestId,
    ...(cmd.key !== undefined ? { key: cmd.key } : {}),
    kind: cmd.op,
    clientId: acc.clientId,
    etf: cmd.etf,
    amount: cmd.amount,
    error,
    holdings: positionList(acc),
    ts: now,
  };
  return { kind: 'rejected', error, events: [ev] };
}

function haltOrResume(state: EngineState, cfg: CoreConfig, cmd: CommandOf<'halt' | 'resume'>, now: number): Decision<RulesResult> {
  if (cmd.etf !== null && !cfg.instruments.baskets.has(cmd.etf)) return refuse(unknownEtf(cfg, cmd.etf));
  const ev: JournalEvent = { t: 'operator', action: cmd.op, etf: cmd.etf, ...(cmd.op === 'halt' ? { reason: cmd.reason } : {}), by: cmd.by, ts: now };
  const after = new Map(state.halts);
  if (cmd.op === 'halt') after.set(cmd.etf ?? ALL_ETFS, { reason: cmd.reason, by: cmd.by, since: now });
  else if (cmd.etf === null) after.clear();
  else after.delete(cmd.etf);
  return { kind: 'accepted', result: rulesView(after, state.rules, cfg, state.baskets), events: [ev] };
}

/** The components of a new basket by symbol, sorted, or why they are refused. */
function basketComponents(cfg: CoreConfig, basket: Basket, components: Record<string, number>): Delta[] | Rejection {
  const out: Delta[] = [];
  const named = new Map<number, string>();
  for (const [ticker, weight] of Object.entries(components)) {
    const symbol = cfg.instruments.symbolOf(ticker.toUpperCase());
    if (symbol === undefined) return { code: 'bad_request', why: 'unknown_component', component: ticker };
    if (symbol === basket.symbol) return { code: 'bad_request', why: 'contains_itself', etf: basket.name };
    if (!Number.isSafeInteger(weight) || weight < 1) return { code: 'bad_request', why: 'component_weight', component: ticker };
    // KNAN, knan and 3 are one symbol: listed twice, the holdings check saw each entry alone while a create debited
    // every one (a team holding 1 KNAN left at -2), and the rules showed one.
    const earlier = named.get(symbol);
    if (earlier !== undefined) return { code: 'bad_request', why: 'duplicate_component', component: ticker, earlier, symbol };
    named.set(symbol, ticker);
    out.push([symbol, weight]);
  }
  if (out.length === 0) return { code: 'bad_request', why: 'no_components' };
  return out.sort((a, b) => a[0] - b[0]);
}

const sameComponents = (a: readonly Delta[], b: readonly Delta[]): boolean => a.length === b.length && a.every(([sym, w], i) => b[i]![0] === sym && b[i]![1] === w);

const setBasket: Handler<'set_basket'> = (state, cfg, cmd, now) => {
  const basket = cfg.instruments.baskets.get(cmd.etf);
  if (!basket) return refuse(unknownEtf(cfg, cmd.etf));
  const components = basketComponents(cfg, basket, cmd.components);
  if (!Array.isArray(components)) return refuse(components);
  const versions = state.baskets.get(basket.name) ?? [];
  const last = versions[versions.length - 1];
  // The basket in force already: nothing to change. So a retry (after a 503, or to a shard that missed it) makes no second version.
  if (last && sameComponents(last.components, components)) return { kind: 'accepted', result: rulesView(state.halts, state.rules, cfg, state.baskets), events: [] };
  if (last && cmd.from < last.from) return refuse({ code: 'bad_request', why: 'from_before', version: last.version, from: last.from });
  const ev: JournalEvent = { t: 'basket', etf: basket.name, version: (last?.version ?? 0) + 1, components, from: cmd.from, by: cmd.by, ts: now };
  const after = new Map(state.baskets);
  after.set(basket.name, [...versions, { version: ev.version, from: ev.from, by: ev.by, components }]);
  return { kind: 'accepted', result: rulesView(state.halts, state.rules, cfg, after), events: [ev] };
};

const setRules: Handler<'set_rules'> = (state, cfg, cmd, now) => {
  const ev: JournalEvent = { t: 'rules', rules: cmd.rules, by: cmd.by, ts: now };
  return { kind: 'accepted', result: rulesView(state.halts, { rules: cmd.rules, by: cmd.by, ts: now }, cfg, state.baskets), events: [ev] };
};

const register: Handler<'register'> = (state, cfg, cmd, now) => {
  const requestId = state.requestSeq + 1;
  if (state.byUsername.has(cmd.username) || state.names.has(cmd.username) || cfg.shard?.rosterUsernames.has(cmd.username)) {
    const error: Rejection = { code: 'username_taken', username: cmd.username };
    return { kind: 'rejected', error, events: [{ t: 'rejected', requestId, kind: 'register', clientId: null, username: cmd.username, error, ts: now }] };
  }
  // Not an id the exchange is filling (its fills wait for a roster line): a new account would take a stranger's trades from then on.
  let clientId = nextClientId(state.maxClientId, cfg.shard);
  while (state.unclaimed.has(clientId)) clientId = nextClientId(clientId, cfg.shard);
  const ev: JournalEvent = { t: 'account', clientId, username: cmd.username, source: 'register', passwordHash: cmd.passwordHash, requestId, ts: now };
  return { kind: 'accepted', result: { request_id: requestIdString(requestId), client_id: clientId, username: cmd.username }, events: [ev] };
};

/**
 * Another shard's roster line asks for its username (proto/engine.ts `claim`). This shard orders every
 * /register of the name, so the first of the two here wins, as on one engine: a name registered before is
 * not given (the line is refused there, as a line naming a registered username is), and a name given is
 * never registered after, even once its line leaves the file (its account stays, closed).
 */
const claim: Handler<'claim'> = (state, _cfg, cmd, now) => {
  const acc = state.byUsername.get(cmd.username);
  if (acc) return read({ username: cmd.username, client_id: acc.clientId, source: acc.source });
  const held = state.names.get(cmd.username);
  if (held !== undefined) return read({ username: cmd.username, client_id: held, source: 'roster' });
  const ev: JournalEvent = { t: 'name', username: cmd.username, clientId: cmd.clientId, ts: now };
  return { kind: 'accepted', result: { username: cmd.username, client_id: cmd.clientId, source: 'roster' }, events: [ev] };
};

const credentials: Handler<'credentials'> = (state, _cfg, cmd) => {
  const acc = state.byUsername.get(cmd.username);
  return acc ? read({ client_id: acc.clientId, passwordHash: acc.passwordHash }) : unknownAccount();
};

const holdings: Handler<'holdings'> = (state, _cfg, cmd) => {
  const acc = state.accounts.get(cmd.clientId);
  if (!acc) return unknownAccount();
  const view = holdingsView(acc);
  if (state.lastReset) view.last_reset = lastResetView(state.lastReset);
  return read(view);
};

/** EngineState.lastReset as answers and notices carry it. */
export const lastResetView = (r: NonNullable<EngineState['lastReset']>): LastReset => ({ ts: r.ts, last_request_id: r.requestSeq > 0 ? requestIdString(r.requestSeq) : null });

const dump: Handler<'dump'> = (state) =>
  read({
    journal_seq: state.journalSeq,
    fill_seq: state.fillSeq,
    accounts: [...state.accounts.values()].map((a) => ({ client_id: a.clientId, username: a.username, positions: positionList(a), cash: a.cash })),
  });

const request: Handler<'request'> = (state, cfg, cmd) => {
  bindInstruments(state, cfg.instruments);
  const acc = state.accounts.get(cmd.clientId);
  const ev = acc && findRequest(acc, String(cmd.id));
  // Another team's id and a missing id look the same: nothing about other teams leaks.
  if (!ev) return refuse({ code: 'not_found', id: String(cmd.id) });
  return read(auditEntry(ev, cfg.instruments, state.catalog));
};

const history: Handler<'history'> = (state, cfg, cmd) => {
  const acc = state.accounts.get(cmd.clientId);
  if (!acc) return unknownAccount();
  const limit = Math.max(1, Math.min(MAX_HISTORY_PAGE, Math.floor(cmd.limit) || 50));
  const before = cmd.before === undefined ? Infinity : parseRequestId(cmd.before);
  if (before === undefined) return refuse({ code: 'bad_request', why: 'before' });
  bindInstruments(state, cfg.instruments);
  const entries: AuditRecord[] = [];
  const h = acc.history;
  let i = h.length - 1;
  for (; i >= 0 && entries.length < limit; i--) {
    if (h.requestIdAt(i) < before) entries.push(auditEntry(h.eventAt(i, acc.clientId), cfg.instruments, state.catalog));
  }
  const last = entries[entries.length - 1];
  return read({ entries, ...(i >= 0 && last ? { next: last.request_id } : {}) });
};

/** A create or redeem with a key used before: the stored outcome again, or a conflict if the request differs. */
function retried(state: EngineState, cfg: CoreConfig, cmd: CommandOf<ConversionOp>, acc: Account): Decision<ConversionAnswer> | undefined {
  // A dry run is never stored: its key, if any, is not taken.
  if (cmd.key === undefined || cmd.dryRun) return undefined;
  const earlier = findKey(acc, cmd.key);
  if (!earlier) return undefined;
  // The ETF each names, the only one standing for no name: an accepted request stores the ETF it used, a refused one
  // the name it was sent with (none included), and both are the same request with or without the name.
  const etfOf = (etf: string | null): string | null => {
    const b = pickBasket(cfg, etf);
    return 'code' in b ? etf : b.name;
  };
  const sameEtf = (stored: string | null | undefined) => cmd.etf === null || etfOf(cmd.etf) === etfOf(stored ?? null);
  const same =
    earlier.t === 'conversion'
      ? earlier.op === cmd.op && earlier.amount === cmd.amount && sameEtf(earlier.etf)
      : earlier.t === 'rejected' && earlier.kind === cmd.op && earlier.amount === cmd.amount && sameEtf(earlier.etf);
  if (!same) {
    return refuse({ code: 'idempotency_conflict', key: cmd.key, earlier: requestIdString(earlier.t === 'account' ? 0 : earlier.requestId) });
  }
  return replayedOutcome(earlier, acc, state);
}

/** The rules' refusals that need no basket arithmetic: halts, creation unit, windows, units per conversion and per window. */
function ruleRefusal(state: EngineState, cmd: CommandOf<ConversionOp>, acc: Account, basket: Basket, rules: ConversionRules, now: number): Rejection | undefined {
  if (state.halts.size > 0) {
    const halt = state.halts.get(ALL_ETFS) ?? state.halts.get(basket.name);
    if (halt) return { code: 'halted', etf: state.halts.has(ALL_ETFS) ? null : basket.name, reason: halt.reason };
  }
  if (cmd.amount % basket.unit !== 0) return { code: 'invalid_amount', why: 'unit', etf: basket.name, unit: basket.unit };
  if (rules.windows && !insideWindows(rules.windows, now)) return { code: 'outside_window', windows: rules.windows.map((w) => ({ from: w.from, to: w.to })) };
  const maxUnits = rules.max_units_per_conversion;
  if (maxUnits !== undefined && cmd.amount > maxUnits) return { code: 'limit_exceeded', why: 'per_conversion', limit: maxUnits };
  const perWindow = rules.units_per_window;
  if (perWindow) {
    // A rule journaled before the cap with a longer window counts the day the ledger keeps, and says so.
    const seconds = Math.min(perWindow.seconds, MAX_WINDOW_SECONDS);
    const used = acc.window.unitsSince(now - seconds * 1000);
    if (used + cmd.amount > perWindow.units) return { code: 'limit_exceeded', why: 'per_window', limit: perWindow.units, seconds, used };
  }
  return undefined;
}

/** What the account lacks for the conversion, if anything. Checked in place against the compiled basket: nothing is built unless something is short. */
function shortfallRefusal(cmd: CommandOf<ConversionOp>, acc: Account, basket: Basket, inForce: CompiledBasket): Rejection | undefined {
  const units = cmd.op === 'create' ? cmd.amount : -cmd.amount;
  const { syms, weights } = inForce;
  let short = units < 0 && position(acc, inForce.symbol) < -units;
  for (let i = 0; i < syms.length && !short; i++) if (units > 0 && position(acc, syms[i]!) < weights[i]! * units) short = true;
  if (!short) return undefined;
  const shortfalls: Shortfall[] = [];
  for (const [symbol, d] of basketDeltas(inForce, cmd.op, cmd.amount)) {
    if (d >= 0) continue;
    const have = position(acc, symbol);
    if (have < -d) shortfalls.push({ symbol, have, need: -d });
  }
  return { code: 'insufficient_holdings', op: cmd.op, amount: cmd.amount, etf: basket.name, shortfalls };
}

/** The position limit: a refusal in `refuse` mode, the symbols beyond it in `warn` mode, nothing when within it or off. */
function positionLimit(cmd: CommandOf<ConversionOp>, acc: Account, inForce: CompiledBasket, rules: ConversionRules): { refusal?: Rejection; beyond?: ConversionAnswer['beyond_limit'] } {
  if (!rules.position_limit) return {};
  const { limit, mode } = rules.position_limit;
  const symbols: number[] = [];
  for (const [symbol, d] of basketDeltas(inForce, cmd.op, cmd.amount)) if (Math.abs(position(acc, symbol) + d) > limit) symbols.push(symbol);
  if (symbols.length === 0) return {};
  return mode === 'refuse' ? { refusal: { code: 'limit_exceeded', why: 'position', op: cmd.op, limit, symbols } } : { beyond: { limit, symbols } };
}

function convert(state: EngineState, cfg: CoreConfig, cmd: CommandOf<ConversionOp>, now: number): Decision<ConversionAnswer> {
  const acc = state.accounts.get(cmd.clientId);
  if (!acc || acc.closed) return unknownAccount();
  bindInstruments(state, cfg.instruments);
  const again = retried(state, cfg, cmd, acc);
  if (again) return again;
  const requestId = state.requestSeq + 1;
  if (!Number.isSafeInteger(cmd.amount) || cmd.amount < 1 || cmd.amount > cfg.maxAmount) return refuse({ code: 'invalid_amount', why: 'range', max: cfg.maxAmount });
  const basket = pickBasket(cfg, cmd.etf);
  if ('code' in basket) return rejectConversion(cmd, acc, requestId, now, basket);
  const rules = effectiveRules(state, cfg);
  const refusal = ruleRefusal(state, cmd, acc, basket, rules, now);
  if (refusal) return rejectConversion(cmd, acc, requestId, now, refusal);
  const inForce = state.catalog.inForce(basket.name, now)!;
  const short = shortfallRefusal(cmd, acc, basket, inForce);
  if (short) return rejectConversion(cmd, acc, requestId, now, short);
  const limit = positionLimit(cmd, acc, inForce, rules);
  if (limit.refusal) return rejectConversion(cmd, acc, requestId, now, limit.refusal);
  const fee = conversionFee(rules, cmd.op, cmd.amount);
  const ev: Conversion = { t: 'conversion', requestId, op: cmd.op, clientId: acc.clientId, etf: basket.name, amount: cmd.amount, ts: now };
  if (cmd.key !== undefined) ev.key = cmd.key;
  if (fee !== 0) ev.fee = fee;
  if (inForce.version !== 0) ev.basketVersion = inForce.version;
  return new AcceptedConversion(acc, ev, inForce, acc.version, limit.beyond, cmd.dryRun === true);
}

const HANDLERS: { [O in Op]: Handler<O> } = {
  register,
  claim,
  credentials,
  create: convert,
  redeem: convert,
  request,
  history,
  holdings,
  ping: (state) => read({ accounts: state.accounts.size, journal_seq: state.journalSeq, fill_seq: state.fillSeq, ...(state.rosterRefused.length ? { roster_refused: state.rosterRefused } : {}), ...(state.scoreboardFailing ? { scoreboard_failing: state.scoreboardFailing } : {}) }),
  halt: haltOrResume,
  resume: haltOrResume,
  rules: (state, cfg) => read(rulesView(state.halts, state.rules, cfg, state.baskets)),
  set_basket: setBasket,
  set_rules: setRules,
  dump,
};

/** Decides one command by its kind's handler. A command of no known kind is refused as malformed; one whose fields are not of their types may throw (the actor refuses it so). */
export function decide<C extends EngineCommand>(state: EngineState, cfg: CoreConfig, cmd: C, now: number): Decision<ResultByOp[C['op']]> {
  const handler = Object.hasOwn(HANDLERS, cmd.op) ? (HANDLERS[cmd.op] as Handler<C['op']>) : undefined;
  if (!handler) return malformed();
  return handler(state, cfg, cmd as CommandOf<C['op']>, now);
}

/** A command the engine cannot read (no known op, or fields not of their types). */
export const malformed = (): Rejected => refuse({ code: 'bad_request', why: 'malformed' });

function findKey(acc: Account, key: string): AuditEvent | undefined {
  const requestId = acc.history.keys.get(key);
  if (requestId === undefined) return undefined;
  const i = acc.history.indexOf(requestId);
  return i < 0 ? undefined : acc.history.eventAt(i, acc.clientId);
}

/** Applies a fill from the stream at `streamSeq`. Returns the account it changed, if the engine knows it. */
export function applyFill(state: EngineState, fill: Fill, streamSeq: number): Account | undefined {
  state.fillSeq = streamSeq;
  const acc = state.accounts.get(fill.client_id);
  if (!acc) {
    holdUnclaimed(state, fill);
    return undefined;
  }
  const delta = fillDelta(fill);
  state.capture?.before(acc);
  // A buy pays quantity × price, a sell receives it.
  acc.cash -= delta * fill.price;
  addPosition(acc, fill.symbol, delta);
  acc.version++;
  return acc;
}

/** Kept for a roster account that may name this client_id later (EngineState.unclaimed); past the bound, not kept. */
function holdUnclaimed(state: EngineState, fill: Fill): void {
  let u = state.unclaimed.get(fill.client_id);
  if (!u) {
    if (state.unclaimed.size >= MAX_UNCLAIMED) return;
    state.unclaimed.set(fill.client_id, (u = { pos: new Map(), cash: 0, fills: 0 }));
  }
  const delta = fillDelta(fill);
  u.cash -= delta * fill.price;
  const q = (u.pos.get(fill.symbol) ?? 0) + delta;
  if (q === 0) u.pos.delete(fill.symbol);
  else u.pos.set(fill.symbol, q);
  u.fills++;
}

/** The competition's rule at an exchange restart: every position of every account back to 0. Returns each changed account with its deltas. */
export function applySessionReset(state: EngineState, streamSeq: number): { acc: Account; deltas: Delta[] }[] {
  state.fillSeq = streamSeq;
  // Fills not yet claimed are zeroed with everyone's: an account added after this starts from the new session.
  state.unclaimed.clear();
  const changed: { acc: Account; deltas: Delta[] }[] = [];
  for (const acc of state.accounts.values()) {
    state.capture?.before(acc);
    // A new exchange session starts every team from nothing: cash too.
    const hadCash = acc.cash !== 0;
    acc.cash = 0;
    // A flat account with cash changes too: without a new seq and its notice, streams kept the old cash under the same
    // seq as GET /holdings' new one, and no gap or resume could ever tell them apart.
    if (!hasPositions(acc) && !hadCash) continue;
    const deltas: Delta[] = positionList(acc).map(([symbol, q]): Delta => [symbol, -q]);
    applyDeltas(acc, deltas);
    changed.push({ acc, deltas });
  }
  return changed;
}

export { applyEvent };
