import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Unpackr } from 'msgpackr';
import type { NatsConnection } from '@nats-io/transport-node';
import { decodeRecords, encode, encodeRecords } from '../proto/codec.js';
import { sharedRecordShapes } from '../proto/records.js';
import { ENGINE_PROTOCOL_VERSION, type CommandBatch, type ReplyBatch } from '../proto/engine.js';
import { HTTP_STATUS } from '../proto/http.js';
import { ENGINE_COMMAND_SUBJECT } from '../proto/subjects.js';
import { EngineClient } from '../src/shared/engine-client.js';
import { createLogger } from '../src/shared/log.js';
import { natsClient, startTestNats, until, useTestNats } from './helpers/system.js';
import { heapFixture } from './helpers/heap.js';

/**
 * The gateway's engine client holds a shard's next batch while the last one
 * is being answered (so batches grow under load), but never waits on an
 * engine that does not answer: the held batch goes out shortly anyway.
 */
describe('engine client batching', () => {
  const bus = useTestNats();

  it('answers every command, those issued while a batch was out included', async () => {
    const batches: number[][] = [];
    let first: { reply: string; ids: number[] } | null = null;
    const sub = bus.nc.subscribe(ENGINE_COMMAND_SUBJECT, {
      callback: (_, m) => {
        const b = decodeRecords<CommandBatch>(m.data);
        batches.push(b.cmds.map((c) => c.id));
        // Every batch after the first is answered at once; the first only when the test says.
        const answer = (ids: number[]) =>
          bus.nc.publish(m.reply!, encodeRecords({ v: ENGINE_PROTOCOL_VERSION, replies: ids.map((id) => ({ id, ok: true, result: { accounts: 0, journal_seq: 0, fill_seq: 0 } })) } satisfies ReplyBatch));
        if (first === null) first = { reply: m.reply!, ids: b.cmds.map((c) => c.id) };
        else answer(b.cmds.map((c) => c.id));
      },
    });
    await bus.nc.flush();
    const client = new EngineClient(bus.nc, 60_000);
    try {
      const a = client.call({ op: 'ping' });
      // Wait until the first batch is out, then issue three more while it is unanswered.
      while (first === null) await bus.nc.flush();
      const rest = [client.call({ op: 'ping' }), client.call({ op: 'ping' })];
      await new Promise((r) => setImmediate(r));
      rest.push(client.call({ op: 'ping' }));
      const f = first as { reply: string; ids: number[] };
      bus.nc.publish(f.reply, encodeRecords({ v: ENGINE_PROTOCOL_VERSION, replies: f.ids.map((id) => ({ id, ok: true, result: { accounts: 0, journal_seq: 0, fill_seq: 0 } })) } satisfies ReplyBatch));
      expect((await a).ok).toBe(true);
      for (const r of await Promise.all(rest)) expect(r.ok).toBe(true);
      expect(batches.length).toBeGreaterThanOrEqual(2);
      expect(batches.flat()).toHaveLength(4);
    } finally {
      client.close();
      sub.unsubscribe();
    }
  });

  it('does not wait on an engine that does not answer: the next batch goes out before the first one times out', async () => {
    const seen: string[] = [];
    let batchesSeen = 0;
    const sub = bus.nc.subscribe(ENGINE_COMMAND_SUBJECT, {
      callback: () => {
        batchesSeen++;
        seen.push(`batch ${batchesSeen}`);
      },
    });
    await bus.nc.flush();
    const client = new EngineClient(bus.nc, 3_000);
    try {
      const first = client.call({ op: 'ping' }).then((r) => (seen.push('first answered'), r));
      while (batchesSeen === 0) await bus.nc.flush();
      const second = client.call({ op: 'ping' }).then((r) => (seen.push('second answered'), r));
      await Promise.all([first, second]);
      // Nobody answers: both time out, but the second batch was sent long before the first gave up.
      expect(seen.indexOf('batch 2')).toBeGreaterThanOrEqual(0);
      expect(seen.indexOf('batch 2')).toBeLessThan(seen.indexOf('first answered'));
    } finally {
      client.close();
      sub.unsubscribe();
    }
  });
});

describe('engine client: a settled call keeps nothing of its caller', () => {
  const bus = useTestNats();

  it("leaves no caller's request to survive scavenges through the client's tables", () => {
    // Before, the pending Map's stale entries kept ~10% of what callers held alive until a full GC (settle clears them).
    const r = heapFixture('settled-calls-heap.js', bus.nats.url);
    expect(r.grew).toBeLessThan(r.held * 0.03);
  });
});

