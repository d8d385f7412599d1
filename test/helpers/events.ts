import type { NatsConnection } from '@nats-io/transport-node';
import { decodeRecords } from '../../proto/codec.js';
import type { HoldingsNotice, NoticeBatch } from '../../proto/holdings.js';
import { NOTICES_SUBJECT_WILDCARD } from '../../proto/subjects.js';

/**
 * Resolves with the first holdings change of the account, among those the
 * engine publishes from now on, for which `done(change, seen)` is true
 * (`seen`: the account's changes so far, this one included).
 * Subscribe (call this) before causing the changes.
 */
export function awaitHoldings(nc: NatsConnection, clientId: number, done: (c: HoldingsNotice, seen: number) => boolean, what: string, timeoutMs = 15_000): Promise<HoldingsNotice> {
  const sub = nc.subscribe(NOTICES_SUBJECT_WILDCARD);
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  return (async () => {
    let seen = 0;
    for await (const m of sub) {
      for (const change of decodeRecords<NoticeBatch>(m.data).changes) {
        if (change.client_id !== clientId) continue;
        if (done(change, ++seen)) {
          clearTimeout(timer);
          sub.unsubscribe();
          return change;
        }
      }
    }
    throw new Error(`timed out after ${seen} holdings changes for client ${clientId}, waiting for ${what}`);
  })();
}

/**
 * Resolves once the engine has published `count` holdings changes for the
 * account: the event that says fills (or conversions) are applied and durable.
 */
export const awaitHoldingsSeq = (nc: NatsConnection, clientId: number, count: number, timeoutMs = 15_000): Promise<HoldingsNotice> =>
  awaitHoldings(nc, clientId, (_, seen) => seen >= count, `${count} changes`, timeoutMs);
