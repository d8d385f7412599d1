import { createHash } from 'node:crypto';
import type { ClearingMessage, MdMessage } from '../../proto/ndfex.js';
import type { HeldVerdict } from '../../proto/feed.js';

/**
 * The exchange-session verdict: which seq_num run of each feed to believe.
 *
 * NDFEX's feeds carry no session id and no authentication: anyone who can
 * send to the multicast groups can send any seq_num. What a forger cannot do
 * is silence the real exchange. So a new exchange session (seq back to the
 * start) is believed only when
 *   - market data shows a new in-order run from one sender (datagrams lost
 *     within a believable gap and all), sustained for
 *     `windowMs` of wall-clock time with at least `minMessages` messages heard and
 *     exchange timestamps that rise with it and never go below the old
 *     session's (CLOCK_MONOTONIC_RAW does not go back on the exchange host);
 *   - the clearing feed shows a new run too (its first message of the new
 *     session; the clearing feed sends no heartbeats, so it cannot be sustained
 *     on its own: market data stands in for time);
 *   - and the OLD session is silent on both feeds all that while: one message
 *     that continues the followed run proves the exchange still runs the old
 *     session, so the claimed restart is forged (rejected, nothing reset).
 * A real exchange heartbeats market data every 500 ms of quiet: 5 s without a
 * single old-session message is ten missed heartbeats, which a running
 * exchange never shows, while a forger has to keep a consistent run going for
 * all that time without the real exchange saying a word.
 *
 * Seq jumps further than the exchange could have sent since the run was last
 * heard are held the same way (a forged far seq must not become "the run"),
 * two different messages with one seq are flagged as conflicts, and a copy of
 * a message already passed is dropped (never passed twice).
 *
 * Pure and synchronous: the caller feeds messages with their sender and the
 * time, and acts on the decisions (publish, reset, alert).
 */

export type FeedName = 'clearing' | 'market_data';
export type AnyMsg = ClearingMessage | MdMessage;

export interface JudgeSettings {
  /** Wall-clock ms a new market-data run must last, the old session silent, before a restart is believed. */
  windowMs: number;
  /** Messages heard in that run, in order (NDFEX heartbeats every 500 ms: 5 s gives at least 10; 8 leaves room for loss). */
  minMessages: number;
}

export const DEFAULT_JUDGE: JudgeSettings = { windowMs: 5000, minMessages: 8 };

/**
 * Per feed: the first seq of a new session, and the bound of a believable
 * forward gap, `jumpBase + jumpPerSecond × seconds since the run was last
 * heard`. Datagrams lost while listening can only be what the exchange sent
 * meanwhile: the clearing feed was measured at up to ~100 fills/s with its own
 * bots, so 1,000/s is ten times that; market data carries every order change,
 * bounded here at 50,000 messages/s. A jump of 5,000,000 one second after the
 * last message is far beyond either.
 */
const FEEDS: Record<FeedName, { startSeq: number; jumpBase: number; jumpPerSecond: number }> = {
  clearing: { startSeq: 1, jumpBase: 1000, jumpPerSecond: 1000 },
  market_data: { startSeq: 0, jumpBase: 10_000, jumpPerSecond: 50_000 },
};
/** Going back by at most this is a re-sent or reordered datagram, not a new run. */
export const REORDER_WINDOW = 64;

/** The furthest forward jump on `feed` believed as lost datagrams, `msSinceHeard` after its run was last heard (the standby bridge holds to it too). */
export const believableJump = (feed: FeedName, msSinceHeard: number): number => FEEDS[feed].jumpBase + (FEEDS[feed].jumpPerSecond * Math.max(0, msSinceHeard)) / 1000;
/** Recent messages of the followed run kept to tell a duplicate from a conflict. */
const RING = 1024;
/** A new session's run starts at its first seq or soon after (a few lost datagrams); a run from further up is no new session. */
export const NEW_SESSION_MAX_START = 1000;
/** Messages a held run keeps; beyond, market data drops its oldest (books resync from snapshots) and clearing stops holding (counted). */
const HOLD_MAX = 200_000;

interface Followed {
  /** Last seq of the followed run; null: the next message starts it. */
  last: number | null;
  sender: string | null;
  /** Wall-clock ms the run was last heard (or the saved progress was written). */
  heardAt: number;
  lastTs: bigint;
  /** Heard in this process (not only restored from saved progress). */
  live: boolean;
  /** Who sent the run when the last bridge saved its progress (null: not saved). */
  savedSender: string | null;
  ring: Map<number, { msg: AnyMsg; sender: string }>;
}

export interface Run {
  sender: string;
  from: number;
  last: number;
  msgs: AnyMsg[];
  /** Messages of the run heard (held ones and any dropped past HOLD_MAX). */
  count: number;
  dropped: number;
  /** Seqs the run skipped (datagrams lost on the way, unless one comes late): its feed reports them as a gap once applied. */
  missed: number;
  firstAt: number;
  lastAt: number;
  firstTs: bigint;
  lastTs: bigint;
}

