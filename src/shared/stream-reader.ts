import { jetstream, jetstreamManager, DeliverPolicy, type JsMsg, type ConsumerMessages } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

export interface StreamFollower {
  /** Resolves once every message that was in the stream when `follow` was called has been handled. */
  caughtUp: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Reads `stream` in order from sequence `fromSeq` with an ordered consumer
 * (the client recreates it on any gap, so no message is skipped or repeated),
 * calling `onMsg` for each. With `follow`, keeps going after catching up.
 * Position tracking is the caller's: it lives in the caller's state (and
 * snapshots), never in server-side consumer acks that could disagree with it.
 */
export async function readStream(
  nc: NatsConnection,
  stream: string,
  fromSeq: number,
  onMsg: (m: JsMsg) => void,
  opts: { follow: boolean; untilSeq?: number },
): Promise<StreamFollower> {
  const jsm = await jetstreamManager(nc);
  const last = opts.untilSeq ?? (await jsm.streams.info(stream)).state.last_seq;
  let resolveCaughtUp!: () => void;
  let failCaughtUp!: (err: unknown) => void;
  const caughtUp = new Promise<void>((res, rej) => {
    resolveCaughtUp = res;
    failCaughtUp = rej;
  });
  if (last < fromSeq) resolveCaughtUp();
  if (last < fromSeq && !opts.follow) return { caughtUp, stop: async () => {} };

  const js = jetstream(nc);
  const consumer = await js.consumers.get(stream, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, fromSeq),
  });
  // Bounded by bytes as well: journal batches can be large, and 1024 of them would buffer hundreds of MB.
  const messages: ConsumerMessages = await consumer.consume({ max_bytes: 8 << 20 });
  const done = (async () => {
    try {
      for await (const m of messages) {
        if (!opts.follow && m.seq > last) {
          // Messages up to `last` were deleted: there is nothing more to wait for; the caller checks what it got.
          resolveCaughtUp();
          break;
        }
        onMsg(m);
        if (m.seq >= last) {
          resolveCaughtUp();
          if (!opts.follow) break;
        }
      }
    } catch (err) {
      // Before catch-up the caller awaits `caughtUp`; after it, a handler error is the caller's to surface.
      failCaughtUp(err);
      throw err;
    }
  })();
  done.catch(() => {});
  return {
    caughtUp,
    stop: async () => {
      messages.stop();
      await done.catch(() => {});
    },
  };
}
