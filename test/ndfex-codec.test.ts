import { describe, expect, it } from 'vitest';
import {
  CLEARING_FILL_BYTES,
  CLEARING_HEADER_BYTES,
  CLEARING_MAGIC,
  MD_HEADER_BYTES,
  MD_MAGIC,
  SNAPSHOT_MAGIC,
  decodeClearingDatagram,
  decodeMdDatagram,
  encodeClearingDatagram,
  encodeMdDatagram,
  type ClearingMessage,
  type MdMessage,
} from '../proto/ndfex.js';

/*
 * Every expected byte buffer here is written by hand from docs/ndfex-protocol.md, field
 * by field at explicit offsets, never with the encoder under test: a layout
 * mistake shared by encoder and decoder would otherwise pass unnoticed.
 */

// Little-endian writers at an explicit offset.
const u8 = (b: Buffer, off: number, v: number) => (b[off] = v & 0xff);
const u16 = (b: Buffer, off: number, v: number) => {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
};
const u32 = (b: Buffer, off: number, v: number) => {
  for (let i = 0; i < 4; i++) b[off + i] = (v >>> (8 * i)) & 0xff;
};
const u64 = (b: Buffer, off: number, v: bigint) => {
  for (let i = 0; i < 8; i++) b[off + i] = Number((v >> BigInt(8 * i)) & 0xffn);
};
const ascii = (b: Buffer, off: number, s: string) => {
  for (let i = 0; i < s.length; i++) b[off + i] = s.charCodeAt(i);
};

function clearingHeader(len: number, seq: number, type: number): Buffer {
  const b = Buffer.alloc(len);
  // magic 0x12345678 as u64 LE: 78 56 34 12 00 00 00 00
  b[0] = 0x78; b[1] = 0x56; b[2] = 0x34; b[3] = 0x12;
  u16(b, 8, len);
  u32(b, 10, seq);
  u8(b, 14, type);
  return b;
}

function handFill(seq: number, client: number, symbol: number, qty: number, price: number, side: number): Buffer {
  const b = clearingHeader(32, seq, 1);
  u32(b, 15, client);
  u32(b, 19, symbol);
  u32(b, 23, qty);
  u32(b, 27, price >>> 0); // i32 two's complement
  u8(b, 31, side);
  return b;
}

function mdHeader(len: number, seq: number, ts: bigint, type: number, magic = 'GOIRISH!'): Buffer {
  const b = Buffer.alloc(len);
  ascii(b, 0, magic);
  u16(b, 8, len);
  u32(b, 10, seq);
  u64(b, 14, ts);
  u8(b, 22, type);
  return b;
}

const TS = 1_732_000_000_123_456_789n;
const BIG_ID = 0xfedcba9876543210n;

describe('constants', () => {
  it('match docs/ndfex-protocol.md', () => {
    expect(CLEARING_MAGIC).toBe(0x12345678n);
    expect(MD_MAGIC).toBe(0x2148534952494f47n); // "GOIRISH!" little-endian
    expect(SNAPSHOT_MAGIC).toBe(0x544f485350414e53n); // "SNAPSHOT" little-endian
    expect([CLEARING_HEADER_BYTES, CLEARING_FILL_BYTES, MD_HEADER_BYTES]).toEqual([15, 32, 23]);
  });
});