export interface Verdict {
  id: string;
  kind: 'restart' | 'jump';
  /** The feed a jump is on. */
  feed: FeedName;
  status: 'pending' | 'rejected';
  openedAt: number;
  /** Opened before the followed run was heard in this process: the exchange may have restarted while no bridge listened. */
  downtime: boolean;
  runs: Partial<Record<FeedName, Run>>;
  /** Why it is not believed yet (or cannot be without the operator). */
  waiting: string;
  /** Set when only the operator can accept it. */
  operatorOnly?: string;
  /**
   * Why only the operator can accept it, whatever its runs become (how it was opened or restored); the reasons
   * that come from its runs are found again at every evaluation, so they go when the run that caused them does.
   */
  pinned?: string;
  /** A jump verdict holding a run that contested a restart verdict's run of its feed from another sender. */
  rival?: boolean;
  /** A jump verdict held because another sender continued the followed run's seq. */
  impostor?: boolean;
  /** Left by a stopped bridge and restored from the held store (src/feed/held-store.ts). */
  restored?: boolean;
}

export type Decision =
  | { kind: 'pass'; feed: FeedName; msg: AnyMsg }
  /** Two messages with one seq: `applied` is kept (passed, or held in `heldBy`'s run: applied only if that is accepted), `other` dropped. */
  | { kind: 'conflict'; feed: FeedName; seq: number; applied: { sender: string; fingerprint: string; msg: AnyMsg }; other: { sender: string; fingerprint: string; msg: AnyMsg }; heldBy?: Verdict }
  /** The same content again at a seq already passed, from `sender` (`first` sent the copy passed): dropped. */
  | { kind: 'duplicate'; feed: FeedName; seq: number; sender: string; first: string }
  | { kind: 'opened'; verdict: Verdict }
  | { kind: 'rejected'; verdict: Verdict; why: string }
  /** A verdict given up: its held messages are strays (never applied). */
  | { kind: 'dropped'; verdict: Verdict; why: string; strays: number; byOperator?: boolean }
  | { kind: 'accepted'; verdict: Verdict; by: 'evidence' | 'operator'; clearing: ClearingMessage[]; md: MdMessage[]; detail: string };

/**
 * Told what happens to held clearing messages, so they can be kept outside
 * the process (src/feed/held-store.ts): a bridge that stops before a verdict
 * must not lose the fills it held. Called synchronously, inside the judge's
 * step: a listener that does I/O only queues it.
 */
export interface HoldListener {
  /** A clearing message stored in a verdict's run. */
  held(v: Verdict, run: Run, msg: ClearingMessage): void;
  /**
   * A clearing run left its verdict other than by acceptance: `passed`, its
   * messages follow as passes (a restart while no bridge listened, rejected:
   * the old session's after a gap); otherwise dropped as strays.
   */
  released(v: Verdict, run: Run, passed: boolean): void;
  /** The verdict was rejected on evidence (still confirmable). */
  rejected(v: Verdict): void;
}

/** A verdict and its clearing run as a stopped bridge left them (src/feed/held-store.ts). */
export interface RestoredRun {
  verdict: HeldVerdict;
  sender: string;
  msgs: ClearingMessage[];
  /** Wall-clock ms its first and last messages were heard (absent: not known, taken as the restore). */
  firstAt?: number;
  lastAt?: number;
}

/** One exchange process sends both feeds: each is the other's witness. */
const otherFeed = (feed: FeedName): FeedName => (feed === 'clearing' ? 'market_data' : 'clearing');
const hostOf = (sender: string) => sender.slice(0, Math.max(0, sender.lastIndexOf(':')));
const tsOf = (m: AnyMsg): bigint => ('timestamp' in m ? m.timestamp : 0n);
const canon = (m: AnyMsg) => JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));

/** Short content fingerprint of a message (sha256 of its fields), shown in conflict alerts. */
export const fingerprint = (m: AnyMsg): string => createHash('sha256').update(canon(m)).digest('hex').slice(0, 16);

/** A second message at a seq already heard: a copy (same content) or a conflict (other content). */
export type SeqCopy = Extract<Decision, { kind: 'conflict' | 'duplicate' }>;

/**
 * A message at a seq whose first-heard message is kept (`first`: passed, or held in `heldBy`'s run, or in the standby's
 * kept run): the first stays whatever the content, as a fill already in the stream must, and the copy is dropped,
 * counted as a duplicate or flagged as a conflict. The bridge's followed and held runs and the standby's kept run
 * (src/feed/standby.ts) all decide it here, so that a forged copy never wins on one and loses on another.
 */
export function copyOf(feed: FeedName, first: { msg: AnyMsg; sender: string }, msg: AnyMsg, sender: string, heldBy?: Verdict): SeqCopy {
  if (canon(first.msg) === canon(msg)) return { kind: 'duplicate', feed, seq: msg.seq, sender, first: first.sender };
  return { kind: 'conflict', feed, seq: msg.seq, applied: { sender: first.sender, fingerprint: fingerprint(first.msg), msg: first.msg }, other: { sender, fingerprint: fingerprint(msg), msg }, ...(heldBy ? { heldBy } : {}) };
}

