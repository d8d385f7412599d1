import { eachServer, serverHttp } from './helpers/servers.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decode, encode, encodeRecords } from '../proto/codec.js';
import { NOTICE_BATCH_VERSION, type NoticeBatch } from '../proto/holdings.js';
import { PRICE_BUCKET, priceSubject, type EtfPrice } from '../proto/marketdata.js';
import type { OutcomeNotice } from '../proto/requests.js';
import { shardNames } from '../proto/shards.js';
import { awaitHoldings } from './helpers/events.js';
import type { Position } from '../proto/engine.js';
import type { ServerMessage, SnapshotMessage } from '../proto/ws.js';
import {
  api,
  fillsFor,
  natsClient,
  publishFills,
  startSystem,
  startTestNats,
  tempDir,
  testConfig,
  undyBasket,
  type TestSystem,
} from './helpers/system.js';

const WAIT_MS = 15_000;

/**
 * A strategy's view of the stream: keeps every message, and an account built
 * from the snapshot plus the signed deltas (not the positions each delta
 * carries), so a test can check both agree and that no seq was skipped.
 */
class StreamClient {
  readonly messages: ServerMessage[] = [];
  seq = -1;
  readonly holdings = new Map<number, number>();
  /** Deltas whose seq was not last + 1, or whose positions disagree with the applied deltas. */
  readonly problems: string[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private listeners = new Set<() => void>();

  constructor(readonly ws: WebSocket, readonly binary = false) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const msg = (isBinary ? decode(data) : JSON.parse(data.toString('utf8'))) as ServerMessage;
      this.messages.push(msg);
      this.apply(msg);
      for (const l of [...this.listeners]) l();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('error', () => {});
  }

  static open(url: string, opts: { basic?: [string, string]; query?: string } = {}): StreamClient {
    const headers = opts.basic ? { authorization: `Basic ${Buffer.from(opts.basic.join(':')).toString('base64')}` } : undefined;
    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws${opts.query ? `?${opts.query}` : ''}`, { headers });
    return new StreamClient(ws, opts.query?.includes('msgpack') ?? false);
  }

  private apply(m: ServerMessage): void {
    if (m.type === 'snapshot') {
      this.seq = m.seq;
      this.holdings.clear();
      for (const p of m.positions) this.holdings.set(p.symbol, p.quantity);
    } else if (m.type === 'delta') {
      if (m.seq !== this.seq + 1) this.problems.push(`delta ${m.seq} after ${this.seq}`);
      this.seq = m.seq;
      for (const d of m.deltas) this.holdings.set(d.symbol, (this.holdings.get(d.symbol) ?? 0) + d.quantity);
      if (!samePositions(this.holdings, m.positions)) this.problems.push(`delta ${m.seq}: positions disagree with the deltas`);
    }
  }

  send(msg: unknown): void {
    this.ws.send(this.binary ? encode(msg) : JSON.stringify(msg));
  }

  /** Resolves with the first message (from index `from`) that satisfies `pred`, waiting for new ones. */
  next<T extends ServerMessage = ServerMessage>(pred: (m: ServerMessage) => boolean, what: string, from = 0): Promise<T> {
    return new Promise((resolve, reject) => {
      let i = from;
      const check = () => {
        for (; i < this.messages.length; i++) {
          if (pred(this.messages[i]!)) {
            cleanup();
            resolve(this.messages[i] as T);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${what}; got ${this.messages.map((m) => m.type).join(',')}`));
      }, WAIT_MS);
      const onClose = () => {
        check();
        if (this.listeners.has(check)) {
          cleanup();
          reject(new Error(`closed while waiting for ${what}`));
        }
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
        this.ws.off('close', onClose);
      };
      this.listeners.add(check);
      this.ws.on('close', onClose);
      check();
    });
  }

  /** Waits until the account this client has built reaches `seq`. */
  reach(seq: number): Promise<ServerMessage> {
    return this.next((m) => (m.type === 'delta' || m.type === 'snapshot') && m.seq >= seq, `seq ${seq}`);
  }

  ofType<T extends ServerMessage['type']>(type: T): Extract<ServerMessage, { type: T }>[] {
    return this.messages.filter((m) => m.type === type) as Extract<ServerMessage, { type: T }>[];
  }

  async stop(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.close();
    await this.closed;
  }
}

