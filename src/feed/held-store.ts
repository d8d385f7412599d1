import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { decodeIf, encode } from '../../proto/codec.js';
import { heldEntryShape, type HeldEntry, type HeldVerdict } from '../../proto/feed.js';
import type { ClearingMessage } from '../../proto/ndfex.js';
import { FILL_STREAM, HELD_STREAM, fillSeqOfMsgId, heldSubject, isStandbyKeptSubject } from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';
import { NextTurn } from '../shared/next-turn.js';
import { readStream } from '../shared/stream-reader.js';
import { ensureHeldStream } from '../shared/streams.js';
import { backoff } from './publisher.js';
import type { Run, Verdict } from './verdict.js';

/** Failed attempts at one write (~350 ms of retries) before it is a standing problem. */
const TROUBLE_AFTER = 3;
/** Messages in one stored entry: a held flood becomes a few writes per turn, each well under NATS's payload limit. */
const ENTRY_MSGS = 1000;

type Applying = Extract<HeldEntry, { kind: 'applying' }>;

/**
 * How a run a stopped bridge was applying is finished, with `session` in
 * force now: `begin`, its restart's session was never begun (so none of its
 * fills is stored); else its fills went under `target`, which must be the
 * session in force (`inForce`) for the rest to follow them.
 */
export function finishing(a: Applying, session: number): { begin: boolean; target: number; inForce: boolean } {
  const target = a.session_before + (a.restart ? 1 : 0);
  const begin = a.restart && session === a.session_before;
  return { begin, target, inForce: begin || session === target };
}

/** A held run as a stopped bridge left it: its verdict, sender and messages in seq order, and whether it was being applied. */
export interface StoredRun {
  subject: string;
  verdict: HeldVerdict;
  sender: string;
  msgs: ClearingMessage[];
  applying: Applying | null;
  /** Stream sequence of its last entry. */
  lastEntry: number;
  /** Wall-clock ms its first and last messages were heard (Run.firstAt, Run.lastAt). */
  firstAt: number;
  lastAt: number;
}

/** What the session verdict (src/feed/session-verdict.ts) asks of the store: it does no I/O itself. */
export interface HeldKeeper {
  held(v: Verdict, run: Run, msg: ClearingMessage): void;
  rejected(v: Verdict): void;
  /**
   * Before the run's fills (and a restart's session marker) are published: a
   * stop from here on finishes the application at the next start. Resolves
   * once that is stored.
   */
  applying(v: Verdict, run: Run, restart: boolean): Promise<void>;
  /** Once every fill published before has been stored: the run's entries go. */
  release(v: Verdict, run: Run): void;
  /** The same for a run read back at a start, by its subject. */
  releaseStored(subject: string): void;
}

const verdictRecord = (v: Verdict): HeldVerdict => ({
  id: v.id,
  kind: v.kind,
  status: v.status,
  downtime: v.downtime,
  impostor: v.impostor === true,
  opened_at: v.openedAt,
  waiting: v.waiting,
  ...(v.operatorOnly ? { operator_only: v.operatorOnly } : {}),
});

/**
 * Keeps the clearing messages pending exchange-session verdicts hold in the
 * stream HELD_STREAM (proto/feed.ts HeldEntry), one subject per held run, so
 * a bridge that stops or dies before a verdict loses none of the fills it
 * held: the next start restores them (src/feed/service.ts). Writes of one run
 * go out in order, a turn's messages in one entry; a run's entries are purged
 * only after every fill published before the purge was asked for is stored
 * (a publisher barrier), and after every write of that run.
 *
 * Like the fill publisher, a held message is safe once JetStream stored it: a
 * bridge killed in the moment between hearing it and that write loses it (the
 * exchange never re-sends), as it would lose a fill not yet stored.
 */