export class SessionJudge {
  private readonly followed: Record<FeedName, Followed>;
  private restart: Verdict | null = null;
  private readonly jumps: Partial<Record<FeedName, Verdict>> = {};
  /** Restored verdicts (src/feed/held-store.ts) whose live place was taken by another restored one: evidence and the operator still decide them. */
  private readonly restored: Verdict[] = [];
  private nextId = 1;
  private readonly idBase = Date.now().toString(36);

  constructor(
    readonly settings: JudgeSettings = DEFAULT_JUDGE,
    /** Saved progress: where each feed stood when the last bridge stopped. */
    saved: { clearing?: { seq: number; sender?: string }; market_data?: { seq: number; ts: bigint; sender?: string }; at?: number } = {},
    /** Told what happens to held clearing messages (set by whoever keeps them). */
    public listener: Partial<HoldListener> = {},
  ) {
    const f = (seq: number | undefined, ts = 0n, savedSender: string | null = null): Followed => ({
      last: seq && seq > 0 ? seq : null,
      sender: null,
      heardAt: saved.at ?? 0,
      lastTs: ts,
      live: false,
      savedSender,
      ring: new Map(),
    });
    this.followed = { clearing: f(saved.clearing?.seq, 0n, saved.clearing?.sender ?? null), market_data: f(saved.market_data?.seq, saved.market_data?.ts, saved.market_data?.sender ?? null) };
  }

  /** Every verdict not decided yet (pending or rejected but still confirmable). */
  verdicts(): Verdict[] {
    return [this.restart, this.jumps.clearing, this.jumps.market_data, ...this.restored].filter((v): v is Verdict => !!v);
  }

  /** Messages held by verdicts, per feed. */
  held(feed: FeedName): number {
    return this.verdicts().reduce((n, v) => n + (v.runs[feed]?.msgs.length ?? 0), 0);
  }

  /** Where the followed run of `feed` stands, for the operator. */
  followedAt(feed: FeedName): string {
    const f = this.followed[feed];
    return f.last === null ? 'none yet' : `seq ${f.last}${feed === 'market_data' ? ` (timestamp ${f.lastTs})` : ''} from ${f.sender ?? 'before this start'}`;
  }

  lastSeq(feed: FeedName): number | null {
    return this.followed[feed].last;
  }

  /** Who sends the followed run of `feed` (null: not heard in this process). */
  followedSender(feed: FeedName): string | null {
    return this.followed[feed].sender;
  }

  /**
   * A verdict a stopped bridge left undecided, with the clearing run it held.
   * Market data's run is not kept: a restart is believed again only on a new
   * run heard now (the same evidence as before the stop), unless it needed
   * the operator already; the held run goes on if the same sender continues
   * it, and the old session going on rejects or drops it as it would have
   * before the stop.
   */
  restore(r: RestoredRun, now: number): Verdict {
    const first = r.msgs[0]!;
    const last = r.msgs[r.msgs.length - 1]!;
    // Its times as heard, not the restore: the gap its next message may believably skip grows with the time since the
    // run was last heard, the bridge's downtime included (the exchange went on sending meanwhile).
    const lastAt = r.lastAt ?? now;
    const firstAt = Math.min(r.firstAt ?? lastAt, lastAt);
    const run: Run = { sender: r.sender, from: first.seq, last: last.seq, msgs: [...r.msgs], count: r.msgs.length, dropped: 0, missed: last.seq - first.seq + 1 - r.msgs.length, firstAt, lastAt, firstTs: 0n, lastTs: 0n };
    const v: Verdict = {
      id: r.verdict.id,
      kind: r.verdict.kind,
      feed: 'clearing',
      status: r.verdict.status,
      openedAt: r.verdict.opened_at,
      downtime: r.verdict.downtime,
      runs: { clearing: run },
      waiting: 'restored after a bridge restart: its market-data evidence is looked for again',
      restored: true,
      ...(r.verdict.impostor ? { impostor: true } : {}),
    };
    if (r.verdict.operator_only) v.operatorOnly = v.pinned = r.verdict.operator_only;
    if (v.operatorOnly) v.waiting = `needs the operator: ${v.operatorOnly}`;
    // In the live verdict's place when it is free, so that new runs join it as they would have joined it before the stop.
    if (v.kind === 'restart' && !this.restart) this.restart = v;
    else if (v.kind === 'jump' && !this.jumps.clearing) this.jumps.clearing = v;
    else this.restored.push(v);
    return v;
  }

  /**
   * A restored verdict another bridge decided (its kept run is gone from the
   * store): forgotten here without a decision of its own. False when none is.
   */
  discard(id: string, from: number): boolean {
    // The run looked at, not one that replaced it meanwhile.
    const v = this.verdicts().find((x) => x.id === id && x.restored && x.runs.clearing?.from === from);
    if (v) this.forget(v);
    return !!v;
  }

  /**
   * A run a stopped bridge was applying, finished at this start: the followed
   * clearing run stands after it. After a restart, market data's saved
   * progress is the old session's: its next message starts the new session's
   * run, as once a restart is believed.
   */
  appliedAtStart(restart: boolean, msgs: ClearingMessage[]): void {
    const f = this.followed.clearing;
    for (const m of msgs) if (f.last === null || m.seq > f.last) f.last = m.seq;
    if (!restart) return;
    const md = this.followed.market_data;
    md.last = null;
    md.lastTs = 0n;
    md.savedSender = null;
    md.ring.clear();
  }

