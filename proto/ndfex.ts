/**
 * NDFEX binary layouts (docs/ndfex-protocol.md): the clearing feed, the
 * market-data feed and its snapshot feed. Little-endian, packed.
 *
 * Every datagram may carry several messages back to back; decoders walk it by
 * each header's length field and return all of them (the exchange's own
 * service drops everything after the first message of a datagram: we must not).
 * The simulator encodes with the same functions, so layout lives in one place.
 */

const asciiLe = (s: string): bigint => Buffer.from(s, 'latin1').readBigUInt64LE(0);

/** The exchange's multicast feeds (group:port) and the interface of a local setup. */
export const NDFEX_DEFAULT_FEEDS = {
  clearing: '239.0.0.2:12346',
  marketData: '239.0.0.1:12345',
  snapshot: '239.0.0.3:12345',
  iface: '127.0.0.1',
} as const;

export const CLEARING_MAGIC = 0x12345678n;
/** The ASCII bytes "GOIRISH!" read as a little-endian u64. */
export const MD_MAGIC = asciiLe('GOIRISH!');
/** The ASCII bytes "SNAPSHOT" read as a little-endian u64. */
export const SNAPSHOT_MAGIC = asciiLe('SNAPSHOT');

export const CLEARING_HEADER_BYTES = 15;
export const CLEARING_FILL_BYTES = 32;
export const MD_HEADER_BYTES = 23;

export const CLEARING_TYPE = { heartbeat: 0, fill: 1 } as const;
export const MD_TYPE = {
  heartbeat: 0,
  new_order: 1,
  delete_order: 2,
  modify_order: 3,
  trade: 4,
  trade_summary: 5,
  snapshot_info: 6,
} as const;

/** Whole-message length of each market-data msg_type (index = msg_type). */
export const MD_MESSAGE_BYTES: readonly number[] = [23, 45, 31, 40, 39, 36, 39];
const CLEARING_MESSAGE_BYTES: readonly number[] = [CLEARING_HEADER_BYTES, CLEARING_FILL_BYTES];

export type ClearingMessage =
  | { type: 'heartbeat'; seq: number }
  | { type: 'fill'; seq: number; client_id: number; symbol: number; quantity: number; price: number; side: number };

export type MdMessage =
  | { type: 'heartbeat'; seq: number; timestamp: bigint }
  | { type: 'new_order'; seq: number; timestamp: bigint; order_id: bigint; symbol: number; side: number; quantity: number; price: number; flags: number }
  | { type: 'delete_order'; seq: number; timestamp: bigint; order_id: bigint }
  | { type: 'modify_order'; seq: number; timestamp: bigint; order_id: bigint; side: number; quantity: number; price: number }
  | { type: 'trade'; seq: number; timestamp: bigint; order_id: bigint; quantity: number; price: number }
  | { type: 'trade_summary'; seq: number; timestamp: bigint; symbol: number; aggressor_side: number; total_quantity: number; last_price: number }
  | { type: 'snapshot_info'; seq: number; timestamp: bigint; symbol: number; bid_count: number; ask_count: number; last_md_seq_num: number };

/** Which market-data multicast a datagram came from; selects the magic. */
export type MdFeed = 'live' | 'snapshot';

export interface Decoded<M> {
  messages: M[];
  /** Why decoding stopped early; the messages before the bad one are kept. */
  error?: string;
}

const mdMagic = (feed: MdFeed): bigint => (feed === 'snapshot' ? SNAPSHOT_MAGIC : MD_MAGIC);

// Magic compared as two u32 halves: no BigInt allocation per message on the hot path.
const lo32 = (m: bigint): number => Number(m & 0xffffffffn);
const hi32 = (m: bigint): number => Number(m >> 32n);
const CLEARING_MAGIC_LO = lo32(CLEARING_MAGIC);
const CLEARING_MAGIC_HI = hi32(CLEARING_MAGIC);
const MD_MAGIC_LO = lo32(MD_MAGIC);
const MD_MAGIC_HI = hi32(MD_MAGIC);
const SNAPSHOT_MAGIC_LO = lo32(SNAPSHOT_MAGIC);
const SNAPSHOT_MAGIC_HI = hi32(SNAPSHOT_MAGIC);

const view = (buf: Uint8Array): DataView => new DataView(buf.buffer, buf.byteOffset, buf.byteLength);

// ---------------------------------------------------------------- clearing

export function clearingMessageBytes(m: ClearingMessage): number {
  return m.type === 'fill' ? CLEARING_FILL_BYTES : CLEARING_HEADER_BYTES;
}

