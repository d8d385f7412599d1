import type { NatsConnection, Msg, Subscription } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decodeAs, decodeIf, decodeRecordsAs } from '../../../proto/codec.js';
import { NOTICE_BATCH_VERSIONS_READ, namedChange, noticeBatchShape, type HoldingsNotice, type NoticeBatch } from '../../../proto/holdings.js';
import { engineStartedShape, namedHoldings, type TickerOf } from '../../../proto/engine.js';
import { PRICE_BUCKET, PRICE_SUBJECT_PREFIX, PRICE_SUBJECT_WILDCARD, etfPriceShape, type EtfPrice } from '../../../proto/marketdata.js';
import { namedOutcome, type OutcomeNotice } from '../../../proto/requests.js';
import { ENGINE_STARTED_SUBJECT_WILDCARD, NOTICES_SUBJECT_WILDCARD } from '../../../proto/subjects.js';
import { shardOfClient } from '../../../proto/shards.js';
import { WS_CLOSE, WS_PROTOCOL_VERSION, type WsFormat } from '../../../proto/ws.js';
import type { Logger } from '../../shared/log.js';
import type { Authenticator, AuthResult } from '../auth.js';
import type { EngineClient } from '../../shared/engine-client.js';
import { AccountFeed } from './account.js';
import type { WsLimits } from './limits.js';
import { SharedFrame } from './protocol.js';
import { Session, type SessionHost, type Transport } from './session.js';
import type { Throttle } from '../throttle.js';
import type { Marks } from '../../shared/marks.js';
import { NextTurn } from '../../shared/next-turn.js';
import { isStreamNotFound } from '../../shared/js-errors.js';
import { isTransientJsError } from '../../shared/js-retry.js';

export interface HubDeps {
  nc: NatsConnection;
  engine: EngineClient;
  auth: Authenticator;
  /** The gateway's throttle: a WebSocket sign-in counts against the same login limits as HTTP. */
  throttle?: Throttle;
  /** Mid prices: P&L on the stream. */
  marks?: Marks;
  /** Names the engine's flat positions (proto/engine.ts FlatPositions) for the stream. */
  tickerOf: TickerOf;
}

/** ETFs whose last price is kept: the pricing service names them from config, this only bounds a misbehaving publisher. */
const MAX_PRICED_ETFS = 10_000;
const KV_RETRY_MS = 5_000;
const SWEEP_MS = 1_000;

export interface HubStats {
  connections: number;
  accounts: number;
  changes: number;
  gaps: number;
  snapshots: number;
  prices: number;
  outcomes: number;
  invalid: number;
}

/**
 * The gateway's side of the stream: one NATS subscription per kind
 * (the engine's notices, prices) fanned out to the connections, and an
 * AccountFeed (snapshot + ring) for every account that has, or in the last
 * WS_LIMITS.ringRetentionMs had, a connection. Notices of other accounts are
 * skipped before anything is built from them (named, framed), so memory
 * follows the connected accounts, not the registered ones.
 */
export class Hub implements SessionHost {
  private readonly feeds = new Map<number, AccountFeed<Session>>();
  private readonly sessions = new Set<Session>();
  private readonly priceSessions = new Set<Session>();
  private readonly prices = new Map<string, SharedFrame>();
  private readonly subs: Subscription[] = [];
  /** The engine's notices, while any account is followed (followNotices). */
  private notices: Subscription | null = null;
  private sweeper?: NodeJS.Timeout;
  private readonly toFlush: Session[] = [];
  // Next turn: every message of this NATS read joins the same corked write per connection.
  private readonly flushes = new NextTurn(() => {
    for (const s of this.toFlush.splice(0)) s.flush();
  });
  private closed = false;
  private kvLoaded = false;
  private kvAttemptAt = 0;
  private kvLoad?: Promise<string[]>;
  readonly stats: Omit<HubStats, 'connections' | 'accounts'> = { changes: 0, gaps: 0, snapshots: 0, prices: 0, outcomes: 0, invalid: 0 };

  constructor(
    private readonly deps: HubDeps,
    private readonly log: Logger,
    readonly limits: WsLimits,
  ) {}

  start(): void {
    this.subs.push(this.subscribe(PRICE_SUBJECT_WILDCARD, (m) => this.onPrice(m)));
    this.subs.push(this.subscribe(ENGINE_STARTED_SUBJECT_WILDCARD, (m) => this.onEngineStarted(m)));
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
    void (async () => {
      // Core NATS drops what is published while we are disconnected: every feed re-snapshots after a reconnect.
      for await (const s of this.deps.nc.status()) {
        if (s.type === 'reconnect' && !this.closed) for (const f of this.feeds.values()) this.fetchSnapshot(f);
      }
    })();
    void this.loadPrices();
  }

  private subscribe(subject: string, handle: (m: Msg) => void): Subscription {
    return this.deps.nc.subscribe(subject, {
      callback: (err, m) => {
        if (err) return this.log.error({ err, subject }, 'ws hub subscription error');
        try {
          handle(m);
        } catch (e) {
          // One bad message must not stop the stream for everyone.
          this.stats.invalid++;
          this.log.warn({ err: e, subject: m.subject }, 'ws hub: message skipped');
        }
      },
    });
  }

