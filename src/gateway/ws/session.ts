import type { AuthResult } from '../auth.js';
import type { Logger } from '../../shared/log.js';
import {
  WS_CLOSE,
  WS_PROTOCOL_VERSION,
  type ClientMessage,
  type ServerMessage,
  type SnapshotReason,
  type WsFormat,
  wsThrottled,
} from '../../../proto/ws.js';
import type { AccountFeed, FeedListener } from './account.js';
import { errorMessage, parseClientMessage, SharedFrame, type Frame } from './protocol.js';
import type { WsLimits } from './limits.js';

/** The socket, as a session uses it (a uWS WebSocket in the gateway). */
export interface Transport {
  /** uWS semantics: 1 sent, 0 queued (backpressure), 2 dropped (over maxBackpressure). */
  send(frame: Frame, binary: boolean): number;
  buffered(): number;
  end(code: number, reason: string): void;
  cork(fn: () => void): void;
}

/** The hub, as a session sees it. */
export interface SessionHost {
  readonly limits: WsLimits;
  verify(username: string, password: string, address?: string): Promise<AuthResult> | AuthResult;
  join(s: Session, clientId: number): AccountFeed;
  leave(s: Session): void;
  /** Latest known price frames for these ETFs ("*": all), loading from KV when needed; `deliver` may run later. */
  latestPrices(etfs: Iterable<string>, deliver: (etf: string, frame: SharedFrame) => void): void;
  priceInterestChanged(s: Session): void;
  /** Calls s.flush() once this event-loop turn is done. */
  scheduleFlush(s: Session): void;
}

type Phase = 'auth' | 'verifying' | 'authenticated' | 'closed';
type Close = { code: number; reason: string };

const ALL = '*';
const MAX_QUEUED_BEFORE_AUTH = 16;
/** Outbox size that is written at once rather than at the end of the turn. */
const OUTBOX_FLUSH_BYTES = 16 * 1024;

/**
 * One WebSocket connection: authentication, the account's snapshot and
 * deltas with per-connection flow control, price and request subscriptions.
 * The slow-consumer policy (proto/ws.ts) lives here: data goes out only while
 * the socket's unsent bytes are under the soft limit; past it the session is
 * stale, and the next drain sends one coalesced snapshot instead of the backlog.
 */
export class Session implements FeedListener {
  private phase: Phase = 'auth';
  clientId = 0;
  username = '';
  /** The username whose password is being checked (phase 'verifying'): a sign-in change meanwhile closes it too. */
  private verifyingAs = '';
  private feed?: AccountFeed;
  /** Snapshot sent: deltas may flow. */
  private started = false;
  /** Last seq this connection has been sent (snapshot or delta). */
  lastSeq = -1;
  private pendingResume?: { from: number; id?: string | number };
  private queued: { data: ArrayBuffer; isBinary: boolean }[] = [];
  private authTimer?: NodeJS.Timeout;
  private outbox: Frame[] = [];
  private outboxBytes = 0;
  private resumeFromQuery?: number;

  private stale = false;
  private staleSince = 0;
  private stalePrices = new Set<string>();
  private staleOutcomes: SharedFrame[] = [];
  private missedOutcomes = 0;

  readonly prices = new Set<string>();
  requests = false;

  /** Counters for /health and the bench. */
  sent = 0;
  staleCount = 0;

  /** The client's address (login throttling). */
  address = '';

  constructor(
    private readonly t: Transport,
    private readonly host: SessionHost,
    readonly format: WsFormat,
    private readonly log: Logger,
  ) {}

  get closed(): boolean {
    return this.phase === 'closed';
  }

  /**
   * The engine said these accounts' sign-in changed (null: any may have). A stream of one closes, and so does one
   * whose password is being checked now: the check may have read the hash from before the change, and a stream never
   * checks again (one opened with a leaked password just changed stayed open).
   */
  signInChanged(usernames: ReadonlySet<string> | null): void {
    const name = this.phase === 'authenticated' ? this.username : this.phase === 'verifying' ? this.verifyingAs : '';
    if (name !== '' && (!usernames || usernames.has(name))) this.close(WS_CLOSE.signInChanged);
  }

  get wantsAllPrices(): boolean {
    return this.prices.has(ALL);
  }

