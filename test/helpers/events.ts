import type { NatsConnection } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import type { HoldingsNotice } from '../../proto/holdings.js';
import { holdingsSubject } from '../../proto/subjects.js';

/**
 * Resolves once the engine has published `count` holdings changes for the
 * account: the event that says fills (or conversions) are applied and durable.
 * Subscribe before causing the changes.
 */
export function awaitHoldingsSeq(nc: NatsConnection, clientId: number, count: number, timeoutMs = 15_000): Promise<HoldingsNotice> {
  const sub = nc.subscribe(holdingsSubject(clientId));
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  return (async () => {
    let seen = 0;
    for await (const m of sub) {
      const change = decode<HoldingsNotice>(m.data);
      if (++seen >= count) {
        clearTimeout(timer);
        sub.unsubscribe();
        return change;
      }
    }
    throw new Error(`timed out after ${seen}/${count} holdings changes for client ${clientId}`);
  })();
}
