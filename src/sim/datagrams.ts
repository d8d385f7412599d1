import {
  clearingMessageBytes,
  encodeClearingDatagram,
  encodeMdDatagram,
  mdMessageBytes,
  type ClearingMessage,
  type MdFeed,
  type MdMessage,
} from '../../proto/ndfex.js';

/** Datagrams stay under a typical MTU, so none is fragmented on a real network. */
export const MAX_DATAGRAM_BYTES = 1400;

/**
 * Packs groups of market-data messages into as few datagrams as fit under
 * `limit`, keeping each group whole (trades travel with their summary) and
 * the order intact. A group larger than the limit gets a datagram of its own.
 */
export function packMd(groups: readonly MdMessage[][], feed: MdFeed = 'live', limit = MAX_DATAGRAM_BYTES): Buffer[] {
  const out: Buffer[] = [];
  let current: MdMessage[] = [];
  let bytes = 0;
  for (const g of groups) {
    const size = g.reduce((n, m) => n + mdMessageBytes(m), 0);
    if (bytes + size > limit && current.length > 0) {
      out.push(encodeMdDatagram(current, feed));
      current = [];
      bytes = 0;
    }
    current.push(...g);
    bytes += size;
  }
  if (current.length > 0) out.push(encodeMdDatagram(current, feed));
  return out;
}

/** Packs clearing messages, in order, into datagrams under `limit`. */
export function packClearing(msgs: readonly ClearingMessage[], limit = MAX_DATAGRAM_BYTES): Buffer[] {
  const out: Buffer[] = [];
  let current: ClearingMessage[] = [];
  let bytes = 0;
  for (const m of msgs) {
    const size = clearingMessageBytes(m);
    if (bytes + size > limit && current.length > 0) {
      out.push(encodeClearingDatagram(current));
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length > 0) out.push(encodeClearingDatagram(current));
  return out;
}
