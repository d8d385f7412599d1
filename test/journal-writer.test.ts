import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { JournalWriter, replayJournal } from '../src/engine/journal.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { startNatsServer, type NatsServer } from '../src/launcher/nats-server.js';
import { encode } from '../proto/codec.js';
import { JOURNAL_STREAM, JOURNAL_SUBJECT } from '../proto/subjects.js';
import { JOURNAL_VERSION, type JournalEvent } from '../proto/journal.js';
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
