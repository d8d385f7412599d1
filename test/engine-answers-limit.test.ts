import { afterAll, beforeAll, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { Unpackr } from 'msgpackr';
import { encodeRecords } from '../proto/codec.js';
import { ENGINE_PROTOCOL_VERSION, type ReplyBatch } from '../proto/engine.js';
import { ENGINE_COMMAND_SUBJECT, REPLY_SUBJECT_PREFIX } from '../proto/subjects.js';
import { loadBaskets } from '../src/config/baskets.js';
import { EngineActor } from '../src/engine/actor.js';
import { JournalWriter } from '../src/engine/journal.js';
import { emptyState } from '../src/engine/state.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { ensureJournalStream } from '../src/shared/streams.js';
import { natsClient, quietLog, startTestNats } from './helpers/system.js';

/**
 * The engine's answers that are not the usual ones, on a server that allows
 * 4 KB: each refusal is larger than the command it answers, so a batch that
 * fit the limit can be answered by more than fits. Published whole, the
 * publish threw: after a journal write failed, before the fault was reported
 * (the engine ended on an unhandled rejection, naming the publish, not the
 * journal, and the rest of the answers unsent).
 */
const LIMIT = 4096;
let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startTestNats(undefined, { maxPayload: LIMIT });
  nc = await natsClient(nats.url);
  await ensureJournalStream(nc);
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  nats?.remove();
});

it('a failed journal write answers every command of the group as unconfirmed, in messages under the limit, and the fault is reported with its cause', async () => {
  const instruments = loadBaskets(undefined);
  // The journal is empty and this writer expects 5 messages in it: the write is refused (wrong last sequence), a real failure.
  const journal = new JournalWriter(nc, 5);
  let fatal: unknown = null;
  let reported!: () => void;
  const fault = new Promise<void>((r) => (reported = r));
  const actor = new EngineActor(nc, emptyState(instruments), { instruments, maxAmount: 1000 }, journal, quietLog, (err) => {
    fatal = err;
    reported();
  });
  await actor.start();
  const sizes: number[] = [];
  const watch = nc.subscribe(`${REPLY_SUBJECT_PREFIX}>`, { callback: (_e, m) => void sizes.push(m.data.byteLength) });
  const client = new EngineClient(nc, 600_000);
  try {
    // One write and 200 reads in one turn, one batch of about 2 KB: the reads wait on the write, and are refused with it (about 7 KB).
    const replies = await Promise.all([client.call({ op: 'resume', etf: null, by: 'operator' }), ...Array.from({ length: 200 }, () => client.call({ op: 'ping' }))]);
    for (const r of replies) {
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toEqual({ code: 'engine_unavailable', why: 'unconfirmed' });
    }
    await fault;
    expect(String(fatal)).toMatch(/wrong last sequence/i);
    for (const s of sizes) expect(s).toBeLessThanOrEqual(LIMIT);
  } finally {
    client.close();
    watch.unsubscribe();
    await actor.drain();
  }
});

it("a batch of a protocol version it does not speak is refused in messages under the limit, and the engine keeps taking commands", async () => {
  const instruments = loadBaskets(undefined);
  const actor = new EngineActor(nc, emptyState(instruments), { instruments, maxAmount: 1000 }, new JournalWriter(nc, 0), quietLog, (err) => {
    throw err;
  });
  await actor.start();
  const inbox = `${REPLY_SUBJECT_PREFIX}other-version`;
  const refused: number[] = [];
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const sub = nc.subscribe(`${inbox}.*`, {
    callback: (_e, m) => {
      expect(m.data.byteLength).toBeLessThanOrEqual(LIMIT);
      // As a gateway of another version reads it: a decoder of its own, knowing none of this version's shapes.
      const batch = new Unpackr({ mapsAsObjects: true }).unpack(m.data) as ReplyBatch;
      for (const r of batch.replies) if (!r.ok && r.error.code === 'unsupported_version') refused.push(r.id);
      if (refused.length === 300) done();
    },
  });
  const client = new EngineClient(nc, 600_000);
  try {
    await nc.flush();
    // A gateway of another version: 300 pings, about 3 KB; each refusal carries its shapes, several times that.
    const cmds = Array.from({ length: 300 }, (_, i) => ({ id: i + 1, cmd: { op: 'ping' } }));
    nc.publish(ENGINE_COMMAND_SUBJECT, encodeRecords({ v: ENGINE_PROTOCOL_VERSION + 1, cmds }), { reply: `${inbox}.1` });
    await all;
    expect(refused).toEqual(cmds.map((c) => c.id));
    expect((await client.call({ op: 'ping' })).ok).toBe(true);
  } finally {
    client.close();
    sub.unsubscribe();
    await actor.drain();
  }
});
