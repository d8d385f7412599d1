import { jetstream, jetstreamManager, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg, type ConsumerMessages, type StreamInfo } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { isTransientJsError } from './js-retry.js';
import type { Logger } from './log.js';
import { describeError, isStreamNotFound } from './js-errors.js';
import { StallWatch } from './stall-watch.js';

/** Consumer heartbeat: the server says it is alive this often while there is nothing to deliver. */
const HEARTBEAT_MS = 1000;
/** A follower that has had nothing for this long while its stream holds more is given a new consumer. */
const STALL_MS = 3000;
/** A follower whose consumer fails for this long with errors that are not "not now" (no stream, no permission) stops: its owner is told. */
const GIVE_UP_MS = 30_000;

export interface StreamFollower {
  /** Resolves once every message that was in the stream when `follow` was called has been handled; rejects if reading ends before. */
  caughtUp: Promise<void>;
  stop(): Promise<void>;
}

/**
 * How far to read. A follower never ends on its own: a handler that throws, or
 * a reader that cannot go on, after catch-up is reported to `onError` (its
 * owner stops; the state it feeds no longer moves), never dropped.
 */
export type ReadOptions =
  | { follow: false; untilSeq?: number; log?: Logger }
  | { follow: true; untilSeq?: undefined; onError: (err: unknown) => void; log?: Logger; giveUpMs?: number };

/** The consumer's messages ended though nobody stopped them (the client gave it up): never taken for the end of the stream. */
class ConsumerEnded extends Error {
  constructor() {
    super('the consumer ended by itself');
    this.name = 'ConsumerEnded';
  }
}

/** An error thrown by the caller's handler: it ends the reading (never retried). */
class HandlerError extends Error {
  constructor(readonly inner: unknown) {
    super('stream handler failed');
  }
}

/**
 * Reads `stream` in order from sequence `fromSeq` with an ordered consumer
 * (the client recreates it on any gap, so no message is skipped or repeated),
 * calling `onMsg` for each. With `follow`, keeps going after catching up.
 * Position tracking is the caller's: it lives in the caller's state (and
 * snapshots), never in server-side consumer acks that could disagree with it.
 *
 * A consumer can be lost without a word: on a cluster, the node holding it
 * dies, and the client may wait for it indefinitely. A follower therefore
 * watches its own progress: when nothing has arrived for STALL_MS while the
 * stream holds messages past its position (or the client gives the consumer
 * up), it opens a new consumer from the next sequence it has not handed over.
 */
export async function readStream(
  nc: NatsConnection,
  stream: string,
  fromSeq: number,
  onMsg: (m: JsMsg) => void,
  opts: ReadOptions,
): Promise<StreamFollower> {
  const jsm = await jetstreamManager(nc);
  const last = opts.untilSeq ?? (await jsm.streams.info(stream)).state.last_seq;
  const caughtUp = new CatchUp();
  if (last < fromSeq) caughtUp.resolve();
  if (last < fromSeq && !opts.follow) return { caughtUp: caughtUp.promise, stop: async () => {} };
  return new StreamReader(jetstream(nc), jsm, stream, last, Math.max(1, fromSeq), onMsg, opts, caughtUp).start();
}

/** The promise a reader's caller awaits, and whether it has settled as caught up. */
class CatchUp {
  /** From then on, an error is the owner's (onError), no longer the caller's awaiting `promise`. */
  done = false;
  readonly resolve: () => void;
  readonly fail: (err: unknown) => void;
  readonly promise: Promise<void>;

  constructor() {
    let res!: () => void;
    let rej!: (err: unknown) => void;
    this.promise = new Promise<void>((a, b) => {
      res = a;
      rej = b;
    });
    this.resolve = () => {
      this.done = true;
      res();
    };
    this.fail = rej;
  }
}

