import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { decodeIf, encode } from '../../proto/codec.js';
import { standbyKeptEntryShape, type StandbyKeptEntry } from '../../proto/feed.js';
import type { ClearingMessage } from '../../proto/ndfex.js';
import { HELD_STREAM, isStandbyKeptSubject, standbyKeptSubject } from '../../proto/subjects.js';
import type { Logger } from '../shared/log.js';
import { readStream } from '../shared/stream-reader.js';
import { ensureHeldStream } from '../shared/streams.js';
import { HeldWrites, UnsentRuns, type Barrier } from './held-store.js';

/** The run the standby keeps, as its entries name it. */
export interface KeptRunRef {
  session: number;
  sender: string;
  /** The first seq heard: the standby waits for the bridge to go on past it. */
  from: number;
  /** Wall-clock ms its first and last messages were heard. */
  firstAt: number;
  lastAt: number;
}

/** A kept run as a stopped standby left it. */
export interface StoredKeptRun extends KeptRunRef {
  subject: string;
  /** By seq, the first stored of each (the standby writes each seq's first heard, once). */
  msgs: Map<number, ClearingMessage>;
}

/**
 * Keeps the run the standby hears while suspended on a first seq that skips
 * (src/feed/standby.ts) in HELD_STREAM, beside the bridge's held runs and
 * written the same way (held-store.ts HeldWrites: in order, retried under
 * their msg ids, purged only after the fills published before are stored):
 * those fills reached no bridge, NDFEX never sends them again, and a standby
 * restarted before the bridge goes on past the run would otherwise lose them.
 *
 * As with the bridge's, a message is safe once JetStream stored it: a standby
 * killed between hearing it and that write (the next event-loop turn) loses it.
 */
export class KeptRunStore {
  /** Per subject: messages kept this turn, written at the next turn. */
  private readonly unsent: UnsentRuns<KeptRunRef>;
  private readonly writes: HeldWrites;
  /** Told when writes keep failing (a standby stop now would lose the run), with why, and with null once they are stored again. */
  onTrouble: (why: string | null) => void = () => {};

  private constructor(nc: NatsConnection, jsm: Awaited<ReturnType<typeof jetstreamManager>>, barrier: Barrier, private readonly log: Logger) {
    this.writes = new HeldWrites(jetstream(nc), jsm, log, barrier, (why) => this.onTrouble(why), 'standby');
    this.unsent = new UnsentRuns(this.writes, (run, msgs) =>
      encode({ v: 1, kind: 'standby_kept', session: run.session, sender: run.sender, from: run.from, msgs, first_at: run.firstAt, last_at: run.lastAt } satisfies StandbyKeptEntry),
    );
  }

  /** Opens the store and reads back the runs earlier standbys left (entries that do not read are counted and skipped). */
  static async open(nc: NatsConnection, log: Logger, barrier: Barrier, replicas = 1): Promise<{ store: KeptRunStore; runs: StoredKeptRun[]; unreadable: number }> {
    await ensureHeldStream(nc, replicas);
    const runs = new Map<string, StoredKeptRun>();
    let unreadable = 0;
    const reader = await readStream(
      nc,
      HELD_STREAM,
      1,
      (m) => {
        // The bridge's held runs share the stream: they are its verdicts' to restore.
        if (!isStandbyKeptSubject(m.subject)) return;
        const e = decodeIf(m.data, standbyKeptEntryShape);
        if (!e) return void unreadable++;
        let r = runs.get(m.subject);
        if (!r) runs.set(m.subject, (r = { subject: m.subject, session: e.session, sender: e.sender, from: e.from, msgs: new Map(), firstAt: e.first_at, lastAt: e.last_at }));
        for (const msg of e.msgs) if (!r.msgs.has(msg.seq)) r.msgs.set(msg.seq, msg);
        // A retried write may land after a later one: the run's times are the extremes.
        r.firstAt = Math.min(r.firstAt, e.first_at);
        r.lastAt = Math.max(r.lastAt, e.last_at);
      },
      { follow: false, log },
    );
    await reader.caughtUp;
    if (unreadable > 0) log.error({ unreadable, stream: HELD_STREAM }, 'standby: kept clearing entries unreadable: skipped');
    return { store: new KeptRunStore(nc, await jetstreamManager(nc), barrier, log), runs: [...runs.values()].filter((r) => r.msgs.size > 0), unreadable };
  }

  static subjectOf(run: Pick<KeptRunRef, 'session' | 'from'>): string {
    return standbyKeptSubject(run.session, run.from);
  }

  /** A message the run keeps: written at the next turn with the others of this one. */
  kept(run: KeptRunRef, msg: ClearingMessage): void {
    this.unsent.add(KeptRunStore.subjectOf(run), msg, (before) => before ?? run);
  }

  /** The run's entries go once every fill published before is stored (its own, when it was published) and every write of it is done. */
  release(subject: string): void {
    this.unsent.write();
    this.writes.purgeAfterFills(subject, 'standby kept run released');
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
    if (left > 0) this.log.warn({ left }, 'standby: kept clearing messages not stored: the standby stopped first');
  }

}
