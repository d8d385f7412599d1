import type { NatsConnection } from '@nats-io/transport-node';
import type { JsMsg } from '@nats-io/jetstream';
import { jetstreamManager } from '@nats-io/jetstream';
import type { JournalBatch, JournalEvent } from '../../proto/journal.js';
import { FILL_STREAM } from '../../proto/subjects.js';
import { readStream, type StreamFollower } from '../shared/stream-reader.js';
import type { Logger } from '../shared/log.js';
import { decodeJournalRecord } from './journal.js';

/**
 * Where a journal record without fill positions (versions 1 and 2) goes among the fills:
 *   journal-first  before every fill not yet applied (how the engine has always replayed them)
 *   stream-time    after the fills JetStream stored before it (the consistency check's best estimate
 *                  of the order the engine applied them in)
 */
export type UnpositionedOrder = 'journal-first' | 'stream-time';

/** One message of either stream as the merge sees it. */
export interface Stamped {
  seq: number;
  /** JetStream's time of storing it (ns); read only for stream-time. */
  ns: bigint;
}

interface QueuedBatch extends Stamped {
  events: JournalEvent[];
  fills: number[] | undefined;
  /** The next event to apply, and the pair of `fills` that holds for it. */
  next: number;
  pair: number;
}

export interface MergeSink<F extends Stamped> {
  /** `fillSeq`: the fill-stream sequence the engine stood at as it applied it (undefined: not recorded). */
  event(ev: JournalEvent, journalSeq: number, fillSeq: number | undefined): void;
  /** Every event of the journal record is applied. */
  batchDone(journalSeq: number): void;
  fill(m: F): void;
  /** The fill-stream sequence the state has applied. */
  fillSeq(): number;
}

/**
 * Interleaves journal records and fill-stream messages in the order the
 * engine applied them: an event recorded at fill position F follows every
 * fill up to F and precedes every fill after it (proto/journal.ts `fills`).
 * Pure and synchronous: both streams are pushed in as they are read, in any
 * relative timing, and each item is applied as soon as its place is certain.
 * Fill positions never go down along the journal, so a fill may go once the
 * last record read is known to follow it.
 */
export class ReplayMerge<F extends Stamped> {
  private readonly journal: QueuedBatch[] = [];
  private readonly fills: F[] = [];
  private journalEnded = false;
  private fillsEnded = false;
  /** The last journal record read, with its last event's position: every later event follows what it follows. */
  private last: { fillSeq: number | undefined; ns: bigint } | null = null;

  constructor(
    private readonly sink: MergeSink<F>,
    private readonly unpositioned: UnpositionedOrder,
  ) {}

  pushBatch(seq: number, ns: bigint, batch: JournalBatch): void {
    const fills = batch.fills && batch.fills.length > 0 ? batch.fills : undefined;
    this.journal.push({ seq, ns, events: batch.events, fills, next: 0, pair: 0 });
    this.last = { fillSeq: fills ? fills[fills.length - 1] : undefined, ns };
    this.pump();
  }

  pushFill(m: F): void {
    this.fills.push(m);
    this.pump();
  }

  endJournal(): void {
    this.journalEnded = true;
    this.pump();
  }

  endFills(): void {
    this.fillsEnded = true;
    this.pump();
  }

  /** Items read but not yet applied (both ended: none). */
  get waiting(): number {
    return this.journal.length + this.fills.length;
  }

  /** Whether an event at `fillSeq` (or, unpositioned, of a record stored at `ns`) comes after fill `m`. */
  private follows(fillSeq: number | undefined, ns: bigint, m: F): boolean {
    if (fillSeq !== undefined) return m.seq <= fillSeq;
    return this.unpositioned === 'stream-time' && m.ns <= ns;
  }

  private pump(): void {
    for (;;) {
      const b = this.journal[0];
      if (b) {
        if (b.next >= b.events.length) {
          this.journal.shift();
          this.sink.batchDone(b.seq);
          continue;
        }
        const fillSeq = this.positionOf(b);
        if (this.eventReady(fillSeq, b.ns)) {
          this.sink.event(b.events[b.next]!, b.seq, fillSeq);
          b.next++;
          continue;
        }
      }
      const m = this.fills[0];
      // The head record (if any) is not ready, so it follows this fill; with none queued, the last one read must.
      if (m && (b || this.journalEnded || (this.last !== null && this.follows(this.last.fillSeq, this.last.ns, m)))) {
        this.fills.shift();
        this.sink.fill(m);
        continue;
      }
      return;
    }
  }

