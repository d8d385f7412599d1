import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { decode, encode } from '../../proto/codec.js';
import type { SessionMarker } from '../../proto/fill.js';
import type { ProgressUnsaved } from '../../proto/marketdata.js';
import { fillSessionId, sessionMarkerMsgId, sessionOfMarkerMsgId } from '../../proto/feed.js';
import { FILL_STREAM, SESSION_SUBJECT, fillSeqOfMsgId } from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';
import type { RestartPolicy } from './clearing.js';
import { SessionStore, type MdProgress, type ProgressSave } from './session.js';
import { readStream } from '../shared/stream-reader.js';

/**
 * Progress unsaved this long is news for /health (ProgressUnsaved), not only for the log: a save takes milliseconds
 * and is tried every tick, so this is a bucket that refuses the record, not one slow write.
 */
export const UNSAVED_AFTER_MS = 3000;

/** Why a save that should have written the record did not, in words for /health. */
const NOT_SAVED: Partial<Record<ProgressSave, string>> = {
  absent: 'the clearing session record is gone from the feed bucket',
  raced: 'its compare-and-set did not go through (another writer, or JetStream without a leader)',
};

/**
 * The exchange session the bridge publishes fills under: its number (shared
 * with every bridge through SessionStore), the SessionMarker that opens each
 * new one in the fill stream, and the saved progress a later start resumes
 * from.
 */
export class ClearingSession {
  private constructor(
    private readonly js: JetStreamClient,
    private readonly store: SessionStore,
    private readonly policy: RestartPolicy,
    private readonly log: Logger,
    /** The clearing seq the bridge resumes after. */
    readonly startSeq: number,
    /** The fill stream's last sequence at the open: another bridge's fills stored from then on come after it. */
    readonly streamSeqAtOpen: number,
    /** Clearing seqs of this session already counted under the one before it (FillPublisher.counted). */
    readonly countedBefore: Set<number>,
    /** The fill stream's last session marker did not read at the open: why, and what was done (a standing problem), or null. */
    readonly markerUnreadable: string | null,
  ) {}

  /** A save in flight: with the bucket slow to answer, ticks do not pile saves up behind it. */
  private saving = false;
  /** Since when progress past the stored record has gone unsaved, the saves tried since and why the last failed; null while saved. */
  private failing: { since: number; attempts: number; error: string } | null = null;

  /**
   * Opens the stored session; when the operator's session name changed, a new
   * one begins and `onChanged` is told, before any fill of it can be published.
   */
  static async open(
    nc: NatsConnection,
    kv: KV,
    opts: { sessionName: string; restartPolicy: RestartPolicy; joinedEarly?: boolean },
    log: Logger,
    onChanged: (detail: string) => void,
  ): Promise<ClearingSession> {
    const js = jetstream(nc);
    const { store, changed } = await SessionStore.open(kv, opts.sessionName);
    if (changed) {
      const detail = `operator session changed to "${opts.sessionName}"`;
      await publishMarker(js, log, opts.restartPolicy, store.session, detail);
      onChanged(detail);
    }
    const { seq: marker, unreadable } = await ensureMarker(nc, js, log, opts.restartPolicy, store.session);
    // Under `keep`, fills the standby stored under the old session right before the new one's marker count (no reset
    // zeroes them): the same exchange process goes on, so a bridge that heard them too does not store them again.
    // That is the one that began the session (it joined the groups first) and one that joined early too
    // (beginsSession) but found the session begun by another between its look and its compare-and-set.
    const skipsCounted = opts.restartPolicy === 'keep' && (changed || opts.joinedEarly === true) && marker !== null;
    const countedBefore = skipsCounted ? await fillsBefore(nc, marker, fillSessionId(store.session - 1)) : new Set<number>();
    // The saved progress is written about once a second; what JetStream stored is the truth after a crash.
    const stored = await lastStoredFill(nc, fillSessionId(store.session));
    const startSeq = Math.max(store.record.last_seq, stored.fillSeq);
    log.info({ session: store.session, sessionName: store.record.name, lastSeq: startSeq, policy: opts.restartPolicy }, 'clearing session');
    return new ClearingSession(js, store, opts.restartPolicy, log, startSeq, stored.streamSeq, countedBefore, unreadable);
  }

  get number(): number {
    return this.store.session;
  }

  /** Where the last bridge left market data (absent before any was saved): the evidence of a restart while none listened. */
  get savedMarketData(): MdProgress | undefined {
    const r = this.store.record;
    return r.md_seq !== undefined ? { seq: r.md_seq, ts: BigInt(r.md_ts ?? '0'), ...(r.md_sender !== undefined ? { sender: r.md_sender } : {}) } : undefined;
  }