  /**
   * Connection open: authenticate with Basic credentials now ('invalid': an
   * Authorization header that is not Basic user:pass), or wait for the auth message.
   */
  open(basic: { username: string; password: string } | 'invalid' | null, resumeFrom?: number): void {
    if (this.phase !== 'auth') return; // closed already (server shutting down)
    if (basic === 'invalid') return this.close(WS_CLOSE.authFailed);
    this.resumeFromQuery = resumeFrom;
    if (basic) return this.authenticate(basic.username, basic.password, resumeFrom);
    this.authTimer = setTimeout(() => {
      if (this.phase === 'auth') this.close(WS_CLOSE.authTimeout);
    }, this.host.limits.authTimeoutMs);
  }

  private authenticate(username: string, password: string, resumeFrom?: number, id?: string | number): void {
    this.phase = 'verifying';
    this.verifyingAs = username;
    clearTimeout(this.authTimer);
    const done = (r: AuthResult) => {
      if (this.phase !== 'verifying') return; // closed meanwhile
      if (!r.ok) {
        this.log.info({ username, unavailable: r.unavailable, throttled: r.throttled }, 'ws authentication refused');
        // A throttled sign-in had its password unchecked: saying 4001 would make clients give up on a right one.
        if (r.throttled) return this.close(wsThrottled(r.throttled.scope, r.throttled.retryAfter));
        return this.close(r.unavailable ? WS_CLOSE.unavailable : WS_CLOSE.authFailed);
      }
      this.phase = 'authenticated';
      this.clientId = r.clientId;
      this.username = username;
      if (resumeFrom !== undefined) this.pendingResume = { from: resumeFrom, ...(id !== undefined ? { id } : {}) };
      this.write({ v: WS_PROTOCOL_VERSION, type: 'welcome', client_id: r.clientId, username, format: this.format, limits: this.host.limits });
      this.feed = this.host.join(this, r.clientId);
      if (this.feed.live) this.feedLive(false);
      const queued = this.queued;
      this.queued = [];
      for (const q of queued) this.onMessage(q.data, q.isBinary);
    };
    let r: Promise<AuthResult> | AuthResult;
    try {
      r = this.host.verify(username, password, this.address);
    } catch (err) {
      this.log.error({ err }, 'ws authentication error');
      return this.close(WS_CLOSE.unavailable);
    }
    if (r instanceof Promise) {
      r.then(done, (err: unknown) => {
        this.log.error({ err }, 'ws authentication error');
        if (this.phase === 'verifying') this.close(WS_CLOSE.unavailable);
      });
    } else done(r);
  }