describe('clearing feed', () => {
  it('decodes a hand-built heartbeat (15 bytes)', () => {
    const b = clearingHeader(15, 7, 0);
    expect(b.length).toBe(15);
    expect(decodeClearingDatagram(b)).toEqual({ messages: [{ type: 'heartbeat', seq: 7 }] });
  });

  it('decodes a hand-built fill (32 bytes) with a negative price and a large client id', () => {
    const b = handFill(0xfffffffe, 0xffffffff, 13, 1000, -250, 2);
    expect(decodeClearingDatagram(b)).toEqual({
      messages: [{ type: 'fill', seq: 0xfffffffe, client_id: 0xffffffff, symbol: 13, quantity: 1000, price: -250, side: 2 }],
    });
  });

  it('encodes byte for byte what docs/ndfex-protocol.md describes', () => {
    const enc = encodeClearingDatagram([
      { type: 'fill', seq: 1, client_id: 3, symbol: 5, quantity: 10, price: 1234, side: 1 },
      { type: 'heartbeat', seq: 2 },
    ]);
    expect(enc.length).toBe(47);
    expect(enc).toEqual(Buffer.concat([handFill(1, 3, 5, 10, 1234, 1), clearingHeader(15, 2, 0)]));
  });

  it('decodes every message of a datagram carrying several', () => {
    const b = Buffer.concat([handFill(10, 1, 3, 5, 100, 1), clearingHeader(15, 11, 0), handFill(12, 2, 4, 6, 200, 2)]);
    const d = decodeClearingDatagram(b);
    expect(d.error).toBeUndefined();
    expect(d.messages.map((m) => m.seq)).toEqual([10, 11, 12]);
    expect(d.messages[2]).toEqual({ type: 'fill', seq: 12, client_id: 2, symbol: 4, quantity: 6, price: 200, side: 2 });
  });

  it('an empty datagram decodes to nothing, without error', () => {
    expect(decodeClearingDatagram(Buffer.alloc(0))).toEqual({ messages: [] });
  });

  it('reports a truncated header and keeps the messages before it', () => {
    const b = Buffer.concat([handFill(1, 1, 3, 5, 100, 1), clearingHeader(15, 2, 0).subarray(0, 10)]);
    const d = decodeClearingDatagram(b);
    expect(d.messages).toHaveLength(1);
    expect(d.error).toMatch(/header needs 15/);
  });

  it('reports a truncated fill body', () => {
    const d = decodeClearingDatagram(handFill(1, 1, 3, 5, 100, 1).subarray(0, 31));
    expect(d.messages).toEqual([]);
    expect(d.error).toMatch(/truncated, 31 of 32/);
  });

  it('reports a wrong magic', () => {
    const b = handFill(1, 1, 3, 5, 100, 1);
    b[4] = 1; // high half of the u64 magic must be zero
    const d = decodeClearingDatagram(Buffer.concat([handFill(1, 1, 3, 5, 100, 1), b]));
    expect(d.messages).toHaveLength(1);
    expect(d.error).toMatch(/wrong magic/);
  });

  it('refuses a market-data message on the clearing feed', () => {
    expect(decodeClearingDatagram(mdHeader(23, 1, TS, 0)).error).toMatch(/wrong magic/);
  });

  it('reports a length that does not match the message type', () => {
    const hb = clearingHeader(32, 1, 0); // heartbeat claiming fill length
    expect(decodeClearingDatagram(hb).error).toMatch(/length 32, msg_type 0 is 15 bytes/);
    const fill = handFill(1, 1, 3, 5, 100, 1);
    u16(fill, 8, 31);
    expect(decodeClearingDatagram(fill).error).toMatch(/length 31, msg_type 1 is 32 bytes/);
    const zero = clearingHeader(15, 1, 0);
    u16(zero, 8, 0); // a zero length must not loop forever
    expect(decodeClearingDatagram(zero).error).toMatch(/length 0/);
  });

  it('reports an unknown msg_type', () => {
    const d = decodeClearingDatagram(Buffer.concat([clearingHeader(15, 1, 0), clearingHeader(15, 2, 9)]));
    expect(d.messages).toEqual([{ type: 'heartbeat', seq: 1 }]);
    expect(d.error).toMatch(/unknown msg_type 9/);
  });

  it('round-trips through encode and decode, also from an offset inside a larger buffer', () => {
    const msgs: ClearingMessage[] = [];
    for (let i = 1; i <= 40; i++) {
      msgs.push(i % 7 === 0 ? { type: 'heartbeat', seq: i } : { type: 'fill', seq: i, client_id: i * 3, symbol: (i % 13) + 1, quantity: i, price: i % 2 ? -i * 5 : i * 5, side: (i % 2) + 1 });
    }
    const enc = encodeClearingDatagram(msgs);
    expect(decodeClearingDatagram(enc)).toEqual({ messages: msgs });
    const padded = Buffer.concat([Buffer.alloc(3, 0xaa), enc]);
    expect(decodeClearingDatagram(padded.subarray(3))).toEqual({ messages: msgs });
  });
});