describe('engine client: answers it cannot read', () => {
  const bus = useTestNats();

  it('fails the requests of an unreadable answer at once with a clear error, and logs each kind of unreadable answer once', async () => {
    // An "engine" whose answers are not ReplyBatches: garbage bytes, then a well-formed message of another shape.
    let n = 0;
    const sub = bus.nc.subscribe(ENGINE_COMMAND_SUBJECT, {
      callback: (_, m) => {
        n++;
        m.respond(n <= 2 ? new Uint8Array([0xc1, 0xc1, 0xc1]) : encode({ hello: 'world' }));
      },
    });
    await bus.nc.flush();
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    // Far longer than the test may take: an answer that merely timed out would fail it.
    const client = new EngineClient(bus.nc, 600_000, { log });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await client.call({ op: 'ping' });
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.error).toMatchObject({ code: 'engine_unavailable', message: expect.stringMatching(/could not be read/) });
      }
      expect(client.unreadable).toEqual({ undecodable: 2, not_a_reply_batch: 1 });
      // One line per kind, at error level, not one per answer.
      expect(lines.filter((l) => (l.level as number) >= 50).map((l) => l.kind)).toEqual(['undecodable', 'not_a_reply_batch']);
    } finally {
      client.close();
      sub.unsubscribe();
    }
  });
});

describe('engine client: one malformed answer in a batch', () => {
  const bus = useTestNats();

  it('fails only the request whose answer is malformed (its id readable, its result missing), as unreadable; the others get theirs', async () => {
    const sub = bus.nc.subscribe(ENGINE_COMMAND_SUBJECT, {
      callback: (_, m) => {
        const b = decodeRecords<CommandBatch>(m.data);
        const replies = b.cmds.map((c, i) => (i === 0 ? { id: c.id, ok: true } : { id: c.id, ok: true, result: { accounts: 0, journal_seq: 0, fill_seq: 0 } }));
        m.respond(encodeRecords({ v: ENGINE_PROTOCOL_VERSION, replies }));
      },
    });
    await bus.nc.flush();
    const client = new EngineClient(bus.nc, 600_000);
    try {
      const [bad, good] = await Promise.all([client.call({ op: 'ping' }), client.call({ op: 'ping' })]);
      expect(bad.ok).toBe(false);
      if (!bad.ok) expect(bad.error).toMatchObject({ code: 'engine_unavailable', message: expect.stringMatching(/could not be read/) });
      expect(good.ok).toBe(true);
      expect(client.unreadable).toEqual({ malformed_reply: 1 });
    } finally {
      client.close();
      sub.unsubscribe();
    }
  });
});

/**
 * No engine subscribed (restarting, or its subscription not yet known to the
 * NATS node the gateway uses: a cluster learns interest over its routes): the
 * server answers "no responders". Nothing was delivered, so the command is
 * sent again until an engine takes it or its deadline, and is never reported
 * as an answer that could not be read (a clean-clone CI run failed so).
 */
describe('engine client: no engine subscribed', () => {
  const bus = useTestNats();

  it('sends again until an engine subscribes, and the command is answered once', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const client = new EngineClient(bus.nc, 20_000, { log });
    let received = 0;
    let sub: ReturnType<typeof bus.nc.subscribe> | null = null;
    try {
      const answer = client.call({ op: 'holdings', clientId: 1 });
      const other = client.call({ op: 'holdings', clientId: 2 });
      // The server has said no engine took them (the client logs it once) before one subscribes.
      await until(() => lines.some((l) => l.msg === 'no engine is taking commands: they are sent again until one does or their deadline'), 'the sends to meet no responders');
      sub = bus.nc.subscribe(ENGINE_COMMAND_SUBJECT, {
        callback: (_, m) => {
          const b = decodeRecords<CommandBatch>(m.data);
          received += b.cmds.length;
          m.respond(encodeRecords({ v: ENGINE_PROTOCOL_VERSION, replies: b.cmds.map((c) => ({ id: c.id, ok: true, result: { accounts: 0, journal_seq: 0, fill_seq: 0 } })) } satisfies ReplyBatch));
        },
      });
      await bus.nc.flush();
      expect((await answer).ok).toBe(true);
      expect((await other).ok).toBe(true);
      expect(received).toBe(2);
      expect(client.unreadable).toEqual({});
      expect(lines.filter((l) => (l.level as number) >= 50)).toEqual([]);
      expect(lines.some((l) => l.msg === 'an engine is taking commands again')).toBe(true);
    } finally {
      client.close();
      sub?.unsubscribe();
    }
  });

  it('answers a probe (waitForEngine false: GET /health, a metrics scrape) at once, not after the deadline, when no engine is there', async () => {
    const client = new EngineClient(bus.nc, 600_000);
    try {
      const r = await client.call({ op: 'ping' }, undefined, { waitForEngine: false });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatchObject({ code: 'engine_unavailable', message: expect.stringMatching(/nothing was done/) });
    } finally {
      client.close();
    }
  });

  it('at its deadline with still no engine, says nothing was done', async () => {
    const client = new EngineClient(bus.nc, 1_000);
    try {
      const r = await client.call({ op: 'holdings', clientId: 1 });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatchObject({ code: 'engine_unavailable', message: expect.stringMatching(/nothing was done/) });
    } finally {
      client.close();
    }
  });
});