  /**
   * Market data heard since this start comes from another socket than the one
   * the last bridge saved: the exchange sends a session from one socket, so the
   * exchange process is another, and market data going on proves nothing about
   * the old session (its seq may simply have passed the old one's).
   */
  private mdFromAnotherSender(): string | null {
    const m = this.followed.market_data;
    return m.live && m.savedSender !== null && m.sender !== m.savedSender ? `market data now comes from ${m.sender}, the last bridge heard it from ${m.savedSender}` : null;
  }

  /** Nothing heard on the clearing feed since the start, and the last bridge heard its session from another socket. */
  private notSavedSender(sender: string): boolean {
    const f = this.followed.clearing;
    return f.sender === null && f.savedSender !== null && sender !== f.savedSender;
  }

  observe(feed: FeedName, msg: AnyMsg, sender: string, now: number): Decision[] {
    const out: Decision[] = [];
    const f = this.followed[feed];
    if (this.heldRunGoesOn(feed, msg, sender, now, out)) return out;
    if (f.last === null) {
      this.follow(feed, msg, sender, now);
      out.push({ kind: 'pass', feed, msg });
      return out;
    }
    const delta = msg.seq - f.last;
    // Exchange time never goes back: a "next" message older than the run's last is no continuation of it.
    const timeWentBack = feed === 'market_data' && delta > 0 && tsOf(msg) < f.lastTs;
    if (delta > 0 && !timeWentBack) this.forward(feed, msg, sender, now, delta, out);
    else if (timeWentBack || (msg.seq <= FEEDS[feed].startSeq && f.last > msg.seq) || -delta > REORDER_WINDOW) this.newRun(feed, msg, sender, now, out);
    else this.again(feed, msg, sender, now, out);
    return out;
  }

  /**
   * A held run going on (same sender, next seq or a believable gap past it, time not going back), or a message of it
   * sent again or late: true when it was one. A run is held for seconds (a restart's window) and UDP loses datagrams:
   * were a gap not a continuation, the run's next message would start another run in its place and its held fills
   * would be lost for good. A jump beyond what the exchange could have sent meanwhile, or going back, is not one.
   */
  private heldRunGoesOn(feed: FeedName, msg: AnyMsg, sender: string, now: number, out: Decision[]): boolean {
    const seq = msg.seq;
    const runs: Array<[Verdict, Run]> = [];
    for (const v of this.verdicts()) {
      const run = v.runs[feed];
      if (!run || run.sender !== sender) continue;
      if (seq === run.last + 1 && tsOf(msg) >= run.lastTs) {
        this.append(v, feed, run, msg, now);
        if (v.status === 'pending') this.evaluate(v, now, out);
        return true;
      }
      if (seq >= run.from && seq <= run.last) {
        this.late(v, feed, run, msg, sender, out);
        return true;
      }
      runs.push([v, run]);
    }
    // What continues the followed run believably is the followed run's: the old session going on must still disprove a
    // restart claimed from its own socket (a spoofer's, or the exchange's new process on the same port).
    const f = this.followed[feed];
    if (f.sender === sender && f.last !== null && seq > f.last && seq - f.last <= believableJump(feed, now - f.heardAt)) return false;
    const [v, run] = runs
      .filter(([, r]) => seq > r.last && seq - r.last <= believableJump(feed, now - r.lastAt) && tsOf(msg) >= r.lastTs)
      .sort(([, a], [, b]) => b.last - a.last)[0] ?? [];
    if (!v || !run) return false;
    run.missed += seq - run.last - 1;
    this.append(v, feed, run, msg, now);
    if (v.status === 'pending') this.evaluate(v, now, out);
    return true;
  }

  /**
   * A seq inside a held run, from its sender: one skipped arriving late takes its place, once; a copy of one held is
   * dropped. A copy with other content (forged from the run's own address, or corrupted) is flagged as on a followed
   * run, whose first heard stays: the held one is kept, and whoever decides the verdict sees both.
   */
  private late(v: Verdict, feed: FeedName, run: Run, msg: AnyMsg, sender: string, out: Decision[]): void {
    const msgs = run.msgs;
    // Held in seq order (a market-data run can hold 200,000): the first at or after this seq.
    let i = 0;
    for (let hi = msgs.length; i < hi; ) {
      const mid = (i + hi) >>> 1;
      if (msgs[mid]!.seq < msg.seq) i = mid + 1;
      else hi = mid;
    }
    const held = msgs[i];
    // Counted and flagged as on a followed run: a feed that sends its held run twice shows in `duplicates`.
    if (held?.seq === msg.seq) return void out.push(copyOf(feed, { msg: held, sender: run.sender }, msg, sender, v));
    // Nothing skipped (a clearing run past HOLD_MAX holds no more), or older than what a flood of market data left held.
    if (run.missed === 0 || i === 0) return;
    msgs.splice(i, 0, msg);
    run.missed--;
    run.count++;
    if (feed === 'clearing') this.listener.held?.(v, run, msg as ClearingMessage);
  }

