import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { JournalWriter, conversionBytesAtMost, journalMessages, replayJournal } from '../src/engine/journal.js';
import { ReplayMerge, type Stamped } from '../src/engine/replay.js';
import { JS_HEADER_BYTES } from '../src/shared/nats.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { decode, encode } from '../proto/codec.js';
import { JOURNAL_STREAM, JOURNAL_SUBJECT } from '../proto/subjects.js';
import { JOURNAL_VERSION, type JournalBatch, type JournalEvent } from '../proto/journal.js';
import { startTestNats, useTestNats } from './helpers/system.js';

/** A journal event that says which batch it was: its ts. */
const batch = (n: number): JournalEvent[] => [{ t: 'operator', action: 'halt', etf: null, reason: `batch ${n}`, by: 'test', ts: n }];

async function journalTs(nc: NatsConnection): Promise<number[]> {
  const seen: number[] = [];
  await replayJournal(nc, 1, (events) => seen.push(...events.map((e) => e.ts)));
  return seen;
}

/**
 * The journal writer lets appends overlap (the engine writes one group while
 * the next fills). Overlap must never cost order, and must never let a batch
 * land after another writer's.
 */
describe('journal writer: overlapping appends', () => {
  const bus = useTestNats();

  it('acknowledges overlapping appends in order, each stored once at the sequence it named', async () => {
    await ensureJournalStream(bus.nc);
    const w = new JournalWriter(bus.nc, 0);
    const acked: number[] = [];
    const seqs = await Promise.all(Array.from({ length: 50 }, (_, i) => w.append(batch(i + 1)).then((seq) => (acked.push(seq), seq))));
    expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(acked).toEqual(seqs);
    expect(w.sequence).toBe(50);
    expect(await journalTs(bus.nc)).toEqual(seqs);
  });

  it('refuses a batch sent behind one another writer got ahead of: nothing of ours lands after a foreign batch', async () => {
    const jsm = await jetstreamManager(bus.nc);
    await jsm.streams.purge(JOURNAL_STREAM);
    const last = (await jsm.streams.info(JOURNAL_STREAM)).state.last_seq;
    const mine = new JournalWriter(bus.nc, last);
    // Another engine (started by mistake) writes first.
    await jetstream(bus.nc).publish(JOURNAL_SUBJECT, encode({ v: JOURNAL_VERSION, events: batch(900) }), { expect: { lastSequence: last } });
    const first = mine.append(batch(901));
    const second = mine.append(batch(902));
    await expect(first).rejects.toThrow(/wrong last sequence/);
    // The second names the first as the stream's last message: the foreign one is there, so it is refused, not stored after it.
    await expect(second).rejects.toThrow();
    const info = await jsm.streams.info(JOURNAL_STREAM);
    expect(info.state.last_seq).toBe(last + 1);
    expect(info.state.messages).toBe(1);
  });
});

