/**
 * A typed client for the ETF engine's HTTP API and WebSocket stream, for team
 * strategies and tools (the CLI in src/cli uses it). Shapes come from proto/:
 * nothing here re-declares them.
 *
 *   import { EtfClient } from 'ndfex-etf-engine/client';
 *   const etf = new EtfClient({ url: 'http://localhost:8080', username: 'team1', password: 'team1pass' });
 *   await etf.create(2);                        // 2 UNDY from the basket; retried safely on a 503
 *   const stream = etf.stream({ onHoldings: (h) => console.log(h.seq, h.holdings) });
 */
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import type { AuditEntry } from '../../proto/audit.js';
import type { AuditEntryBody, ChartsBody, ConversionBody, EtfsBody, HoldingsBody, HttpErrorBody, LeaderboardBody, PnlBody, PositionBody, PositionsBody, RegisterBody, SymbolsBody } from '../../proto/http.js';
import { REQUEST_ID_HEADER } from '../../proto/http.js';
import type { EtfPrice } from '../../proto/marketdata.js';
import type { RequestOutcome } from '../../proto/requests.js';
import { WS_CLOSE, WS_PATH, retryAfterOfReason, type ClientMessage, type ServerMessage, type WsErrorCode } from '../../proto/ws.js';

export interface ClientOptions {
  /** The gateway, e.g. http://localhost:8080. */
  url: string;
  username?: string;
  password?: string;
  /**
   * Attempts of a call. A create/redeem is tried again after a 503, a 429 or a
   * lost connection (same key each time); a read after a 503 or a 429. Default 4.
   */
  retries?: number;
  /** Per-request time limit in ms. Default 10000. */
  timeoutMs?: number;
  /** Told of each attempt that failed and will be retried (a create/redeem with the same key). */
  onRetry?(err: unknown, attempt: number): void;
}

/** An answer that is not a 2xx: the service's JSON error, with its HTTP status. */
export class EtfApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: HttpErrorBody | null,
    /** The create/redeem key: its outcome can be looked up with request(key) even after a 503. */
    readonly requestId?: string,
    /** A 429's Retry-After, in seconds. */
    readonly retryAfterS?: number,
  ) {
    super(body?.error.message ?? `HTTP ${status}`);
  }

  get code(): string {
    return this.body?.error.code ?? 'http_error';
  }
}

export interface ConversionOptions {
  etf?: string;
  /** Idempotency key; one is made when absent, and a retry reuses it. */
  requestId?: string;
  /** Answer what would happen (deltas, or the refusal) and change nothing. */
  dryRun?: boolean;
}

interface CallOptions {
  body?: unknown;
  auth?: boolean;
  /** The idempotency key, sent as a header too. */
  requestId?: string;
  /** What may be tried again: 'keyed' may be sent twice; 'unkeyed' (a registration) must not be unless refused outright (429). */
  retry?: 'keyed' | 'read' | 'unkeyed';
}

export interface HistoryPage {
  /** Newest first; an accepted conversion carries its `scorecard` once the gateway scored it. */
  entries: AuditEntryBody[];
  next?: string;
}

