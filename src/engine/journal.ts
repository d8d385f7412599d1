import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager, JetStreamApiError, type JetStreamClient, type PubAck } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../shared/log.js';
import { isTransientJsError, retryTransient } from '../shared/js-retry.js';
import { encode, decode } from '../../proto/codec.js';
import { JOURNAL_SUBJECT, JOURNAL_STREAM } from '../../proto/subjects.js';
import { JOURNAL_VERSION, JOURNAL_VERSION_CLAIMS, JOURNAL_VERSION_NAMES, JOURNAL_VERSIONS_READ, type JournalBatch, type JournalEvent } from '../../proto/journal.js';
import { readStream } from '../shared/stream-reader.js';
import { NeedsOperator } from '../config/config.js';

/** JetStream's "wrong last sequence": the stream is not where this write expected it to be. */
const WRONG_LAST_SEQUENCE = 10071;

export interface JournalWriteOptions {
  /** How long one append keeps retrying a journal that does not answer (a stream leader moving) before it fails. */
  deadlineMs?: number;
  /** One attempt's wait for JetStream's ack. */
  attemptTimeoutMs?: number;
  log?: Logger;
  /** The engine shard's journal (proto/shards.ts); the single engine's by default. */
  subject?: string;
  stream?: string;
}

/**
 * Appends journal batches. Each append names the sequence it expects to
 * follow, so a second engine writing by mistake fails its write instead of
 * interleaving history (the single writer is enforced, not assumed).
 *
 * Appends may overlap: each one's first attempt goes out at once, naming the
 * sequence its predecessors will have taken and, while its predecessor is not
 * yet acknowledged, that predecessor's message id as the stream's last (so it
 * can only land right after our own batch, never after another writer's);
 * an append is acknowledged (and `sequence` moves) only after every earlier
 * one, and an append whose predecessor failed fails too. Overlapping lets the
 * engine write one group while the next fills.
 *
 * An append JetStream does not answer (a cluster electing the journal's new
 * leader, a server restarting) is retried, once its predecessors are stored,
 * until `deadlineMs`, always with the same message id (this writer's id + the
 * sequence it expects to take), so a batch stored before its ack was lost is
 * stored once: the stream answers the retry as a duplicate, and if it no
 * longer remembers the id, the message at that sequence is read and
 * recognised by it.
 */
export class JournalWriter {
  private readonly js: JetStreamClient;
  /** Unique to this process: a second engine's batch can never pass for one of ours. */
  private readonly writerId = randomBytes(9).toString('base64url');
  private readonly deadlineMs: number;
  private readonly attemptTimeoutMs: number;
  /** The sequence the journal will be at once every append made so far is stored. */
  private queuedSeq: number;
  /** The last append: the next one is acknowledged only after it. */
  private tail: Promise<number>;
  private tailMsgID = '';
  constructor(
    private readonly nc: NatsConnection,
    private lastSeq: number,
    private readonly opts: JournalWriteOptions = {},
  ) {
    this.js = jetstream(nc);
    this.deadlineMs = opts.deadlineMs ?? 30_000;
    // Short attempts, short pauses: replies wait on this write, so a new leader should be found within a beat of its election.
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 1_000;
    this.queuedSeq = lastSeq;
    this.tail = Promise.resolve(lastSeq);
  }

  /** The last sequence acknowledged (in order). */
  get sequence(): number {
    return this.lastSeq;
  }

  /** The sequence the journal will be at once every append made so far is stored. */
  get queued(): number {
    return this.queuedSeq;
  }

  /**
   * Stores `events` as the next batch; resolves with its sequence once it and every earlier batch are stored.
   * `fills`: the fill-stream positions they were applied at (proto/journal.ts JournalBatch).
   */
  append(events: JournalEvent[], fills?: number[]): Promise<number> {
    const v = events.some((e) => e.t === 'name') ? JOURNAL_VERSION_NAMES : events.some((e) => e.t === 'account' && e.claimed) ? JOURNAL_VERSION_CLAIMS : JOURNAL_VERSION;
    const batch: JournalBatch = fills && fills.length > 0 ? { v, events, fills } : { v, events };
    const expected = this.queuedSeq++;
    const msgID = `${this.writerId}-${expected + 1}`;
    // Our predecessor not yet acknowledged: the stream's last message must be it, not merely at its sequence.
    const after = this.lastSeq < expected ? this.tailMsgID : undefined;
    const write = this.write(encode(batch), expected, msgID, this.tail, after);
    this.tail = write;
    this.tailMsgID = msgID;
    return write;
  }

