import { describe, expect, it } from 'vitest';
import type { HoldingsChange } from '../proto/holdings.js';
import type { ServerMessage } from '../proto/ws.js';
import { SeqRing } from '../src/gateway/ws/ring.js';
import { AccountFeed } from '../src/gateway/ws/account.js';
import { wsLimits } from '../src/gateway/ws/limits.js';
import { Session, type SessionHost, type Transport } from '../src/gateway/ws/session.js';
import { quietLog } from './helpers/system.js';
import { Hub, type HubDeps } from '../src/gateway/ws/hub.js';
import { encodeRecords } from '../proto/codec.js';
import { NOTICE_BATCH_VERSION, type HoldingsNotice, type NoticeBatch } from '../proto/holdings.js';
import type { OutcomeNotice } from '../proto/requests.js';
import type { EngineReply } from '../proto/engine.js';
import { NOTICES_SUBJECT_WILDCARD } from '../proto/subjects.js';

const change = (seq: number, quantity = seq): HoldingsChange => ({
  v: 1,
  client_id: 1,
  seq,
  cause: 'fill',
  deltas: [{ symbol: 3, ticker: 'KNAN', quantity: 1 }],
  positions: [{ symbol: 3, ticker: 'KNAN', quantity }],
  ts: 0,
});

describe('SeqRing', () => {
  it('replays what it holds after a seq, and nothing it has lost', () => {
    const ring = new SeqRing<number>(4);
    for (let s = 11; s <= 16; s++) ring.push(s, s * 10);
    expect(ring.size).toBe(4); // 13..16
    expect(ring.after(16, 16)).toEqual([]);
    expect(ring.after(14, 16)).toEqual([150, 160]);
    expect(ring.after(12, 16)).toEqual([130, 140, 150, 160]);
    expect(ring.after(11, 16)).toBeNull(); // 12 is gone
    expect(ring.after(17, 16)).toBeNull(); // ahead of the account
    expect(ring.after(14, 17)).toBeNull(); // the ring is behind the feed
  });

  it('restarts on a seq that does not follow', () => {
    const ring = new SeqRing<number>(4);
    ring.push(1, 1);
    ring.push(2, 2);
    ring.push(9, 9);
    expect(ring.size).toBe(1);
    expect(ring.after(8, 9)).toEqual([9]);
    expect(ring.after(1, 9)).toBeNull();
  });
});

class Listener {
  lives: boolean[] = [];
  seqs: number[] = [];
  feedLive(resync: boolean) {
    this.lives.push(resync);
  }
  onChange(seq: number) {
    this.seqs.push(seq);
  }
  deliverOutcome() {}
  outcomeDropped() {}
}

describe('AccountFeed', () => {
  it('joins race-free: held changes the snapshot contains are dropped, later ones applied', () => {
    const feed = new AccountFeed<Listener>(1, 16);
    const l = new Listener();
    feed.sessions.add(l);
    feed.startJoin();
    for (const s of [4, 5, 6, 7]) expect(feed.offer(change(s))).toBe('ok');
    expect(l.seqs).toEqual([]);
    expect(feed.snapshot({ client_id: 1, username: 'team1', seq: 5, positions: [], cash: 0 })).toBe('ok');
    expect(feed.seq).toBe(7);
    expect(feed.positions).toEqual(change(7).positions);
    expect(l.lives).toEqual([false]);
    // The ring holds what came after the snapshot, for resume.
    expect(feed.ring.after(5, 7)).toHaveLength(2);
    feed.offer(change(8));
    feed.offer(change(8)); // a duplicate is ignored
    expect(l.seqs).toEqual([8]);
    expect(feed.offer(change(10))).toBe('gap');
    expect(feed.seq).toBe(8);
  });

  it('reports a gap between the snapshot and the held changes', () => {
    const feed = new AccountFeed(1, 16);
    feed.startJoin();
    feed.offer(change(9));
    expect(feed.snapshot({ client_id: 1, username: 'team1', seq: 5, positions: [], cash: 0 })).toBe('gap');
  });
});

/** A socket whose backlog the test sets, recording what is sent. */
class FakeSocket implements Transport {
  backlog = 0;
  dropAll = false;
  frames: ServerMessage[] = [];
  closed?: { code: number; reason: string };
  onEnd?: () => void;
  send(frame: Uint8Array): number {
    if (this.dropAll) return 2;
    this.frames.push(JSON.parse(Buffer.from(frame).toString('utf8')) as ServerMessage);
    return 1;
  }
  buffered() {
    return this.backlog;
  }
  end(code: number, reason: string) {
    this.closed = { code, reason };
    this.onEnd?.();
  }
  cork(fn: () => void) {
    fn();
  }
}