  /** A seq past the followed run's last: the run going on, unless the jump is too far, the sender another, or the session may be new. */
  private forward(feed: FeedName, msg: AnyMsg, sender: string, now: number, delta: number, out: Decision[]): void {
    const f = this.followed[feed];
    const bound = believableJump(feed, now - f.heardAt);
    if (delta > bound) return this.openJump(feed, msg, sender, now, Math.floor(bound), out);
    // The exchange sends a session from one socket: another sender "continuing" it is not the exchange.
    if (f.sender !== null && sender !== f.sender) return this.openJump(feed, msg, sender, now, null, out);
    // Nothing heard on this feed since the start: one exchange process sends both feeds, so its first sender is on the other feed's host.
    const other = this.followed[otherFeed(feed)];
    if (f.sender === null && other.live && other.sender !== null && hostOf(sender) !== hostOf(other.sender)) return this.openJump(feed, msg, sender, now, null, out);
    // And the exchange sends a session from one socket: a first fill from another than the one the last bridge heard is
    // not the exchange's, unless market data shows another exchange process (then the restart logic below decides).
    const restartWhileDown = this.restart?.status === 'pending' && this.restart.downtime;
    if (feed === 'clearing' && this.notSavedSender(sender) && !restartWhileDown && !this.mdFromAnotherSender()) return this.openJump(feed, msg, sender, now, null, out);
    const rv = this.restart;
    const otherExchange = feed === 'clearing' && !f.live ? this.mdFromAnotherSender() : null;
    if (!rv && feed === 'clearing' && !f.live && delta > 1 && (!this.followed.market_data.live || otherExchange)) {
      // The first fill after a start skips seqs and market data cannot tell why (none heard, or heard from another
      // exchange process): fills missed, or the exchange restarted while no bridge listened and this is a new session
      // past the old seq. Never merged silently.
      const v = (this.restart = this.newVerdict('restart', feed, now, true));
      if (otherExchange) v.operatorOnly = v.pinned = otherExchange;
      this.addRun(v, feed, msg, sender, now);
      return this.evaluate(v, now, out, true);
    }
    // Only while pending: once the old session's market data has disproved it, the exchange's next fill is the old session's.
    if (rv?.status === 'pending' && rv.downtime && feed === 'clearing' && !f.live) {
      // The exchange may have restarted while no bridge listened: this may be the new session past the old seq.
      return this.placeRun(rv, feed, msg, sender, now, out);
    }
    // The followed run goes on: the session it belongs to is alive (market data from another exchange process than
    // the saved one's says nothing of the old session).
    if (rv?.status === 'pending' && !(rv.downtime && feed === 'market_data' && this.mdFromAnotherSender())) this.reject(rv, `${feed} seq ${msg.seq} continues the session followed at ${f.last}: the exchange did not restart`, now, out);
    const jv = this.jumps[feed];
    if (jv) {
      const run = jv.runs[feed]!;
      const same = run.msgs.find((m) => m.seq === msg.seq);
      if (same && canon(same) !== canon(msg)) {
        out.push({ kind: 'conflict', feed, seq: msg.seq, applied: { sender, fingerprint: fingerprint(msg), msg }, other: { sender: run.sender, fingerprint: fingerprint(same), msg: same } });
      }
      this.drop(jv, `${feed} seq ${msg.seq} from ${sender} continues the run followed at ${f.last}: the held run from seq ${run.from} (${run.sender}) is not the exchange's`, out);
    }
    this.follow(feed, msg, sender, now);
    out.push({ kind: 'pass', feed, msg });
  }

  /**
   * A seq at or a little below the followed run's last: a duplicate, other content under a heard seq, or a seq
   * never heard here (a gap filled late). Only the followed run's own socket sends it late; anything else there
   * (another sender, or anyone before the run was heard in this process) is held, never applied as a late one.
   */
  private again(feed: FeedName, msg: AnyMsg, sender: string, now: number, out: Decision[]): void {
    const f = this.followed[feed];
    const before = f.ring.get(msg.seq);
    // Passed once already: JetStream drops a fill's msg id again only within its duplicate window (an hour), so a
    // copy re-sent later (a recorded datagram replayed) would be stored and applied twice. Never passed twice here.
    if (before) return void out.push(copyOf(feed, before, msg, sender));
    if (f.live && sender === f.sender) {
      // The run's own late datagram (a gap filled): remembered, so that a copy of it is a duplicate too.
      f.ring.set(msg.seq, { msg, sender });
      return void out.push({ kind: 'pass', feed, msg });
    }
    if (!f.live) {
      // Nothing heard on this feed since the start. Market data showing a restart while no bridge listened: this is
      // its new session, a little below the saved seq, and waits for that verdict. Market data going on with the old
      // session: the exchange does not send a seq twice, so it is held. Nothing heard at all: the exchange's old
      // session never sends a seq again either, so a fill here is a new session's (a restart while no bridge
      // listened) or a forger's; it waits as a possible restart that market data confirms or disproves.
      if (this.restart?.downtime) return this.newRun(feed, msg, sender, now, out);
      if (!this.followed[otherFeed(feed)].live) {
        if (feed === 'clearing') return this.newRun(feed, msg, sender, now, out);
        // Market data moves only prices, and a new session shows there as a run of its own (newRun, not this).
        return void out.push({ kind: 'pass', feed, msg });
      }
    }
    this.openJump(feed, msg, sender, now, null, out);
  }