/** One reading of a stream: a consumer at a time, each opened again where the last one stopped handing over. */
class StreamReader {
  private stopped = false;
  private messages: ConsumerMessages | null = null;
  /** The first consumer, opened by start() so that a reader that cannot read fails its caller at once. */
  private first: ConsumerMessages | null = null;
  /** The current consumer was given up as lost: the loop opens another. */
  private stalled = false;
  /** Since when the consumer fails with errors that are not transient (0: it does not). */
  private failingSince = 0;
  /** Consumers opened in a row without a message: the wait before the next one grows with it. */
  private attempt = 0;
  /** Progress is checked against the stream itself: an idle stream (or one read to its end) is not a stall. */
  private readonly stall = new StallWatch(STALL_MS, () => this.check());

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    /** The last sequence to read (a follower: the last one at the start, where it is caught up). */
    private readonly last: number,
    /** The next sequence to hand over: a consumer opened again starts there, and anything older it delivers is skipped. */
    private next: number,
    private readonly onMsg: (m: JsMsg) => void,
    private readonly opts: ReadOptions,
    private readonly caughtUp: CatchUp,
  ) {}

  async start(): Promise<StreamFollower> {
    const { opts, last } = this;
    this.stall.start();
    // Records deleted by hand can leave nothing to read where the stream's sequences say there is: done now, not after a stall.
    if (!opts.follow && (opts.untilSeq === undefined || (await this.jsm.streams.info(this.stream)).state.last_seq >= last) && !(await this.storedBetween(this.next, last))) {
      this.stall.stop();
      this.caughtUp.resolve();
      return { caughtUp: this.caughtUp.promise, stop: async () => {} };
    }
    this.first = await this.open();
    const done = this.run();
    return {
      caughtUp: this.caughtUp.promise,
      stop: async () => {
        this.stopped = true;
        this.messages?.stop();
        await done;
      },
    };
  }

  private async open(): Promise<ConsumerMessages> {
    if (this.stopped) throw new Error('stopped');
    const consumer = await this.js.consumers.get(this.stream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.next });
    // Bounded by bytes as well: journal batches can be large, and 1024 of them would buffer hundreds of MB.
    return consumer.consume({ max_bytes: 8 << 20, idle_heartbeat: HEARTBEAT_MS, expires: 5 * HEARTBEAT_MS });
  }

  /** Whether the stream holds a message in [from, to] (when it cannot be asked, a role without message reads: assumed so). */
  private async storedBetween(from: number, to: number): Promise<boolean> {
    // STREAM.MSG.GET with next_by_subj (nats-server 2.9+): the first message at or after `from` (null: none).
    // Any failure to ask (a role without message reads, JetStream between leaders) leaves it assumed stored: the reading
    // then goes on through its consumer, which reports its own errors; "none" is only what JetStream answers.
    const m = await this.jsm.streams.getMessage(this.stream, { seq: from, next_by_subj: '>' } as unknown as { seq: number }).catch(() => undefined);
    return m === undefined || (m !== null && m.seq > 0 && m.seq <= to);
  }

  private async run(): Promise<void> {
    try {
      while (!this.stopped) {
        if (await this.consumeOnce()) return;
        await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** this.attempt++)));
      }
    } catch (err) {
      // Before catch-up the caller awaits `caughtUp`; after it, the follower's owner is told.
      if (!this.caughtUp.done) this.caughtUp.fail(err);
      // After catch-up only a follower is still reading; once stopped, an error is just how its reading ended.
      else if (this.opts.follow && !this.stopped) this.opts.onError(err);
    } finally {
      this.stall.stop();
    }
  }

  /** Reads one consumer until it ends; true when the reading is over, false when another consumer is to be opened. */
  private async consumeOnce(): Promise<boolean> {
    this.stalled = false;
    this.stall.heard();
    try {
      this.messages = this.first ?? (await this.open());
      this.first = null;
      if (await this.deliver(this.messages)) return true;
      if (this.stopped) return true;
      if (!this.stalled) throw new ConsumerEnded();
    } catch (err) {
      this.recover(err);
    } finally {
      this.messages?.stop();
    }
    return false;
  }

  /** Hands the consumer's messages over in order; true when the reading is over. */
  private async deliver(messages: ConsumerMessages): Promise<boolean> {
    const { opts, last } = this;
    for await (const m of messages) {
      this.stall.heard();
      this.attempt = 0;
      this.failingSince = 0;
      if (m.seq < this.next) continue; // delivered again by a consumer opened after a stall
      if (!opts.follow && m.seq > last) {
        // Messages up to `last` were deleted: there is nothing more to wait for; the caller checks what it got.
        this.caughtUp.resolve();
        return true;
      }
      try {
        this.onMsg(m);
      } catch (err) {
        throw new HandlerError(err);
      }
      this.next = m.seq + 1;
      // Nothing stored after it: the rest up to `last` was deleted (reading to the end as it was, no `untilSeq`, so nothing is to come).
      if (m.seq >= last || (!opts.follow && opts.untilSeq === undefined && m.info.pending === 0)) {
        this.caughtUp.resolve();
        if (!opts.follow) return true;
      }
    }
    return false;
  }

  /** A consumer failed: throws when the reading must end with it; otherwise the loop opens another. */
  private recover(err: unknown): void {
    const opts = this.opts;
    if (err instanceof HandlerError) throw err.inner;
    // The client gave the consumer up (it could not recreate it), or JetStream is between leaders: open another.
    if (this.stopped || !(this.stalled || isTransientJsError(err) || opts.follow)) throw err;
    // Not "not now" (the stream is gone, a permission refused): a follower tries for a while, then gives up loudly.
    if (!this.stalled && !isTransientJsError(err)) {
      this.failingSince ||= Date.now();
      if (Date.now() - this.failingSince >= (opts.follow ? (opts.giveUpMs ?? GIVE_UP_MS) : 0)) throw err;
    }
    // A follower keeps trying (a cluster's consumer can be lost with its node), but says so.
    if (!this.stalled && (this.attempt === 0 || this.attempt % 10 === 0)) opts.log?.warn({ stream: this.stream, next: this.next, attempt: this.attempt + 1, err: describeError(err) }, 'stream reader: consumer failed, opening another');
  }

  private async check(): Promise<void> {
    if (this.stopped) return;
    await this.jsm.streams
      .info(this.stream)
      .then((info) => this.judgeProgress(info))
      .catch((err: unknown) => {
        // The stream is gone: the consumer is given up, and opening another says so (and ends the reading if it lasts).
        if (isStreamNotFound(err)) return this.giveUp();
        // JetStream unavailable: the next tick asks again; anything else is worth a line.
        if (!isTransientJsError(err)) this.opts.log?.warn({ stream: this.stream, err: describeError(err) }, 'stream reader: cannot check progress');
      });
  }

  private async judgeProgress(info: StreamInfo): Promise<void> {
    const { opts, last } = this;
    // Everything up to `last` was stored and what is left of it was deleted (a record removed by hand): a reading to `last` is done,
    // where it would otherwise wait for ever for a sequence that is not there.
    if (!opts.follow && info.state.last_seq >= last && !(await this.storedBetween(this.next, last))) return this.finish();
    const end = opts.follow ? info.state.last_seq : Math.min(last, info.state.last_seq);
    if (info.state.messages > 0 && end >= Math.max(this.next, info.state.first_seq) && this.stall.quiet) this.giveUp();
  }

  private finish(): void {
    this.caughtUp.resolve();
    this.stopped = true;
    this.messages?.stop();
  }

  private giveUp(): void {
    if (this.stopped || !this.messages) return;
    this.stalled = true;
    this.messages.stop();
  }
}