  get savedAt(): number {
    return this.store.record.ts;
  }

  /** Who sent the clearing feed when the last bridge saved its progress (undefined: not saved). */
  get savedClearingSender(): string | undefined {
    return this.store.record.clearing_sender;
  }

  /** Begins the session after this one (the exchange restarted at clearing `seq`); returns its number. */
  async begin(detail: string, seq: number): Promise<number> {
    const n = await this.store.beginAfter(this.store.session, seq);
    await publishMarker(this.js, this.log, this.policy, n, detail);
    return n;
  }

  /**
   * Saves progress in the background, only when the clearing feed moved past what is saved (or its sender changed).
   * A save that keeps failing was a warning in the log every tick and nothing else, while the standby, which follows
   * the record, waited on a sender or a seq it never got: it is now `unsaved()`, which the ticker makes a problem.
   */
  saveIfMoved(lastSeq: number, md: MdProgress, clearingSender: string | null): void {
    const r = this.store.record;
    if (lastSeq <= r.last_seq && (clearingSender === null || clearingSender === r.clearing_sender)) {
      // The record holds this progress (saved, or a session begun since): nothing is owed.
      if (this.failing) this.savedAgain();
      return;
    }
    if (this.saving) return;
    this.saving = true;
    this.store
      .saveProgress(lastSeq, md, clearingSender)
      .then(
        (done) => {
          const why = NOT_SAVED[done];
          if (why === undefined) this.savedAgain();
          else this.notSaved(why);
        },
        (err: unknown) => this.notSaved(String(err)),
      )
      .finally(() => (this.saving = false));
  }

  /** Progress past the stored record unsaved for UNSAVED_AFTER_MS, or null. */
  unsaved(now = Date.now()): ProgressUnsaved | null {
    const f = this.failing;
    if (!f || now - f.since < UNSAVED_AFTER_MS) return null;
    return { for_ms: now - f.since, attempts: f.attempts, last_error: f.error };
  }

  private notSaved(why: string): void {
    const f = this.failing;
    const error = why.slice(0, 300);
    // Logged when it starts and when its reason changes, not every tick: unsaved() carries it from there.
    if (!f || f.error !== error) this.log.warn({ err: error, session: this.store.session, lastSaved: this.store.record.last_seq }, 'could not save clearing progress: retrying every tick');
    this.failing = { since: f?.since ?? Date.now(), attempts: (f?.attempts ?? 0) + 1, error };
  }

  private savedAgain(): void {
    const f = this.failing;
    if (!f) return;
    this.failing = null;
    this.log.info({ after_ms: Date.now() - f.since, attempts: f.attempts }, 'clearing progress saved again');
  }

  async save(lastSeq: number, md: MdProgress, clearingSender: string | null): Promise<void> {
    let why: string | undefined;
    try {
      why = NOT_SAVED[await this.store.saveProgress(lastSeq, md, clearingSender)];
    } catch (err) {
      why = String(err);
    }
    if (why !== undefined) this.log.warn({ err: why }, 'could not save clearing progress at stop');
  }
}

/** Returns the marker's stream sequence (the first one's, when it was stored before). */
async function publishMarker(js: JetStreamClient, log: Logger, policy: RestartPolicy, n: number, detail: string): Promise<number> {
  const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: policy === 'reset', session: n, detail, ts: Date.now() };
  const ack = await js.publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(n) });
  log.warn({ session: n, reset: marker.reset, detail }, 'session marker published');
  return ack.seq;
}

/**
 * Messages before a new session's marker looked at for the old session's fills: those this bridge may also have
 * heard are the ones sent since it joined the groups, a start's few round trips ago, far fewer than this.
 */
const COUNTED_LOOKBACK = 4096;

/** The clearing seqs of `session`'s fills stored in the COUNTED_LOOKBACK messages before stream sequence `seq`. */
async function fillsBefore(nc: NatsConnection, seq: number, session: string): Promise<Set<number>> {
  const seqs = new Set<number>();
  if (seq <= 1) return seqs;
  const reader = await readStream(
    nc,
    FILL_STREAM,
    Math.max(1, seq - COUNTED_LOOKBACK),
    (m) => {
      if (m.seq >= seq) return;
      const fill = fillSeqOfMsgId(session, m.headers?.get('Nats-Msg-Id') ?? '');
      if (fill !== null) seqs.add(fill);
    },
    { follow: false },
  );
  await reader.caughtUp;
  await reader.stop();
  return seqs;
}