// Hand-built market-data messages, one per type.
function handNewOrder(seq: number, id: bigint, symbol: number, side: number, qty: number, price: number, flags: number, magic?: string): Buffer {
  const b = mdHeader(45, seq, TS, 1, magic);
  u64(b, 23, id);
  u32(b, 31, symbol);
  u8(b, 35, side);
  u32(b, 36, qty);
  u32(b, 40, price >>> 0);
  u8(b, 44, flags);
  return b;
}
function handDelete(seq: number, id: bigint): Buffer {
  const b = mdHeader(31, seq, TS, 2);
  u64(b, 23, id);
  return b;
}
function handModify(seq: number, id: bigint, side: number, qty: number, price: number): Buffer {
  const b = mdHeader(40, seq, TS, 3);
  u64(b, 23, id);
  u8(b, 31, side);
  u32(b, 32, qty);
  u32(b, 36, price >>> 0);
  return b;
}
function handTrade(seq: number, id: bigint, qty: number, price: number): Buffer {
  const b = mdHeader(39, seq, TS, 4);
  u64(b, 23, id);
  u32(b, 31, qty);
  u32(b, 35, price >>> 0);
  return b;
}
function handSummary(seq: number, symbol: number, side: number, qty: number, price: number): Buffer {
  const b = mdHeader(36, seq, TS, 5);
  u32(b, 23, symbol);
  u8(b, 27, side);
  u32(b, 28, qty);
  u32(b, 32, price >>> 0);
  return b;
}
function handSnapshotInfo(seq: number, symbol: number, bids: number, asks: number, last: number, magic?: string): Buffer {
  const b = mdHeader(39, seq, TS, 6, magic);
  u32(b, 23, symbol);
  u32(b, 27, bids);
  u32(b, 31, asks);
  u32(b, 35, last);
  return b;
}

describe('market-data feed', () => {
  const cases: Array<[string, Buffer, MdMessage]> = [
    ['heartbeat', mdHeader(23, 1, TS, 0), { type: 'heartbeat', seq: 1, timestamp: TS }],
    [
      'new order',
      handNewOrder(2, BIG_ID, 7, 2, 999, -15, 0x81),
      { type: 'new_order', seq: 2, timestamp: TS, order_id: BIG_ID, symbol: 7, side: 2, quantity: 999, price: -15, flags: 0x81 },
    ],
    ['delete order', handDelete(3, 42n), { type: 'delete_order', seq: 3, timestamp: TS, order_id: 42n }],
    [
      'modify order',
      handModify(4, 43n, 1, 12, 105),
      { type: 'modify_order', seq: 4, timestamp: TS, order_id: 43n, side: 1, quantity: 12, price: 105 },
    ],
    ['trade', handTrade(5, 44n, 3, 110), { type: 'trade', seq: 5, timestamp: TS, order_id: 44n, quantity: 3, price: 110 }],
    [
      'trade summary',
      handSummary(6, 12, 2, 30, -5),
      { type: 'trade_summary', seq: 6, timestamp: TS, symbol: 12, aggressor_side: 2, total_quantity: 30, last_price: -5 },
    ],
    [
      'snapshot info',
      handSnapshotInfo(7, 13, 4, 5, 0xffffffff),
      { type: 'snapshot_info', seq: 7, timestamp: TS, symbol: 13, bid_count: 4, ask_count: 5, last_md_seq_num: 0xffffffff },
    ],
  ];
  const lengths = [23, 45, 31, 40, 39, 36, 39];

  it.each(cases.map((c, i) => [...c, lengths[i]] as const))('%s: hand-built bytes decode, encoder writes the same bytes', (_name, bytes, msg, len) => {
    expect(bytes.length).toBe(len);
    expect(decodeMdDatagram(bytes)).toEqual({ messages: [msg] });
    expect(encodeMdDatagram([msg])).toEqual(bytes);
  });

  it('decodes a datagram of trades followed by their trade summary', () => {
    const b = Buffer.concat([handTrade(10, 1n, 2, 100), handTrade(11, 2n, 3, 105), handSummary(12, 4, 1, 5, 105)]);
    const d = decodeMdDatagram(b);
    expect(d.error).toBeUndefined();
    expect(d.messages.map((m) => m.type)).toEqual(['trade', 'trade', 'trade_summary']);
    expect(d.messages.map((m) => m.seq)).toEqual([10, 11, 12]);
  });

  it('decodes every message type back to back in one datagram', () => {
    const b = Buffer.concat(cases.map((c) => c[1]));
    expect(decodeMdDatagram(b)).toEqual({ messages: cases.map((c) => c[2]) });
  });

  it('refuses a snapshot-feed datagram on the live feed and vice versa', () => {
    const snap = handSnapshotInfo(0, 3, 1, 0, 99, 'SNAPSHOT');
    expect(decodeMdDatagram(snap, 'live').error).toMatch(/wrong magic/);
    expect(decodeMdDatagram(handSnapshotInfo(0, 3, 1, 0, 99), 'snapshot').error).toMatch(/wrong magic/);
  });

  it('reports truncation, wrong length and unknown type, keeping what came before', () => {
    const good = handDelete(1, 5n);
    const trunc = decodeMdDatagram(Buffer.concat([good, handNewOrder(2, 6n, 3, 1, 1, 100, 0).subarray(0, 44)]));
    expect(trunc.messages).toHaveLength(1);
    expect(trunc.error).toMatch(/truncated, 44 of 45/);

    const shortHeader = decodeMdDatagram(Buffer.concat([good, Buffer.alloc(22)]));
    expect(shortHeader.messages).toHaveLength(1);
    expect(shortHeader.error).toMatch(/header needs 23/);

    const wrongLen = handTrade(2, 6n, 1, 100);
    u16(wrongLen, 8, 40);
    const wl = decodeMdDatagram(Buffer.concat([good, wrongLen, Buffer.alloc(1)]));
    expect(wl.messages).toHaveLength(1);
    expect(wl.error).toMatch(/length 40, msg_type 4 is 39 bytes/);

    const unknown = decodeMdDatagram(Buffer.concat([good, mdHeader(23, 2, TS, 7)]));
    expect(unknown.messages).toHaveLength(1);
    expect(unknown.error).toMatch(/unknown msg_type 7/);
  });
});