  /** A run that goes back: a possible new exchange session. */
  private newRun(feed: FeedName, msg: AnyMsg, sender: string, now: number, out: Decision[]): void {
    let rv = this.restart;
    if (rv && rv.status === 'rejected') {
      this.drop(rv, `another run started on ${feed} at seq ${msg.seq}`, out);
      rv = null;
    }
    if (!rv) {
      rv = this.restart = this.newVerdict('restart', feed, now, !this.followed[feed].live);
      this.addRun(rv, feed, msg, sender, now);
      return this.evaluate(rv, now, out, true);
    }
    this.placeRun(rv, feed, msg, sender, now, out);
  }

  /**
   * A new run on `feed` for a pending restart verdict. The same sender going back again replaces its run. Another
   * sender's does not evict the held one: one datagram from anyone (seq 1) would otherwise throw away the new
   * session's held fills. The run kept is the one from the exchange process whose other feed makes the case (its
   * socket, else its host); on a tie the held one stays, except on market data a run that has gone quiet (the
   * exchange heartbeats). The other is held on its own for the operator (a rival: never applied on evidence).
   */
  private placeRun(rv: Verdict, feed: FeedName, msg: AnyMsg, sender: string, now: number, out: Decision[]): void {
    const old = rv.runs[feed];
    if (!old || old.sender === sender) {
      if (old) this.dropRun(rv, feed, `${feed} run from seq ${old.from} replaced by another from seq ${msg.seq}`, out);
      this.addRun(rv, feed, msg, sender, now);
      return this.evaluate(rv, now, out);
    }
    const witness = rv.runs[otherFeed(feed)]?.sender ?? null;
    const host = hostOf(witness ?? this.followed[feed].sender ?? this.followed[otherFeed(feed)].sender ?? '');
    const score = (s: string) => (s === witness ? 2 : host !== '' && hostOf(s) === host ? 1 : 0);
    const quiet = feed === 'market_data' && now - old.lastAt > this.settings.windowMs / 5;
    const ts = tsOf(msg);
    const run: Run = { sender, from: msg.seq, last: msg.seq, msgs: [msg], count: 1, dropped: 0, missed: 0, firstAt: now, lastAt: now, firstTs: ts, lastTs: ts };
    if (score(sender) > score(old.sender) || (score(sender) === score(old.sender) && quiet)) {
      delete rv.runs[feed];
      if (feed === 'clearing') this.listener.released?.(rv, old, false);
      this.addRun(rv, feed, msg, sender, now);
      this.holdRival(feed, old, rv, now, out);
      return this.evaluate(rv, now, out);
    }
    this.holdRival(feed, run, rv, now, out);
  }

  /** A run that lost a restart verdict's place to `against`'s run of its feed, held on its own. */
  private holdRival(feed: FeedName, run: Run, against: Verdict, now: number, out: Decision[]): void {
    const old = this.jumps[feed];
    if (old) this.drop(old, `another held run on ${feed} from seq ${run.from}`, out);
    const v = (this.jumps[feed] = this.newVerdict('jump', feed, now, false));
    v.impostor = v.rival = true;
    v.runs[feed] = run;
    if (feed === 'clearing') for (const m of run.msgs) this.listener.held?.(v, run, m as ClearingMessage);
    const kept = against.runs[feed]!;
    v.operatorOnly = v.pinned = `${run.sender} sent another ${feed} run from seq ${run.from} while the possible restart ${against.id} holds one from ${kept.sender} (from seq ${kept.from}), the run kept as the new exchange process's: a restart sends each feed from one socket`;
    this.evaluate(v, now, out, true);
  }

  /** Re-checks pending verdicts (time passes between messages). */
  tick(now: number): Decision[] {
    const out: Decision[] = [];
    for (const v of this.verdicts()) if (v.status === 'pending') this.evaluate(v, now, out);
    return out;
  }

  /** The operator's decision on a verdict (pending, or rejected on evidence); null when there is none with that id. */
  decide(id: string, decision: 'confirm' | 'reject', by: string, now: number): Decision[] | null {
    const v = this.verdicts().find((x) => x.id === id);
    if (!v) return null;
    const out: Decision[] = [];
    if (decision === 'reject') {
      // A restart while no bridge listened, rejected: the held clearing messages are the old session's, with a gap.
      if (v.downtime) this.releaseDowntime(v, now, out);
      this.drop(v, `rejected by the operator (${by})`, out, true);
    }
    else this.accept(v, 'operator', `confirmed by the operator (${by})`, now, out);
    return out;
  }

  private newVerdict(kind: Verdict['kind'], feed: FeedName, now: number, downtime: boolean): Verdict {
    return { id: `v-${this.idBase}-${this.nextId++}`, kind, feed, status: 'pending', openedAt: now, downtime, runs: {}, waiting: '' };
  }

