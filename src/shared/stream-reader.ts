import { jetstream, jetstreamManager, DeliverPolicy, type JsMsg, type ConsumerMessages } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { isTransientJsError } from './js-retry.js';
import type { Logger } from './log.js';
import { describeError, isStreamNotFound } from './js-errors.js';

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
  let resolveCaughtUp!: () => void;
  let failCaughtUp!: (err: unknown) => void;
  /** From then on, an error is the owner's (onError), no longer the caller's awaiting `caughtUp`. */
  let isCaughtUp = false;
  const caughtUp = new Promise<void>((res, rej) => {
    resolveCaughtUp = () => {
      isCaughtUp = true;
      res();
    };
    failCaughtUp = rej;
  });
  if (last < fromSeq) resolveCaughtUp();
  if (last < fromSeq && !opts.follow) return { caughtUp, stop: async () => {} };

  const js = jetstream(nc);
  /** The next sequence to hand over: a consumer opened again starts there, and anything older it delivers is skipped. */
  let next = Math.max(1, fromSeq);
  let stopped = false;
  let messages: ConsumerMessages | null = null;
  /** The current consumer was given up as lost: the loop opens another. */
  let stalled = false;
  let lastProgress = Date.now();
  /** Since when the consumer fails with errors that are not transient (0: it does not). */
  let failingSince = 0;

  const open = async (): Promise<ConsumerMessages> => {
    if (stopped) throw new Error('stopped');
    const consumer = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next });
    // Bounded by bytes as well: journal batches can be large, and 1024 of them would buffer hundreds of MB.
    return consumer.consume({ max_bytes: 8 << 20, idle_heartbeat: HEARTBEAT_MS, expires: 5 * HEARTBEAT_MS });
  };
  /** Whether the stream holds a message in [from, to] (when it cannot be asked, a role without message reads: assumed so). */
  const storedBetween = async (from: number, to: number): Promise<boolean> => {
    // STREAM.MSG.GET with next_by_subj (nats-server 2.9+): the first message at or after `from`.
    const m = await jsm.streams.getMessage(stream, { seq: from, next_by_subj: '>' } as unknown as { seq: number }).catch(() => undefined);
    return m === undefined || (m !== null && m.seq > 0 && m.seq <= to);
  };
  const finish = () => {
    resolveCaughtUp();
    stopped = true;
    messages?.stop();
  };
  const giveUp = () => {
    if (stopped || !messages) return;
    stalled = true;
    messages.stop();
  };

  // Progress is checked against the stream itself: an idle stream (or one read to its end) is not a stall.
  let checking = false;
  const watchdog = setInterval(() => {
    if (checking || stopped || Date.now() - lastProgress < STALL_MS) return;
    checking = true;
    jsm.streams
      .info(stream)
      .then(async (info) => {
        // Everything up to `last` was stored and what is left of it was deleted (a record removed by hand): a reading to `last` is done,
        // where it would otherwise wait for ever for a sequence that is not there.
        if (!opts.follow && info.state.last_seq >= last && !(await storedBetween(next, last))) return finish();
        const end = opts.follow ? info.state.last_seq : Math.min(last, info.state.last_seq);
        if (info.state.messages > 0 && end >= Math.max(next, info.state.first_seq) && Date.now() - lastProgress >= STALL_MS) giveUp();
      })
      .catch((err: unknown) => {
        // The stream is gone: the consumer is given up, and opening another says so (and ends the reading if it lasts).
        if (isStreamNotFound(err)) return giveUp();
        // JetStream unavailable: the next tick asks again; anything else is worth a line.
        if (!isTransientJsError(err)) opts.log?.warn({ stream, err: describeError(err) }, 'stream reader: cannot check progress');
      })
      .finally(() => (checking = false));
  }, STALL_MS / 3);
  watchdog.unref();

  // Records deleted by hand can leave nothing to read where the stream's sequences say there is: done now, not after a stall.
  if (!opts.follow && (opts.untilSeq === undefined || (await jsm.streams.info(stream)).state.last_seq >= last) && !(await storedBetween(next, last))) {
    clearInterval(watchdog);
    resolveCaughtUp();
    return { caughtUp, stop: async () => {} };
  }
  // The first consumer is opened here, so a reader that cannot read (no stream, no permission) fails its caller at once.
  let first: ConsumerMessages | null = await open();
  const done = (async () => {
    try {
      for (let attempt = 0; !stopped; ) {
        stalled = false;
        lastProgress = Date.now();
        try {
          messages = first ?? (await open());
          first = null;
          for await (const m of messages) {
            lastProgress = Date.now();
            attempt = 0;
            failingSince = 0;
            if (m.seq < next) continue; // delivered again by a consumer opened after a stall
            if (!opts.follow && m.seq > last) {
              // Messages up to `last` were deleted: there is nothing more to wait for; the caller checks what it got.
              resolveCaughtUp();
              return;
            }
            try {
              onMsg(m);
            } catch (err) {
              throw new HandlerError(err);
            }
            next = m.seq + 1;
            // Nothing stored after it: the rest up to `last` was deleted (reading to the end as it was, no `untilSeq`, so nothing is to come).
            if (m.seq >= last || (!opts.follow && opts.untilSeq === undefined && m.info.pending === 0)) {
              resolveCaughtUp();
              if (!opts.follow) return;
            }
          }
          if (stopped) return;
          if (!stalled) throw new ConsumerEnded();
        } catch (err) {
          if (err instanceof HandlerError) throw err.inner;
          // The client gave the consumer up (it could not recreate it), or JetStream is between leaders: open another.
          if (stopped || !(stalled || isTransientJsError(err) || opts.follow)) throw err;
          // Not "not now" (the stream is gone, a permission refused): a follower tries for a while, then gives up loudly.
          if (!stalled && !isTransientJsError(err)) {
            failingSince ||= Date.now();
            if (Date.now() - failingSince >= (opts.follow ? (opts.giveUpMs ?? GIVE_UP_MS) : 0)) throw err;
          }
          // A follower keeps trying (a cluster's consumer can be lost with its node), but says so.
          if (!stalled && (attempt === 0 || attempt % 10 === 0)) opts.log?.warn({ stream, next, attempt: attempt + 1, err: describeError(err) }, 'stream reader: consumer failed, opening another');
        } finally {
          messages?.stop();
        }
        await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt++)));
      }
    } catch (err) {
      // Before catch-up the caller awaits `caughtUp`; after it, the follower's owner is told.
      if (!isCaughtUp) failCaughtUp(err);
      // After catch-up only a follower is still reading; once stopped, an error is just how its reading ended.
      else if (opts.follow && !stopped) opts.onError(err);
    } finally {
      clearInterval(watchdog);
    }
  })();
  return {
    caughtUp,
    stop: async () => {
      stopped = true;
      messages?.stop();
      await done;
    },
  };
}