/** One datagram carrying the messages back to back. */
export function encodeClearingDatagram(msgs: ClearingMessage[]): Buffer {
  let total = 0;
  for (const m of msgs) total += clearingMessageBytes(m);
  const buf = Buffer.alloc(total);
  let off = 0;
  for (const m of msgs) {
    const len = clearingMessageBytes(m);
    buf.writeBigUInt64LE(CLEARING_MAGIC, off);
    buf.writeUInt16LE(len, off + 8);
    buf.writeUInt32LE(m.seq, off + 10);
    buf.writeUInt8(CLEARING_TYPE[m.type], off + 14);
    if (m.type === 'fill') {
      buf.writeUInt32LE(m.client_id, off + 15);
      buf.writeUInt32LE(m.symbol, off + 19);
      buf.writeUInt32LE(m.quantity, off + 23);
      buf.writeInt32LE(m.price, off + 27);
      buf.writeUInt8(m.side, off + 31);
    }
    off += len;
  }
  return buf;
}

export function decodeClearingDatagram(buf: Uint8Array): Decoded<ClearingMessage> {
  const dv = view(buf);
  const messages: ClearingMessage[] = [];
  const end = buf.byteLength;
  let off = 0;
  while (off < end) {
    if (end - off < CLEARING_HEADER_BYTES) {
      return { messages, error: `clearing message at byte ${off}: ${end - off} bytes left, header needs ${CLEARING_HEADER_BYTES}` };
    }
    if (dv.getUint32(off, true) !== CLEARING_MAGIC_LO || dv.getUint32(off + 4, true) !== CLEARING_MAGIC_HI) {
      return { messages, error: `clearing message at byte ${off}: wrong magic 0x${dv.getBigUint64(off, true).toString(16)}` };
    }
    const len = dv.getUint16(off + 8, true);
    const seq = dv.getUint32(off + 10, true);
    const type = dv.getUint8(off + 14);
    const want = CLEARING_MESSAGE_BYTES[type];
    if (want === undefined) return { messages, error: `clearing message at byte ${off} (seq ${seq}): unknown msg_type ${type}` };
    if (len !== want) {
      return { messages, error: `clearing message at byte ${off} (seq ${seq}): length ${len}, msg_type ${type} is ${want} bytes` };
    }
    if (end - off < len) {
      return { messages, error: `clearing message at byte ${off} (seq ${seq}): truncated, ${end - off} of ${len} bytes` };
    }
    if (type === CLEARING_TYPE.fill) {
      messages.push({
        type: 'fill',
        seq,
        client_id: dv.getUint32(off + 15, true),
        symbol: dv.getUint32(off + 19, true),
        quantity: dv.getUint32(off + 23, true),
        price: dv.getInt32(off + 27, true),
        side: dv.getUint8(off + 31),
      });
    } else {
      messages.push({ type: 'heartbeat', seq });
    }
    off += len;
  }
  return { messages };
}

// ---------------------------------------------------------------- market data

export function mdMessageBytes(m: MdMessage): number {
  return MD_MESSAGE_BYTES[MD_TYPE[m.type]] as number;
}

/** One datagram carrying the messages back to back; `feed` selects the magic (default live). */
export function encodeMdDatagram(msgs: MdMessage[], feed: MdFeed = 'live'): Buffer {
  let total = 0;
  for (const m of msgs) total += mdMessageBytes(m);
  const buf = Buffer.alloc(total);
  const magic = mdMagic(feed);
  let off = 0;
  for (const m of msgs) {
    const len = mdMessageBytes(m);
    buf.writeBigUInt64LE(magic, off);
    buf.writeUInt16LE(len, off + 8);
    buf.writeUInt32LE(m.seq, off + 10);
    buf.writeBigUInt64LE(m.timestamp, off + 14);
    buf.writeUInt8(MD_TYPE[m.type], off + 22);
    const b = off + MD_HEADER_BYTES;
    switch (m.type) {
      case 'heartbeat':
        break;
      case 'new_order':
        buf.writeBigUInt64LE(m.order_id, b);
        buf.writeUInt32LE(m.symbol, b + 8);
        buf.writeUInt8(m.side, b + 12);
        buf.writeUInt32LE(m.quantity, b + 13);
        buf.writeInt32LE(m.price, b + 17);
        buf.writeUInt8(m.flags, b + 21);
        break;
      case 'delete_order':
        buf.writeBigUInt64LE(m.order_id, b);
        break;
      case 'modify_order':
        buf.writeBigUInt64LE(m.order_id, b);
        buf.writeUInt8(m.side, b + 8);
        buf.writeUInt32LE(m.quantity, b + 9);
        buf.writeInt32LE(m.price, b + 13);
        break;
      case 'trade':
        buf.writeBigUInt64LE(m.order_id, b);
        buf.writeUInt32LE(m.quantity, b + 8);
        buf.writeInt32LE(m.price, b + 12);
        break;
      case 'trade_summary':
        buf.writeUInt32LE(m.symbol, b);
        buf.writeUInt8(m.aggressor_side, b + 4);
        buf.writeUInt32LE(m.total_quantity, b + 5);
        buf.writeInt32LE(m.last_price, b + 9);
        break;
      case 'snapshot_info':
        buf.writeUInt32LE(m.symbol, b);
        buf.writeUInt32LE(m.bid_count, b + 4);
        buf.writeUInt32LE(m.ask_count, b + 8);
        buf.writeUInt32LE(m.last_md_seq_num, b + 12);
        break;
    }
    off += len;
  }
  return buf;
}

