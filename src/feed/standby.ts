import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { decode } from '../../proto/codec.js';
import { FEED_BUCKET, FEED_CLEARING_KEY, clearingSessionProblem, fillSessionId, type ClearingSessionRecord } from '../../proto/feed.js';
import { HELD_STREAM } from '../../proto/subjects.js';
import { FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, type StandbyStatus } from '../../proto/marketdata.js';
import { decodeClearingDatagram, type ClearingMessage as ClearingMsg } from '../../proto/ndfex.js';
import { clearingFill, fillProblem, type Fill } from '../../proto/fill.js';
import { connectNats } from '../shared/nats.js';
import { ensureFillStream, openBucket } from '../shared/streams.js';
import type { Logger } from '../shared/log.js';
import { AlertSender } from './alerts.js';
import { lastMarker, lastStoredFill } from './clearing-session.js';
import { joinGroup, type Receiver } from './multicast.js';
import { publishQuiet } from './nats-out.js';
import { REORDER_WINDOW, believableJump, copyOf } from './verdict.js';
import { ProblemOutbox } from './problem-store.js';
import { reportCopy, type CopyReports, type KeptIn } from './seq-copies.js';
import { KeptRunStore, type KeptRunRef, type StoredKeptRun } from './kept-store.js';
import { FillPublisher } from './publisher.js';
import { sourceFilter } from './sockets.js';
import type { BridgeOptions } from './service.js';

/** The followed run's recent messages by seq, to decide a second message at a seq already taken (verdict.ts copyOf), as the bridge's followed run does. */
const RING = 1024;

/** The session a standby publishes fills of: the one the bridge began, and its sender. */
interface Followed {
  session: number;
  sender: string;
  /** The last seq known stored, saved by the bridge, or sent here: only later ones are published. */
  lastSeq: number;
  /** The highest seq heard here from the sender (0: none since it began to follow or went on), and when (until then: since when). */
  heard: number;
  heardAt: number;
  /** Until the first message is heard: a skip past `lastSeq` waits for the bridge (false once the bridge has gone on past a wait). */
  checkSkip: boolean;
  /** The seq went back (an exchange restart from the same address, or a forgery): nothing is published until the bridge's record passes this. */
  suspendedAt: number | null;
  /**
   * Suspended on a first message that skips (the whole system was stopped): the run heard since, kept. When
   * the bridge goes on past it, it judged the run the session's, and what was heard before it listened is
   * published (the bridge stores the rest; a fill both send is stored once).
   */
  run: KeptRun | null;
}

/**
 * A run heard while suspended on a first skip, kept as the bridge keeps a held run: only seqs past the last known
 * stored, none further ahead than the exchange sends, each seq once, the first heard (a copy with other content is a
 * conflict, the same content a duplicate: verdict.ts copyOf decides both for the bridge and here).
 */
interface KeptRun extends KeptRunRef {
  /** Every message heard by seq, heartbeats too: a heartbeat's seq is taken as a fill's is. */
  msgs: Map<number, ClearingMsg>;
  last: number;
  dropped: number;
  /** Where it is stored (kept-store.ts): its own subject, and those of runs a stopped standby left that it took in. */
  stored: string[];
}

/** Messages of a run heard while suspended on a first skip, kept at most: the bridge hears the rest itself once up. */
const RUN_MAX = 65_536;

/** Where the first of two messages with one seq in a kept run stays, told in the conflict's alert and problem. */
const KEPT_RUN: KeptIn = { run: 'the run the standby keeps while no bridge listens', applied: 'stored once the bridge goes on past it' };

