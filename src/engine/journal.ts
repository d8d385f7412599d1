import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager, JetStreamApiError, type JetStreamClient, type PubAck } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../shared/log.js';
import { isTransientJsError, retryTransient } from '../shared/js-retry.js';
import { encode, decode } from '../../proto/codec.js';
import { JOURNAL_SUBJECT, JOURNAL_STREAM } from '../../proto/subjects.js';
import { JOURNAL_VERSION, JOURNAL_VERSION_CLAIMS, JOURNAL_VERSION_NAMES, JOURNAL_VERSIONS_READ, type JournalBatch, type JournalEvent } from '../../proto/journal.js';
import { readStream } from '../shared/stream-reader.js';
import { JS_HEADER_BYTES, maxPayload } from '../shared/nats.js';
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
  /** A batch with an event no message can hold: it and every append after it fail, unwritten. */
  private broken: JournalEventTooLarge | null = null;
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
   * `events` as the journal messages append would write now: one, or as many as the server's max_payload needs
   * (journalMessages). How many is fixed here, so a caller that must name the sequence a batch will end at before
   * writing it (the actor, for a snapshot or a dump) prepares it and appends exactly that.
   */
  prepare(events: JournalEvent[], fills?: number[]): JournalMessages {
    return journalMessages(events, fills, maxPayload(this.nc));
  }

  /**
   * Stores `events` as the next batch, in as many journal messages as `prepared` holds (each its own sequence);
   * resolves with the last one's sequence once all of them and every earlier batch are stored.
   * `fills`: the fill-stream positions they were applied at (proto/journal.ts JournalBatch).
   */
  append(events: JournalEvent[], fills?: number[], prepared: JournalMessages = this.prepare(events, fills)): Promise<number> {
    if (!this.broken && prepared.tooLarge) this.broken = new JournalEventTooLarge(prepared.tooLarge);
    // Nothing more is written after a batch that could not be: a later one was decided on a state that includes it.
    if (this.broken) return Promise.reject(this.broken);
    let last: Promise<number> = this.tail;
    for (const data of prepared.messages) {
      const expected = this.queuedSeq++;
      const msgID = `${this.writerId}-${expected + 1}`;
      // Our predecessor not yet acknowledged: the stream's last message must be it, not merely at its sequence.
      const after = this.lastSeq < expected ? this.tailMsgID : undefined;
      // A message but the batch's last fails the next one with it, which the caller hears: it needs no handler of its own.
      last.catch(() => {});
      last = this.write(data, expected, msgID, this.tail, after);
      this.tail = last;
      this.tailMsgID = msgID;
    }
    return last;
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

/** A batch's bytes besides its events and fills, at most: its map, `v`, the keys and the lists' headers. */
const BATCH_BYTES = 32;
/** One [event index, fill-stream sequence] pair of `fills`: two numbers of at most 9 bytes each. */
const FILL_PAIR_BYTES = 18;

/** The journal message one event alone would make, at most, headers included: it can be written if this is at most max_payload. */
export const journalMessageBytes = (eventBytes: number): number => eventBytes + BATCH_BYTES + FILL_PAIR_BYTES + JS_HEADER_BYTES;

type Conversion = Extract<JournalEvent, { t: 'conversion' }>;
/** A number at its longest in msgpack (9 bytes). */
const LONGEST = -Number.MAX_SAFE_INTEGER;
/**
 * A conversion event's bytes with its strings empty and no `held`, every number at its longest. Typed with every
 * field a journaled conversion has, so that a new one must be counted here too.
 */
const CONVERSION_BYTES = encode({
  t: 'conversion',
  requestId: LONGEST,
  key: '',
  op: 'redeem',
  clientId: LONGEST,
  etf: '',
  amount: LONGEST,
  fee: LONGEST,
  basketVersion: LONGEST,
  ts: LONGEST,
} satisfies Required<Omit<Conversion, 'deltas' | 'after' | 'held'>>).byteLength;
/** A string's bytes beyond an empty one's, at most: a longer header, up to 3 bytes per UTF-16 unit. */
const stringBytes = (s: string | undefined): number => (s ? 4 + 3 * s.length : 0);
/** `held` of `positions` positions, its key included, at most. */
const heldBytes = (positions: number): number => 10 + 18 * positions;

/**
 * A conversion event's encoded bytes once `held` lists `positions` positions, at most: the actor asks before
 * applying it (its positions after are known only then). Without encoding it, unless `exact`: counting its
 * strings at 3 bytes a character is far under any limit for the keys a gateway sends, not for any key at all.
 */
export const conversionBytesAtMost = (ev: Conversion, positions: number, exact = false): number =>
  (exact ? encode(ev).byteLength : CONVERSION_BYTES + stringBytes(ev.key) + stringBytes(ev.etf)) + heldBytes(positions);

/** An event no journal message can hold on this server: its batch was not written. */
export interface TooLarge {
  /** Its type (JournalEvent `t`), its index in the batch, and its journal message's bytes as journalMessageBytes counts them. */
  event: string;
  index: number;
  bytes: number;
  /** The server's max_payload. */
  limit: number;
}

/** Only the operator can fix it (the server's max_payload): a start it stops is not tried again into the same refusal. */
export class JournalEventTooLarge extends NeedsOperator {
  constructor(readonly tooLarge: TooLarge) {
    super(
      `a journal event (${tooLarge.event}) would be a message of ${tooLarge.bytes} bytes, over the NATS server's max_payload of ${tooLarge.limit}: ` +
        'its batch and every one after it were not written (raise max_payload)',
    );
    this.name = 'JournalEventTooLarge';
  }
}

/** A batch's journal messages (JournalWriter.prepare): each its own sequence. */
export interface JournalMessages {
  messages: Uint8Array[];
  /** An event no message can hold: the batch cannot be written (`messages` then holds only the ones before it). */
  tooLarge: TooLarge | null;
}

const journalVersion = (events: readonly JournalEvent[]): number =>
  events.some((e) => e.t === 'name') ? JOURNAL_VERSION_NAMES : events.some((e) => e.t === 'account' && e.claimed) ? JOURNAL_VERSION_CLAIMS : JOURNAL_VERSION;

/**
 * The pairs of `fills` (proto/journal.ts JournalBatch) for events [from, to): the pair in force at `from` as
 * index 0, then those that begin inside the range, their indexes counted from `from`.
 */
export function fillsOfRange(fills: readonly number[] | undefined, from: number, to: number): number[] | undefined {
  if (!fills || fills.length === 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < fills.length; i += 2) {
    const at = fills[i]!;
    if (at >= to) break;
    if (at <= from) out.splice(0, 2, 0, fills[i + 1]!);
    else out.push(at - from, fills[i + 1]!);
  }
  return out.length > 0 ? out : undefined;
}

/**
 * A batch as journal messages a server of this `maxPayload` takes, JetStream's headers included. One message when
 * it fits, as it always does under NATS's default 1 MB; otherwise consecutive runs of its events, each a
 * JournalBatch of its own with the pairs of `fills` that hold for its events (fillsOfRange) and the version its own
 * events need: replayed in order, they put every event where the whole batch did, among the fills too. Several
 * stream messages for one batch are nothing new to a reader: a crash between two of them leaves the journal as it
 * is after any write, a prefix of what the engine applied, none of it answered.
 */
export function journalMessages(events: readonly JournalEvent[], fills: readonly number[] | undefined, maxPayload: number): JournalMessages {
  const limit = maxPayload - JS_HEADER_BYTES;
  const batchOf = (from: number, to: number): Uint8Array => {
    const whole = from === 0 && to === events.length;
    const part = (whole ? events : events.slice(from, to)) as JournalEvent[];
    const f = whole ? (fills && fills.length > 0 ? (fills as number[]) : undefined) : fillsOfRange(fills, from, to);
    return encode(f ? { v: journalVersion(part), events: part, fills: f } : { v: journalVersion(part), events: part });
  };
  const whole = batchOf(0, events.length);
  if (whole.byteLength <= limit) return { messages: [whole], tooLarge: null };
  // Too large as one: runs cut by each event's own size, with room for the batch around them and their pairs of `fills`.
  const sizes = events.map((e) => encode(e).byteLength);
  const pairStarts = new Set<number>();
  for (let i = 2; fills && i < fills.length; i += 2) pairStarts.add(fills[i]!);
  const messages: Uint8Array[] = [];
  const put = (from: number, to: number): TooLarge | null => {
    const bytes = batchOf(from, to);
    if (bytes.byteLength <= limit) {
      messages.push(bytes);
      return null;
    }
    if (to - from === 1) return { event: events[from]!.t, index: from, bytes: journalMessageBytes(sizes[from]!), limit: maxPayload };
    // The runs' sizes are bounds, so a run over the limit is one event alone; were a bound wrong, halves until each fits.
    const half = from + ((to - from) >> 1);
    return put(from, half) ?? put(half, to);
  };
  // Each run: the batch, the pair in force at its first event, then each event with the pair that begins at it.
  const RUN_BYTES = BATCH_BYTES + FILL_PAIR_BYTES;
  let from = 0;
  let bytes = RUN_BYTES;
  for (let i = 0; i < events.length; i++) {
    const pair = pairStarts.has(i) ? FILL_PAIR_BYTES : 0;
    if (i > from && bytes + sizes[i]! + pair > limit) {
      const tooLarge = put(from, i);
      if (tooLarge) return { messages, tooLarge };
      from = i;
      bytes = RUN_BYTES;
    }
    bytes += sizes[i]! + (i > from ? pair : 0);
  }
  return { messages, tooLarge: put(from, events.length) };
}

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