describe('snapshot feed', () => {
  it('decodes hand-built snapshot-info + new orders with the SNAPSHOT magic and seq 0', () => {
    const b = Buffer.concat([
      handSnapshotInfo(0, 5, 1, 1, 1234, 'SNAPSHOT'),
      handNewOrder(0, 100n, 5, 1, 10, 95, 0, 'SNAPSHOT'),
      handNewOrder(0, 101n, 5, 2, 20, 105, 0, 'SNAPSHOT'),
    ]);
    const d = decodeMdDatagram(b, 'snapshot');
    expect(d.error).toBeUndefined();
    expect(d.messages).toEqual([
      { type: 'snapshot_info', seq: 0, timestamp: TS, symbol: 5, bid_count: 1, ask_count: 1, last_md_seq_num: 1234 },
      { type: 'new_order', seq: 0, timestamp: TS, order_id: 100n, symbol: 5, side: 1, quantity: 10, price: 95, flags: 0 },
      { type: 'new_order', seq: 0, timestamp: TS, order_id: 101n, symbol: 5, side: 2, quantity: 20, price: 105, flags: 0 },
    ]);
    expect(encodeMdDatagram(d.messages, 'snapshot')).toEqual(b);
  });
});

describe('market-data round trip', () => {
  it('encode then decode returns the same messages, on both magics', () => {
    const msgs: MdMessage[] = [];
    for (let i = 0; i < 30; i++) {
      const ts = TS + BigInt(i);
      const id = BIG_ID - BigInt(i);
      const all: MdMessage[] = [
        { type: 'heartbeat', seq: i, timestamp: ts },
        { type: 'new_order', seq: i, timestamp: ts, order_id: id, symbol: i % 13, side: 1 + (i % 2), quantity: i + 1, price: -i, flags: i },
        { type: 'delete_order', seq: i, timestamp: ts, order_id: id },
        { type: 'modify_order', seq: i, timestamp: ts, order_id: id, side: 2, quantity: i, price: i * 5 },
        { type: 'trade', seq: i, timestamp: ts, order_id: id, quantity: i, price: -i * 5 },
        { type: 'trade_summary', seq: i, timestamp: ts, symbol: i, aggressor_side: 1, total_quantity: i * 2, last_price: 0x7fffffff },
        { type: 'snapshot_info', seq: i, timestamp: ts, symbol: i, bid_count: i, ask_count: i + 1, last_md_seq_num: i * 1000 },
      ];
      msgs.push(all[i % all.length] as MdMessage);
    }
    for (const feed of ['live', 'snapshot'] as const) {
      expect(decodeMdDatagram(encodeMdDatagram(msgs, feed), feed)).toEqual({ messages: msgs });
    }
  });
});