  onMessage(data: ArrayBuffer, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'verifying') {
      // Sent right behind the credentials: handled once they are checked (the ArrayBuffer is only valid during the callback).
      if (this.queued.length >= MAX_QUEUED_BEFORE_AUTH) return this.close(WS_CLOSE.authRequired);
      this.queued.push({ data: data.slice(0), isBinary });
      return;
    }
    const parsed = parseClientMessage(data, isBinary);
    if (this.phase === 'auth') {
      if (!parsed.ok || parsed.msg.type !== 'auth') return this.close(WS_CLOSE.authRequired);
      return this.authenticate(parsed.msg.username, parsed.msg.password, parsed.msg.resume_from ?? this.resumeFromQuery, parsed.msg.id);
    }
    if (!parsed.ok) return void this.write(errorMessage(parsed.code, parsed.message, parsed.id));
    this.handle(parsed.msg);
  }

  private handle(msg: ClientMessage): void {
    const id = msg.id !== undefined ? { id: msg.id } : {};
    switch (msg.type) {
      case 'auth':
        return void this.write(errorMessage('already_authenticated', 'this connection is already authenticated', msg.id));
      case 'ping':
        return void this.write({ v: WS_PROTOCOL_VERSION, type: 'pong', ts: Date.now(), ...id });
      case 'snapshot':
        // Before the feed is live the initial snapshot is on its way anyway.
        if (this.started) this.sendSnapshot('requested', msg.id);
        return;
      case 'resume':
        if (this.started) this.resume(msg.from_seq, msg.id);
        else this.pendingResume = { from: msg.from_seq, ...id };
        return;
      case 'subscribe':
      case 'unsubscribe':
        return this.subscribe(msg.type === 'subscribe', msg.prices ?? [], msg.requests, msg.id);
    }
  }

  private subscribe(add: boolean, etfs: string[], requests: boolean | undefined, id?: string | number): void {
    const fresh = add ? [...new Set(etfs)].filter((etf) => !this.prices.has(etf)) : [];
    const limit = this.host.limits.maxPriceSubscriptions;
    if ([...this.prices, ...fresh].filter((etf) => etf !== ALL).length > limit) {
      // Refused whole: a request that fails changes nothing.
      return void this.write(errorMessage('too_many_subscriptions', `at most ${limit} ETFs: use "*" for all`, id));
    }
    for (const etf of fresh) this.prices.add(etf);
    if (!add) for (const etf of etfs) this.prices.delete(etf);
    if (requests !== undefined) this.requests = add ? requests : !requests && this.requests;
    this.host.priceInterestChanged(this);
    this.write({ v: WS_PROTOCOL_VERSION, type: 'subscribed', prices: [...this.prices], requests: this.requests, ...(id !== undefined ? { id } : {}) });
    // A new subscriber gets the last price at once rather than waiting for the next change.
    if (fresh.length > 0) this.host.latestPrices(fresh, this.deliverLatest);
  }

  // ---------------------------------------------------------------- holdings

  /** The account feed holds a fresh snapshot. */
  feedLive(resync: boolean): void {
    if (this.phase !== 'authenticated') return;
    if (!this.started) {
      this.started = true;
      const resume = this.pendingResume;
      this.pendingResume = undefined;
      if (resume) this.resume(resume.from, resume.id);
      else this.sendSnapshot('initial');
      return;
    }
    if (resync && !this.stale && this.lastSeq !== this.feed!.seq) this.sendSnapshot('resync');
  }

  onChange(seq: number, frame: SharedFrame): void {
    if (!this.started || this.stale || seq <= this.lastSeq) return;
    if (seq !== this.lastSeq + 1) return this.sendSnapshot('resync');
    if (this.sendData(frame)) this.lastSeq = seq;
  }

  private sendSnapshot(reason: SnapshotReason, id?: string | number): void {
    const feed = this.feed!;
    const missed = this.missedOutcomes;
    this.missedOutcomes = 0;
    this.lastSeq = feed.seq;
    this.write({
      v: WS_PROTOCOL_VERSION,
      type: 'snapshot',
      reason,
      client_id: this.clientId,
      seq: feed.seq,
      positions: feed.positions,
      cash: feed.cash,
      ...(feed.pnlOf ? { pnl: feed.pnlOf(feed.cash, feed.positions) } : {}),
      last_reset: feed.lastReset,
      ...(missed > 0 ? { missed_outcomes: missed } : {}),
      ...(id !== undefined ? { id } : {}),
    });
  }

  private resume(from: number, id?: string | number): void {
    const feed = this.feed!;
    const frames = feed.ring.after(from, feed.seq);
    if (!frames) return this.sendSnapshot('resume_unavailable', id);
    this.write({ v: WS_PROTOCOL_VERSION, type: 'resumed', from_seq: from, to_seq: feed.seq, count: frames.length, ...(id !== undefined ? { id } : {}) });
    // A replay is at most ringSize deltas: it goes out whole (bounded by the hard limit), never half.
    for (const f of frames) this.writeFrame(f);
    this.lastSeq = feed.seq;
  }

  // ---------------------------------------------------------------- prices and request outcomes

  wantsPrice(etf: string): boolean {
    return this.prices.has(etf) || this.prices.has(ALL);
  }

  /** For a latest price fetched later: the subscription may be gone by then. */
  private readonly deliverLatest = (etf: string, frame: SharedFrame): void => {
    if (this.wantsPrice(etf)) this.deliverPrice(etf, frame);
  };

  deliverPrice(etf: string, frame: SharedFrame): void {
    if (this.phase !== 'authenticated') return;
    if (this.stale) {
      this.stalePrices.add(etf);
      return;
    }
    if (!this.sendData(frame)) this.stalePrices.add(etf);
  }

  outcomeDropped(): void {
    if (this.requests) this.missedOutcomes++;
  }

  deliverOutcome(frame: SharedFrame): void {
    if (this.phase !== 'authenticated' || !this.requests) return;
    if (!this.stale && this.sendData(frame)) return;
    if (this.staleOutcomes.length < this.host.limits.staleOutcomes) this.staleOutcomes.push(frame);
    else this.missedOutcomes++;
  }

  // ---------------------------------------------------------------- flow control

  /** Data (deltas, prices, outcomes) goes out only under the soft limit; past it the session turns stale. */
  private sendData(frame: SharedFrame): boolean {
    if (this.buffered() > this.host.limits.softBufferBytes) {
      this.stale = true;
      this.staleSince = Date.now();
      this.staleCount++;
      return false;
    }
    return this.writeFrame(frame);
  }

  /** Replies and snapshots always go out; only the hard limit stops them. */
  private write(msg: ServerMessage): boolean {
    return this.writeFrame(new SharedFrame(msg));
  }

  /**
   * Frames queue in the outbox and go out together on the next flush (the
   * hub's, once per event-loop turn, corked: one syscall per connection for a
   * whole NATS read's worth of changes, not one per change).
   */
  private writeFrame(frame: SharedFrame): boolean {
    if (this.phase === 'closed') return false;
    const f = frame.get(this.format);
    if (this.outbox.length === 0) this.host.scheduleFlush(this);
    this.outbox.push(f);
    this.outboxBytes += f.byteLength;
    this.sent++;
    // A long NATS read must not pile up here, where it would count against the client's soft limit.
    if (this.outboxBytes >= OUTBOX_FLUSH_BYTES) this.flush();
    return !this.closed;
  }

  /** Bytes not yet on the wire: the socket's backlog plus the outbox. */
  private buffered(): number {
    return this.t.buffered() + this.outboxBytes;
  }

  flush(): void {
    if (this.outbox.length === 0 || this.phase === 'closed') return;
    const frames = this.outbox;
    this.outbox = [];
    this.outboxBytes = 0;
    const binary = this.format === 'msgpack';
    let dropped = false;
    this.t.cork(() => {
      for (const f of frames) {
        if (this.t.send(f, binary) === 2) {
          dropped = true;
          return;
        }
      }
    });
    // uWS dropped a frame (over maxBackpressure): the stream has a hole, so the connection cannot continue.
    if (dropped) this.close(WS_CLOSE.tooSlow);
  }

  /** The socket drained some: a stale session that is back under half the soft limit gets one fresh snapshot. */
  onDrain(): void {
    if (!this.stale || this.phase !== 'authenticated') return;
    if (this.buffered() > this.host.limits.softBufferBytes / 2) return;
    this.stale = false;
    const prices = this.stalePrices;
    const outcomes = this.staleOutcomes;
    this.stalePrices = new Set();
    this.staleOutcomes = [];
    this.sendSnapshot('resync');
    this.host.latestPrices(prices, this.deliverLatest);
    for (const f of outcomes) this.deliverOutcome(f);
  }

  /** Periodic check (the hub's sweep): drained without a drain event, stale too long, or over the hard limit. */
  tick(now: number): void {
    if (this.phase !== 'authenticated') return;
    if (this.buffered() >= this.host.limits.hardBufferBytes) return this.close(WS_CLOSE.tooSlow);
    if (!this.stale) return;
    if (now - this.staleSince > this.host.limits.staleTimeoutMs) {
      this.log.warn({ clientId: this.clientId, buffered: this.buffered() }, 'ws client too slow: closing');
      return this.close(WS_CLOSE.tooSlow);
    }
    this.onDrain();
  }

  // ---------------------------------------------------------------- lifecycle

  close(c: Close): void {
    if (this.phase === 'closed') return;
    if (c.code !== WS_CLOSE.tooSlow.code) this.flush(); // what was queued goes out before the close frame
    this.outbox = [];
    this.t.end(c.code, c.reason); // calls onClosed synchronously
    this.onClosed();
  }

  /** The socket is gone (either side closed it). */
  onClosed(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    clearTimeout(this.authTimer);
    this.queued = [];
    this.outbox = [];
    this.outboxBytes = 0;
    this.host.leave(this);
  }
}