  private async write(data: Uint8Array, expected: number, msgID: string, before: Promise<number>, afterMsgID: string | undefined): Promise<number> {
    let seq: number | undefined;
    try {
      seq = await this.attempt(data, expected, msgID, false, afterMsgID);
    } catch {
      // Judged once the predecessors are settled: a refusal now may only mean one of them is not stored yet.
    }
    // A predecessor that failed fails this one (its error, rethrown): nothing may be acknowledged past a gap.
    await before;
    // Every predecessor is stored now, at the sequences we named: the expected sequence alone pins this batch after them.
    seq ??= await retryTransient('journal write', () => this.attempt(data, expected, msgID, true), {
      deadlineMs: this.deadlineMs,
      maxPauseMs: 250,
      transient: (err) => err instanceof StagedDuplicate || isTransientJsError(err),
      ...(this.opts.log ? { log: this.opts.log } : {}),
    });
    if (seq !== expected + 1) throw new Error(`journal write acknowledged at sequence ${seq}, expected ${expected + 1}`);
    this.lastSeq = seq;
    return seq;
  }

  /** One publish of the batch; `retry`: an earlier attempt may have been stored; `afterMsgID`: the message that must be the stream's last. */
  private async attempt(data: Uint8Array, expected: number, msgID: string, retry: boolean, afterMsgID?: string): Promise<number> {
    try {
      const ack: PubAck = await this.js.publish(this.opts.subject ?? JOURNAL_SUBJECT, data, {
        expect: { lastSequence: expected, ...(afterMsgID ? { lastMsgID: afterMsgID } : {}) },
        msgID,
        timeout: this.attemptTimeoutMs,
      });
      if (ack.seq > 0 || (await this.storedAs(expected + 1, msgID))) return ack.seq > 0 ? ack.seq : expected + 1;
      // A duplicate of an attempt the leader staged but never stored: ask again until it is one or the other.
      throw new StagedDuplicate();
    } catch (err) {
      // An earlier attempt was stored, and the stream (a new leader) no longer knows its id: the message itself says so.
      if (retry && err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE && (await this.storedAs(expected + 1, msgID))) {
        return expected + 1;
      }
      throw err;
    }
  }

  /** Whether the journal's message at `seq` is the one published with `msgID`. */
  private async storedAs(seq: number, msgID: string): Promise<boolean> {
    const jsm = await jetstreamManager(this.nc);
    // Nothing at `seq` is null; any other error is thrown, for retryTransient to judge (a timeout is not "not stored").
    const m = await jsm.streams.getMessage(this.opts.stream ?? JOURNAL_STREAM, { seq });
    return m?.header?.get('Nats-Msg-Id') === msgID;
  }
}

class StagedDuplicate extends Error {}

/**
 * A journal record this build cannot replay (undecodable, an unknown version, a malformed batch):
 * start-up stops with one line naming it and what to do, and the launcher does not restart the engine
 * into the same record (NeedsOperator).
 */
export class JournalRecordError extends NeedsOperator {
  constructor(
    readonly seq: number,
    readonly stream: string,
    readonly reason: string,
  ) {
    super(
      `journal record ${seq} of stream ${stream} cannot be replayed (${reason}); nothing was changed. ` +
        `If the engine did not write it (look: nats stream get ${stream} ${seq}), remove it (nats stream rmm ${stream} ${seq}) and start again; ` +
        `if a newer engine wrote it, start that version`,
    );
  }
}

const isFillPositions = (f: unknown): boolean => Array.isArray(f) && f.length % 2 === 0 && f.every((n) => Number.isSafeInteger(n) && n >= 0);

/** Decodes one journal record, or throws JournalRecordError saying why it cannot be replayed. */
export function decodeJournalRecord(data: Uint8Array, seq: number, stream: string): JournalBatch {
  let batch: JournalBatch;
  try {
    batch = decode<JournalBatch>(data);
  } catch (err) {
    throw new JournalRecordError(seq, stream, `undecodable: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof batch !== 'object' || batch === null) throw new JournalRecordError(seq, stream, 'not a batch');
  if (!JOURNAL_VERSIONS_READ.includes(batch.v)) throw new JournalRecordError(seq, stream, `unsupported version ${JSON.stringify(batch.v) ?? 'undefined'}`);
  if (!Array.isArray(batch.events) || !batch.events.every((e) => typeof e === 'object' && e !== null && typeof (e as { t?: unknown }).t === 'string')) {
    throw new JournalRecordError(seq, stream, 'events is not a list of events');
  }
  if (batch.fills !== undefined && !isFillPositions(batch.fills)) throw new JournalRecordError(seq, stream, 'fills is not a list of positions');
  return batch;
}

/** Replays the journal from `fromSeq`, handing each batch's events to `apply`. Returns the last sequence read. */
export async function replayJournal(
  nc: NatsConnection,
  fromSeq: number,
  /** `storedNs`: when JetStream stored the record. */
  apply: (events: JournalEvent[], seq: number, batch: JournalBatch, storedNs: bigint) => void,
  untilSeq?: number,
  stream = JOURNAL_STREAM,
): Promise<number> {
  let last = fromSeq - 1;
  const reader = await readStream(
    nc,
    stream,
    fromSeq,
    (m) => {
      const batch = decodeJournalRecord(m.data, m.seq, stream);
      apply(batch.events, m.seq, batch, m.timestampNanos);
      last = m.seq;
    },
    { follow: false, ...(untilSeq !== undefined ? { untilSeq } : {}) },
  );
  await reader.caughtUp;
  await reader.stop();
  return last;
}