/** A session's host for one account's feed, whose password check is `verify`. */
function hostOf(feed: AccountFeed<Session>, limits: ReturnType<typeof wsLimits>, verify: SessionHost['verify']): SessionHost {
  return {
    limits,
    verify,
    join: (s) => {
      feed.sessions.add(s);
      return feed;
    },
    leave: (s) => void feed.sessions.delete(s),
    latestPrices: () => {},
    priceInterestChanged: () => {},
    // The test flushes by hand: what a turn of the event loop would do.
    scheduleFlush: () => {},
  };
}

function connected(limits = wsLimits({ softBufferBytes: 1000, staleTimeoutMs: 50, maxPriceSubscriptions: 2 })) {
  const feed = new AccountFeed<Session>(1, 64);
  const socket = new FakeSocket();
  const session = new Session(socket, hostOf(feed, limits, () => ({ ok: true, clientId: 1 })), 'json', quietLog);
  socket.onEnd = () => session.onClosed();
  feed.startJoin();
  session.open({ username: 'team1', password: 'x' });
  feed.snapshot({ client_id: 1, username: 'team1', seq: 0, positions: [], cash: 0 });
  session.flush();
  return { feed, socket, session };
}

const types = (frames: ServerMessage[]) => frames.map((f) => (f.type === 'delta' || f.type === 'snapshot' ? `${f.type}:${f.seq}` : f.type));

describe('Session slow-consumer policy', () => {
  it('stops deltas past the soft limit, then sends one fresh snapshot when drained', () => {
    const { feed, socket, session } = connected();
    feed.offer(change(1));
    session.flush();
    socket.backlog = 5000; // the client stopped reading
    for (const s of [2, 3, 4]) feed.offer(change(s));
    session.flush();
    expect(types(socket.frames)).toEqual(['welcome', 'snapshot:0', 'delta:1']);

    socket.backlog = 800; // drained, but not below half the soft limit
    session.onDrain();
    session.flush();
    expect(socket.frames).toHaveLength(3);

    socket.backlog = 0;
    session.onDrain();
    feed.offer(change(5));
    session.flush();
    expect(types(socket.frames)).toEqual(['welcome', 'snapshot:0', 'delta:1', 'snapshot:4', 'delta:5']);
    expect(socket.frames[3]).toMatchObject({ reason: 'resync', positions: change(4).positions });
    expect(socket.closed).toBeUndefined();
  });

  it('closes with 4008 a connection stale for longer than the timeout', () => {
    const { feed, socket, session } = connected();
    socket.backlog = 5000;
    feed.offer(change(1));
    session.tick(Date.now());
    expect(socket.closed).toBeUndefined();
    session.tick(Date.now() + 1000);
    expect(socket.closed).toEqual({ code: 4008, reason: 'too slow' });
    expect(feed.sessions.size).toBe(0);
  });

  it('closes with 4008 when uWS drops a frame', () => {
    const { feed, socket, session } = connected();
    socket.dropAll = true;
    feed.offer(change(1));
    session.flush();
    expect(socket.closed).toEqual({ code: 4008, reason: 'too slow' });
    expect(session.closed).toBe(true);
  });
});

describe('Session subscriptions', () => {
  const msg = (o: unknown) => new TextEncoder().encode(JSON.stringify(o)).buffer as ArrayBuffer;

  it('refuses a subscription over the limit whole, and keeps the previous ones', () => {
    const { socket, session } = connected();
    session.onMessage(msg({ type: 'subscribe', prices: ['UNDY'], requests: true, id: 1 }), false);
    session.onMessage(msg({ type: 'subscribe', prices: ['A', 'B'], id: 2 }), false);
    session.onMessage(msg({ type: 'subscribe', prices: ['*'], id: 3 }), false);
    session.onMessage(msg({ type: 'unsubscribe', prices: ['UNDY'], requests: true, id: 4 }), false);
    session.flush();
    const replies = socket.frames.filter((f) => f.type === 'subscribed' || f.type === 'error');
    expect(replies).toMatchObject([
      { type: 'subscribed', prices: ['UNDY'], requests: true, id: 1 },
      { type: 'error', code: 'too_many_subscriptions', id: 2 },
      { type: 'subscribed', prices: ['UNDY', '*'], requests: true, id: 3 },
      { type: 'subscribed', prices: ['*'], requests: false, id: 4 },
    ]);
    expect(session.wantsPrice('ANY')).toBe(true);
  });
});