  private addRun(v: Verdict, feed: FeedName, msg: AnyMsg, sender: string, now: number): void {
    const ts = tsOf(msg);
    const run: Run = { sender, from: msg.seq, last: msg.seq, msgs: [msg], count: 1, dropped: 0, missed: 0, firstAt: now, lastAt: now, firstTs: ts, lastTs: ts };
    const replaced = v.runs[feed];
    if (replaced && feed === 'clearing') this.listener.released?.(v, replaced, false);
    v.runs[feed] = run;
    if (feed === 'clearing') this.listener.held?.(v, run, msg as ClearingMessage);
  }

  private append(v: Verdict, feed: FeedName, run: Run, msg: AnyMsg, now: number): void {
    run.last = msg.seq;
    run.lastAt = now;
    run.lastTs = tsOf(msg);
    run.count++;
    if (run.msgs.length < HOLD_MAX) {
      run.msgs.push(msg);
      if (feed === 'clearing') this.listener.held?.(v, run, msg as ClearingMessage);
    } else if (feed === 'market_data') {
      // The oldest tenth at once: a flood must not cost a shift of the whole array per message.
      const cut = Math.ceil(HOLD_MAX / 10);
      run.msgs.splice(0, cut);
      run.dropped += cut;
      run.msgs.push(msg);
    } else run.dropped++;
  }

  private follow(feed: FeedName, msg: AnyMsg, sender: string, now: number): void {
    const f = this.followed[feed];
    if (f.last === null || msg.seq > f.last) {
      f.last = msg.seq;
      f.lastTs = tsOf(msg) > f.lastTs ? tsOf(msg) : f.lastTs;
    }
    f.sender = sender;
    f.heardAt = now;
    f.live = true;
    f.ring.set(msg.seq, { msg, sender });
    f.ring.delete(msg.seq - RING);
    if (f.ring.size > RING * 2) f.ring.clear(); // after a reanchor: old seqs never come back
  }

  /** Holds a run that the followed one cannot have become: a far jump (`bound` given) or another sender continuing it (`bound` null). */
  private openJump(feed: FeedName, msg: AnyMsg, sender: string, now: number, bound: number | null, out: Decision[]): void {
    const old = this.jumps[feed];
    if (old) this.drop(old, `another held run on ${feed} from seq ${msg.seq}`, out);
    const v = (this.jumps[feed] = this.newVerdict('jump', feed, now, false));
    this.addRun(v, feed, msg, sender, now);
    if (bound === null) {
      v.impostor = true;
      const f = this.followed[feed];
      const other = this.followed[otherFeed(feed)];
      v.operatorOnly = v.pinned =
        f.last !== null && msg.seq <= f.last
          ? `${sender} sent seq ${msg.seq}, never heard from the session's sender ${f.sender ?? '(none heard since this start)'} and at or below its last seq ${f.last}: the exchange sends a session from one socket`
          : feed === 'clearing' && this.notSavedSender(sender)
            ? `${sender} is the first sender on clearing since this start, but the last bridge heard the session's fills from ${f.savedSender}: the exchange sends a session from one socket`
            : f.sender === null
            ? `${sender} is the first sender on ${feed} since this start, but the session's ${feed === 'clearing' ? 'market data is' : 'clearing feed is'} heard from ${other.sender}: one exchange process sends both`
            : `${sender} continues the seq of the session heard from ${f.sender}: the exchange sends a session from one socket`;
    } else if (feed === 'clearing') v.operatorOnly = v.pinned = 'a far jump on the clearing feed (no heartbeats there to show the run lives on its own)';
    this.evaluate(v, now, out, true, bound ?? undefined);
  }