/**
 * A bridge killed between beginning a session (the record's compare-and-set)
 * and storing its marker left the session without one: its fills would go on
 * without the reset. None of them can be stored yet (fills wait behind the
 * marker), so the marker is written now, before any. A second marker for one
 * session, with no fill between, changes nothing.
 *
 * A last marker that does not read was taken for "none" (session 0), without a
 * word: then a marker was written for the current session even when the one
 * that did not read was that session's own, after its fills, and under the
 * reset policy the engine reset every position at it a second time, wiping
 * those fills. Which session it opened is now read from its msg id (the bridge
 * that wrote it named the session there too); when that does not tell either,
 * a marker is written only if nothing was stored after the unreadable one
 * (then a second one changes nothing), else none is: a missing reset is the
 * lesser harm, and both are said (`unreadable`, a standing problem).
 */
async function ensureMarker(nc: NatsConnection, js: JetStreamClient, log: Logger, policy: RestartPolicy, n: number): Promise<{ seq: number | null; unreadable: string | null }> {
  if (n <= 1) return { seq: null, unreadable: null };
  // None stored is 0; a timeout is thrown (never taken for "no marker").
  const had = await lastMarker(nc);
  let unreadable = had.unreadable;
  if (unreadable !== null) {
    const told = had.session === null ? 'nor does its msg id say which session it opened' : `its msg id says session ${had.session}`;
    unreadable = `${unreadable}; ${told}. The engine took it for a marker that neither resets positions nor begins a session: if it was an exchange restart under the reset policy, positions were not reset at it`;
    log.error({ session: n, streamSeq: had.seq, markerSession: had.session }, `the last session marker in the fill stream does not read: ${unreadable}`);
  }
  if (had.session === n) return { seq: had.seq, unreadable };
  if (had.session !== null && had.session > n) return { seq: null, unreadable };
  if (had.session === null) {
    const { state } = await (await jetstreamManager(nc)).streams.info(FILL_STREAM);
    if (state.last_seq !== had.seq) {
      const detail = `${unreadable}. No marker was written for session ${n}: fills stored after the unreadable one may be this session's, and a reset written after them would wipe them; if session ${n} truly has none (its bridge stopped right after beginning it), its fills go on without the reset`;
      log.error({ session: n, streamSeq: had.seq, lastSeq: state.last_seq }, 'session marker not written: the last one does not read and messages were stored after it');
      return { seq: null, unreadable: detail };
    }
  }
  log.error({ session: n, lastMarker: had.session }, 'the current exchange session has no marker in the fill stream (its bridge stopped before writing it): writing it now');
  const seq = await publishMarker(js, log, policy, n, `exchange session ${n} begun by a bridge that stopped before writing its marker`);
  return { seq, unreadable: unreadable === null ? null : `${unreadable}. A marker for session ${n} was written after it (nothing was stored between)` };
}

/**
 * The last marker in the fill stream: its session (0: none) and stream sequence. One whose payload does not read
 * (another version's, a foreign or damaged write) gives the session its msg id names, or null when that does not
 * tell either, and `unreadable` says why: never a session it did not open.
 */
export async function lastMarker(nc: NatsConnection): Promise<{ session: number | null; seq: number; unreadable: string | null }> {
  const jsm = await jetstreamManager(nc);
  const last = await jsm.streams.getMessage(FILL_STREAM, { last_by_subj: SESSION_SUBJECT });
  if (!last) return { session: 0, seq: 0, unreadable: null };
  let why: string;
  try {
    const m = decode<Partial<SessionMarker> | undefined>(last.data);
    if (Number.isSafeInteger(m?.session) && m!.session! >= 1) return { session: m!.session!, seq: last.seq, unreadable: null };
    why = `its session is ${JSON.stringify(m?.session) ?? 'missing'}`;
  } catch (err) {
    why = String(err);
  }
  return { session: sessionOfMarkerMsgId(last.header?.get('Nats-Msg-Id') ?? ''), seq: last.seq, unreadable: `the session marker at stream seq ${last.seq} does not read (${why.slice(0, 200)})` };
}

/**
 * The clearing seq of the last fill JetStream stored for `session` (0 when the stream's last message is not one),
 * and the stream's last sequence it was read at.
 */
export async function lastStoredFill(nc: NatsConnection, session: string): Promise<{ fillSeq: number; streamSeq: number }> {
  const jsm = await jetstreamManager(nc);
  const { state } = await jsm.streams.info(FILL_STREAM);
  if (state.last_seq === 0) return { fillSeq: 0, streamSeq: 0 };
  // A deleted last message is null; a timeout is not "no fill" (it would restart the session count), and is thrown.
  const m = await jsm.streams.getMessage(FILL_STREAM, { seq: state.last_seq });
  return { fillSeq: fillSeqOfMsgId(session, m?.header?.get('Nats-Msg-Id') ?? '') ?? 0, streamSeq: state.last_seq };
}