describe('Session and sign-in changes', () => {
  /** A session whose password check is held until the test settles it. */
  function checking() {
    const feed = new AccountFeed<Session>(1, 64);
    const socket = new FakeSocket();
    let settle!: (r: { ok: true; clientId: number }) => void;
    const session = new Session(socket, hostOf(feed, wsLimits({}), () => new Promise((resolve) => (settle = resolve))), 'json', quietLog);
    socket.onEnd = () => session.onClosed();
    session.open({ username: 'team1', password: 'the-old-password' });
    return { socket, session, settle: (r: { ok: true; clientId: number }) => settle(r) };
  }

  it('closes a stream whose password is being checked when its account\'s sign-in changes (or any may have), and never welcomes it', async () => {
    for (const names of [new Set(['team1']), null]) {
      const { socket, session, settle } = checking();
      session.signInChanged(names);
      expect(socket.closed).toEqual({ code: 4001, reason: 'sign-in changed: authenticate again' });
      // The check read the hash from before the change: its success comes too late to open the stream.
      settle({ ok: true, clientId: 1 });
      await Promise.resolve();
      session.flush();
      expect(types(socket.frames)).not.toContain('welcome');
    }
    // Another account's change leaves it be.
    const other = checking();
    other.session.signInChanged(new Set(['team2']));
    expect(other.socket.closed).toBeUndefined();
  });
});

describe('Hub: request outcomes while re-snapshotting', () => {
  /** A hub on a fake bus and engine: the test hands it notices and answers each holdings request when it chooses. */
  function hubWorld() {
    const callbacks = new Map<string, (err: unknown, m: { subject: string; data: Uint8Array }) => void>();
    const nc = {
      subscribe: (subject: string, opts: { callback: (err: unknown, m: { subject: string; data: Uint8Array }) => void }) => {
        callbacks.set(subject, opts.callback);
        return { unsubscribe: () => {} };
      },
      status: () => ({ [Symbol.asyncIterator]: () => ({ next: () => new Promise<never>(() => {}) }) }),
    };
    const asked: ((r: EngineReply) => void)[] = [];
    const engine = { call: () => new Promise<EngineReply>((resolve) => asked.push(resolve)) };
    const deps = { nc, engine, auth: { verify: () => ({ ok: true, clientId: 1 }) }, tickerOf: (s: number) => `S${s}` } as unknown as HubDeps;
    const hub = new Hub(deps, quietLog, wsLimits());
    hub.start();
    const socket = new FakeSocket();
    const session = hub.open(socket, 'json');
    socket.onEnd = () => session.onClosed();
    const notices = (b: Omit<NoticeBatch, 'v'>) => callbacks.get(NOTICES_SUBJECT_WILDCARD)!(null, { subject: 'etf.notices.0', data: encodeRecords({ v: NOTICE_BATCH_VERSION, ...b }) });
    const answer = (seq: number, knan: number) => asked.shift()!({ id: 0, ok: true, result: { client_id: 1, username: 'team1', seq, positions: [3, knan], cash: 0 } } as EngineReply);
    return { hub, socket, session, notices, answer, asked };
  }
  const change = (seq: number, knan: number): HoldingsNotice => ({ client_id: 1, seq, cause: 'create', deltas: [3, -1], positions: [3, knan], cash: 0, ts: 0 });
  const accepted: OutcomeNotice = { request_id: 'r1', client_id: 1, op: 'create', etf: 'UNDY', amount: 1, status: 'accepted', ts: 0, deltas: [3, -1] };
  const msg = (o: unknown) => new TextEncoder().encode(JSON.stringify(o)).buffer as ArrayBuffer;
  const settle = () => new Promise((r) => setImmediate(r));

  it('sends a conversion outcome that came with a gap after the resync snapshot that includes its change, not before', async () => {
    const { hub, socket, session, notices, answer, asked } = hubWorld();
    session.open({ username: 'team1', password: 'x' });
    await settle();
    answer(0, 5);
    await settle();
    session.onMessage(msg({ type: 'subscribe', requests: true }), false);
    // Change 1 never arrived: the create (change 2) and its outcome, in one batch, find the gateway behind.
    notices({ changes: [change(2, 3)], outcomes: [accepted] });
    expect(asked).toHaveLength(1);
    // Meanwhile change 4 comes without 3: held, it is a gap again at the snapshot, and the outcome waits through a second one.
    notices({ changes: [change(4, 1)], outcomes: [] });
    answer(2, 3);
    await settle();
    expect(asked).toHaveLength(1);
    answer(4, 1);
    await settle();
    session.flush();
    expect(types(socket.frames)).toEqual(['welcome', 'snapshot:0', 'subscribed', 'snapshot:4', 'request']);
    expect(socket.frames[3]).toMatchObject({ reason: 'resync', positions: [{ symbol: 3, quantity: 1 }] });
    hub.close();
  });

  it('sends an outcome that arrived before the first snapshot right after it', async () => {
    const { hub, socket, session, notices, answer } = hubWorld();
    session.open({ username: 'team1', password: 'x' });
    session.onMessage(msg({ type: 'subscribe', requests: true }), false);
    await settle();
    notices({ changes: [change(1, 4)], outcomes: [accepted] });
    answer(0, 5);
    await settle();
    session.flush();
    expect(types(socket.frames)).toEqual(['welcome', 'subscribed', 'snapshot:1', 'request']);
    hub.close();
  });
});