  /** Whether the evidence now proves the verdict; accepts it if so. */
  private evaluate(v: Verdict, now: number, out: Decision[], opened = false, bound?: number): void {
    const s = this.settings;
    const md = v.runs.market_data;
    const mdF = this.followed.market_data;
    const cl = v.runs.clearing;
    const clF = this.followed.clearing;
    let operatorOnly = v.pinned;
    let waiting = '';
    const mdSustained = (run: Run): string => {
      const lasted = run.lastAt - run.firstAt;
      if (lasted < s.windowMs) return `market data's new run has lasted ${lasted} ms of the ${s.windowMs} needed with the old session silent`;
      if (run.count < s.minMessages) return `market data's new run has ${run.count} messages of the ${s.minMessages} needed`;
      // Exchange time must pass with wall time (half the window: datagram timing slack).
      if (run.lastTs - run.firstTs < BigInt(s.windowMs) * 500_000n) return `market data's new run's timestamps span ${(run.lastTs - run.firstTs) / 1_000_000n} ms, not the ${s.windowMs} ms it lasted`;
      return '';
    };
    if (v.kind === 'jump') {
      if (!operatorOnly && md) waiting = mdSustained(md);
    } else {
      if (!md) waiting = 'no new run on market data yet (it heartbeats every 500 ms: a real restart shows there)';
      else {
        if (md.from > NEW_SESSION_MAX_START) operatorOnly ??= `market data's run starts at seq ${md.from}, not a new session's`;
        if (mdF.live && md.firstTs < mdF.lastTs) operatorOnly ??= `market data's run has timestamps below the old session's (${md.firstTs} < ${mdF.lastTs}): the exchange's clock does not go back`;
        if (mdF.sender && hostOf(md.sender) !== hostOf(mdF.sender)) operatorOnly ??= `market data's run comes from ${md.sender}, the session was heard from ${mdF.sender}`;
        waiting = mdSustained(md);
      }
      if (cl) {
        if (cl.from > NEW_SESSION_MAX_START && !v.downtime) operatorOnly ??= `the clearing run starts at seq ${cl.from}, not a new session's`;
        if (clF.sender && hostOf(cl.sender) !== hostOf(clF.sender)) operatorOnly ??= `the clearing run comes from ${cl.sender}, the session was heard from ${clF.sender}`;
      } else waiting ||= "no new run on the clearing feed yet: its fills wait (the clearing feed sends no heartbeats)";
    }
    v.operatorOnly = operatorOnly;
    v.waiting = operatorOnly ? `needs the operator: ${operatorOnly}` : waiting;
    if (opened) {
      if (bound !== undefined) v.waiting = `seq ${v.runs[v.feed]!.from} is beyond any believable gap (${bound} after ${this.followed[v.feed].last}); ${v.waiting || 'held'}`;
      out.push({ kind: 'opened', verdict: v });
    }
    if (!operatorOnly && !waiting) {
      const detail =
        v.kind === 'restart'
          ? `exchange restart: market data ran ${md!.count} messages over ${md!.lastAt - md!.firstAt} ms from seq ${md!.from}, the clearing feed from seq ${cl!.from}, and the old session said nothing meanwhile`
          : `market data resumed at seq ${md!.from} (${md!.count} messages over ${md!.lastAt - md!.firstAt} ms, the old run silent)`;
      this.accept(v, 'evidence', detail, now, out);
    }
  }

  private accept(v: Verdict, by: 'evidence' | 'operator', detail: string, now: number, out: Decision[]): void {
    this.forget(v);
    const clearing = (v.runs.clearing?.msgs ?? []) as ClearingMessage[];
    const md = (v.runs.market_data?.msgs ?? []) as MdMessage[];
    for (const feed of ['clearing', 'market_data'] as const) {
      const run = v.runs[feed];
      const f = this.followed[feed];
      if (run) {
        f.last = run.last;
        f.sender = run.sender;
        f.heardAt = now;
        f.lastTs = run.lastTs;
        f.live = true;
        f.ring.clear();
        for (const m of run.msgs.slice(-RING)) f.ring.set(m.seq, { msg: m, sender: run.sender });
      } else if (v.kind === 'restart') {
        // The restart is believed: the feed's next message starts its new session, whatever its seq.
        f.last = null;
        f.ring.clear();
      }
    }
    out.push({ kind: 'accepted', verdict: v, by, clearing, md, detail });
  }

  /** Held only because they might have been a new session's: the old session lives, so they are its. */
  private releaseDowntime(v: Verdict, now: number, out: Decision[]): void {
    if (!v.downtime || !v.runs.clearing || this.followed.clearing.live) return;
    const held = v.runs.clearing;
    // Only a run past the saved seq, from the socket the session was heard from, can be the old session's after a gap;
    // any other stays held.
    const { last, savedSender } = this.followed.clearing;
    if (last !== null && held.from <= last) return;
    if (savedSender !== null && held.sender !== savedSender) return;
    delete v.runs.clearing;
    this.listener.released?.(v, held, true);
    for (const m of held.msgs) {
      out.push({ kind: 'pass', feed: 'clearing', msg: m });
      this.follow('clearing', m, held.sender, now);
    }
  }

  /** Evidence against a pending restart: nothing is reset; kept (held) as rejected so the operator can still overrule. */
  private reject(v: Verdict, why: string, now: number, out: Decision[]): void {
    this.releaseDowntime(v, now, out);
    v.status = 'rejected';
    v.waiting = `rejected: ${why}`;
    this.listener.rejected?.(v);
    out.push({ kind: 'rejected', verdict: v, why });
  }

  private drop(v: Verdict, why: string, out: Decision[], byOperator = false): void {
    this.forget(v);
    if (v.runs.clearing) this.listener.released?.(v, v.runs.clearing, false);
    const strays = Object.values(v.runs).reduce((n, r) => n + (r?.count ?? 0), 0);
    out.push({ kind: 'dropped', verdict: v, why, strays, ...(byOperator ? { byOperator } : {}) });
  }

  private dropRun(v: Verdict, feed: FeedName, why: string, out: Decision[]): void {
    const run = v.runs[feed]!;
    delete v.runs[feed];
    if (feed === 'clearing') this.listener.released?.(v, run, false);
    out.push({ kind: 'dropped', verdict: { ...v, runs: { [feed]: run } }, why, strays: run.count });
  }

  private forget(v: Verdict): void {
    if (this.restart === v) this.restart = null;
    if (this.jumps[v.feed] === v) delete this.jumps[v.feed];
    const i = this.restored.indexOf(v);
    if (i >= 0) this.restored.splice(i, 1);
  }
}
