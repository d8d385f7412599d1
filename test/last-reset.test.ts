import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { encode } from '../proto/codec.js';
import type { LastReset } from '../proto/engine.js';
import { sessionMarkerMsgId } from '../proto/feed.js';
import type { SessionMarker } from '../proto/fill.js';
import { shardNames } from '../proto/shards.js';
import { FILL_STREAM, SESSION_SUBJECT } from '../proto/subjects.js';
import type { ServerMessage } from '../proto/ws.js';
import type { Config } from '../src/config/config.js';
import { loadBaskets } from '../src/config/baskets.js';
import { startEngine, type EngineHandle } from '../src/engine/service.js';
import { SnapshotUnusable, restoreSnapshot, snapshotPackr, takeSnapshot } from '../src/engine/snapshot.js';
import { applyEvent, emptyState } from '../src/engine/state.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { awaitHoldings } from './helpers/events.js';
import { api, buy, natsClient, quietLog, startTestNats, tempDir, testConfig, undyBasket } from './helpers/system.js';
import type { NatsConnection } from '@nats-io/transport-node';

/** A WebSocket client of one team: every message kept, and a wait for the first one (from `from`) that matches. */
function openStream(url: string, basic: [string, string]) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`, { headers: { authorization: `Basic ${Buffer.from(basic.join(':')).toString('base64')}` } });
  const messages: ServerMessage[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (data) => {
    messages.push(JSON.parse(String(data)) as ServerMessage);
    for (const w of [...waiters]) w();
  });
  ws.on('error', () => {});
  const next = <T extends ServerMessage>(pred: (m: ServerMessage) => boolean, what: string, from = 0): Promise<T> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const m = messages.slice(from).find(pred);
        if (!m) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(m as T);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}`));
      }, 15_000);
      waiters.add(check);
      check();
    });
  return { messages, next, send: (m: unknown) => ws.send(JSON.stringify(m)), close: () => ws.close() };
}

/** Publishes an exchange restart under the reset policy, as the feed bridge stores it, and waits until the engine applied it. */
async function exchangeReset(nc: NatsConnection, session: number): Promise<{ ts: number; notice: Awaited<ReturnType<typeof awaitHoldings>> }> {
  const applied = awaitHoldings(nc, 1, (c) => c.cause === 'session_reset', `the reset of session ${session}`);
  const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session, detail: `test: exchange session ${session}`, ts: Date.now() };
  await jetstream(nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(session) });
  const notice = await applied;
  // When JetStream stored it: what the engine reports, whichever way it comes to know it (live, snapshot, replay).
  const stored = await (await jetstreamManager(nc)).streams.getMessage(FILL_STREAM, { last_by_subj: SESSION_SUBJECT });
  return { ts: stored!.time.getTime(), notice };
}

/**
 * An exchange reset starts every team's cash, positions and P&L again from 0. GET /holdings and the WebSocket
 * stream say when the last one was and which requests came before it, so a page can split the P&L of the session
 * since; an engine restart, from its snapshot or from the journal and the fill stream, keeps it.
 */