export function decodeMdDatagram(buf: Uint8Array, feed: MdFeed = 'live'): Decoded<MdMessage> {
  const dv = view(buf);
  const magicLo = feed === 'snapshot' ? SNAPSHOT_MAGIC_LO : MD_MAGIC_LO;
  const magicHi = feed === 'snapshot' ? SNAPSHOT_MAGIC_HI : MD_MAGIC_HI;
  const messages: MdMessage[] = [];
  const end = buf.byteLength;
  let off = 0;
  while (off < end) {
    if (end - off < MD_HEADER_BYTES) {
      return { messages, error: `${feed} md message at byte ${off}: ${end - off} bytes left, header needs ${MD_HEADER_BYTES}` };
    }
    if (dv.getUint32(off, true) !== magicLo || dv.getUint32(off + 4, true) !== magicHi) {
      return { messages, error: `${feed} md message at byte ${off}: wrong magic 0x${dv.getBigUint64(off, true).toString(16)}` };
    }
    const len = dv.getUint16(off + 8, true);
    const seq = dv.getUint32(off + 10, true);
    const type = dv.getUint8(off + 22);
    const want = MD_MESSAGE_BYTES[type];
    if (want === undefined) return { messages, error: `${feed} md message at byte ${off} (seq ${seq}): unknown msg_type ${type}` };
    if (len !== want) {
      return { messages, error: `${feed} md message at byte ${off} (seq ${seq}): length ${len}, msg_type ${type} is ${want} bytes` };
    }
    if (end - off < len) {
      return { messages, error: `${feed} md message at byte ${off} (seq ${seq}): truncated, ${end - off} of ${len} bytes` };
    }
    const timestamp = dv.getBigUint64(off + 14, true);
    const b = off + MD_HEADER_BYTES;
    switch (type) {
      case MD_TYPE.heartbeat:
        messages.push({ type: 'heartbeat', seq, timestamp });
        break;
      case MD_TYPE.new_order:
        messages.push({
          type: 'new_order',
          seq,
          timestamp,
          order_id: dv.getBigUint64(b, true),
          symbol: dv.getUint32(b + 8, true),
          side: dv.getUint8(b + 12),
          quantity: dv.getUint32(b + 13, true),
          price: dv.getInt32(b + 17, true),
          flags: dv.getUint8(b + 21),
        });
        break;
      case MD_TYPE.delete_order:
        messages.push({ type: 'delete_order', seq, timestamp, order_id: dv.getBigUint64(b, true) });
        break;
      case MD_TYPE.modify_order:
        messages.push({
          type: 'modify_order',
          seq,
          timestamp,
          order_id: dv.getBigUint64(b, true),
          side: dv.getUint8(b + 8),
          quantity: dv.getUint32(b + 9, true),
          price: dv.getInt32(b + 13, true),
        });
        break;
      case MD_TYPE.trade:
        messages.push({
          type: 'trade',
          seq,
          timestamp,
          order_id: dv.getBigUint64(b, true),
          quantity: dv.getUint32(b + 8, true),
          price: dv.getInt32(b + 12, true),
        });
        break;
      case MD_TYPE.trade_summary:
        messages.push({
          type: 'trade_summary',
          seq,
          timestamp,
          symbol: dv.getUint32(b, true),
          aggressor_side: dv.getUint8(b + 4),
          total_quantity: dv.getUint32(b + 5, true),
          last_price: dv.getInt32(b + 9, true),
        });
        break;
      default: // MD_TYPE.snapshot_info: the table above admits no other type
        messages.push({
          type: 'snapshot_info',
          seq,
          timestamp,
          symbol: dv.getUint32(b, true),
          bid_count: dv.getUint32(b + 4, true),
          ask_count: dv.getUint32(b + 8, true),
          last_md_seq_num: dv.getUint32(b + 12, true),
        });
        break;
    }
    off += len;
  }
  return { messages };
}