function samePositions(held: Map<number, number>, positions: Position[]): boolean {
  const nonzero = [...held].filter(([, q]) => q !== 0);
  const listed = positions.filter((p) => p.quantity !== 0);
  return nonzero.length === listed.length && listed.every((p) => held.get(p.symbol) === p.quantity);
}

const asMap = (positions: Position[]) => new Map(positions.filter((p) => p.quantity !== 0).map((p) => [p.symbol, p.quantity]));
const nonzero = (m: Map<number, number>) => new Map([...m].filter(([, q]) => q !== 0));

/** Waits for the engine's change number `seq` of an account on NATS: proof it happened, without sleeping. */
const awaitChange = (nc: NatsConnection, clientId: number, seq: number) => awaitHoldings(nc, clientId, (c) => c.seq >= seq, `change ${seq}`, WAIT_MS);

// The whole stream, once per HTTP server.
eachServer('WebSocket holdings stream', (kind) => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let dir: ReturnType<typeof tempDir>;
  let system: TestSystem;
  /** The last test shuts the gateway down; closing uWS twice would crash the worker. */
  let systemClosed = false;
  let nc: NatsConnection;
  let http: ReturnType<typeof api>;
  const storedPrice: EtfPrice = { etf: 'STORED', symbol: 99, nav: 1000, create_cost: 1010, redeem_proceeds: 990, etf_bid: 995, etf_ask: 1005, premium: 0, create_edge: -15, redeem_edge: -15, ts: 1 };

  beforeAll(async () => {
    nats = await startTestNats();
    dir = tempDir();
    nc = await natsClient(nats.url);
    // The pricing service's bucket with one last price in it, before the gateway starts.
    const kv = await new Kvm(nc).create(PRICE_BUCKET);
    await kv.put('STORED', encode(storedPrice));
    system = await startSystem(nats.url, testConfig(dir.path, { http: serverHttp(kind) }));
    http = api(system.url);
  });

  afterAll(async () => {
    if (!systemClosed) await system?.close();
    await nc?.close();
    await nats?.stop();
    nats?.remove();
    dir?.remove();
  });

  describe('authentication', () => {
    it('refuses an unknown format at the upgrade with HTTP 400', async () => {
      const ws = new WebSocket(`${system.url.replace('http', 'ws')}/ws?format=xml`, { headers: { authorization: `Basic ${Buffer.from('team1:team1pass').toString('base64')}` } });
      ws.on('error', () => {});
      const status = await new Promise<number>((resolve) => ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
      expect(status).toBe(400);
      ws.terminate();
    });

    it('refuses a bad Basic password with 4001', async () => {
      const c = StreamClient.open(system.url, { basic: ['team1', 'wrong'] });
      expect(await c.closed).toEqual({ code: 4001, reason: 'authentication failed' });
      expect(c.messages).toEqual([]);
    });

    it('refuses a bad password in the auth message with 4001', async () => {
      const c = StreamClient.open(system.url);
      c.ws.on('open', () => c.send({ type: 'auth', username: 'team1', password: 'nope' }));
      expect(await c.closed).toEqual({ code: 4001, reason: 'authentication failed' });
    });

    it('refuses an unknown user and a first message that is not auth', async () => {
      const unknown = StreamClient.open(system.url, { basic: ['nobody', 'x'] });
      const noAuth = StreamClient.open(system.url);
      noAuth.ws.on('open', () => noAuth.send({ type: 'ping' }));
      expect(await unknown.closed).toEqual({ code: 4001, reason: 'authentication failed' });
      expect((await noAuth.closed).code).toBe(4001);
      expect((await noAuth.closed).reason).toMatch(/authentication required/);
    });

    it('closes a connection that sends no credentials in time', async () => {
      const c = StreamClient.open(system.url);
      expect(await c.closed).toEqual({ code: 4001, reason: 'authentication timeout' });
    });

    it('accepts Basic on the upgrade: welcome, then a snapshot', async () => {
      const c = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
      const snap = await c.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot');
      expect(c.messages[0]).toMatchObject({ type: 'welcome', v: 1, client_id: 1, username: 'team1', format: 'json' });
      expect(snap).toMatchObject({ type: 'snapshot', reason: 'initial', client_id: 1 });
      await c.stop();
    });

    it('accepts an auth message, in msgpack too', async () => {
      const c = StreamClient.open(system.url, { query: 'format=msgpack' });
      c.ws.on('open', () => c.send({ type: 'auth', username: 'team2', password: 'team2pass' }));
      const snap = await c.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot');
      expect(c.messages[0]).toMatchObject({ type: 'welcome', client_id: 2, format: 'msgpack' });
      expect(snap.client_id).toBe(2);
      await c.stop();
    });

    it('answers bad messages with an error and keeps the connection', async () => {
      const c = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
      await c.next((m) => m.type === 'snapshot', 'snapshot');
      c.ws.send('{not json');
      c.send({ type: 'teleport', id: 7 });
      c.send({ type: 'resume', from_seq: -3, id: 'r' });
      c.send({ type: 'ping', id: 'p1' });
      const pong = await c.next((m) => m.type === 'pong', 'pong');
      expect(pong).toMatchObject({ id: 'p1' });
      expect(c.ofType('error').map((e) => [e.code, e.id])).toEqual([
        ['bad_message', undefined],
        ['unknown_type', 7],
        ['bad_message', 'r'],
      ]);
      await c.stop();
    });
  });

  it('sends a snapshot then deltas that track holdings through fills, creates and redeems', async () => {
    const c = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    const snap = await c.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot');
    await publishFills(nc, fillsFor(1, undyBasket(5)));
    // Stored is not yet applied: the engine reads the fill stream on its own, and a create decided first would be refused.
    await c.reach(snap.seq + 10);
    expect((await http.create('team1', 'team1pass', 3)).status).toBe(200);
    expect((await http.redeem('team1', 'team1pass', 1)).status).toBe(200);
    await publishFills(nc, fillsFor(1, { 3: -2, 4: 7 }));
    // 10 basket fills, a create, a redeem, 2 more fills.
    await c.reach(snap.seq + 14);
    const deltas = c.ofType('delta');
    expect(deltas.map((d) => d.seq)).toEqual(Array.from({ length: 14 }, (_, i) => snap.seq + 1 + i));
    expect(deltas.map((d) => d.cause)).toEqual([...Array<string>(10).fill('fill'), 'create', 'redeem', 'fill', 'fill']);
    expect(c.problems).toEqual([]);
    const rest = await http.holdings('team1', 'team1pass');
    expect(nonzero(c.holdings)).toEqual(asMap(rest.body.positions));
    await c.stop();
  });

  it('resumes after a reconnect with exactly the missed deltas', async () => {
    const first = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    const snap = await first.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot');
    await first.stop();

    // Changes while disconnected: 4 fills and a create, seen on NATS.
    const done = awaitChange(nc, 1, snap.seq + 5);
    await publishFills(nc, fillsFor(1, undyBasket(1)).slice(0, 4));
    expect((await http.create('team1', 'team1pass', 1)).status).toBe(200);
    await done;

    const again = StreamClient.open(system.url);
    again.ws.on('open', () => again.send({ type: 'auth', username: 'team1', password: 'team1pass', resume_from: snap.seq }));
    // Rebuild the account from what the first connection had, then apply only the replay.
    for (const p of snap.positions) again.holdings.set(p.symbol, p.quantity);
    again.seq = snap.seq;
    const resumed = await again.next((m) => m.type === 'resumed', 'resumed');
    expect(resumed).toMatchObject({ from_seq: snap.seq, to_seq: snap.seq + 5, count: 5 });
    await again.reach(snap.seq + 5);
    expect(again.ofType('snapshot')).toEqual([]);
    expect(again.ofType('delta').map((d) => d.seq)).toEqual([1, 2, 3, 4, 5].map((i) => snap.seq + i));
    expect(again.problems).toEqual([]);
    expect(nonzero(again.holdings)).toEqual(asMap((await http.holdings('team1', 'team1pass')).body.positions));

    // The resume message, and a resume the ring cannot serve (ahead of the account) gets a snapshot marked as such.
    again.send({ type: 'resume', from_seq: snap.seq + 3, id: 'a' });
    const replay = await again.next((m) => m.type === 'resumed' && m.id === 'a', 'second resumed');
    expect(replay).toMatchObject({ count: 2 });
    again.send({ type: 'resume', from_seq: snap.seq + 1000, id: 'b' });
    const fresh = await again.next<SnapshotMessage>((m) => m.type === 'snapshot', 'fresh snapshot');
    expect(fresh).toMatchObject({ reason: 'resume_unavailable', seq: snap.seq + 5, id: 'b' });
    await again.stop();
  });

  it('never shows a team another team’s changes or request outcomes', async () => {
    const t1 = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    const t2 = StreamClient.open(system.url, { basic: ['team2', 'team2pass'] });
    const [s1, s2] = await Promise.all([
      t1.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot 1'),
      t2.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot 2'),
    ]);
    t1.send({ type: 'subscribe', requests: true, id: 's' });
    t2.send({ type: 'subscribe', requests: true, id: 's' });
    await Promise.all([t1.next((m) => m.type === 'subscribed', 'subscribed 1'), t2.next((m) => m.type === 'subscribed', 'subscribed 2')]);

    await publishFills(nc, fillsFor(1, undyBasket(2)));
    await t1.reach(s1.seq + 10);
    expect((await http.create('team1', 'team1pass', 2)).status).toBe(200);
    // As the engine publishes them (whether or not it does yet): one outcome per account.
    const outcome = (clientId: number, id: string): OutcomeNotice => ({ request_id: id, client_id: clientId, op: 'create', etf: 'UNDY', amount: 1, status: 'accepted', ts: Date.now() });
    const notices = (o: OutcomeNotice): Uint8Array => encodeRecords({ v: NOTICE_BATCH_VERSION, changes: [], outcomes: [o] } satisfies NoticeBatch);
    nc.publish(shardNames(0, 1).notices, notices(outcome(1, 'for-team1')));
    await t1.reach(s1.seq + 11);
    await t1.next((m) => m.type === 'request' && m.outcome.request_id === 'for-team1', 'team1 outcome');
    // Then something of team2's own: when it arrives, team1's changes have long been fanned out.
    await publishFills(nc, fillsFor(2, { 5: 1 }));
    nc.publish(shardNames(0, 1).notices, notices(outcome(2, 'for-team2')));
    await t2.next((m) => m.type === 'request' && m.outcome.request_id === 'for-team2', 'team2 outcome');
    await t2.reach(s2.seq + 1);

    expect(t2.ofType('delta').map((d) => [d.client_id, d.seq])).toEqual([[2, s2.seq + 1]]);
    expect(t2.ofType('request').map((r) => r.outcome.request_id)).toEqual(['for-team2']);
    expect(t2.messages.every((m) => !('client_id' in m) || m.client_id === 2)).toBe(true);
    expect(t1.ofType('request').map((r) => r.outcome.request_id)).not.toContain('for-team2');
    expect(t1.messages.every((m) => !('client_id' in m) || m.client_id === 1)).toBe(true);
    await Promise.all([t1.stop(), t2.stop()]);
  });

  it('streams the outcome of each create and redeem the engine decides', async () => {
    const c = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    const snap = await c.next<SnapshotMessage>((m) => m.type === 'snapshot', 'snapshot');
    c.send({ type: 'subscribe', requests: true, id: 'req' });
    expect(await c.next((m) => m.type === 'subscribed', 'subscribed')).toMatchObject({ requests: true, prices: [], id: 'req' });
    await publishFills(nc, fillsFor(1, undyBasket(1)));
    await c.reach(snap.seq + 10);
    const ok = await http.create('team1', 'team1pass', 1);
    expect(ok.status).toBe(200);
    const refused = await http.redeem('team1', 'team1pass', 1_000);
    expect(refused.body.error.code).toBe('insufficient_holdings');
    const accepted = await c.next((m) => m.type === 'request' && m.outcome.status === 'accepted', 'accepted outcome');
    const rejected = await c.next((m) => m.type === 'request' && m.outcome.status === 'rejected', 'rejected outcome');
    expect(accepted).toMatchObject({ outcome: { request_id: ok.body.request_id, client_id: 1, op: 'create', amount: 1 } });
    expect(rejected).toMatchObject({ outcome: { client_id: 1, op: 'redeem', amount: 1000, error: { code: 'insufficient_holdings' } } });
    await c.stop();
  });

  it('streams ETF prices: the stored last one on subscribe, then live ones', async () => {
    const c = StreamClient.open(system.url, { basic: ['team2', 'team2pass'] });
    await c.next((m) => m.type === 'snapshot', 'snapshot');
    c.send({ type: 'subscribe', prices: ['STORED', 'UNDY'] });
    const stored = await c.next((m) => m.type === 'price', 'stored price');
    expect(stored).toMatchObject({ type: 'price', price: storedPrice });
    const live: EtfPrice = { ...storedPrice, etf: 'UNDY', symbol: 13, nav: 2000, ts: Date.now() };
    nc.publish(priceSubject('OTHER'), encode({ ...live, etf: 'OTHER' }));
    nc.publish(priceSubject('UNDY'), encode(live));
    const got = await c.next((m) => m.type === 'price' && m.price.etf === 'UNDY', 'live price');
    expect(got).toMatchObject({ price: live });
    expect(c.ofType('price').map((p) => p.price.etf)).toEqual(['STORED', 'UNDY']);
    await c.stop();
  });

  it('keeps a fast client whole while a slow one stalls, and brings the slow one back coherent', async () => {
    const fast = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    const slow = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    const [snap] = await Promise.all([
      fast.next<SnapshotMessage>((m) => m.type === 'snapshot', 'fast snapshot'),
      slow.next<SnapshotMessage>((m) => m.type === 'snapshot', 'slow snapshot'),
    ]);
    // The slow strategy stops reading: its socket buffers fill, then the gateway's.
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const received = slow.messages.length;

    const rounds = 80;
    const perRound = 200;
    for (let r = 0; r < rounds; r++) {
      await publishFills(nc, Array.from({ length: perRound }, (_, i) => fillsFor(1, { [3 + (i % 10)]: i % 2 ? 1 : -1 })[0]!));
      // The fast client keeps up round by round while the slow one's backlog only grows.
      await fast.reach(snap.seq + (r + 1) * perRound);
    }
    const last = snap.seq + rounds * perRound;
    expect(fast.problems).toEqual([]);
    expect(fast.ofType('delta')).toHaveLength(rounds * perRound);
    expect(slow.messages.length).toBe(received);

    (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const outcome = await Promise.race([slow.reach(last).then(() => 'caught up' as const), slow.closed]);
    if (outcome === 'caught up') {
      expect(slow.seq).toBe(last);
      expect(nonzero(slow.holdings)).toEqual(nonzero(fast.holdings));
      // It went stale: the gateway dropped its backlog and sent a fresh snapshot instead (again each time the kernel's
      // buffers let the gateway's drain while the client still did not read: one or more, all resyncs).
      const reasons = slow.ofType('snapshot').map((m) => m.reason);
      expect(reasons[0]).toBe('initial');
      expect(reasons.length).toBeGreaterThan(1);
      expect(reasons.slice(1).every((r) => r === 'resync')).toBe(true);
      expect(slow.ofType('delta').length).toBeLessThan(rounds * perRound);
      // Deltas before and after the resync were contiguous.
      expect(slow.problems).toEqual([]);
    } else {
      expect(outcome).toEqual({ code: 4008, reason: 'too slow' });
    }
    await Promise.all([fast.stop(), slow.stop()]);
  });

  it('closes connections with 1001 when the gateway shuts down', async () => {
    const c = StreamClient.open(system.url, { basic: ['team1', 'team1pass'] });
    await c.next((m) => m.type === 'snapshot', 'snapshot');
    systemClosed = true;
    await system.close();
    expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
  });
});

