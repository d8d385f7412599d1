import { afterAll, beforeAll, expect, it } from 'vitest';
import { readFileSync, rmSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { encode } from '../proto/codec.js';
import { JOURNAL_SUBJECT } from '../proto/subjects.js';
import { JOURNAL_VERSION, type JournalEvent } from '../proto/journal.js';
import { ScoreboardWriter, scoreboardLines } from '../src/engine/scoreboard.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { natsClient, startTestNats, tempDir, until } from './helpers/system.js';

/**
 * The scoreboard file's catch-up over a long journal (a first start on an old
 * journal, or after the file was deleted): a stop in the middle of it does not
 * wait for the rest, and the next start finishes it with every line once.
 */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
const dir = tempDir();
const BATCHES = 3000;
const PER_BATCH = 10;
/** The events here spell their deltas out (no basket versions to resolve). */
const deltasOf = (ev: Extract<JournalEvent, { t: 'conversion' }>) => (ev.deltas ?? []).flat();

beforeAll(async () => {
  nats = await startTestNats();
  nc = await natsClient(nats.url);
  await ensureJournalStream(nc);
  const js = jetstream(nc);
  let requestId = 0;
  const acks: Promise<unknown>[] = [];
  for (let b = 0; b < BATCHES; b++) {
    const events: JournalEvent[] = Array.from({ length: PER_BATCH }, () => ({
      t: 'conversion' as const,
      requestId: ++requestId,
      op: 'create' as const,
      clientId: 1,
      etf: 'UNDY',
      amount: 1,
      deltas: [
        [3, -1],
        [13, 1],
      ],
      ts: 1_700_000_000_000 + requestId,
    }));
    acks.push(js.publish(JOURNAL_SUBJECT, encode({ v: JOURNAL_VERSION, events }), { expect: { lastSequence: b } }));
    if (acks.length >= 200) await Promise.all(acks.splice(0));
  }
  await Promise.all(acks);
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  nats?.remove();
  dir.remove();
});

it('stops a long catch-up at a stop, and the next start completes it with every line once', async () => {
  const path = join(dir.path, 'conversions.log');
  // An empty position file (stopped before the first window was written) is the start of the journal.
  const position = () => JSON.parse(readFileSync(`${path}.pos`, 'utf8') || '{"seq":0,"bytes":0}') as { seq: number; bytes: number };
  const errors: unknown[] = [];

  const first = new ScoreboardWriter(path, (err) => errors.push(err), deltasOf as never);
  first.startCatchUp(nc, BATCHES);
  await first.close();
  const stopped = position();
  // Stopped part-way, and what is in the file is exactly what the position says.
  expect(stopped.seq).toBeLessThan(BATCHES);
  const partial = readFileSync(path, 'utf8');
  expect(Buffer.byteLength(partial)).toBe(stopped.bytes);
  expect(partial.split('\n').filter(Boolean)).toHaveLength(stopped.seq * PER_BATCH * 2);

  const second = new ScoreboardWriter(path, (err) => errors.push(err), deltasOf as never);
  second.startCatchUp(nc, BATCHES);
  await second.flush();
  await second.close();
  expect(position().seq).toBe(BATCHES);
  const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
  expect(lines).toHaveLength(BATCHES * PER_BATCH * 2);
  // Each conversion's two legs, in journal order, none twice.
  expect(new Set(lines).size).toBe(lines.length);
  expect(errors).toEqual([]);
}, 60_000);

it('writes live appends gathered, in order, and close() writes what is still held back', async () => {
  const path = join(dir.path, 'live.log');
  const errors: unknown[] = [];
  const writer = new ScoreboardWriter(path, (err) => errors.push(err), deltasOf as never);
  writer.startCatchUp(nc, BATCHES);
  await writer.flush();
  const event = (requestId: number): JournalEvent => ({ t: 'conversion', requestId, op: 'redeem', clientId: 2, etf: 'UNDY', amount: 1, deltas: [[3, requestId]], ts: 1_800_000_000_000 });
  // One append per group commit, as the engine does: many within the gathering interval, then one more after a write went out.
  for (let k = 1; k <= 50; k++) writer.append([event(k)], BATCHES + k);
  await writer.flush();
  writer.append([event(51)], BATCHES + 51);
  await writer.close();
  const text = readFileSync(path, 'utf8');
  const live = text.split('\n').filter((l) => l.includes(' redeem 2 '));
  expect(live.map((l) => Number(l.split(' ').pop()))).toEqual(Array.from({ length: 51 }, (_, i) => i + 1));
  const position = JSON.parse(readFileSync(`${path}.pos`, 'utf8')) as { seq: number; bytes: number };
  expect(position).toEqual({ seq: BATCHES + 51, bytes: Buffer.byteLength(text) });
  expect(errors).toEqual([]);
}, 60_000);

it('writes each leg with the conversion time in exact nanoseconds', () => {
  const at = (ts: number): JournalEvent => ({ t: 'conversion', requestId: 1, op: 'create', clientId: 9, etf: 'UNDY', amount: 2, deltas: [[3, -2], [13, 2]], ts });
  expect(scoreboardLines([at(1_764_651_000_123), at(0)], deltasOf as never)).toBe(
    '1764651000123000000 create 9 3 -2\n1764651000123000000 create 9 13 2\n0 create 9 3 -2\n0 create 9 13 2\n',
  );
});

it('conversions sharing one frozen delta list (one basket version and amount) each get their own head on every leg', () => {
  const shared = Object.freeze([3, -2, 13, 2]);
  const other = Object.freeze([3, -4, 13, 4]);
  const ev = (clientId: number, ts: number): JournalEvent => ({ t: 'conversion', requestId: clientId, op: 'create', clientId, etf: 'UNDY', amount: 2, ts });
  const of = new Map<number, readonly number[]>([[1, shared], [2, other], [3, shared]]);
  const text = scoreboardLines([ev(1, 5), ev(2, 6), ev(3, 7)], ((e: { clientId: number }) => of.get(e.clientId)!) as never);
  expect(text).toBe('5000000 create 1 3 -2\n5000000 create 1 13 2\n6000000 create 2 3 -4\n6000000 create 2 13 4\n7000000 create 3 3 -2\n7000000 create 3 13 2\n');
  // Again, from the kept ends.
  expect(scoreboardLines([ev(3, 7)], ((e: { clientId: number }) => of.get(e.clientId)!) as never)).toBe('7000000 create 3 3 -2\n7000000 create 3 13 2\n');
});

it('writes again, after a pause, the lines of an append that failed, and nothing of its torn part', async () => {
  const path = join(dir.path, 'failing.log');
  const errors: unknown[] = [];
  const writer = new ScoreboardWriter(path, (err) => errors.push(err), deltasOf as never);
  writer.startCatchUp(nc, BATCHES);
  await writer.flush();
  const caughtUp = readFileSync(path, 'utf8');
  // The disk full for a moment: the first write of lines puts part of them in the file, then fails.
  const file = (writer as unknown as { file: { write: (text: string, at: null, enc: string) => Promise<unknown> } }).file;
  const write = file.write.bind(file);
  let failures = 0;
  file.write = async (text, at, enc) => {
    if (failures++ > 0) return write(text, at, enc);
    await write(text.slice(0, 7), at, enc);
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  };
  const event = (requestId: number): JournalEvent => ({ t: 'conversion', requestId, op: 'create', clientId: 3, etf: 'UNDY', amount: 1, deltas: [[4, -requestId]], ts: 1_800_000_000_000 });
  writer.append([event(1)], BATCHES + 1);
  await writer.flush();
  expect(errors).toHaveLength(1);
  // A later batch: before, its write moved the position past the failed one's lines, which no start wrote again.
  writer.append([event(2)], BATCHES + 2);
  await writer.close();
  const text = readFileSync(path, 'utf8');
  expect(text.slice(0, caughtUp.length)).toBe(caughtUp);
  expect(text.slice(caughtUp.length)).toBe('1800000000000000000 create 3 4 -1\n1800000000000000000 create 3 4 -2\n');
  const position = JSON.parse(readFileSync(`${path}.pos`, 'utf8')) as { seq: number; bytes: number };
  expect(position).toEqual({ seq: BATCHES + 2, bytes: Buffer.byteLength(text) });
}, 60_000);

it('writes the whole file again from the journal when it is shorter than its position says (deleted or cut)', async () => {
  const path = join(dir.path, 'deleted.log');
  const complete = async () => {
    const w = new ScoreboardWriter(path, (err) => errors.push(err), deltasOf as never);
    w.startCatchUp(nc, BATCHES);
    await w.flush();
    await w.close();
    return readFileSync(path, 'utf8');
  };
  const errors: unknown[] = [];
  const whole = await complete();
  expect(whole.split('\n').filter(Boolean)).toHaveLength(BATCHES * PER_BATCH * 2);
  // Deleted with its position left: before, it came back empty (the position said everything was written).
  rmSync(path);
  expect(await complete()).toBe(whole);
  // Cut by hand in the middle.
  truncateSync(path, Math.floor(whole.length / 3));
  expect(await complete()).toBe(whole);
  expect(errors).toEqual([]);
}, 60_000);

it('tries a failed catch-up again, live appends queued meanwhile, and writes every line once', async () => {
  const path = join(dir.path, 'catch-up-failed.log');
  const errors: unknown[] = [];
  const writer = new ScoreboardWriter(path, (err) => errors.push(err), deltasOf as never);
  // The first window's write fails (a journal read timing out does the same): before, the writer gave up for the rest of the run.
  const w = writer as unknown as { write: (text: string, seq: number) => Promise<void> };
  const write = w.write.bind(writer);
  let calls = 0;
  w.write = (text, seq) => (calls++ === 0 ? Promise.reject(new Error('EIO: i/o error, read')) : write(text, seq));
  writer.startCatchUp(nc, BATCHES);
  const event = (requestId: number): JournalEvent => ({ t: 'conversion', requestId, op: 'redeem', clientId: 4, etf: 'UNDY', amount: 1, deltas: [[5, requestId]], ts: 1_800_000_000_000 });
  writer.append([event(1)], BATCHES + 1);
  const position = () => {
    try {
      return JSON.parse(readFileSync(`${path}.pos`, 'utf8') || '{"seq":0}') as { seq: number; bytes: number };
    } catch {
      return { seq: 0, bytes: 0 };
    }
  };
  await until(() => position().seq === BATCHES + 1, 'the catch-up tried again and the append written', 20_000);
  await writer.close();
  expect(errors).toHaveLength(1);
  const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
  expect(lines).toHaveLength(BATCHES * PER_BATCH * 2 + 1);
  expect(new Set(lines).size).toBe(lines.length);
  expect(lines.at(-1)).toBe('1800000000000000000 redeem 4 5 1');
}, 60_000);
