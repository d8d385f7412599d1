import { describe, expect, it } from 'vitest';
import { Packr, Unpackr } from 'msgpackr';
import type { Msg } from '@nats-io/transport-node';
import { decode, decodeRecords, encode, encodeRecords, encodeSelfContained } from '../proto/codec.js';
import { sharedRecordShapes, unsharedShapes } from '../proto/records.js';
import { ENGINE_COMMAND_SUBJECT, REPLY_SUBJECT_PREFIX } from '../proto/subjects.js';
import { shardNames } from '../proto/shards.js';
import type { NoticeBatch } from '../proto/holdings.js';
import { buy, undyBasket, until, useSystem } from './helpers/system.js';

/**
 * Engine messages name the record shapes every reader shares
 * (proto/records.ts) and define any other in the message itself. Each
 * message must decode on its own (a reader that saw no earlier message), and
 * the hot messages must use only shared shapes, or the cost they were shared
 * to save comes back unnoticed.
 */

/** A reader that has seen no other message: what a gateway or notice reader started now has. */
const freshReader = () => new Unpackr({ mapsAsObjects: true, int64AsType: 'number', structures: sharedRecordShapes() });

const odd = (i: number) => ({ v: 4, cmds: [{ id: i, cmd: { op: 'set_rules', rules: { fees: { create: { fixed: i, per_unit: 1 } } }, by: 'x' } }, { id: i + 1, cmd: { op: 'ping' } }] });
const hot = (i: number) => ({ v: 4, cmds: [{ id: i, cmd: { op: 'create', clientId: 1, etf: 'UNDY', amount: 2, key: `k${i}` } }] });

describe('shared record shapes', () => {
  it('decodes every message on its own, shapes shared or not, in any order, and never adds to the shared list', () => {
    const messages = Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? odd(i) : i % 3 === 1 ? hot(i) : { ...hot(i), extra: [odd(i), { a: 1 }, { a: 2, b: [{ a: 3 }] }] }));
    for (const m of messages) {
      const bytes = encodeRecords(m);
      expect(freshReader().unpack(bytes)).toEqual(m);
      expect(decodeRecords(bytes)).toEqual(m);
    }
    // Unshared shapes seen ten times are still defined in each message, never promoted to an id only this encoder knows.
    const again = encodeRecords(odd(99));
    expect(freshReader().unpack(again)).toEqual(odd(99));
  });

  it('names shared shapes instead of defining them: smaller than a self-contained message, which decodes alike', () => {
    const m = { v: 4, cmds: Array.from({ length: 3 }, (_, i) => hot(i).cmds[0]) };
    const named = encodeRecords(m);
    const selfContained = encodeSelfContained(m);
    expect(named.byteLength).toBeLessThan(selfContained.byteLength - 40);
    expect(decodeRecords(selfContained)).toEqual(m);
    // A reader without the list (another build) reads the self-contained one and cannot take the named one for anything.
    const bare = new Unpackr({ mapsAsObjects: true, int64AsType: 'number' });
    expect(bare.unpack(selfContained)).toEqual(m);
    expect(() => bare.unpack(named)).toThrow();
  });

  it('leaves plain messages to the plain reader: every small integer reads as itself, after engine messages as before them', () => {
    // A reader that knows shapes takes a one-byte 64, 65... as their ids: fills 64 to 77 of a stream were lost so.
    const fill = (seq: number) => ({ seq, client_id: seq % 9, symbol: seq % 128, side: 1, quantity: seq, price: 100 });
    for (let seq = 0; seq < 300; seq++) {
      if (seq % 50 === 0) decodeRecords(encodeRecords(hot(seq)));
      expect(decode(encode(fill(seq)))).toEqual(fill(seq));
    }
  });

  it('a build of the list before notice batches 3 (one shape fewer) and this one read each other\'s commands and answers alike; its notice batches too', () => {
    // The 14 shapes of engine protocol 4 with notice batches 2: what a build not yet upgraded knows.
    const before = () => sharedRecordShapes().slice(0, 14);
    const packer = (list: string[][]) => new Packr({ useRecords: true, mapsAsObjects: true, int64AsType: 'number', structures: list, maxSharedStructures: list.length });
    const reader = (list: string[][]) => new Unpackr({ mapsAsObjects: true, int64AsType: 'number', structures: list });
    const answer = { v: 4, replies: [{ id: 1, ok: true, result: { request_id: 'r1', client_request_id: 'k', op: 'create', etf: 'UNDY', amount: 2, deltas: [13, 2], fee: 9, basket_version: 0, holdings: { client_id: 1, username: 'team1', seq: 3, positions: [13, 2], cash: -9 } } }] };
    const oldNotices = { v: 2, changes: [], outcomes: [{ request_id: 'r1', client_id: 1, op: 'create', etf: 'UNDY', amount: 2, status: 'accepted', ts: 1, client_request_id: 'k', deltas: [13, 2] }] };
    for (const m of [hot(1), odd(2), { ...hot(3), extra: [odd(4), { a: 1 }] }, answer]) {
      expect(reader(sharedRecordShapes()).unpack(packer(before()).pack(m))).toEqual(m);
      expect(reader(before()).unpack(packer(sharedRecordShapes()).pack(m))).toEqual(m);
    }
    expect(decodeRecords(packer(before()).pack(oldNotices))).toEqual(oldNotices);
  });

  it('lists shapes that are not shared, each once', () => {
    expect(unsharedShapes(hot(1))).toEqual([]);
    expect(unsharedShapes(odd(1)).sort()).toEqual(['create', 'fees', 'fixed,per_unit', 'op', 'op,rules,by']);
    expect(unsharedShapes([{ b: 1, a: 2 }, { b: 3, a: 4 }, { a: 1, b: 2 }])).toEqual(['b,a', 'a,b']);
  });
});

