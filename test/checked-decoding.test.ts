import { describe, expect, it } from 'vitest';
import { nuid, type NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { Unpackr } from 'msgpackr';
import { decodeRecords, encode, encodeRecords, encodeSelfContained } from '../proto/codec.js';
import { ENGINE_COMMAND_SUBJECT, replySubject } from '../proto/subjects.js';
import { FEED_CONTROL_SUBJECT } from '../proto/feed.js';
import { FEED_ALERT_SUBJECT, FEED_STATUS_SUBJECT, PRICE_BUCKET, priceSubject, type EtfPrice, type FeedCounters } from '../proto/marketdata.js';
import { ENGINE_PROTOCOL_VERSION, type ReplyBatch } from '../proto/engine.js';
import { jetstream } from '@nats-io/jetstream';
import { shardNames } from '../proto/shards.js';
import { loadBaskets } from '../src/config/baskets.js';
import { SnapshotUnusable } from '../src/engine/snapshot.js';
import { SnapshotStore } from '../src/engine/snapshot-store.js';
import { MULTI_BASKETS, until, useSystem, useTestNats } from './helpers/system.js';

/**
 * Every process checks the shape of what it decodes from NATS (proto/shape.ts
 * and the checks beside each type): anyone with the permission to publish
 * on a subject can publish anything there. A message not of its kind is
 * refused or ignored as an unreadable one is, and counted; nothing takes it
 * for a good one, and nothing crashes on it.
 */
const sys = useSystem({ basketsFile: MULTI_BASKETS, operator: { username: 'boss', password: 'boss-password' } });

/** Sends a raw command batch as a gateway would, and resolves with the engine's answer batch. */
async function sendBatch(nc: NatsConnection, batch: unknown): Promise<ReplyBatch> {
  const inbox = `${replySubject(nuid.next())}.1`;
  const sub = nc.subscribe(inbox, { max: 1 });
  nc.publish(ENGINE_COMMAND_SUBJECT, encodeRecords(batch), { reply: inbox });
  for await (const m of sub) return decodeRecords<ReplyBatch>(m.data);
  throw new Error('no answer');
}

/** Publishes `data` and returns once the gateway's own connection has been handed everything published before. */
async function publishToGateway(nc: NatsConnection, subject: string, data: Uint8Array): Promise<void> {
  nc.publish(subject, data);
  await nc.flush();
  // The server writes the message to the gateway's socket before the answer to this ping; the gateway's callbacks run as it reads.
  await sys.sys.gateway.nc.flush();
}

const price = (etf: string, nav: unknown): Record<string, unknown> => ({
  etf,
  symbol: etf === 'UNDY' ? 13 : 101,
  nav,
  create_cost: null,
  redeem_proceeds: null,
  etf_bid: null,
  etf_ask: null,
  premium: null,
  create_edge: null,
  redeem_edge: null,
  ts: Date.now(),
});

const counters = (): FeedCounters => ({ datagrams: 1, messages: 1, gaps: 0, missed_messages: 0, bad_datagrams: 0, restarts: 0, last_seq: 1 });

describe('engine: command batches', () => {
  it('refuses a command whose fields are not of their types as malformed, and decides the rest of its batch', async () => {
    const answer = await sendBatch(sys.nc, {
      v: ENGINE_PROTOCOL_VERSION,
      cmds: [
        { id: 1, cmd: { op: 'register', username: 42, passwordHash: 's1:x' } },
        { id: 2, cmd: { op: 'halt', etf: null, reason: { why: 'forged' }, by: 'nobody' } },
        { id: 3, cmd: { op: 'ping' } },
      ],
    });
    const byId = new Map(answer.replies.map((r) => [r.id, r]));
    expect(byId.get(1)).toMatchObject({ ok: false, error: { code: 'bad_request', why: 'malformed' } });
    expect(byId.get(2)).toMatchObject({ ok: false, error: { code: 'bad_request', why: 'malformed' } });
    expect(byId.get(3)).toMatchObject({ ok: true });
    // Nothing of them took effect: no account named 42, no halt.
    const rules = await sys.sys.gateway.engine.call({ op: 'rules' });
    expect(rules.ok && rules.result.halts).toEqual([]);
    expect(sys.sys.engine.actor.unreadable.counts).toMatchObject({ command: 2 });
  });

  it('refuses a conversion whose key has the form of an engine request id, as the HTTP edge does', async () => {
    const answer = await sendBatch(sys.nc, {
      v: ENGINE_PROTOCOL_VERSION,
      cmds: [
        { id: 1, cmd: { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'r1', dryRun: true } },
        { id: 2, cmd: { op: 'redeem', clientId: 1, etf: 'UNDY', amount: 1, key: 'r77' } },
        { id: 3, cmd: { op: 'create', clientId: 1, etf: 'UNDY', amount: 1, key: 'r01', dryRun: true } },
      ],
    });
    const byId = new Map(answer.replies.map((r) => [r.id, r]));
    expect(byId.get(1)).toMatchObject({ ok: false, error: { code: 'bad_request', why: 'malformed' } });
    expect(byId.get(2)).toMatchObject({ ok: false, error: { code: 'bad_request', why: 'malformed' } });
    // Not of that form: decided (a refusal for holdings, or an answer), not malformed.
    expect(byId.get(3)).not.toMatchObject({ error: { why: 'malformed' } });
  });

  it('refuses a batch of another protocol version, decided nowhere, in an answer a build without the shared record shapes reads', async () => {
    const inbox = `${replySubject(nuid.next())}.1`;
    const sub = sys.nc.subscribe(inbox, { max: 1 });
    // What a gateway of version 3 sent: self-contained records.
    sys.nc.publish(ENGINE_COMMAND_SUBJECT, encodeSelfContained({ v: 3, cmds: [{ id: 1, cmd: { op: 'halt', etf: null, reason: 'old', by: 'old-gateway' } }] }), { reply: inbox });
    let answer: unknown;
    for await (const m of sub) answer = new Unpackr({ mapsAsObjects: true, int64AsType: 'number' }).unpack(m.data);
    expect(answer).toEqual({ v: ENGINE_PROTOCOL_VERSION, replies: [{ id: 1, ok: false, error: { code: 'unsupported_version', speaks: ENGINE_PROTOCOL_VERSION } }] });
    const rules = await sys.sys.gateway.engine.call({ op: 'rules' });
    expect(rules.ok && rules.result.halts).toEqual([]);
  });

  it('ignores and counts a batch whose envelopes cannot be answered, and goes on deciding the next', async () => {
    const inbox = `${replySubject(nuid.next())}.1`;
    for (const bad of [{ v: ENGINE_PROTOCOL_VERSION, cmds: 'x' }, { v: ENGINE_PROTOCOL_VERSION, cmds: [null] }, { v: ENGINE_PROTOCOL_VERSION, cmds: [{ cmd: { op: 'ping' } }] }]) {
      sys.nc.publish(ENGINE_COMMAND_SUBJECT, encodeRecords(bad), { reply: inbox });
    }
    const next = await sendBatch(sys.nc, { v: ENGINE_PROTOCOL_VERSION, cmds: [{ id: 7, cmd: { op: 'ping' } }] });
    expect(next.replies).toMatchObject([{ id: 7, ok: true }]);
    expect(sys.sys.engine.actor.unreadable.counts).toMatchObject({ 'command batch': 3 });
  });
});

describe('gateway: published state', () => {
  it('ignores a feed status not of its shape: /health stays answerable and does not show it', async () => {
    // A problem without its fields: /health words every problem (its actions among them).
    const status = { clearing: counters(), market_data: counters(), problems: [{ id: 'p1' }], ts: Date.now() };
    await publishToGateway(sys.nc, FEED_STATUS_SUBJECT, encode(status));
    const health = await sys.http.send('GET', '/health');
    expect(health.status).toBe(200);
    expect(health.body.feed).toMatchObject({ live: false, age_ms: null });
  });

  it('counts a price not of its shape as invalid and hands it to no WebSocket client', async () => {
    const before = (await sys.http.send('GET', '/health')).body.ws;
    await publishToGateway(sys.nc, priceSubject('UNDY'), encode(price('UNDY', 'a lot')));
    const after = (await sys.http.send('GET', '/health')).body.ws;
    expect(after.invalid).toBe(before.invalid + 1);
    expect(after.prices).toBe(before.prices);
  });

  it('skips a stored price not of its shape: GET /etfs shows none rather than it', async () => {
    const kv = await new Kvm(sys.nc).create(PRICE_BUCKET);
    await kv.put('UNDY', encode(price('UNDY', 'a lot')));
    // Entries come in order: once TECH's good price shows, UNDY's bad one has been read.
    await kv.put('TECH', encode(price('TECH', 1234)));
    const etfs = await until(async () => {
      const list: { name: string; price: EtfPrice | null }[] = (await sys.http.send('GET', '/etfs')).body.etfs;
      return list.find((e) => e.name === 'TECH')?.price ? list : undefined;
    }, "TECH's price on GET /etfs");
    expect(etfs.find((e) => e.name === 'TECH')?.price).toMatchObject({ nav: 1234 });
    expect(etfs.find((e) => e.name === 'UNDY')?.price).toBeNull();
  });

  it('keeps no feed alert not of its shape for the operator', async () => {
    await publishToGateway(sys.nc, FEED_ALERT_SUBJECT, encode({ kind: 'gap' }));
    await publishToGateway(sys.nc, FEED_ALERT_SUBJECT, encode({ kind: 'gap', feed: 'clearing', detail: 'seq 3 after 1', expected: 2, received: 3, ts: Date.now() }));
    const r = await sys.http.send('GET', '/operator/api/alerts', { basic: ['boss', 'boss-password'] });
    expect(r.status).toBe(200);
    expect(r.body.alerts).toEqual([expect.objectContaining({ kind: 'gap', detail: 'seq 3 after 1' })]);
  });

  it("answers the operator 503 when the feed bridge's answer is not a feed control reply", async () => {
    const bridge = sys.nc.subscribe(FEED_CONTROL_SUBJECT, { callback: (_, m) => void m.respond(encode({ ok: true })) });
    try {
      await sys.nc.flush();
      const r = await sys.http.send('POST', '/operator/api/feed/ack', { basic: ['boss', 'boss-password'], json: {} });
      expect(r.status).toBe(503);
      expect(r.body.error).toMatchObject({ code: 'feed_unavailable', message: expect.stringMatching(/could not be read/) });
    } finally {
      bridge.unsubscribe();
    }
  });
});

describe('engine: snapshot manifest', () => {
  const bus = useTestNats();

  it('calls a snapshot whose manifest cannot be read unusable (the journal rebuilds), rather than failing the start', async () => {
    const names = shardNames(0, 1);
    const store = await SnapshotStore.open(bus.nc, undefined, names);
    await jetstream(bus.nc).publish(names.snapshotManifest, new Uint8Array([0xc1]));
    await expect(store.load(loadBaskets(undefined))).rejects.toBeInstanceOf(SnapshotUnusable);
    await jetstream(bus.nc).publish(names.snapshotManifest, encode({ firstSeq: 1, lastSeq: '2', bytes: 10, sha256: '', journalSeq: 1, takenAt: 0 }));
    await expect(store.load(loadBaskets(undefined))).rejects.toThrow(/manifest cannot be read.*lastSeq/);
  });
});
