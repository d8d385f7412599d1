import type { NatsConnection } from '@nats-io/transport-node';
import { encode } from '../../proto/codec.js';
import type { EngineFault as FaultNotice } from '../../proto/engine.js';
import { engineFaultSubject } from '../../proto/subjects.js';

/** A loop that feeds the engine's state stopped: the process must exit so a restart rebuilds it. */
export class EngineFault extends Error {
  constructor(
    /** Which loop: "fill stream", "journal write". */
    readonly what: string,
    cause: unknown,
  ) {
    super(`${what} failed: ${describe(cause)}`, { cause });
    this.name = 'EngineFault';
  }
}

/** How long an exiting engine waits for its fault notice to leave: the exit is not held up by a bus that is gone. */
const NOTICE_MS = 500;

/**
 * Tells the gateways why this shard is about to exit (GET /health shows it
 * while the supervisor restarts it), then calls `onFatal`. Best effort: the
 * bus may be what failed.
 */
export function reportFault(nc: NatsConnection, shard: number, onFatal: (err: unknown) => void): (err: unknown) => void {
  let reported = false;
  return (err) => {
    if (reported) return;
    reported = true;
    const fault = err instanceof EngineFault ? err : new EngineFault('engine', err);
    const notice: FaultNotice = { shard, what: fault.what, cause: describe(fault.cause), ts: Date.now() };
    const sent = (async () => {
      if (nc.isClosed()) return;
      nc.publish(engineFaultSubject(shard), encode(notice));
      await nc.flush();
    })();
    void Promise.race([sent, new Promise((r) => setTimeout(r, NOTICE_MS).unref())])
      // The notice is a courtesy; the exit below is what matters.
      .catch(() => {})
      .finally(() => onFatal(fault));
  };
}

const describe = (err: unknown): string => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));