/**
 * The standby bridge: a second listener on the clearing feed, for the
 * seconds the bridge is down (a crash, a restart, an upgrade). NDFEX never
 * retransmits, so a fill sent while no bridge listens is lost for good; the
 * standby hears it and publishes it under the msg id the bridge would have
 * used (`fill-<session>-<seq>`), so with both up each fill is stored once.
 *
 * It decides nothing. It follows the session the bridge began (the feed
 * bucket's clearing record, once that session's marker is in the fill stream
 * and the bridge has saved the session's sender) and publishes only fills from
 * that sender at seqs past the last it knows. A second message at a seq it
 * followed is decided as the bridge decides one on its followed run (the
 * first stays; a conflict or a copy, told the same). Everything else (another
 * sender, a seq going back: an exchange restart or a forgery) is the bridge's
 * to judge and hold; the standby ignores it, so it can never apply what the
 * bridge would hold, nor a new session's fill before its reset. A seq that
 * goes back beyond a reordered datagram, or jumps further than the exchange
 * sends, on the followed sender itself, or a first message heard that skips
 * seqs (the bridge holds such a run until market data tells a gap from an
 * exchange restart), suspends it until the bridge's record moves past it
 * (the old session went on) or to a new session.
 */
export class StandbyListener {
  private followed: Followed | null = null;
  /** Why nothing is published yet (no session to follow), or null. */
  private waiting: string | null = 'the clearing session record is not read yet';
  private readonly counts = { datagrams: 0, bad_datagrams: 0, published: 0, not_following: 0, other_sender: 0, not_after: 0, suspended: 0, conflicts: 0, copies: 0, held_duplicates: 0, gaps: 0, invalid: 0 };
  /** What the bridge would raise for the same messages (the standby hears what no bridge heard), until a bridge takes them. */
  private readonly problems: ProblemOutbox;
  /** A copy of a message of the run it keeps while suspended, and of one it followed (published, or a heartbeat): counted apart. */
  private readonly reports: CopyReports;
  private readonly followedReports: CopyReports;
  private receiver: Receiver | null = null;
  private timer: NodeJS.Timeout | null = null;
  private following: Promise<void> = Promise.resolve();
  private looking = false;
  private readonly accepts: (sender: string) => boolean;
  private readonly ring: Array<{ msg: ClearingMsg; sender: string } | undefined> = new Array(RING);
  /** Why the run it keeps cannot be stored now (a stop would lose it), or null. */
  private keptUnsaved: string | null = null;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly publisher: FillPublisher,
    private readonly alerts: AlertSender,
    private readonly store: KeptRunStore,
    /** Runs a stopped standby kept, taken up once it knows the session it follows (restore). */
    private restored: StoredKeptRun[],
    opts: BridgeOptions,
    private readonly log: Logger,
  ) {
    store.onTrouble = (why) => {
      this.keptUnsaved = why;
      if (why) this.alerts.send('clearing', { kind: 'held_store', detail: why });
    };
    this.accepts = sourceFilter(opts.sources);
    this.problems = new ProblemOutbox(kv, log);
    const reports = (duplicate: 'copies' | 'held_duplicates'): CopyReports => ({
      count: (what) => void (what === 'conflicts' ? this.counts.conflicts++ : this.counts[duplicate]++),
      alert: this.alerts.send,
      problems: this.problems,
      log: this.log,
    });
    this.reports = reports('held_duplicates');
    this.followedReports = reports('copies');
  }

  static async start(opts: BridgeOptions, log: Logger): Promise<StandbyListener> {
    const nc = await connectNats(opts.natsUrl, 'ndfex-feed-standby', { role: 'feed', credsFile: opts.natsCreds, log });
    try {
      await ensureFillStream(nc, opts.natsReplicas);
      const kv = await openBucket(nc, FEED_BUCKET, opts.natsReplicas);
      const alerts = new AlertSender((a) => publishQuiet(nc, log, FEED_ALERT_SUBJECT, { ...a, detail: `standby: ${a.detail}` }));
      const publisher = new FillPublisher(nc, log, fillSessionId(1), opts.maxInFlight ?? 512, opts.ackTimeoutMs ?? 5000);
      const { store, runs, unreadable } = await KeptRunStore.open(nc, log, (what, run) => publisher.enqueueBarrier(what, run), opts.natsReplicas);
      const s = new StandbyListener(nc, kv, publisher, alerts, store, runs, opts, log);
      if (unreadable > 0) {
        const detail = `${unreadable} entr${unreadable === 1 ? 'y' : 'ies'} of the run the standby keeps while no bridge listens (in ${HELD_STREAM}) could not be read at its start: the fills in them are not stored (look at the stream by hand)`;
        s.problems.raise({ id: 'standby-kept-unreadable', kind: 'held_store', feed: 'clearing', detail, actions: ['ack'] }, Date.now());
      }
      await s.follow();
      // Problems an earlier standby raised that no bridge has taken yet: on its status until one does.
      await s.problems.flush();
      s.receiver = await joinGroup(opts.clearing, opts.iface, (buf, sender) => s.onDatagram(buf, sender));
      s.timer = setInterval(() => s.tick(), opts.statusIntervalMs ?? 1000);
      s.publishStatus();
      log.info({ clearing: opts.clearing, followed: s.followed, waiting: s.waiting }, 'standby bridge ready');
      return s;
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
  }

  /** What /health and the tests see. */
  status(): StandbyStatus {
    const f = this.followed;
    const waiting = f?.suspendedAt != null ? `a seq the bridge judges first (back past a reordered datagram, further ahead than the exchange sends, or a first one heard that skips): waiting for the bridge to decide (to go on past seq ${f.suspendedAt})` : this.waiting;
    const problems = this.problems.list();
    const kept = f?.run ? { kept: f.run.msgs.size } : {};
    const unsaved = this.keptUnsaved ? { kept_unsaved: this.keptUnsaved } : {};
    return { role: 'standby', session: f?.session ?? 0, sender: f?.sender ?? null, last_seq: f?.lastSeq ?? 0, waiting, ...this.counts, duplicates: this.publisher.stats.duplicates, ...kept, ...unsaved, ...(problems.length ? { problems } : {}), ts: Date.now() };
  }

  /** Resolves once every fill sent so far is acknowledged. */
  idle(): Promise<void> {
    return this.publisher.idle();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.receiver?.close();
    this.receiver = null;
    await this.following.catch(() => {});
    await this.problems.flush();
    // What it keeps is stored before it goes: the next standby takes the run up where it stood.
    await Promise.race([this.store.settle(), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.store.close();
    await Promise.race([this.publisher.idle(), new Promise((r) => setTimeout(r, 2000))]);
    this.publisher.close();
    await this.nc.drain().catch(() => {});
  }

  private tick(): void {
    // One look at a time: with NATS slow to answer, ticks do not pile up behind it.
    if (!this.looking) {
      this.looking = true;
      this.following = this.follow()
        .catch((err: unknown) => this.log.warn({ err: String(err) }, 'standby: could not read the clearing session'))
        .finally(() => (this.looking = false));
    }
    // Writes what a failed save left, or sees what a bridge took.
    void this.problems.flush();
    this.publishStatus();
  }

  private publishStatus(): void {
    publishQuiet(this.nc, this.log, FEED_STATUS_SUBJECT, this.status());
  }

  /**
   * Reads the bridge's clearing record and follows what it says once it is
   * safe to: a new session only after its marker (the reset) is stored, and
   * only with the sender the bridge saved for it.
   */
  private async follow(): Promise<void> {
    const e = await this.kv.get(FEED_CLEARING_KEY);
    if (!e || e.operation !== 'PUT') return this.wait('no exchange session begun yet (the bridge writes it at its start)');
    let r: ClearingSessionRecord;
    try {
      r = decode<ClearingSessionRecord>(e.value);
    } catch {
      return this.wait('the clearing session record is unreadable');
    }
    if (clearingSessionProblem(r) !== null) return this.wait('the clearing session record is unreadable');
    const f = this.followed;
    if (f && f.session === r.session && f.sender === r.clearing_sender) {
      if (f.suspendedAt !== null && r.last_seq > f.suspendedAt) {
        const run = f.run;
        this.log.info({ session: f.session, lastSeq: r.last_seq, runMessages: run?.msgs.size ?? 0, runDropped: run?.dropped ?? 0 }, 'standby: the bridge went on with the session: publishing again');
        f.suspendedAt = null;
        f.run = null;
        f.checkSkip = false;
        f.heardAt = Date.now();
        if (run) {
          // The bridge went on past the run's first seq in this session, from this sender: the run is the session's.
          this.publishRun(f, run.msgs, run.stored);
          f.heard = run.last;
        } else {
          // What was heard meanwhile is the bridge's to judge: the next message starts the run this follows.
          f.heard = 0;
        }
      }
      f.lastSeq = Math.max(f.lastSeq, r.last_seq);
      return;
    }
    if (f && r.session < f.session) return;
    if (!r.clearing_sender) return this.wait(`session ${r.session}: its sender is not known yet (the bridge saves it once it has heard a fill)`);
    if (r.session > 1) {
      const had = await lastMarker(this.nc);
      // One that does not read stands for the session its msg id names; when that does not tell either, the session's
      // reset cannot be known to be stored, and nothing is published before it (the bridge says why on /health).
      if (had.session === null) return this.wait(`session ${r.session}: ${had.unreadable}, nor does its msg id say which session it opened: not following until a marker that reads`);
      if (had.session < r.session) return this.wait(`session ${r.session}: its marker is not in the fill stream yet`);
    }
    const session = fillSessionId(r.session);
    const stored = (await lastStoredFill(this.nc, session)).fillSeq;
    const next: Followed = { session: r.session, sender: r.clearing_sender, lastSeq: Math.max(r.last_seq, stored, f && f.session === r.session ? f.lastSeq : 0), heard: 0, heardAt: Date.now(), checkSkip: true, suspendedAt: null, run: null };
    // Behind every fill of the old session already sent: no fill goes out under the wrong session's msg id.
    if (!f || f.session !== r.session) this.publisher.enqueueBarrier('standby follows a new session', async () => void (this.publisher.session = session));
    // Another session's or sender's seqs: the same number is another message, never a copy of one followed before.
    this.ring.fill(undefined);
    // The bridge began another session, or heard it from another sender: the run kept was not this one's.
    if (f?.run) this.dropRun(f.run, `the bridge follows session ${r.session} from ${r.clearing_sender}`);
    this.followed = next;
    this.restore(next, r.last_seq);
    this.waiting = null;
    this.log.info({ session: next.session, sender: next.sender, lastSeq: next.lastSeq }, 'standby: following the clearing session');
  }

  private wait(why: string): void {
    if (this.followed) return;
    if (this.waiting !== why) this.log.info({ why }, 'standby: not publishing yet');
    this.waiting = why;
  }

  private onDatagram(buf: Buffer, sender: string): void {
    if (!this.accepts(sender)) return;
    this.counts.datagrams++;
    const d = decodeClearingDatagram(buf);
    if (d.error) this.counts.bad_datagrams++;
    const f = this.followed;
    for (const m of d.messages) {
      // A heartbeat takes a seq too: followed as a fill is, never published.
      if (!f) {
        this.counts.not_following++;
        continue;
      }
      if (sender !== f.sender) {
        this.counts.other_sender++;
        // A copy of a message followed here is decided as the bridge decides one (a replay, or a conflict); anything
        // else from another sender is the bridge's to hold. While suspended, the bridge judges what the seqs mean.
        if (f.suspendedAt === null) this.copyOfFollowed(f, m, sender, Date.now());
        continue;
      }
      if (f.suspendedAt !== null) {
        this.counts.suspended++;
        if (f.run) this.keep(f, f.run, m, sender);
        continue;
      }
      const now = Date.now();
      if ((f.heard > 0 && m.seq < f.heard - REORDER_WINDOW) || m.seq - f.lastSeq > believableJump('clearing', now - f.heardAt)) {
        // What the bridge would hold for a verdict (a run going back, a jump further than the exchange sends): never published here.
        this.counts.suspended++;
        f.suspendedAt = f.lastSeq;
        this.log.warn({ seq: m.seq, heard: f.heard, lastSeq: f.lastSeq }, 'standby: a clearing seq the bridge would hold for a verdict: not publishing until the bridge decides');
        this.alerts.send('clearing', { kind: 'stray', detail: `seq ${m.seq} after ${f.lastSeq} from the exchange's sender: publishing suspended until the bridge decides (an exchange restart or a forgery)`, received: m.seq });
        continue;
      }
      if (f.heard === 0 && f.checkSkip && m.seq > f.lastSeq + 1) {
        // The first message heard since it began to follow skips seqs: fills missed, or (after a stop of the whole system) an exchange
        // restart while nobody listened, which the bridge tells apart on market data. Nothing goes out until the bridge has gone on past it.
        this.counts.suspended++;
        f.suspendedAt = m.seq;
        const ref = { session: f.session, sender: f.sender, from: m.seq, firstAt: now };
        f.run = { ...ref, msgs: new Map(), last: f.lastSeq, lastAt: f.heardAt, dropped: 0, stored: [KeptRunStore.subjectOf(ref)] };
        this.keep(f, f.run, m, sender);
        this.log.info({ seq: m.seq, lastSeq: f.lastSeq }, 'standby: the first seq heard skips: keeping what it hears, for the bridge to judge, until the bridge goes on past it');
        continue;
      }
      // Only after a message heard here: the first one after it began to follow (or went on) has nothing to skip from.
      const heardBefore = f.heard > 0;
      if (m.seq > f.heard) {
        f.heard = m.seq;
        f.heardAt = now;
      }
      if (m.seq <= f.lastSeq) {
        this.counts.not_after++;
        this.copyOfFollowed(f, m, sender, now);
        continue;
      }
      if (heardBefore && m.seq > f.lastSeq + 1) {
        this.counts.gaps++;
        this.alerts.send('clearing', { kind: 'gap', detail: `clearing seq gap: expected ${f.lastSeq + 1}, received ${m.seq} (${m.seq - f.lastSeq - 1} not heard by the standby; lost for good unless the bridge stored them)`, expected: f.lastSeq + 1, received: m.seq });
      }
      f.lastSeq = m.seq;
      this.remember(m, sender);
      if (m.type !== 'fill') continue;
      const fill = clearingFill(m);
      if (fillProblem(fill)) {
        this.counts.invalid++;
        continue;
      }
      this.publish(fill);
    }
  }

  private publish(fill: Fill): void {
    this.counts.published++;
    this.publisher.enqueueFill(fill);
  }

  /** A kept run the bridge went on past, in this session from this sender: the session's, stored now, and gone from the store once it is. */
  private publishRun(f: Followed, msgs: Map<number, ClearingMsg>, stored: string[]): void {
    for (const seq of [...msgs.keys()].sort((a, b) => a - b)) {
      const m = msgs.get(seq)!;
      this.remember(m, f.sender);
      f.lastSeq = Math.max(f.lastSeq, seq);
      if (m.type !== 'fill') continue;
      const fill = clearingFill(m);
      // An invalid one was counted when it was kept.
      if (!fillProblem(fill)) this.publish(fill);
    }
    for (const subject of stored) this.store.release(subject);
  }

  private dropRun(run: Pick<KeptRun, 'msgs' | 'from' | 'stored'>, why: string): void {
    this.log.warn({ from: run.from, messages: run.msgs.size, why }, 'standby: the run it kept is not the session\'s it follows now: dropped');
    for (const subject of run.stored) this.store.release(subject);
  }

  /**
   * Runs a stopped standby kept (kept-store.ts), once it knows the session it follows again: those of that session and
   * sender are taken up as if it had not stopped. One the bridge has gone past meanwhile is the session's, stored now
   * (a fill stored already is dropped by its msg id, and the engine applies a session's seq once whatever the time);
   * the others wait for the bridge as one just heard does, merged into one run when two standbys left one each.
   */
  private restore(f: Followed, recordSeq: number): void {
    const runs = this.restored;
    if (runs.length === 0) return;
    this.restored = [];
    const waiting: StoredKeptRun[] = [];
    for (const r of runs) {
      if (r.session !== f.session || r.sender !== f.sender) this.dropRun({ msgs: r.msgs, from: r.from, stored: [r.subject] }, `the bridge follows session ${f.session} from ${f.sender}, the run was heard in session ${r.session} from ${r.sender}`);
      else if (recordSeq > r.from) this.publishRun(f, r.msgs, [r.subject]);
      else waiting.push(r);
    }
    if (waiting.length === 0) return;
    waiting.sort((a, b) => a.from - b.from);
    const first = waiting[0]!;
    const msgs = new Map<number, ClearingMsg>();
    let last = 0;
    for (const r of waiting) {
      for (const [seq, m] of r.msgs) {
        if (!msgs.has(seq)) msgs.set(seq, m);
        last = Math.max(last, seq);
      }
    }
    const run: KeptRun = {
      session: f.session,
      sender: f.sender,
      from: first.from,
      firstAt: Math.min(...waiting.map((r) => r.firstAt)),
      lastAt: Math.max(...waiting.map((r) => r.lastAt)),
      msgs,
      last,
      dropped: 0,
      stored: waiting.map((r) => r.subject),
    };
    f.suspendedAt = run.from;
    f.run = run;
    this.log.info({ session: f.session, from: run.from, messages: msgs.size, lastSeq: f.lastSeq }, 'standby: the run an earlier standby kept is taken up: waiting for the bridge to go on past it');
  }

  /** A message taken as the followed run's (published, or a heartbeat or invalid fill passed over): its first heard. */
  private remember(m: ClearingMsg, sender: string): void {
    this.ring[m.seq % RING] = { msg: m, sender };
  }

  /**
   * A message at a seq the followed run has taken: with the bridge down, nobody else can say so. Decided and told as
   * the bridge's followed run does (verdict.ts again): the first stays (a fill is in the stream already), only in
   * the reorder window below the run, and never at the exchange's first seq once the run is past it (a new session's).
   */
  private copyOfFollowed(f: Followed, m: ClearingMsg, sender: string, now: number): void {
    const was = this.ring[m.seq % RING];
    if (was?.msg.seq !== m.seq || m.seq > f.lastSeq || f.lastSeq - m.seq > REORDER_WINDOW || (m.seq <= 1 && f.lastSeq > m.seq)) return;
    reportCopy(copyOf('clearing', was, m, sender), this.followedReports, now);
  }

  /** A message of a run heard while suspended on a first skip (KeptRun's rules). */
  private keep(f: Followed, run: KeptRun, m: ClearingMsg, sender: string): void {
    const now = Date.now();
    // At or before the last known stored, or further ahead than the exchange sends: never published on this run's word.
    if (m.seq <= f.lastSeq || m.seq - run.last > believableJump('clearing', now - run.lastAt)) {
      run.dropped++;
      return;
    }
    const first = run.msgs.get(m.seq);
    if (first) {
      // Only the followed sender's messages are kept, so the first of a seq came from it too.
      return reportCopy(copyOf('clearing', { msg: first, sender: f.sender }, m, sender), this.reports, now, KEPT_RUN);
    }
    if (run.msgs.size >= RUN_MAX) {
      run.dropped++;
      return;
    }
    run.msgs.set(m.seq, m);
    if (m.seq > run.last) {
      run.last = m.seq;
      run.lastAt = now;
    }
    this.store.kept(run, m);
    // Counted as the live feed counts one: never published, never silent.
    if (m.type === 'fill' && fillProblem(clearingFill(m))) this.counts.invalid++;
  }
}