/** Keys as the service accepts them: 1-64 of A-Za-z0-9_.:- */
export const newRequestId = (): string => `c-${randomBytes(12).toString('base64url')}`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whole seconds from the Retry-After header (or the body's retry_after), as a 429 gives them. */
function retryAfter(res: Response, body: HttpErrorBody | null): number | undefined {
  const header = Number(res.headers.get('retry-after'));
  if (Number.isFinite(header) && header >= 0 && res.headers.has('retry-after')) return header;
  const inBody = Number(body?.error?.retry_after);
  return Number.isFinite(inBody) && inBody >= 0 ? inBody : undefined;
}

export class EtfClient {
  private readonly base: string;

  constructor(private readonly opts: ClientOptions) {
    this.base = opts.url.replace(/\/+$/, '');
  }

  register(username: string, password: string): Promise<RegisterBody> {
    return this.call('POST', '/register', { body: { username, password }, auth: false });
  }

  holdings(): Promise<HoldingsBody> {
    return this.call('GET', '/holdings');
  }

  create(amount: number, o: ConversionOptions = {}): Promise<ConversionBody> {
    return this.convert('create', amount, o);
  }

  redeem(amount: number, o: ConversionOptions = {}): Promise<ConversionBody> {
    return this.convert('redeem', amount, o);
  }

  /** One request's outcome, by the engine's id (r42) or the key it was sent with. */
  request(id: string): Promise<AuditEntryBody> {
    return this.call('GET', `/requests/${encodeURIComponent(id)}`);
  }

  history(o: { limit?: number; before?: string } = {}): Promise<HistoryPage> {
    const q = new URLSearchParams();
    if (o.limit !== undefined) q.set('limit', String(o.limit));
    if (o.before !== undefined) q.set('before', o.before);
    return this.call('GET', `/history${q.size ? `?${q}` : ''}`);
  }

  /** Every team ranked by P&L (no credentials needed). */
  leaderboard(): Promise<LeaderboardBody> {
    return this.call('GET', '/leaderboard', { auth: false });
  }

  /** What the pages chart (GET /charts): prices and P&L over the session, after `since` (ms). */
  charts(o: { since?: number; team?: string } = {}): Promise<ChartsBody> {
    const q = new URLSearchParams();
    if (o.since !== undefined) q.set('since', String(o.since));
    if (o.team !== undefined) q.set('team', o.team);
    return this.call('GET', `/charts${q.size ? `?${q}` : ''}`, { auth: false });
  }

  etfs(): Promise<EtfsBody> {
    return this.call('GET', '/etfs', { auth: false });
  }

  positions(clientId: number): Promise<PositionsBody>;
  positions(clientId: number, symbol: string | number): Promise<PositionBody>;
  positions(clientId: number, symbol?: string | number): Promise<PositionsBody | PositionBody> {
    return this.call('GET', `/positions/${clientId}${symbol === undefined ? '' : `/${encodeURIComponent(String(symbol))}`}`);
  }

  symbols(): Promise<SymbolsBody> {
    return this.call('GET', '/symbols', { auth: false });
  }

  /**
   * A create or redeem that is safe to retry: it carries a key from the start,
   * and a 503 (the engine did not answer in time), a 429 (after Retry-After) or
   * a lost connection (the answer may be what was lost) is retried with the
   * same key, so it happens at most once.
   */
  private convert(op: 'create' | 'redeem', amount: number, o: ConversionOptions): Promise<ConversionBody> {
    const requestId = o.dryRun ? undefined : (o.requestId ?? newRequestId());
    const body = { amount, ...(requestId ? { request_id: requestId } : {}), ...(o.etf ? { etf_name: o.etf } : {}), ...(o.dryRun ? { dry_run: true } : {}) };
    // A dry run changes nothing, so it is as safe to send twice as a keyed conversion.
    return this.call<ConversionBody>('POST', `/${op}`, { body, requestId, retry: 'keyed' });
  }

  /**
   * Tries a call again after a 429 (waiting its Retry-After) or a 503, and a
   * keyed conversion also after a lost connection. A read gives up on a lost
   * connection at once (the service is down, or the URL is wrong), and a
   * registration after a 503 or a lost connection (it may have happened).
   */
  private async call<T>(method: 'GET' | 'POST', path: string, o: CallOptions = {}): Promise<T> {
    const retry = o.retry ?? (method === 'GET' ? 'read' : 'unkeyed');
    const attempts = Math.max(1, this.opts.retries ?? 4);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once<T>(method, path, o);
      } catch (err) {
        const status = err instanceof EtfApiError ? err.status : null;
        const again = status === 429 || (status === 503 && retry !== 'unkeyed') || (status === null && retry === 'keyed');
        if (!again || attempt >= attempts) throw err;
        this.opts.onRetry?.(err, attempt);
        const after = status === 429 ? ((err as EtfApiError).retryAfterS ?? 1) * 1000 : 0;
        await sleep(Math.max(after, 200 * 2 ** (attempt - 1)));
      }
    }
  }

  private async once<T>(method: 'GET' | 'POST', path: string, o: CallOptions): Promise<T> {
    const headers: Record<string, string> = {};
    if (o.auth !== false) {
      if (!this.opts.username || !this.opts.password) throw new EtfApiError(401, { error: { code: 'unauthorized', message: 'username and password are needed for this call' } });
      headers.authorization = `Basic ${Buffer.from(`${this.opts.username}:${this.opts.password}`).toString('base64')}`;
    }
    if (o.body !== undefined) headers['content-type'] = 'application/json';
    if (o.requestId) headers[REQUEST_ID_HEADER] = o.requestId;
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON: reported below */
    }
    if (!res.ok) throw new EtfApiError(res.status, (json as HttpErrorBody) ?? null, o.requestId, retryAfter(res, json as HttpErrorBody | null));
    if (json === null) throw new EtfApiError(res.status, { error: { code: 'internal', message: `not JSON: ${text.slice(0, 100)}` } });
    return json as T;
  }

  /**
   * The account's live holdings, ETF prices and request outcomes over the
   * WebSocket stream. Reconnects by itself and resumes from the last seq it
   * saw, so no change is missed or applied twice; wrong credentials stop it,
   * a throttled sign-in (4029) waits the seconds the gateway gives and tries again.
   */
  stream(h: StreamHandlers = {}): HoldingsStream {
    return new HoldingsStream(this.base.replace(/^http/, 'ws') + WS_PATH, this.opts.username ?? '', this.opts.password ?? '', h);
  }
}