export class HeldStore implements HeldKeeper {
  /** Per run subject: messages held this turn, written at the next turn. */
  private readonly unsent: UnsentRuns<{ verdict: Verdict; sender: string; firstAt: number; lastAt: number }>;
  private readonly writes: HeldWrites;
  /**
   * Restored runs' subjects by verdict id and first seq held: normally the
   * subject a run's first seq names, but not when that entry was lost (the run
   * then starts later), and a run's writes and purge must go where it lives.
   */
  private readonly restoredSubjects = new Map<string, string>();

  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly log: Logger,
    /** Runs a step between fills: after every fill enqueued before is stored, before any enqueued after (FillPublisher.enqueueBarrier). */
    private readonly barrier: Barrier,
    /** The clearing session fills are published under now. */
    private readonly session: () => number,
    /** Told when writes keep failing (a stop now would lose held fills), with why, and with null once they are stored again. */
    trouble: (why: string | null) => void,
  ) {
    this.writes = new HeldWrites(js, jsm, log, barrier, trouble, 'bridge');
    this.unsent = new UnsentRuns(this.writes, (u, msgs) => encode({ v: 1, kind: 'msgs', verdict: verdictRecord(u.verdict), sender: u.sender, msgs, first_at: u.firstAt, last_at: u.lastAt } satisfies HeldEntry));
  }

  /** Opens the store and reads back what earlier bridges left: runs in seq order (entries that are not a HeldEntry are logged and skipped). */
  static async open(
    nc: NatsConnection,
    log: Logger,
    barrier: Barrier,
    session: () => number,
    trouble: (why: string | null) => void,
    replicas = 1,
  ): Promise<{ store: HeldStore; runs: StoredRun[]; replaced: string[]; unreadable: number }> {
    await ensureHeldStream(nc, replicas);
    const jsm = await jetstreamManager(nc);
    const runs = new Map<string, StoredRun>();
    let unreadable = 0;
    const reader = await readStream(
      nc,
      HELD_STREAM,
      1,
      (m) => {
        // The standby's kept run shares the stream (src/feed/kept-store.ts): it is the standby's to restore, not a verdict.
        if (isStandbyKeptSubject(m.subject)) return;
        const e = decodeIf(m.data, heldEntryShape);
        if (!e) return void unreadable++;
        let r = runs.get(m.subject);
        if (e.kind === 'applying') {
          if (r) r.applying = e;
          return;
        }
        if (!r) runs.set(m.subject, (r = { subject: m.subject, verdict: e.verdict, sender: '', msgs: [], applying: null, lastEntry: 0, firstAt: Infinity, lastAt: -Infinity }));
        r.lastEntry = m.seq;
        r.verdict = e.verdict;
        if (e.kind === 'msgs') {
          r.sender = e.sender;
          for (const msg of e.msgs) r.msgs.push(msg);
          // A retried write may land after a later one: the run's times are the extremes. An entry written before
          // the times were kept was stored moments after its messages were heard.
          const storedAt = Number(m.timestampNanos / 1_000_000n);
          r.firstAt = Math.min(r.firstAt, e.first_at ?? storedAt);
          r.lastAt = Math.max(r.lastAt, e.last_at ?? storedAt);
        }
      },
      { follow: false, log },
    );
    await reader.caughtUp;
    if (unreadable > 0) log.error({ unreadable, stream: HELD_STREAM }, 'held clearing entries unreadable: skipped');
    // A verdict holds one clearing run at a time: an older run of it is one replaced before its purge was stored.
    const newest = new Map<string, StoredRun>();
    for (const r of runs.values()) if (r.msgs.length > 0 && (newest.get(r.verdict.id)?.lastEntry ?? 0) < r.lastEntry) newest.set(r.verdict.id, r);
    const list = [...newest.values()];
    const replaced = [...runs.values()].filter((r) => !list.includes(r)).map((r) => r.subject);
    for (const r of list) {
      // Written in order per run, but a retried write may land after a later one: seq order, each seq once.
      const bySeq = new Map(r.msgs.map((m) => [m.seq, m]));
      r.msgs = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    }
    const store = new HeldStore(jetstream(nc), jsm, log, barrier, session, trouble);
    for (const r of list) store.restoredSubjects.set(`${r.verdict.id}/${r.msgs[0]!.seq}`, r.subject);
    return { store, runs: list, replaced, unreadable };
  }

  held(v: Verdict, run: Run, msg: ClearingMessage): void {
    this.unsent.add(this.subjectOf(v, run), msg, (u) => (u ? { ...u, lastAt: Math.max(u.lastAt, run.lastAt) } : { verdict: v, sender: run.sender, firstAt: run.firstAt, lastAt: run.lastAt }));
  }

  rejected(v: Verdict): void {
    const run = v.runs.clearing;
    if (!run) return;
    const subject = this.subjectOf(v, run);
    this.writes.write(subject, encode({ v: 1, kind: 'status', verdict: verdictRecord(v) } satisfies HeldEntry), `${subject}-status-${Date.now()}`);
  }

  applying(v: Verdict, run: Run, restart: boolean): Promise<void> {
    const subject = this.subjectOf(v, run);
    this.unsent.write();
    return new Promise((stored) => {
      this.barrier('held run applying', async () => {
        await this.writes.written(subject);
        const after = (await this.jsm.streams.info(FILL_STREAM)).state.last_seq;
        const entry: HeldEntry = { v: 1, kind: 'applying', session_before: this.session(), restart, after_stream_seq: after, at: Date.now() };
        await this.js.publish(subject, encode(entry), { msgID: `${subject}-applying` });
        stored();
      });
    });
  }

  release(v: Verdict, run: Run): void {
    this.releaseStored(this.subjectOf(v, run));
  }

  /** Purges a run's entries once every fill published before is stored (a publisher barrier) and every write of the run is done. */
  releaseStored(subject: string): void {
    this.unsent.write();
    this.writes.purgeAfterFills(subject, 'held run released');
  }

  private subjectOf(v: Verdict, run: Run): string {
    return this.restoredSubjects.get(`${v.id}/${run.from}`) ?? heldSubject(v.id, run.from);
  }

  /** Whether a run's entries are gone from the store (another bridge decided it and purged them). */
  async gone(v: Verdict, run: Run): Promise<boolean> {
    // No message on the subject is null; a timeout is thrown (never taken for "gone").
    return (await this.jsm.streams.getMessage(HELD_STREAM, { last_by_subj: this.subjectOf(v, run) })) === null;
  }

  /** Resolves once every write asked for so far is stored (or the store is closed). */
  async settle(): Promise<void> {
    this.unsent.write();
    await this.writes.settle();
  }

  /** Stops retrying: writes not stored by now are given up (logged). */
  close(): void {
    if (this.writes.closed) return;
    this.writes.close();
    const left = this.unsent.drop();
    if (left > 0) this.log.warn({ left }, 'held clearing messages not kept: the bridge stopped first');
  }

  /** Which seqs of `session` the fill stream holds after `after` (a run's application began there). */
  static async storedSeqs(nc: NatsConnection, after: number, session: string): Promise<Set<number>> {
    const seqs = new Set<number>();
    const reader = await readStream(
      nc,
      FILL_STREAM,
      after + 1,
      (m) => {
        const seq = fillSeqOfMsgId(session, m.headers?.get('Nats-Msg-Id') ?? '');
        if (seq !== null) seqs.add(seq);
      },
      { follow: false },
    );
    await reader.caughtUp;
    return seqs;
  }

}