  /**
   * The engine's notices are heard only while an account is followed here: every conversion's notice batch is
   * several KB a group commit, and a gateway with no stream open had the server deliver each one and its client read
   * it, only to drop it (issue 24). Subscribed before a feed's first snapshot is asked for: the server takes this
   * connection's SUB before its request, so no change after the snapshot can pass unheard.
   */
  private followNotices(): void {
    const want = this.feeds.size > 0 && !this.closed;
    if (want && !this.notices) this.notices = this.subscribe(NOTICES_SUBJECT_WILDCARD, (m) => this.onNotices(m));
    else if (!want && this.notices) {
      this.notices.unsubscribe();
      this.notices = null;
    }
  }

  /** Whether the engine's notices are subscribed (only while an account is followed). */
  get followingNotices(): boolean {
    return this.notices !== null;
  }

  get summary(): HubStats {
    return { ...this.stats, connections: this.sessions.size, accounts: this.feeds.size };
  }

  /** A new connection. */
  open(t: Transport, format: WsFormat, address = ''): Session {
    const s = new Session(t, this, format, this.log);
    s.address = address;
    if (this.closed) s.close(WS_CLOSE.shutdown);
    else this.sessions.add(s);
    return s;
  }

  verify(username: string, password: string, address = ''): Promise<AuthResult> | AuthResult {
    const throttle = this.deps.throttle;
    if (!throttle) return this.deps.auth.verify(username, password);
    const locked = throttle.loginLocked(address);
    if (locked) return { ok: false, throttled: locked };
    return this.deps.auth.verify(username, password, {
      beforeSlow: (u) => throttle.beginSlowLogin(address, u),
      succeeded: (u) => throttle.loginSucceeded(address, u),
    });
  }

  join(s: Session, clientId: number): AccountFeed<Session> {
    let feed = this.feeds.get(clientId);
    if (!feed) {
      const marks = this.deps.marks;
      feed = new AccountFeed<Session>(clientId, this.limits.ringSize, undefined, marks ? (cash, positions) => marks.pnl(cash, positions) : undefined);
      this.feeds.set(clientId, feed);
      this.followNotices();
      this.fetchSnapshot(feed);
    }
    feed.sessions.add(s);
    feed.idleSince = 0;
    return feed;
  }

  leave(s: Session): void {
    this.sessions.delete(s);
    this.priceSessions.delete(s);
    const feed = this.feeds.get(s.clientId);
    if (feed && feed.sessions.delete(s) && feed.sessions.size === 0) feed.idleSince = Date.now();
  }

  /** Subscribe first (done in start), then ask: the feed holds changes until the snapshot lands. */
  private fetchSnapshot(feed: AccountFeed<Session>): void {
    feed.startJoin();
    const joinId = ++feed.joinId;
    this.stats.snapshots++;
    void this.deps.engine.call({ op: 'holdings', clientId: feed.clientId }).then((reply) => {
      if (this.closed || this.feeds.get(feed.clientId) !== feed || feed.joinId !== joinId) return;
      if (!reply.ok) {
        this.log.warn({ clientId: feed.clientId, error: reply.error }, 'ws: no holdings snapshot from the engine');
        this.feeds.delete(feed.clientId);
        this.followNotices();
        for (const s of [...feed.sessions]) s.close(WS_CLOSE.unavailable);
        return;
      }
      if (feed.snapshot(namedHoldings(reply.result, this.deps.tickerOf)) === 'gap') this.gap(feed);
    });
  }

  private gap(feed: AccountFeed<Session>): void {
    this.stats.gaps++;
    this.log.warn({ clientId: feed.clientId, seq: feed.seq }, 'ws: holdings change missed, re-snapshotting');
    this.fetchSnapshot(feed);
  }

  /**
   * An engine shard serves again: what it applied while starting was never in a notice, and a feed of its
   * accounts would stay behind (a resume answering "nothing missed") until the account's next change.
   * Missed while this gateway was off NATS, the reconnect re-snapshots every feed anyway.
   */
  private onEngineStarted(m: Msg): void {
    const { shard, shards } = decodeAs(m.data, engineStartedShape);
    for (const f of this.feeds.values()) if (shardOfClient(f.clientId, shards) === shard) this.fetchSnapshot(f);
  }

  /** A shard's notices: each goes to its account's feed, if the account has one here; the others are skipped unnamed. */
  private onNotices(m: Msg): void {
    const batch = decodeRecordsAs(m.data, noticeBatchShape);
    if (!NOTICE_BATCH_VERSIONS_READ.includes(batch?.v) || !Array.isArray(batch.changes) || !Array.isArray(batch.outcomes)) {
      this.stats.invalid++;
      return;
    }
    for (const n of batch.changes) this.onChange(n);
    for (const n of batch.outcomes) this.onOutcome(n);
  }