export interface LiveHoldings {
  seq: number;
  holdings: Record<string, number>;
  positions: HoldingsBody['positions'];
  cash: number;
  /** Cash plus positions at mid prices, as of the last change. */
  pnl?: PnlBody;
}

export interface StreamError {
  code: WsErrorCode | 'missed_outcomes';
  message: string;
  /** The id of the message it answers, when it answers one. */
  id?: string | number;
}

export interface StreamHandlers {
  onHoldings?(h: LiveHoldings, cause: 'snapshot' | 'fill' | 'create' | 'redeem' | string): void;
  onPrice?(p: EtfPrice): void;
  onRequest?(o: RequestOutcome): void;
  /**
   * Connection state changes ('open': signed in): a reconnect resumes where it
   * stopped. 'refused' (wrong credentials) is final; a sign-in refused by the
   * login throttle is 'reconnecting' with the close reason as detail, and is
   * tried again after the seconds it gives.
   */
  onStatus?(s: 'open' | 'reconnecting' | 'refused', detail?: string): void;
  /**
   * What the stream could not do, though it goes on: the gateway refused a
   * message it sent (`too_many_subscriptions`, `bad_message` for an ETF name
   * it does not take: those prices never come), or request outcomes were not
   * delivered while the connection was behind (`missed_outcomes`: look them
   * up with history()). Without this handler each is a process warning
   * (stderr), never dropped.
   */
  onError?(e: StreamError): void;
  /** ETFs whose prices to follow ("*": all). Default all. */
  prices?: string[];
}

/** Longest wait a throttled sign-in's advice is followed for; past it the stream asks again (a bad clock or a bogus reason must not park it for hours). */
const MAX_THROTTLED_WAIT_S = 120;

export class HoldingsStream {
  /** The last seq applied: a reconnect resumes after it. */
  seq = -1;
  readonly current: LiveHoldings = { seq: -1, holdings: {}, positions: [], cash: 0 };
  private ws: WebSocket | null = null;
  private stopped = false;
  private retry = 0;
  /** Connections opened (the first, then every reconnect). */
  connections = 0;
  /** Why the socket last failed (refused, not a WebSocket endpoint), for the 'reconnecting' that follows. */
  private socketError: string | null = null;

  constructor(
    private readonly url: string,
    private readonly username: string,
    private readonly password: string,
    private readonly h: StreamHandlers,
  ) {
    this.connect();
  }