/** Runs a step between fills: after every fill enqueued before is stored, before any enqueued after (FillPublisher.enqueueBarrier). */
export type Barrier = (what: string, run: () => Promise<void>) => void;

/**
 * Clearing messages kept per subject this turn, written at the next one (or at
 * once, before a purge or a settle) as entries of at most ENTRY_MSGS messages,
 * each named by its first and last seqs: the bridge's held runs and the
 * standby's kept run (kept-store.ts) are written the same way. `C` is what an
 * entry says besides its messages; `entry` builds one.
 */
export class UnsentRuns<C> {
  private readonly unsent = new Map<string, { ctx: C; msgs: ClearingMessage[] }>();
  private readonly next = new NextTurn(() => this.write());
  constructor(
    private readonly writes: HeldWrites,
    private readonly entry: (ctx: C, msgs: ClearingMessage[]) => Uint8Array,
  ) {}

  /** `msg` to `subject`'s next entry; `ctx` gives what the entry says (the one before, if any, passed to it). */
  add(subject: string, msg: ClearingMessage, ctx: (before: C | undefined) => C): void {
    const u = this.unsent.get(subject);
    if (u) {
      u.ctx = ctx(u.ctx);
      u.msgs.push(msg);
    } else this.unsent.set(subject, { ctx: ctx(undefined), msgs: [msg] });
    this.next.schedule();
  }