  private onChange(n: HoldingsNotice): void {
    const feed = this.feeds.get(n?.client_id);
    if (!feed) return;
    if (!Number.isInteger(n.seq) || !Array.isArray(n.positions) || !Array.isArray(n.deltas)) {
      this.stats.invalid++;
      return;
    }
    this.stats.changes++;
    if (feed.offer(namedChange(n, this.deps.tickerOf)) === 'gap') this.gap(feed);
  }

  private onPrice(m: Msg): void {
    const etf = m.subject.slice(PRICE_SUBJECT_PREFIX.length + 1);
    const price = decodeAs(m.data, etfPriceShape);
    if (price?.etf !== etf) {
      this.stats.invalid++;
      return;
    }
    if (!this.prices.has(etf) && this.prices.size >= MAX_PRICED_ETFS) return;
    this.stats.prices++;
    const frame = new SharedFrame({ v: WS_PROTOCOL_VERSION, type: 'price', price });
    this.prices.set(etf, frame);
    for (const s of this.priceSessions) if (s.wantsPrice(etf)) s.deliverPrice(etf, frame);
  }

  private onOutcome(n: OutcomeNotice): void {
    const feed = this.feeds.get(n?.client_id);
    if (!feed || feed.sessions.size === 0) return;
    if (typeof n.request_id !== 'string' || (n.deltas !== undefined && !Array.isArray(n.deltas))) {
      this.stats.invalid++;
      return;
    }
    this.stats.outcomes++;
    const outcome = namedOutcome(n, this.deps.tickerOf);
    feed.outcome(new SharedFrame({ v: WS_PROTOCOL_VERSION, type: 'request', outcome }));
  }

  scheduleFlush(s: Session): void {
    this.toFlush.push(s);
    this.flushes.schedule();
  }

  priceInterestChanged(s: Session): void {
    if (s.prices.size > 0) this.priceSessions.add(s);
    else this.priceSessions.delete(s);
  }

  latestPrices(etfs: Iterable<string>, deliver: (etf: string, frame: SharedFrame) => void): void {
    const wanted = new Set(etfs);
    const all = wanted.has('*');
    for (const [etf, frame] of this.prices) if (all || wanted.has(etf)) deliver(etf, frame);
    if (!this.kvLoaded) {
      void this.loadPrices().then((added) => {
        for (const etf of added) if (all || wanted.has(etf)) deliver(etf, this.prices.get(etf)!);
      });
    }
  }

  /** The last price of every ETF from KV, for subscribers that arrive between two price changes. */
  private loadPrices(): Promise<string[]> {
    if (this.kvLoaded || this.closed) return Promise.resolve([]);
    if (this.kvLoad) return this.kvLoad;
    if (Date.now() - this.kvAttemptAt < KV_RETRY_MS) return Promise.resolve([]);
    this.kvAttemptAt = Date.now();
    this.kvLoad = (async () => {
      const added: string[] = [];
      try {
        const kv = await new Kvm(this.deps.nc).open(PRICE_BUCKET);
        for await (const etf of await kv.keys()) {
          const e = await kv.get(etf);
          // A live price that arrived meanwhile is newer than the stored one.
          if (!e || e.operation !== 'PUT' || this.prices.has(etf) || this.prices.size >= MAX_PRICED_ETFS) continue;
          const price = decodeIf(e.value, etfPriceShape);
          if (price?.etf !== etf) continue;
          this.prices.set(etf, new SharedFrame({ v: WS_PROTOCOL_VERSION, type: 'price', price }));
          added.push(etf);
        }
        this.kvLoaded = true;
      } catch (err) {
        // Not there yet (the pricing actor has not started) or JetStream between leaders is routine; anything else is said.
        if (isStreamNotFound(err) || isTransientJsError(err)) this.log.debug({ err }, 'ws: price bucket not readable yet');
        else this.log.warn({ err }, 'ws: price bucket not readable');
      }
      return added;
    })().finally(() => (this.kvLoad = undefined));
    return this.kvLoad;
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of this.sessions) s.tick(now);
    for (const [id, f] of this.feeds) {
      if (f.sessions.size === 0 && f.idleSince > 0 && now - f.idleSince > this.limits.ringRetentionMs) this.feeds.delete(id);
    }
    this.followNotices();
  }

  /**
   * The engine said these accounts' sign-in changed (src/gateway/signin-changes.ts):
   * their streams close, so a team taken off the roster, or whose password
   * leaked and was changed, keeps no stream opened with the old password.
   * Null: any may have changed (NATS reconnected, and core NATS dropped what
   * the engine said meanwhile): every signed-in stream closes, since a stream
   * never checks its password again; the client library signs in once more.
   */
  signInChanged(usernames: readonly string[] | null): void {
    const changed = usernames && new Set(usernames);
    for (const s of [...this.sessions]) s.signInChanged(changed);
  }

  /** Closes every connection with 1001 and stops listening to NATS. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const s of [...this.sessions]) s.close(WS_CLOSE.shutdown);
    for (const sub of this.subs) sub.unsubscribe();
    this.feeds.clear();
    this.followNotices();
  }
}