  /** Closes the connection now, as a network failure would: the stream reconnects and resumes. */
  drop(): void {
    this.ws?.terminate();
  }

  close(): void {
    this.stopped = true;
    this.ws?.close();
  }

  private send(m: ClientMessage): void {
    this.ws?.send(JSON.stringify(m));
  }

  private connect(): void {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.connections++;
    this.socketError = null;
    ws.on('open', () => {
      this.send({ type: 'auth', username: this.username, password: this.password, ...(this.seq >= 0 ? { resume_from: this.seq } : {}) });
      this.send({ type: 'subscribe', prices: this.h.prices ?? ['*'], requests: true });
    });
    ws.on('message', (data) => this.onMessage(JSON.parse(data.toString()) as ServerMessage));
    ws.on('close', (code, reason) => {
      // A sign-in change is worth one more try: the password this client has may still be the one in force.
      if (code === WS_CLOSE.authFailed.code && reason.toString() !== WS_CLOSE.signInChanged.reason) {
        this.stopped = true;
        this.h.onStatus?.('refused', reason.toString());
        return;
      }
      if (this.stopped) return;
      const backoff = Math.min(5000, 100 * 2 ** this.retry++);
      if (code === WS_CLOSE.throttled.code) {
        // The login throttle, not a wrong password: sooner than it says is refused again and costs this host another attempt.
        const why = reason.toString();
        const advised = Math.min(MAX_THROTTLED_WAIT_S, retryAfterOfReason(why) ?? 1) * 1000;
        this.h.onStatus?.('reconnecting', why);
        setTimeout(() => !this.stopped && this.connect(), Math.max(backoff, advised));
        return;
      }
      // The close reason ('engine unavailable, try again later', 'too slow') or the socket's error (a wrong URL, a refused connection) is what a team needs to act on.
      this.h.onStatus?.('reconnecting', reason.toString() || this.socketError || `closed with code ${code}`);
      setTimeout(() => !this.stopped && this.connect(), backoff);
    });
    ws.on('error', (err) => {
      // 'close' follows, and says it.
      this.socketError = err.message;
    });
  }

  private apply(seq: number, positions: HoldingsBody['positions'], cash: number, pnl: PnlBody | undefined, cause: string): void {
    this.seq = seq;
    Object.assign(this.current, { seq, positions, cash, pnl, holdings: Object.fromEntries(positions.map((p) => [p.ticker, p.quantity])) });
    this.h.onHoldings?.(this.current, cause);
  }

  private onMessage(m: ServerMessage): void {
    switch (m.type) {
      case 'welcome': // signed in: a socket that opens is not yet a stream (the password may be wrong)
        // The backoff starts over here, not when the socket opens: a gateway without an engine opens every socket and
        // closes it (1013), and a reset at each open made that a reconnect every 100 ms for as long as the engine was away.
        this.retry = 0;
        return this.h.onStatus?.('open');
      case 'snapshot':
        if (m.missed_outcomes) this.error({ code: 'missed_outcomes', message: `${m.missed_outcomes} request outcome(s) were not delivered while the stream was behind: look them up with history()` });
        return this.apply(m.seq, m.positions, m.cash, m.pnl, 'snapshot');
      case 'delta':
        if (m.seq <= this.seq) return; // already applied (a resume overlaps)
        if (m.seq !== this.seq + 1) return this.send({ type: 'snapshot' }); // missed one: start over
        return this.apply(m.seq, m.positions, m.cash, m.pnl, m.cause);
      case 'price':
        return this.h.onPrice?.(m.price);
      case 'request':
        return this.h.onRequest?.(m.outcome);
      case 'error':
        return this.error({ code: m.code, message: m.message, ...(m.id !== undefined ? { id: m.id } : {}) });
      default:
    }
  }

  private error(e: StreamError): void {
    if (this.h.onError) return this.h.onError(e);
    process.emitWarning(`${e.code}: ${e.message}`, { code: 'ETF_STREAM', detail: `the ETF engine's stream at ${this.url}${e.id !== undefined ? ` (message ${e.id})` : ''}` });
  }
}