/**
 * A publish the NATS client refuses throws, and the client's sends run in a
 * next-turn or timer callback: a batch over the server's max_payload (many
 * big commands in one turn) or a connection closed under it ended the whole
 * gateway, every request in flight with it. The server here allows 4 KB.
 */
describe('engine client: the NATS payload limit, and a closed connection', () => {
  const LIMIT = 4096;
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startTestNats(undefined, { maxPayload: LIMIT });
    nc = await natsClient(nats.url);
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
    nats?.remove();
  });

  /** An engine that answers every command ok, and keeps what it was sent. */
  function engine() {
    const seen = { batches: [] as number[], ops: [] as string[] };
    const sub = nc.subscribe(ENGINE_COMMAND_SUBJECT, {
      callback: (_, m) => {
        seen.batches.push(m.data.byteLength);
        const b = decodeRecords<CommandBatch>(m.data);
        for (const c of b.cmds) seen.ops.push(c.cmd.op);
        m.respond(encodeRecords({ v: ENGINE_PROTOCOL_VERSION, replies: b.cmds.map((c) => ({ id: c.id, ok: true, result: { accounts: 0, journal_seq: 0, fill_seq: 0 } })) } satisfies ReplyBatch));
      },
    });
    return { seen, stop: () => sub.unsubscribe() };
  }

  const halt = (reasonBytes: number) => ({ op: 'halt' as const, etf: null, reason: 'x'.repeat(reasonBytes), by: 'operator' });

  it('sends commands of one turn that together pass the limit in several batches under it, and every one is answered', async () => {
    const e = engine();
    await nc.flush();
    const client = new EngineClient(nc, 600_000);
    try {
      // 60 halts with the longest reason the operator's page takes: about 14 KB in one turn.
      const replies = await Promise.all(Array.from({ length: 60 }, () => client.call(halt(200))));
      for (const r of replies) expect(r.ok).toBe(true);
      expect(e.seen.ops).toHaveLength(60);
      expect(e.seen.batches.length).toBeGreaterThan(1);
      for (const bytes of e.seen.batches) expect(bytes).toBeLessThanOrEqual(LIMIT);
    } finally {
      client.close();
      e.stop();
    }
  });

  it('refuses a command that alone passes the limit as too large (413: nothing was sent), and answers the rest of its turn', async () => {
    const e = engine();
    await nc.flush();
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const client = new EngineClient(nc, 600_000, { log });
    try {
      const [big, ping] = await Promise.all([client.call(halt(LIMIT + 100)), client.call({ op: 'ping' })]);
      expect(ping.ok).toBe(true);
      expect(big.ok).toBe(false);
      if (!big.ok) {
        expect(big.error).toMatchObject({ code: 'payload_too_large', message: expect.stringMatching(/over the NATS message limit of 4096 bytes.*nothing was done/) });
        expect(HTTP_STATUS[big.error.code]).toBe(413);
      }
      expect(e.seen.ops).toEqual(['ping']);
      expect(lines.some((l) => l.msg === 'a command over the NATS payload limit: refused as too large, not sent' && l.op === 'halt')).toBe(true);
    } finally {
      client.close();
      e.stop();
    }
  });

  it('answers commands flushed onto a closed connection as not delivered (nothing was done), at once', async () => {
    const own = await natsClient(nats.url);
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    // A deadline far past the test's: only an answer given at once passes.
    const client = new EngineClient(own, 600_000, { log });
    try {
      await own.close();
      const replies = await Promise.all([client.call({ op: 'ping' }), client.call(halt(10))]);
      for (const r of replies) {
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.error).toMatchObject({ code: 'engine_unavailable', message: expect.stringMatching(/nothing was done/) });
      }
      expect(lines.filter((l) => l.msg === 'commands could not be sent to the engine: answered as not delivered')).toHaveLength(1);
    } finally {
      client.close();
    }
  });
});

describe('the engine wire codec', () => {
  it('encodes each message on its own (shared shapes named, others defined in it): any one decodes alone, in any order, by a fresh decoder', () => {
    const batch = (n: number): ReplyBatch => ({
      v: ENGINE_PROTOCOL_VERSION,
      replies: Array.from({ length: n }, (_, i) => (i % 3 === 0 ? { id: i, ok: false as const, error: { code: 'halted' as const, message: 'halted' } } : { id: i, ok: true as const, result: { accounts: i, journal_seq: i, fill_seq: 0 } })),
    });
    const first = encodeRecords(batch(5));
    const second = encodeRecords(batch(7));
    const fresh = () => new Unpackr({ mapsAsObjects: true, structures: sharedRecordShapes() });
    expect(fresh().unpack(second)).toEqual(batch(7));
    expect(fresh().unpack(first)).toEqual(batch(5));
    expect(decodeRecords(second)).toEqual(batch(7));
    // Smaller than the same as plain maps: each shape's keys are written once.
    expect(second.byteLength).toBeLessThan(encode(batch(7)).byteLength);
  });
});