  write(): void {
    for (const [subject, { ctx, msgs: all }] of this.unsent) {
      for (let i = 0; i < all.length; i += ENTRY_MSGS) {
        const msgs = all.slice(i, i + ENTRY_MSGS);
        this.writes.write(subject, this.entry(ctx, msgs), `${subject}-${msgs[0]!.seq}-${msgs[msgs.length - 1]!.seq}`);
      }
    }
    this.unsent.clear();
  }

  /** Drops what was not written yet (the store closes); returns how many messages that was. */
  drop(): number {
    const left = [...this.unsent.values()].reduce((n, u) => n + u.msgs.length, 0);
    this.unsent.clear();
    return left;
  }
}

/**
 * Writes into HELD_STREAM, in order per subject, each retried under its msg id
 * (the stream drops a second copy) until stored or closed, and a subject's
 * purge once every fill published before it is stored and every write of it
 * is done: the bridge's held runs (HeldStore) and the standby's kept run
 * (src/feed/kept-store.ts) are kept alike.
 */
export class HeldWrites {
  /** Per subject: the last write asked for; the next one and the purge wait for it. */
  private readonly chains = new Map<string, Promise<void>>();
  closed = false;
  /** Writes failing now (each past its first retries): while any, the trouble is told. */
  private failing = 0;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly log: Logger,
    private readonly barrier: Barrier,
    /** Told when writes keep failing (a stop now would lose what they keep), with why, and with null once they are stored again. */
    private readonly trouble: (why: string | null) => void,
    /** Whose stop would lose them, for the trouble's text. */
    private readonly who: 'bridge' | 'standby',
  ) {}

  /** Appends a write to the subject's chain, retried with the same msg id until stored or closed. */
  write(subject: string, data: Uint8Array, msgID: string): void {
    const prev = this.chains.get(subject) ?? Promise.resolve();
    const next = prev.then(async () => {
      let told = false;
      for (let attempt = 0; !this.closed; attempt++) {
        try {
          await this.js.publish(subject, data, { msgID });
          if (told && --this.failing === 0) this.trouble(null);
          return;
        } catch (err) {
          if (attempt % 20 === 0) this.log.warn({ subject, attempt, err: String(err) }, 'held clearing messages not kept yet: retrying');
          // A hiccup is retried quietly; a store that stays away is a standing problem until the write goes through.
          if (attempt === TROUBLE_AFTER && !told) {
            told = true;
            this.failing++;
            this.trouble(`held clearing messages cannot be kept in ${HELD_STREAM} (${String(err)}): a ${this.who} stop now would lose them; retrying`);
          }
          await new Promise((r) => setTimeout(r, backoff(attempt)).unref());
        }
      }
    });
    this.chains.set(subject, next);
  }

  /** Resolves once every write of the subject asked for so far is stored (or given up). */
  written(subject: string): Promise<void> {
    return this.chains.get(subject) ?? Promise.resolve();
  }

  /** The subject's entries go once every fill published before is stored (a publisher barrier) and every write of it is done. */
  purgeAfterFills(subject: string, what: string): void {
    this.barrier(what, async () => {
      const chain = this.chains.get(subject);
      await chain;
      await this.jsm.streams.purge(HELD_STREAM, { filter: subject });
      if (this.chains.get(subject) === chain) this.chains.delete(subject);
    });
  }

  /** Resolves once every write asked for so far is stored (or the writes are closed). */
  async settle(): Promise<void> {
    await Promise.all(this.chains.values());
  }

  /** Stops retrying: writes not stored by now are given up. */
  close(): void {
    this.closed = true;
  }
}
