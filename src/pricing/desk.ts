import { errors, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { decode, decodeAs, decodeIf, decodeRecordsAs, encode } from '../../proto/codec.js';
import type { FlatPositions } from '../../proto/engine.js';
import { noticeBatchShape, type NoticeBatch } from '../../proto/holdings.js';
import { BASKET_BUCKET, basketVersionsShape, etfPriceShape, PRICE_SUBJECT_WILDCARD, type EtfPrice } from '../../proto/marketdata.js';
import {
  DESK_CARD_PREFIX,
  DESK_CURSOR_SUBJECT,
  DESK_LEGS_PREFIX,
  DESK_SAMPLE_PREFIX,
  DESK_STREAM,
  FILL_STREAM,
  NOTICES_SUBJECT_WILDCARD,
  SESSION_SUBJECT,
  deskCardSubject,
  deskLegsSubject,
  deskSampleSubject,
} from '../../proto/subjects.js';
import { DESK_CURSOR_VERSION, DESK_SAMPLE_VERSION, deskCursorShape, deskLegsShape, deskSampleShape, scorecardShape, type DeskCursor, type DeskLegs, type DeskSample } from '../../proto/desk.js';
import { CHART_LIMITS, type Scorecard } from '../../proto/http.js';
import type { JournalEvent } from '../../proto/journal.js';
import { FILL_SIDE_SELL, fillProblem, type Fill, type SessionMarker } from '../../proto/fill.js';
import { shardNames, shardOfClient } from '../../proto/shards.js';
import type { Instruments } from '../config/baskets.js';
import { Catalog } from '../engine/catalog.js';
import { decodeJournalRecord } from '../engine/journal.js';
import { EngineClient } from '../shared/engine-client.js';
import { Marks } from '../shared/marks.js';
import { SeriesGrid } from '../shared/desk-history.js';
import { ensureDeskStream } from '../shared/streams.js';
import { readStream, type StreamFollower } from '../shared/stream-reader.js';
import { describeError, isStreamNotFound } from '../shared/js-errors.js';
import { isTransientJsError } from '../shared/js-retry.js';
import type { Logger } from '../shared/log.js';
import { LegBook, legsKey } from './desk-legs.js';

interface Account {
  username: string;
  cash: number;
  positions: FlatPositions;
  /** The last holdings change applied (HoldingsChange.seq); undefined after a dump, which does not say. */
  seq?: number;
}

const mid = (bid: number | null, ask: number | null): number | null => (bid !== null && ask !== null ? (bid + ask) / 2 : null);

/** How long a changed scorecard waits to be written with the others changed meanwhile. */
const CARD_FLUSH_MS = 100;
/** How long a card the stream did not store waits to be written again. */
const CARD_RETRY_MS = 1000;
/**
 * How long after its moment a conversion read in the journal waits for its
 * notice before its card is written as missed. The engine publishes the
 * notice once the journal has stored the batch, so the journal's copy
 * usually reaches the desk first, by a round trip.
 */
const NOTICE_GRACE_MS = 2000;
/** Between a journal record's storing and its notice's publishing: a record stored this long before the desk listened had its notice go unheard. */
const NOTICE_SLACK_MS = 500;
/** How often the cursor is written when only the streams' positions moved. */
const CURSOR_MS = 1000;
/** The cursor and the teams' records are written again this often, unchanged or not: the desk stream drops what is older than 7 days. */
const REFRESH_MS = 3600_000;
/**
 * Cards of conversions after the cursor whose journal record a restarted
 * writer reads again: kept from the stream back to this long before the
 * cursor was written (a card's time is the engine's clock, the cursor's the
 * writer's; a card not found is written again as missed, over its score).
 */
const RESTORE_MARGIN_MS = 3600_000;
/** Keys of cards the writer no longer holds, remembered so that a late notice or a second look leaves them as written. */
const RELEASED_KEPT = 50_000;
/** Cards scored from a notice whose journal record has not been read yet (a journal that cannot be read): the oldest are let go. */
const NOTICED_KEPT = 100_000;

export interface DeskStats {
  samples: number;
  /** Scorecard writes (a card written again as its legs are sold counts again). */
  cards: number;
  /** Cards written as missed: conversions the desk learned of from the journal only, after their moment. */
  missed: number;
  writeErrors: number;
}

/** A conversion read in the journal whose notice has not come: written as missed once `due`. */
interface Pending {
  card: Scorecard;
  shard: number;
  /** Its journal record: the cursor stays before it until the card is written. */
  seq: number;
  due: number;
}

interface Position {
  journal: number[];
  fills: number;
}

/** Where the cursor stands, with the last reset read up to there. */
interface CursorAt extends Position {
  reset: number;
}

/**
 * The desk's one writer (proto/desk.ts): chart samples and conversion
 * scorecards into DESK_STREAM, derived from published state only: ETF prices
 * (`etf.price.*`), every account's cash and positions (the engine's notices,
 * seeded by one admin dump), marked at the books' mids (Marks), and the
 * engine's own durable streams. It writes no team state: the engine alone
 * owns positions.
 *
 * The pricing service runs it: one per system (gateways are many, the engine
 * must not wait on market data), and it already follows the books and
 * publishes what is derived from them. A sample is written only when the
 * chart grid takes a point (its step doubles as it fills), so the stream
 * stays a few thousand samples a day; at start the grid is rebuilt from the
 * stream, so a restarted writer goes on at the step it had.
 *
 * Scorecards: a conversion is scored at the marks of the moment its notice
 * arrives. Notices are core NATS, kept nowhere: one published while this
 * writer is stopped, restarting or cut off from the server is gone. So the
 * writer also reads each engine shard's journal, the record of every
 * conversion, and writes a card for each one no notice scored, marked
 * `unscored: 'missed'` (its mids then are unknown; its fee and legs are not).
 * `legs_sold` comes from the journal and the fill stream alone (LegBook), not
 * from notices. Its place in those streams (DeskCursor) and each team's
 * unsold legs (DeskLegs) are in the desk stream too, written once what they
 * say is stored, so a restart at any moment, a SIGKILL included, reads on
 * from there and loses nothing, and counts nothing twice.
 *
 * Not recovered: the marks of a moment it did not hear (a missed card has no
 * edge), and chart samples while it is down (a gap on the chart).
 */
export class DeskRecorder {
  private readonly grid: SeriesGrid;
  private readonly accounts = new Map<number, Account>();
  /** Teams with a P&L series (activity seen), capped at CHART_LIMITS.teams. */
  private readonly tracked = new Set<number>();
  private readonly prices = new Map<string, EtfPrice>();
  private readonly legs = new LegBook();
  /** Cards scored from a notice whose journal record has not been read yet, by legsKey. */
  private readonly noticed = new Map<string, Scorecard>();
  /** Conversions read in the journal that no notice has scored yet, by legsKey. */
  private readonly pending = new Map<string, Pending>();
  /** Cards the writer has let go of (written as they will stay), oldest first. */
  private readonly released = new Set<string>();
  /** While a restarted writer takes up the journal: the cards stored after its cursor (and those of unsold legs), by legsKey. */
  private restored: Map<string, Scorecard> | null = null;
  /** Per shard, its catalog of baskets: a compact journal record names a basket version, not its deltas. */
  private readonly catalogs: Catalog[];
  /** Per shard, the last request id read in its journal (a config_baskets record applies from the next one). */
  private readonly lastRequest: number[];
  /** How far the streams have been read and applied. */
  private readonly at: Position;
  /** The cursor as last stored. */
  private cursor: CursorAt | null = null;
  private cursorDue = false;
  private readonly followers = new Map<string, StreamFollower>();
  /** Each taking up of the streams (takeUp), numbered: an older one's readings stop where a newer one begins. */
  private runs = 0;
  private againDue = false;
  /** The engine's streams cannot be read (a role without the permission): the desk scores what it hears, and keeps no place. */
  private blind = false;
  /** While the streams are being taken up again: fills are not applied (the journals go first), and are read again after. */
  private fillsHeld = true;
  /** Once the streams are taken up to where they stood at the start: cards are written from then on, not half taken up. */
  private live = false;
  private readonly subs: Subscription[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly js: JetStreamClient;
  private readonly dirtyCards = new Map<string, Scorecard>();
  private readonly dirtyLegs = new Set<number>();
  /** Writes that failed and wait to be written again (cards by key, teams' records by `legs:<id>`): the cursor waits for them. */
  private readonly unstored = new Set<string>();
  /** A card given up on (its retries bounded while the stream stays away): the cursor stays where it is for the rest of this run, so a restart writes it again. */
  private cardLost = false;
  /** Every write issued so far has settled. */
  private settled: Promise<void> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushAt = Infinity;
  private dumpPending: Promise<void> | null = null;
  private retry: NodeJS.Timeout | undefined;
  private lastDump = 0;
  /** The next read of the accounts takes every account's cash and positions, not only new accounts'. */
  private resyncDue = false;
  private closed = false;
  private readonly unreadable = new Set<string>();
  /** When the desk subscribed to the notices (Infinity before). */
  private listening = Infinity;
  readonly stats: DeskStats = { samples: 0, cards: 0, missed: 0, writeErrors: 0 };
  /** The first failed write since the last stored one; null while writes are stored. */
  private failingSince: number | null = null;
  private lastError: { error: string; ts: number } | null = null;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly engine: EngineClient,
    private readonly marks: Marks,
    private readonly instruments: Instruments,
    private readonly log: Logger,
    private readonly sampleMs: number,
    private readonly shards: number,
  ) {
    this.grid = new SeriesGrid(CHART_LIMITS.points, sampleMs);
    this.js = jetstream(nc);
    this.catalogs = Array.from({ length: shards }, () => {
      const c = new Catalog();
      c.bindConfig(instruments);
      return c;
    });
    this.lastRequest = new Array<number>(shards).fill(0);
    this.at = { journal: new Array<number>(shards).fill(0), fills: 0 };
  }

  /**
   * Opens the stream, takes up the grid and its own place where the stream
   * left them, then samples every `sampleMs` (`auto: false`: tests call
   * sample()). The engine's streams are taken up in the background: prices and charts do not wait for them.
   */
  static async start(nc: NatsConnection, instruments: Instruments, log: Logger, opts: { sampleMs?: number; shards?: number; auto?: boolean; replicas?: number } = {}): Promise<DeskRecorder> {
    await ensureDeskStream(nc, opts.replicas);
    const shards = opts.shards ?? 1;
    const engine = new EngineClient(nc, 5000, { admin: true, shards, log });
    const desk = new DeskRecorder(nc, engine, new Marks(nc, log), instruments, log, opts.sampleMs ?? CHART_LIMITS.sampleMs, shards);
    await desk.restore();
    await desk.readBaskets();
    desk.listen();
    void desk.takeUp();
    if (opts.auto !== false) desk.every(desk.sampleMs, () => desk.sample());
    desk.every(REFRESH_MS, () => desk.refresh());
    return desk;
  }

  private every(ms: number, f: () => void): void {
    this.timers.add(setInterval(f, ms).unref());
  }

  private after(ms: number, f: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      f();
    }, ms).unref();
    this.timers.add(t);
  }

  /**
   * The grid's times as written (the same points taken again thin the same
   * way, so the step goes on from where it was), and the writer's own place:
   * its cursor, the teams' unsold legs, and the cards a restart may find
   * again in the journal.
   */
  private async restore(): Promise<void> {
    const jsm = await jetstreamManager(this.nc);
    const last = await jsm.streams.getMessage(DESK_STREAM, { last_by_subj: DESK_CURSOR_SUBJECT });
    const cursor = last ? this.readCursor(last.data) : null;
    const cutoff = cursor ? cursor.ts - RESTORE_MARGIN_MS : Infinity;
    const cards = new Map<string, Scorecard>();
    const teams: DeskLegs[] = [];
    let restored = 0;
    const reader = await readStream(
      this.nc,
      DESK_STREAM,
      1,
      (m) => {
        if (m.subject.startsWith(DESK_SAMPLE_PREFIX)) {
          const s = decodeIf(m.data, deskSampleShape);
          if (s && this.grid.begin(s.ts) >= 0) restored++;
        } else if (cursor && m.subject.startsWith(DESK_CARD_PREFIX)) {
          const c = decodeIf(m.data, scorecardShape);
          // After the cursor, or with legs unsold: what taking up the journal and the teams' legs may need.
          if (c && (c.ts >= cutoff || c.legs_sold < 1)) cards.set(legsKey(c.client_id, c.request_id), c);
        } else if (cursor && m.subject.startsWith(DESK_LEGS_PREFIX)) {
          const t = decodeIf(m.data, deskLegsShape);
          if (t) teams.push(t);
          else this.log.warn({ subject: m.subject }, 'desk: a team\'s legs record does not read: its unsold legs are no longer followed');
        }
      },
      { follow: false, log: this.log },
    );
    await reader.caughtUp;
    if (restored) this.log.info({ restored, step_ms: this.grid.step }, 'desk: chart history taken up from the stream');
    try {
      await this.place(cursor, cards, teams, cutoff);
    } catch (err) {
      if (isTransientJsError(err)) throw err;
      // Prices, charts and the scorecards of the notices it hears go on; only what notices do not carry is lost, and said so.
      this.blind = true;
      this.log.error({ err: describeError(err) }, "desk: cannot read the engine's journal or the fill stream: conversions it does not hear as notices get no card, legs_sold is not followed, and its cursor is not moved");
    }
  }

  /** Where to take up the engine's streams from: the cursor stored, or their ends. */
  private async place(cursor: DeskCursor | null, cards: Map<string, Scorecard>, teams: DeskLegs[], cutoff: number): Promise<void> {
    if (cursor) {
      this.at.journal = [...cursor.journal];
      this.at.fills = cursor.fills;
      // A stream made anew since (its sequences start again): read whole, as nothing in it was read; the teams' legs were of the old one.
      let renewed = false;
      for (let k = 0; k <= this.shards; k++) {
        const stream = k < this.shards ? shardNames(k, this.shards).journalStream : FILL_STREAM;
        const read = k < this.shards ? this.at.journal[k]! : this.at.fills;
        if (read <= (await lastSeq(this.nc, stream))) continue;
        this.log.warn({ stream, cursor: read }, 'desk: a stream holds less than its cursor says was read: it was made anew, and is read from its start');
        if (k < this.shards) this.at.journal[k] = 0;
        else this.at.fills = 0;
        renewed = true;
      }
      if (renewed) teams.length = 0;
      this.cursor = { journal: [...this.at.journal], fills: this.at.fills, reset: renewed ? 0 : cursor.reset };
      this.legs.resetAt = this.cursor.reset;
      const needed = new Set<string>();
      for (const t of teams) {
        for (const card of this.legs.load(t, (key) => cards.get(key))) this.dirtyCards.set(legsKey(card.client_id, card.request_id), card);
        for (const o of t.open) needed.add(legsKey(t.client_id, o.request_id));
      }
      for (const [key, c] of cards) if (c.ts < cutoff && !needed.has(key)) cards.delete(key);
      this.restored = cards;
      this.log.info({ cursor, teams: teams.length, cards: cards.size }, 'desk: taking up the engine\'s journal and the fill stream from where it stood');
    } else {
      // No place kept (the first start, or one after a week stopped): from the streams' ends, as there is nothing to take up from.
      this.at.journal = await Promise.all(Array.from({ length: this.shards }, (_, k) => lastSeq(this.nc, shardNames(k, this.shards).journalStream)));
      this.at.fills = await lastSeq(this.nc, FILL_STREAM);
      this.cursorDue = true;
      this.log.info({ journal: this.at.journal, fills: this.at.fills }, 'desk: no cursor stored: following the engine\'s journal and the fill stream from their ends');
    }
  }

  private readCursor(data: Uint8Array): DeskCursor | null {
    const c = decodeIf(data, deskCursorShape);
    if (!c) this.log.error('desk: its cursor does not read: following the engine\'s streams from their ends, what they hold since it was written goes unscored');
    else if (c.journal.length !== this.shards) this.log.error({ cursor: c.journal.length, shards: this.shards }, 'desk: its cursor is of another number of engine shards: following their streams from their ends');
    else return c;
    return null;
  }

  /** Basket versions the operator set before the cursor: the journal read from there names them, its records do not define them. */
  private async readBaskets(): Promise<void> {
    try {
      const kv = await new Kvm(this.nc).open(BASKET_BUCKET);
      for (const etf of this.instruments.baskets.keys()) {
        const e = await kv.get(etf);
        const v = e?.operation === 'PUT' ? decodeIf(e.value, basketVersionsShape) : undefined;
        for (const version of v?.versions ?? []) for (const c of this.catalogs) c.add(etf, version.version, version.from, version.components.map((x) => [x.symbol, x.weight]));
      }
    } catch (err) {
      if (!isStreamNotFound(err)) this.log.warn({ err: describeError(err) }, `desk: cannot read the ${BASKET_BUCKET} bucket: a redeem of a basket version set before the cursor is not followed`);
    }
  }

  private listen(): void {
    this.listening = Date.now();
    this.subs.push(
      this.nc.subscribe(PRICE_SUBJECT_WILDCARD, {
        callback: (err, m) => {
          if (err) return;
          try {
            const p = decodeAs(m.data, etfPriceShape);
            this.prices.set(p.etf, p);
          } catch {
            // A bad payload is the pricing actor's to report; the chart keeps the last good one.
          }
        },
      }),
      this.nc.subscribe(NOTICES_SUBJECT_WILDCARD, {
        callback: (err, m) => {
          if (err) return;
          try {
            this.onNotices(decodeRecordsAs(m.data, noticeBatchShape));
          } catch (e) {
            this.log.warn({ err: e instanceof Error ? e.message : e }, 'desk: unreadable notice batch');
          }
        },
      }),
    );
    void this.refreshAccounts();
    void (async () => {
      // Core NATS drops what is published while disconnected: the P&L would go on from positions that are no longer so.
      for await (const s of this.nc.status()) {
        if (this.closed) return;
        // The streams' consumers pick up again on their own, but not in the order a sell needs: the fills wait for the journals.
        if (s.type === 'disconnect') this.fillsHeld = true;
        if (s.type === 'reconnect') {
          void this.resync();
          void this.takeUp();
        }
      }
    })();
  }

  /**
   * Each shard's journal to its end, then the fill stream, then both as they
   * grow: a sell is matched only to conversions decided before it, and those
   * are all read by then. Cards are written once both are taken up. Run again
   * whenever a reading stops or the connection comes back (the two streams'
   * consumers would each pick up again on their own, the fills' perhaps
   * first): from where each stood, in the same order.
   */
  private async takeUp(): Promise<void> {
    if (this.blind) {
      this.live = true;
      return;
    }
    const run = ++this.runs;
    this.fillsHeld = true;
    await Promise.all([...this.followers.values()].map((f) => f.stop()));
    this.followers.clear();
    const current = () => run === this.runs && !this.closed;
    await Promise.all(Array.from({ length: this.shards }, (_, k) => this.follow(`journal ${k}`, shardNames(k, this.shards).journalStream, () => this.at.journal[k]! + 1, (m) => this.onJournal(k, m), current)));
    if (!current()) return;
    this.fillsHeld = false;
    await this.follow('fills', FILL_STREAM, () => this.at.fills + 1, (m) => this.onFill(m), current);
    if (!current() || this.live) return;
    this.restored = null;
    for (const { clientId, requestId } of this.legs.dropCardless()) {
      this.log.warn({ client_id: clientId, request_id: requestId }, 'desk: a conversion with unsold legs has no card in the stream: its legs are no longer followed');
      this.release(legsKey(clientId, requestId));
    }
    this.live = true;
    this.log.info({ journal: this.at.journal, fills: this.at.fills, missed: this.pending.size, open: this.legs.teamsOpen().length }, "desk: the engine's streams taken up");
    this.flush();
  }

  /** A reading stopped: all of them again, in order, a little later. */
  private takeUpAgain(): void {
    if (this.closed || this.againDue) return;
    this.againDue = true;
    this.fillsHeld = true;
    this.after(2000, () => {
      this.againDue = false;
      void this.takeUp();
    });
  }

  /**
   * Follows `stream` from `from()` on; resolves once it has read what the
   * stream held as it began, or could not begin (the desk writes live anyway,
   * and its cursor does not pass what it has not read). A reading that stops
   * has everything taken up again (takeUpAgain).
   */
  private follow(what: string, stream: string, from: () => number, onMsg: (m: JsMsg) => void, current: () => boolean): Promise<void> {
    return new Promise<void>((caughtUp) => {
      const again = (err: unknown) => {
        caughtUp();
        if (!current()) return;
        this.followers.delete(what);
        // A stream not made yet has nothing to take up, nor anything to keep in order with the other: it alone is asked for again.
        if (isStreamNotFound(err)) return this.after(2000, () => void (current() && start()));
        this.log.warn({ stream, err: describeError(err) }, `desk: reading the ${what} stream stopped; reading the engine's streams again from where they were`);
        if (!this.live) this.log.error({ stream }, `desk: writing live before the ${what} stream is taken up: what it holds is scored once it is read`);
        this.takeUpAgain();
      };
      const start = async (): Promise<void> => {
        try {
          const f = await readStream(
            this.nc,
            stream,
            from(),
            (m) => {
              try {
                onMsg(m);
              } catch (err) {
                // One record this build does not read must not stop the rest: logged, passed over.
                this.logUnreadable(stream, m.seq, err);
              }
            },
            { follow: true, onError: again, log: this.log },
          );
          if (!current()) return void f.stop().then(caughtUp);
          this.followers.set(what, f);
          f.caughtUp.then(caughtUp, again);
        } catch (err) {
          again(err);
        }
      };
      void start();
    });
  }

  private logUnreadable(stream: string, seq: number, err: unknown): void {
    const first = !this.unreadable.has(stream);
    this.unreadable.add(stream);
    if (first) this.log.error({ stream, seq, err: describeError(err) }, 'desk: a record it cannot read is passed over (the first of this stream logged)');
  }

  /**
   * Every account's name, cash and positions from one engine read; notices
   * keep them current after. A read after notices were lost (`resync`) takes
   * the cash and positions of the accounts it knew too: the engine answers
   * it after publishing every change it holds, and a change applied since
   * carries the whole account.
   */
  refreshAccounts(): Promise<void> {
    if (this.dumpPending) return this.dumpPending;
    this.lastDump = Date.now();
    const whole = this.resyncDue;
    this.resyncDue = false;
    this.dumpPending = (async () => {
      const reply = await this.engine.call({ op: 'dump' });
      if (!reply.ok) {
        this.resyncDue ||= whole;
        // The engine is not up yet: try again (one timer, however long it takes).
        if (!this.closed) {
          clearTimeout(this.retry);
          this.retry = setTimeout(() => void this.refreshAccounts(), 2000).unref();
        }
        return;
      }
      for (const a of reply.result.accounts) {
        const known = this.accounts.get(a.client_id);
        if (known && !whole) known.username = a.username;
        else this.accounts.set(a.client_id, { username: a.username, cash: a.cash, positions: a.positions.flat() });
        this.track(a.client_id);
      }
      if (whole) this.log.info({ accounts: reply.result.accounts.length }, 'desk: accounts read again whole: notices were lost');
    })().finally(() => (this.dumpPending = null));
    return this.dumpPending;
  }

  /** Notices were lost (a reconnect, a gap in an account's changes): the accounts are read again whole, after any read already asked. */
  private async resync(): Promise<void> {
    await this.dumpPending;
    if (this.closed) return;
    this.resyncDue = true;
    await this.refreshAccounts();
  }

  private track(clientId: number): void {
    if (this.tracked.has(clientId) || this.tracked.size >= CHART_LIMITS.teams) return;
    const a = this.accounts.get(clientId);
    if (a && (a.cash !== 0 || a.positions.length > 0)) this.tracked.add(clientId);
  }

  private onNotices(batch: NoticeBatch): void {
    // An outcome carries its fee from notice batches version 3. An older engine's: the cash each conversion took, per
    // account in order, from the change beside it (wrong for an account not read yet, taken to start from cash 0).
    const fees = new Map<number, number[]>();
    for (const c of batch.changes ?? []) {
      let a = this.accounts.get(c.client_id);
      if (!a) {
        a = { username: `#${c.client_id}`, cash: 0, positions: [] };
        this.accounts.set(c.client_id, a);
        // A team registered since the last read: its name once, not per notice.
        if (Date.now() - this.lastDump > 2000) void this.refreshAccounts();
      }
      if ((c.cause === 'create' || c.cause === 'redeem') && c.cash !== undefined) {
        const list = fees.get(c.client_id) ?? [];
        list.push(Math.max(0, a.cash - c.cash));
        fees.set(c.client_id, list);
      }
      // Older than what the account holds (a read answered after it): the account is newer already.
      if (a.seq !== undefined && c.seq <= a.seq) continue;
      // Changes between the two were not heard: the account moved in ways only a read can tell.
      if (a.seq !== undefined && c.seq > a.seq + 1) void this.resync();
      a.seq = c.seq;
      a.positions = c.positions;
      if (c.cash !== undefined) a.cash = c.cash;
      this.track(c.client_id);
    }
    for (const o of batch.outcomes ?? []) {
      if (o.status !== 'accepted' || !o.etf || !o.deltas) continue;
      const inferred = fees.get(o.client_id)?.shift() ?? 0;
      this.score(o.request_id, o.client_id, o.op, o.etf, o.amount, o.deltas, o.fee ?? inferred, o.ts);
    }
  }

  /** A conversion's value at the marks of the moment: Σ delta × mid (what it did to P&L at mid), less its fee; a leg without a two-sided market now is unmarked, not valued at its last mid. */
  private score(requestId: string, clientId: number, op: 'create' | 'redeem', etf: string, amount: number, deltas: FlatPositions, fee: number, ts: number): void {
    const key = legsKey(clientId, requestId);
    // Written as missed and let go (its notice came long after it): left as written, its legs_sold with it.
    if (this.released.has(key)) return;
    let value = 0;
    const unmarked: string[] = [];
    for (let i = 0; i < deltas.length; i += 2) {
      const m = this.marks.liveMid(deltas[i]!);
      if (m === undefined) unmarked.push(this.instruments.tickerOf(deltas[i]!));
      else value += deltas[i + 1]! * m;
    }
    const symbol = this.instruments.baskets.get(etf)?.symbol;
    const etfMid = symbol === undefined ? undefined : this.marks.liveMid(symbol);
    const p = this.prices.get(etf);
    const quoted = op === 'create' ? p?.create_edge : p?.redeem_edge;
    const scored: Scorecard = {
      request_id: requestId,
      client_id: clientId,
      op,
      etf,
      amount,
      ts,
      etf_mid: etfMid ?? null,
      edge: unmarked.length ? null : value - fee,
      edge_per_unit: unmarked.length ? null : (value - fee) / amount,
      quoted_edge: quoted === null || quoted === undefined ? null : quoted * amount - fee,
      fee,
      legs_sold: 0,
      ...(unmarked.length ? { unmarked } : {}),
    };
    // The journal's copy read first: its card (and the legs that point at it) takes the score, keeping what is sold.
    const held = this.pending.get(key)?.card ?? this.legs.cardOf(clientId, requestId) ?? this.noticed.get(key);
    // Written as missed already (the notice came after NOTICE_GRACE_MS): the marks now are not those of its moment.
    if (held?.unscored && !this.pending.has(key)) return;
    let card = scored;
    if (held) {
      const legsSold = held.legs_sold;
      for (const k of Object.keys(held) as (keyof Scorecard)[]) delete held[k];
      Object.assign(held, scored, { legs_sold: legsSold });
      card = held;
      if (this.pending.delete(key) && !this.legs.holds(clientId, requestId)) this.release(key);
    } else {
      this.noticed.set(key, card);
      if (this.noticed.size > NOTICED_KEPT) {
        const oldest = this.noticed.keys().next().value!;
        this.noticed.delete(oldest);
        this.release(oldest);
      }
    }
    this.writeCard(key, card);
  }

  /** One journal record of shard `shard`: the baskets it defines, and each accepted conversion's card and legs. */
  private onJournal(shard: number, m: JsMsg): void {
    const stream = shardNames(shard, this.shards).journalStream;
    const batch = decodeJournalRecord(m.data, m.seq, stream);
    const fills = batch.fills ?? [];
    let pair = 0;
    for (const [i, ev] of batch.events.entries()) {
      while (pair + 2 < fills.length && fills[pair + 2]! <= i) pair += 2;
      if ('requestId' in ev && ev.requestId !== undefined) this.lastRequest[shard] = Math.max(this.lastRequest[shard]!, ev.requestId);
      if (ev.t === 'config_baskets') this.catalogs[shard]!.addConfig(ev.baskets, this.lastRequest[shard]! + 1);
      else if (ev.t === 'basket') this.catalogs[shard]!.add(ev.etf, ev.version, ev.from, ev.components);
      // Where the engine stood in the fill stream as it decided it; a record from before engines kept it: where the desk stands.
      else if (ev.t === 'conversion') this.conversion(shard, m.seq, ev, fills.length ? fills[pair + 1]! : this.at.fills, Number(m.timestampNanos / 1_000_000n));
    }
    this.at.journal[shard] = m.seq;
    this.schedule(CURSOR_MS);
  }

  /** `storedMs`: when the journal stored its record; the engine published its notice right after. */
  private conversion(shard: number, seq: number, ev: Extract<JournalEvent, { t: 'conversion' }>, at: number, storedMs: number): void {
    const requestId = `r${ev.requestId}`;
    const key = legsKey(ev.clientId, requestId);
    if (this.released.has(key)) return;
    let card = this.noticed.get(key);
    if (card) this.noticed.delete(key);
    card ??= this.restored?.get(key) ?? this.legs.cardOf(ev.clientId, requestId);
    if (!card) {
      card = {
        request_id: requestId,
        client_id: ev.clientId,
        op: ev.op,
        etf: ev.etf,
        amount: ev.amount,
        ts: ev.ts,
        etf_mid: null,
        edge: null,
        edge_per_unit: null,
        quoted_edge: null,
        fee: ev.fee ?? 0,
        legs_sold: 0,
        unscored: 'missed',
      };
      // Stored before the desk listened: its notice went out unheard, so waiting for it is pointless.
      const due = storedMs < this.listening - NOTICE_SLACK_MS ? 0 : Math.max(ev.ts, storedMs) + NOTICE_GRACE_MS;
      this.pending.set(key, { card, shard, seq, due });
      this.schedule(due - Date.now());
    }
    if (this.legs.tookJournal(ev.clientId, seq)) this.legs.attach(ev.clientId, requestId, card);
    else {
      const { opened, letGo } = this.legs.open(ev.clientId, requestId, card, at, this.gave(shard, ev));
      if (opened) this.dirtyLegs.add(ev.clientId);
      if (letGo !== undefined) this.releaseIfDone(ev.clientId, letGo);
    }
    this.releaseIfDone(ev.clientId, requestId);
  }

  /** What a conversion gave the team (the ETF units of a create, the basket of a redeem): its legs, to be sold on the exchange. */
  private gave(shard: number, ev: Extract<JournalEvent, { t: 'conversion' }>): Map<number, number> {
    const gave = new Map<number, number>();
    try {
      for (const [symbol, d] of this.catalogs[shard]!.deltas(ev)) if (d > 0) gave.set(symbol, (gave.get(symbol) ?? 0) + d);
    } catch (err) {
      this.log.warn({ request_id: `r${ev.requestId}`, err: describeError(err) }, 'desk: a conversion of a basket it does not know: its legs are not followed');
    }
    return gave;
  }

  /** One message of the fill stream: a sell counts against the team's unsold legs; an exchange reset takes them all. */
  private onFill(m: JsMsg): void {
    // Read again, after the journals, once they are taken up again.
    if (this.fillsHeld) return;
    if (m.subject === SESSION_SUBJECT) {
      // A reset whenever the engine takes it for one (fill-feed.ts): `reset` true, whatever else the marker says.
      let marker: Partial<SessionMarker> | undefined;
      try {
        marker = decode<Partial<SessionMarker> | undefined>(m.data);
      } catch {
        marker = undefined;
      }
      if (marker?.reset === true) {
        for (const [clientId, gone] of this.legs.reset(m.seq)) {
          this.dirtyLegs.add(clientId);
          for (const requestId of gone) this.releaseIfDone(clientId, requestId);
        }
      }
    } else {
      let f: Fill | undefined;
      try {
        f = decode<Fill>(m.data);
      } catch {
        f = undefined;
      }
      // The engine applies no fill of another shape, so neither does the desk.
      if (f && fillProblem(f) === null && f.side === FILL_SIDE_SELL) {
        const sold = this.legs.sell(f.client_id, m.seq, f.symbol, f.quantity);
        if (sold && (sold.moved.length || sold.done.length)) {
          this.dirtyLegs.add(f.client_id);
          for (const card of sold.moved) this.writeCard(legsKey(card.client_id, card.request_id), card);
          for (const requestId of sold.done) this.releaseIfDone(f.client_id, requestId);
        }
      }
    }
    this.at.fills = m.seq;
    this.schedule(CURSOR_MS);
  }

  /** A card nothing will change any more (written, its legs all sold or let go) is let go of: remembered by key only. */
  private releaseIfDone(clientId: number, requestId: string): void {
    const key = legsKey(clientId, requestId);
    if (!this.pending.has(key) && !this.noticed.has(key) && !this.legs.holds(clientId, requestId)) this.release(key);
  }

  private release(key: string): void {
    this.released.add(key);
    if (this.released.size > RELEASED_KEPT) this.released.delete(this.released.keys().next().value!);
  }

  /** A card changed: written with the others changed within CARD_FLUSH_MS. */
  private writeCard(key: string, card: Scorecard): void {
    this.dirtyCards.set(key, card);
    this.schedule(CARD_FLUSH_MS);
  }

  /** A flush within `delayMs` (or sooner, when one is due sooner). */
  private schedule(delayMs: number): void {
    if (this.closed) return;
    const at = Date.now() + Math.max(0, delayMs);
    if (this.flushTimer && this.flushAt <= at) return;
    clearTimeout(this.flushTimer);
    this.flushAt = at;
    this.flushTimer = setTimeout(() => this.flush(), Math.max(0, delayMs));
  }

  /**
   * Cards and teams' records changed since the last flush go out together
   * (under a benchmark's thousands of conversions a second, the stream takes
   * one write per card, not one per change), published in order on one
   * connection: the stream keeps each subject's newest. Conversions whose
   * notice did not come in time are written as missed. Once every write so far
   * is stored, the cursor says how far they go.
   */
  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flushAt = Infinity;
    // Taking up the streams: nothing half taken up is written (a card whose sells are not read yet would say 0 sold).
    if (!this.live) return;
    const now = Date.now();
    let next = Infinity;
    for (const [key, p] of this.pending) {
      if (p.due > now) {
        next = Math.min(next, p.due);
        continue;
      }
      this.pending.delete(key);
      this.stats.missed++;
      this.dirtyCards.set(key, p.card);
      this.releaseIfDone(p.card.client_id, p.card.request_id);
    }
    if (next < Infinity) this.schedule(next - now);
    const at = this.cursorPosition();

    const writes: Promise<boolean>[] = [];
    for (const [key, card] of this.dirtyCards) {
      this.stats.cards++;
      writes.push(this.store(key, deskCardSubject(card.client_id, card.request_id), encode(card), () => this.retryCard(key, card)));
    }
    this.dirtyCards.clear();
    // After the cards they point at: a record read back finds its cards stored.
    for (const clientId of this.dirtyLegs) {
      const rec = this.legs.record(clientId, this.at.journal[shardOfClient(clientId, this.shards)]!, this.at.fills);
      writes.push(this.store(`legs:${clientId}`, deskLegsSubject(clientId), encode(rec), () => this.retryLegs(clientId)));
    }
    this.dirtyLegs.clear();
    const moved = this.cursorDue || !this.cursor || !samePosition(at, this.cursor);
    if (!moved || this.blind) return;
    // Acks come in order, but a failure (a time-out) may be told after a later write's ack: every earlier write is waited for too.
    const all = Promise.all([this.settled, ...writes]).then(() => {});
    this.settled = all;
    void all.then(() => {
      if (this.unstored.size === 0 && !this.cardLost && !this.closed) void this.writeCursor(at);
    });
  }

  /** Where the streams are read to, but no further on a shard than just before its first conversion still waiting for its notice: a restart must find it. */
  private cursorPosition(): CursorAt {
    const at: CursorAt = { journal: [...this.at.journal], fills: this.at.fills, reset: this.legs.resetAt };
    for (const p of this.pending.values()) at.journal[p.shard] = Math.min(at.journal[p.shard]!, p.seq - 1);
    return at;
  }

  /** A write of `key`'s subject; a failed one is written again (`retry`), and the cursor waits until it is stored. */
  private store(key: string, subject: string, data: Uint8Array, retry: () => void): Promise<boolean> {
    return this.write(subject, data).then((ok) => {
      if (ok) this.unstored.delete(key);
      else {
        this.unstored.add(key);
        retry();
      }
      return ok;
    });
  }

  /** A card not stored (JetStream electing a leader, say) is written again a second later, as it then stands: a grade depends on it. */
  private retryCard(key: string, card: Scorecard): void {
    // Retries stop with the writer, and are bounded while the stream stays away.
    if (this.closed) return;
    if (this.dirtyCards.size >= CHART_LIMITS.scorecards) {
      if (!this.cardLost) this.log.error({ key }, 'desk: scorecards are not stored and too many wait: one is given up; the cursor stays where it is, so the next start writes it again (as missed)');
      this.cardLost = true;
      return;
    }
    this.after(CARD_RETRY_MS, () => {
      if (!this.dirtyCards.has(key)) this.writeCard(key, card);
    });
  }

  private retryLegs(clientId: number): void {
    if (this.closed) return;
    this.after(CARD_RETRY_MS, () => {
      this.dirtyLegs.add(clientId);
      this.schedule(0);
    });
  }

  private async writeCursor(at: CursorAt): Promise<void> {
    const cursor: DeskCursor = { v: DESK_CURSOR_VERSION, journal: at.journal, fills: at.fills, reset: at.reset, ts: Date.now() };
    if (await this.write(DESK_CURSOR_SUBJECT, encode(cursor))) {
      // Flushes can overlap: the cursor stored last is not always the furthest.
      if (!this.cursor || at.fills >= this.cursor.fills) this.cursor = at;
      this.cursorDue = false;
    } else this.cursorDue = true;
  }

  /** The cursor and the teams' records again, changed or not: the stream's age limit must not take them. */
  private refresh(): void {
    if (!this.live || this.closed) return;
    for (const clientId of this.legs.teamsOpen()) this.dirtyLegs.add(clientId);
    this.cursorDue = true;
    this.schedule(0);
  }

  /**
   * While writes fail and none has been stored since: the first of those
   * failures and what the stream last said (a sample lost is a gap, a card is
   * retried: only a failure that lasts is worth an operator's look).
   */
  failing(): { since: number; error: string } | null {
    return this.failingSince === null || !this.lastError ? null : { since: this.failingSince, error: this.lastError.error };
  }

  /** The newest failed write, kept after writes succeed again. */
  lastFailure(): { error: string; ts: number } | null {
    return this.lastError;
  }

  /** Whether the stream stored it. */
  private write(subject: string, data: Uint8Array): Promise<boolean> {
    return this.js.publish(subject, data).then(
      () => {
        this.failingSince = null;
        return true;
      },
      (err: unknown) => {
        const error = describeError(err);
        this.failingSince ??= Date.now();
        this.lastError = { error, ts: Date.now() };
        if (this.stats.writeErrors++ % 100 === 0) this.log.warn({ subject, err: error, errors: this.stats.writeErrors }, 'desk: a write to the stream failed');
        return false;
      },
    );
  }

  /** Takes one point of every series now when the grid is due one (the timer's job; tests call it to place points). */
  sample(ts = Date.now()): void {
    // Nothing to chart yet (no price, no team active): no empty points before the session starts.
    if (this.closed || (this.prices.size === 0 && this.tracked.size === 0)) return;
    if (this.grid.begin(ts) < 0) return;
    const etfs: DeskSample['etfs'] = {};
    for (const [etf, p] of this.prices) etfs[etf] = [mid(p.etf_bid, p.etf_ask), p.nav ?? null, p.premium ?? null];
    const teams: DeskSample['teams'] = [];
    for (const id of this.tracked) {
      const a = this.accounts.get(id)!;
      let total = a.cash;
      for (let k = 0; k < a.positions.length; k += 2) {
        // Unmarked positions count at nothing, as GET /leaderboard counts them.
        const m = this.marks.mid(a.positions[k]!);
        if (m !== undefined) total += a.positions[k + 1]! * m;
      }
      teams.push([id, a.username, total]);
    }
    const sample: DeskSample = { v: DESK_SAMPLE_VERSION, ts, step: this.grid.step, etfs, teams };
    this.stats.samples++;
    void this.write(deskSampleSubject(ts), encode(sample));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retry);
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.subs) s.unsubscribe();
    await Promise.all([...this.followers.values()].map((f) => f.stop()));
    // What the streams gave so far is written and its cursor stored: a clean stop leaves nothing for the next start to read again.
    if (this.live && !this.blind) {
      this.flush();
      const stored = await Promise.race([this.settled.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 2000).unref())]);
      const at = this.cursorPosition();
      if (stored && this.unstored.size === 0 && !this.cardLost && (!this.cursor || !samePosition(at, this.cursor))) await this.writeCursor(at);
    }
    clearTimeout(this.flushTimer);
    this.marks.close();
    this.engine.close();
    // What was written is flushed before the connection goes; a connection already closed or draining has nothing left to flush.
    await this.nc.flush().catch((err: unknown) => {
      if (!(err instanceof errors.ClosedConnectionError) && !(err instanceof errors.DrainingConnectionError)) this.log.warn({ err: describeError(err) }, 'desk: flush at close failed');
    });
  }
}

const samePosition = (a: Position, b: Position): boolean => a.fills === b.fills && a.journal.every((s, k) => s === b.journal[k]);

/** A stream's last sequence; 0 when it does not exist yet (nothing in it to take up). */
async function lastSeq(nc: NatsConnection, stream: string): Promise<number> {
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
  } catch (err) {
    if (isStreamNotFound(err)) return 0;
    throw err;
  }
}