  private positionOf(b: QueuedBatch): number | undefined {
    const f = b.fills;
    if (!f) return undefined;
    while (b.pair + 2 < f.length && f[b.pair + 2]! <= b.next) b.pair += 2;
    return f[b.pair + 1];
  }

  private eventReady(fillSeq: number | undefined, ns: bigint): boolean {
    // Fills read but not applied yet come first even once their stream has ended.
    const m = this.fills[0];
    if (m) return !this.follows(fillSeq, ns, m);
    if (this.fillsEnded) return true;
    // No fill read yet past those applied: a recorded position says whether one is still due.
    if (fillSeq !== undefined) return fillSeq <= this.sink.fillSeq();
    return this.unpositioned === 'journal-first';
  }
}

export interface MergedReplay {
  /** The last journal record read (fromJournalSeq - 1 when none). */
  journalSeq: number;
  /** The journal stream's last sequence when the replay began (past journalSeq when its last records were deleted). */
  journalEnd: number;
}

/** Logs progress of a long replay, so no start is silent for more than this. */
const PROGRESS_MS = 10_000;

/**
 * Replays journal records from `fromJournalSeq` and fill-stream messages from
 * `fromFillSeq` (each up to its `until`, else to its end as it is now),
 * merged by ReplayMerge. Both streams are read at once.
 */
export async function replayMerged(
  nc: NatsConnection,
  opts: {
    journalStream: string;
    fromJournalSeq: number;
    untilJournalSeq?: number;
    fromFillSeq: number;
    untilFillSeq?: number;
    unpositioned: UnpositionedOrder;
    sink: MergeSink<JsMsg & Stamped>;
    log?: Logger;
  },
): Promise<MergedReplay> {
  const jsm = await jetstreamManager(nc);
  const journalEnd = opts.untilJournalSeq ?? (await jsm.streams.info(opts.journalStream)).state.last_seq;
  let journalSeq = opts.fromJournalSeq - 1;
  let fillsRead = 0;
  const merge = new ReplayMerge<JsMsg & Stamped>(opts.sink, opts.unpositioned);
  // Parsed from the reply subject on each read: only stream-time looks at it.
  const stamp = (m: JsMsg): bigint => (opts.unpositioned === 'stream-time' ? m.timestampNanos : 0n);
  const readers: StreamFollower[] = [];
  const progress = opts.log
    ? setInterval(() => opts.log!.info({ journalSeq, journalEnd, fillSeq: opts.sink.fillSeq(), fillsRead, waiting: merge.waiting }, 'replaying journal and fills'), PROGRESS_MS)
    : null;
  progress?.unref();
  try {
    const journalDone =
      journalEnd >= opts.fromJournalSeq
        ? readStream(
            nc,
            opts.journalStream,
            opts.fromJournalSeq,
            (m) => {
              merge.pushBatch(m.seq, stamp(m), decodeJournalRecord(m.data, m.seq, opts.journalStream));
              journalSeq = m.seq;
            },
            { follow: false, untilSeq: journalEnd },
          ).then(async (r) => {
            readers.push(r);
            await r.caughtUp;
            merge.endJournal();
          })
        : Promise.resolve(merge.endJournal());
    const fillsDone =
      opts.untilFillSeq === undefined || opts.untilFillSeq >= opts.fromFillSeq
        ? readStream(
            nc,
            FILL_STREAM,
            opts.fromFillSeq,
            (m) => {
              fillsRead++;
              merge.pushFill(Object.assign(m, { ns: stamp(m) }));
            },
            { follow: false, ...(opts.untilFillSeq !== undefined ? { untilSeq: opts.untilFillSeq } : {}) },
          ).then(async (r) => {
            readers.push(r);
            await r.caughtUp;
            merge.endFills();
          })
        : Promise.resolve(merge.endFills());
    // Either failing (a record that cannot be replayed) fails the replay at once, not after the other stream is read.
    await Promise.all([journalDone, fillsDone]);
  } finally {
    if (progress) clearInterval(progress);
    await Promise.all(readers.map((r) => r.stop()));
  }
  return { journalSeq, journalEnd };
}