describe('journal writer: appends in flight while the server restarts', () => {
  let server: NatsServer;
  let store: Awaited<ReturnType<typeof startTestNats>>;
  let nc: NatsConnection;

  beforeAll(async () => {
    store = await startTestNats();
    server = store;
    nc = await connect({ servers: store.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
    await ensureJournalStream(nc);
  });
  afterAll(async () => {
    await nc?.close();
    await server?.stop();
    store?.remove();
  });

  it('stores each batch once, in the order appended, when every first attempt went unanswered', async () => {
    const w = new JournalWriter(nc, 0, { attemptTimeoutMs: 300, deadlineMs: 20_000 });
    expect(await w.append(batch(1))).toBe(1);
    await server.stop();
    const pending = [2, 3, 4, 5].map((n) => w.append(batch(n)));
    server = await startNatsServer({ port: store.port, storeDir: store.storeDir });
    expect(await Promise.all(pending)).toEqual([2, 3, 4, 5]);
    expect(await journalTs(nc)).toEqual([1, 2, 3, 4, 5]);
  });
});

/** An event of about `bytes` bytes that says which it was: its ts. */
const sized = (ts: number, bytes: number): JournalEvent => ({ t: 'operator', action: 'halt', etf: null, reason: 'r'.repeat(bytes), by: 'test', ts });

/**
 * A batch over the server's max_payload was one publish the client refused,
 * and the engine went down at its first busy moment on a server with a small
 * limit. It is written as several journal messages, each a batch of its own
 * whose fill positions put its events where the whole batch did.
 */
describe('journal messages under max_payload', () => {
  const LIMIT = 2048;
  const events = Array.from({ length: 40 }, (_, i) => sized(i, 90 + (i % 7) * 20));
  // Fill positions change at events 0, 5, 17 and 30.
  const fills = [0, 10, 5, 11, 17, 15, 30, 20];

  it('one message as before when it fits', () => {
    const { messages, tooLarge } = journalMessages(events.slice(0, 3), [0, 10], 1024 * 1024);
    expect(tooLarge).toBeNull();
    expect(messages).toHaveLength(1);
    expect(decode(messages[0]!)).toEqual({ v: JOURNAL_VERSION, events: events.slice(0, 3), fills: [0, 10] });
  });

  it('several under the limit, replayed among the fills exactly as the whole batch', () => {
    const { messages, tooLarge } = journalMessages(events, fills, LIMIT);
    expect(tooLarge).toBeNull();
    expect(messages.length).toBeGreaterThan(2);
    for (const m of messages) expect(m.byteLength).toBeLessThanOrEqual(LIMIT - JS_HEADER_BYTES);
    const batches = messages.map((m) => decode<JournalBatch>(m));
    expect(batches.flatMap((b) => b.events)).toEqual(events);
    for (const b of batches) expect(b.fills?.[0]).toBe(0);
    // The order replay applies events and fills 1..25 in, from the whole batch and from its messages.
    const order = (records: JournalBatch[]) => {
      const out: string[] = [];
      let fillSeq = 0;
      const merge = new ReplayMerge<Stamped>({ event: (ev) => out.push(`event ${ev.ts}`), batchDone: () => {}, fill: (m) => out.push(`fill ${(fillSeq = m.seq)}`), fillSeq: () => fillSeq }, 'journal-first');
      records.forEach((r, i) => merge.pushBatch(i + 1, 0n, r));
      for (let seq = 1; seq <= 25; seq++) merge.pushFill({ seq, ns: 0n });
      merge.endJournal();
      merge.endFills();
      return out;
    };
    expect(order(batches)).toEqual(order([{ v: JOURNAL_VERSION, events, fills }]));
  });

  it("counts a conversion's bytes, held positions included, at least as they encode, before they are known", () => {
    for (const key of [undefined, 'k', 'é'.repeat(64), 'long-'.repeat(300)]) {
      for (const positions of [0, 1, 12, 200]) {
        const ev = { t: 'conversion', requestId: 2 ** 40, ...(key ? { key } : {}), op: 'create', clientId: 7, etf: 'UNDY', amount: 1e6, fee: 0.25, basketVersion: 3, ts: Date.now() } as const;
        const held = Array.from({ length: positions * 2 }, (_, i) => (i % 2 ? -(2 ** 52) - 0.5 : i));
        const bytes = encode({ ...ev, held }).byteLength;
        expect(conversionBytesAtMost(ev, positions)).toBeGreaterThanOrEqual(bytes);
        expect(conversionBytesAtMost(ev, positions, true)).toBeGreaterThanOrEqual(bytes);
      }
    }
  });

  it('names an event no message can hold, writing none of its batch', () => {
    const { tooLarge } = journalMessages([sized(1, 100), sized(2, LIMIT), sized(3, 100)], [0, 4], LIMIT);
    expect(tooLarge).toMatchObject({ event: 'operator', index: 1, limit: LIMIT });
    expect(tooLarge!.bytes).toBeGreaterThan(LIMIT);
  });

  describe('written', () => {
    let nats: Awaited<ReturnType<typeof startTestNats>>;
    let nc: NatsConnection;
    beforeAll(async () => {
      nats = await startTestNats(undefined, { maxPayload: LIMIT });
      nc = await connect({ servers: nats.url });
      await ensureJournalStream(nc);
    });
    afterAll(async () => {
      await nc?.close();
      await nats?.stop();
      nats?.remove();
    });

    it('a batch takes a sequence per message: the append resolves with its last, and `queued` counts them all', async () => {
      const w = new JournalWriter(nc, 0);
      const prepared = w.prepare(events, fills);
      const first = w.append(events, fills, prepared);
      expect(w.queued).toBe(prepared.messages.length);
      const second = w.append(batch(100));
      expect(await first).toBe(prepared.messages.length);
      expect(await second).toBe(prepared.messages.length + 1);
      expect(w.sequence).toBe(prepared.messages.length + 1);
      expect(await journalTs(nc)).toEqual([...events.map((e) => e.ts), 100]);
    });

    it('a batch with an event too large fails unwritten, and nothing is written after it', async () => {
      const jsm = await jetstreamManager(nc);
      const last = (await jsm.streams.info(JOURNAL_STREAM)).state.last_seq;
      const w = new JournalWriter(nc, last);
      await expect(w.append([sized(1, 100), sized(2, LIMIT)])).rejects.toThrow(/over the NATS server's max_payload of 2048/);
      await expect(w.append(batch(101))).rejects.toThrow(/max_payload/);
      expect((await jsm.streams.info(JOURNAL_STREAM)).state.last_seq).toBe(last);
    });
  });
});