describe('a conversion on the bus', () => {
  const sys = useSystem();

  it('its command batch, answer batch and notice batches use only shared shapes (create, redeem, holdings, fills)', async () => {
    // Signed in first: the password check's read (once per account and gateway) is not a conversion's message.
    expect((await sys.http.holdings('team1', 'team1pass')).status).toBe(200);
    const seen: { subject: string; shapes: string[]; value: unknown }[] = [];
    const notices = shardNames(0, 1).notices;
    const take = (m: Msg) => {
      const value = decodeRecords(m.data);
      seen.push({ subject: m.subject, shapes: unsharedShapes(value), value });
    };
    const subs = [ENGINE_COMMAND_SUBJECT, `${REPLY_SUBJECT_PREFIX}>`, notices].map((s) => sys.nc.subscribe(s, { callback: (_e, m) => take(m) }));
    await sys.nc.flush();
    // Fills: holdings changes with their fill.
    await buy(sys.nc, 1, undyBasket(10));
    expect((await sys.http.create('team1', 'team1pass', 2)).status).toBe(200);
    expect((await sys.http.redeem('team1', 'team1pass', 1)).status).toBe(200);
    expect((await sys.http.holdings('team1', 'team1pass')).status).toBe(200);
    // The redeem's outcome is the last notice of the three requests.
    const outcomes = () => seen.flatMap((s) => (s.subject === notices ? (s.value as NoticeBatch).outcomes : []));
    await until(() => outcomes().some((o) => o.op === 'redeem'), "the redeem's notice");
    for (const s of subs) s.unsubscribe();
    const kinds = new Set(seen.map((s) => (s.subject.startsWith(REPLY_SUBJECT_PREFIX) ? 'reply' : s.subject)));
    expect(kinds).toEqual(new Set([ENGINE_COMMAND_SUBJECT, 'reply', notices]));
    expect(seen.filter((s) => s.subject === notices && (s.value as NoticeBatch).changes.some((c) => c.fill))).not.toEqual([]);
    expect(seen.filter((s) => s.shapes.length > 0).map(({ subject, shapes }) => ({ subject, shapes }))).toEqual([]);
  });
});