describe('the last exchange reset, on GET /holdings and the WebSocket stream', () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let dir: ReturnType<typeof tempDir>;
  let cfg: Config;
  let engine: EngineHandle | undefined;
  let gateway: GatewayHandle;
  let nc: NatsConnection;
  let http: ReturnType<typeof api>;
  const fatal = (err: unknown) => {
    throw err;
  };
  const team1 = ['team1', 'team1pass'] as [string, string];
  const lastReset = async (team: [string, string] = team1): Promise<LastReset | null | undefined> => {
    const h = await http.holdings(...team);
    expect(h.status).toBe(200);
    return h.body.last_reset;
  };

  beforeAll(async () => {
    nats = await startTestNats();
    dir = tempDir();
    cfg = testConfig(dir.path);
    engine = await startEngine(cfg, nats.url, quietLog, fatal);
    gateway = await startGateway(cfg, nats.url, quietLog);
    nc = await natsClient(nats.url);
    http = api(`http://127.0.0.1:${gateway.port}`);
  });
  afterAll(async () => {
    await nc?.close();
    await gateway?.close();
    await engine?.close();
    await nats?.stop();
    nats?.remove();
    dir?.remove();
  });

  it('is null before any reset, on GET /holdings and in the stream\'s snapshot', async () => {
    expect(await lastReset()).toBeNull();
    const stream = openStream(`http://127.0.0.1:${gateway.port}`, team1);
    const snap = await stream.next((m) => m.type === 'snapshot', 'the first snapshot');
    expect(snap).toMatchObject({ type: 'snapshot', last_reset: null });
    stream.close();
  });

  it('after a reset: when it was stored and the last request before it, in the delta, later snapshots and GET /holdings; kept by restarts from the snapshot and from the journal', async () => {
    await buy(nc, 1, undyBasket(2));
    const before = await http.create(...team1, 1);
    expect(before.status).toBe(200);
    const stream = openStream(`http://127.0.0.1:${gateway.port}`, team1);
    await stream.next((m) => m.type === 'snapshot', 'the first snapshot');

    const reset = await exchangeReset(nc, 2);
    const want: LastReset = { ts: reset.ts, last_request_id: before.body.request_id };
    // The engine's notice, the stream's delta, a snapshot asked for after it, and GET /holdings all say the same.
    expect(reset.notice.last_reset).toEqual(want);
    const delta = await stream.next((m) => m.type === 'delta' && m.cause === 'session_reset', 'the reset delta');
    expect(delta).toMatchObject({ cash: 0, positions: [], last_reset: want });
    const from = stream.messages.length;
    stream.send({ type: 'snapshot' });
    expect(await stream.next((m) => m.type === 'snapshot', 'the snapshot asked for', from)).toMatchObject({ reason: 'requested', last_reset: want });
    stream.close();
    const h = await http.holdings(...team1);
    expect(h.body).toMatchObject({ holdings: {}, cash: 0, last_reset: want });
    // Every account's session began there, one the reset changed nothing of too.
    expect(await lastReset(['team2', 'team2pass'])).toEqual(want);

    // A conversion of the new session has a higher request id.
    await buy(nc, 1, undyBasket(1));
    const after = await http.create(...team1, 1);
    expect(after.status).toBe(200);
    expect(Number(after.body.request_id.slice(1))).toBeGreaterThan(Number(want.last_request_id!.slice(1)));

    // A clean stop leaves a snapshot, taken after the reset: the next start reads it from there.
    await engine!.close();
    engine = undefined;
    engine = await startEngine(cfg, nats.url, quietLog, fatal);
    expect(engine.ready.snapshot).not.toBeNull();
    expect(await lastReset()).toEqual(want);

    // Without a snapshot, the journal and the fill stream are replayed: the reset comes back where it was applied.
    await engine.close();
    engine = undefined;
    await (await jetstreamManager(nc)).streams.purge(shardNames(0, 1).snapshotStream);
    engine = await startEngine(cfg, nats.url, quietLog, fatal);
    expect(engine.ready.snapshot).toBeNull();
    expect(await lastReset()).toEqual(want);

    // The next reset is the last one: after the new session's conversion.
    const again = await exchangeReset(nc, 3);
    expect(again.ts).toBeGreaterThanOrEqual(want.ts);
    expect(await lastReset()).toEqual({ ts: again.ts, last_request_id: after.body.request_id });
  });
});

describe('the last exchange reset in snapshots', () => {
  const instruments = loadBaskets(undefined);

  it('is kept, null too; a snapshot from before it was kept is refused where a start needs it complete', () => {
    const s = emptyState(instruments);
    applyEvent(s, { t: 'account', clientId: 1, username: 't', source: 'roster', ts: 0 });
    expect(restoreSnapshot(takeSnapshot(s, 1, 1), instruments, { complete: true }).lastReset).toBeNull();
    s.lastReset = { ts: 1_764_000_000_000, requestSeq: 41 };
    const bytes = takeSnapshot(s, 1, 2);
    expect(restoreSnapshot(bytes, instruments, { complete: true }).lastReset).toEqual({ ts: 1_764_000_000_000, requestSeq: 41 });
    // As an engine from before it wrote it: the head without `lastReset`.
    const [head, ...slices] = snapshotPackr.unpackMultiple(Buffer.from(bytes)) as [Record<string, unknown>, ...unknown[]];
    delete head.lastReset;
    const old = Buffer.concat([head, ...slices].map((part) => snapshotPackr.pack(part)));
    expect(() => restoreSnapshot(old, instruments, { complete: true })).toThrow(SnapshotUnusable);
    expect(restoreSnapshot(old, instruments).lastReset).toBeNull();
  });
});
