import { afterAll, beforeAll, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { FEED_STATUS_SUBJECT, type FeedStatus, type StandbyStatus } from '../proto/marketdata.js';
import { encode } from '../proto/codec.js';
import { encodeMdDatagram } from '../proto/ndfex.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { api, until, natsClient, quietLog, startSystem, startTestNats, tempDir, testConfig, type TestSystem } from './helpers/system.js';
import { bridgeOpts, collect, fillMsg, sendClearing, type Sender } from './helpers/feed.js';

let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let sys: TestSystem;
let nc: NatsConnection;
let sender: Sender;
let bridge: BridgeHandle;
let opts: BridgeOptions;

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  sys = await startSystem(nats.url, { ...testConfig(dir.path), operator: { username: 'instructor', password: 'instructorpass' } });
  nc = await natsClient(nats.url);
  sender = await multicastSender('127.0.0.1');
  opts = await bridgeOpts(nats.url);
});

afterAll(async () => {
  await bridge?.close();
  await sender?.close();
  await nc?.close();
  await sys?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

it('shows the feed bridge as down, then live with its gap count; the missed fill is a problem until acknowledged; malformed market data is no exchange', async () => {
  const http = api(sys.url);
  const before = await http.send('GET', '/health');
  expect(before.status).toBe(200); // teams are served without an exchange
  expect(before.body.feed).toEqual({ live: false, exchange_live: false, age_ms: null });
  expect(before.body).toMatchObject({ status: 'degraded' });

  const statuses = collect<FeedStatus>(nc, FEED_STATUS_SUBJECT);
  await statuses.flushed();
  bridge = await startBridge(opts, quietLog);
  await sendClearing(sender, opts.clearing, [[fillMsg(1, 1, 3, 1)], [fillMsg(3, 1, 3, 1)]]);
  await statuses.next((s) => s.clearing.gaps === 1);
  // The gateway hears the same subject on its own connection: wait for it to have taken that status in.
  const after = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.clearing?.gaps === 1 && h;
  }, 'the gap on /health');
  expect(after.body.feed.live).toBe(true);
  expect(after.body.feed.clearing).toMatchObject({ gaps: 1, missed_messages: 1, last_seq: 3 });
  // The bridge is up but the exchange's market data (a heartbeat every 500 ms at least) is not heard: not "ok".
  expect(after.body.status).toBe('degraded');
  expect(after.body.problems[0]).toMatch(/no market data/);
  // Malformed market-data datagrams (anyone can send them) are no sign of the exchange: still degraded.
  for (let i = 0; i < 5; i++) await sender.send(opts.marketData, Buffer.from('GOIRISH! not a message'));
  await statuses.next((s) => s.market_data.bad_datagrams === 5);
  const junk = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.market_data?.bad_datagrams === 5 && h;
  }, 'the malformed datagrams on /health');
  expect(junk.body.status).toBe('degraded');
  expect(junk.body.problems.join('\n')).toMatch(/no market data/);
  // The exchange is heard: the missed fill still stands as a problem until the operator acknowledges it.
  await sender.send(opts.marketData, encodeMdDatagram([{ type: 'heartbeat', seq: 1, timestamp: 1n }]));
  const heard = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.exchange_live && h;
  }, 'the exchange heard');
  expect(heard.body.status).toBe('degraded');
  expect(heard.body.problems).toHaveLength(1);
  expect(heard.body.problems[0]).toMatch(/^gap on clearing \[gap-clearing, operator: ack\]: clearing fills missed for good: 1/);
  expect((await http.send('POST', '/operator/api/feed/ack', { basic: ['team1', 'team1pass'], form: { id: 'gap-clearing' } })).status).toBe(401);
  const ack = await http.send('POST', '/operator/api/feed/ack', { basic: ['instructor', 'instructorpass'], form: { id: 'gap-clearing' } });
  expect(ack.status).toBe(200);
  expect(ack.body.done).toEqual(['gap-clearing']);
  expect((await http.send('POST', '/operator/api/feed/ack', { basic: ['instructor', 'instructorpass'], form: { id: 'gap-clearing' } })).status).toBe(404);
  const ok = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.status === 'ok' && h;
  }, 'status ok once acknowledged');
  expect(ok.body.feed.exchange_live).toBe(true);
  expect(ok.body.problems).toBeUndefined();
  statuses.stop();
});

it('shows the standby bridge beside the bridge, its status never taken for the bridge\'s; once it stops reporting, a problem', async () => {
  const http = api(sys.url);
  const bridgeBefore = (await http.send('GET', '/health')).body.feed.clearing;
  const standby: StandbyStatus = {
    role: 'standby',
    session: 1,
    sender: '127.0.0.1:4000',
    last_seq: 3,
    waiting: null,
    datagrams: 3,
    bad_datagrams: 0,
    published: 2,
    duplicates: 1,
    not_following: 0,
    other_sender: 0,
    not_after: 1,
    suspended: 0,
    conflicts: 0,
    gaps: 0,
    invalid: 0,
    ts: Date.now(),
  };
  nc.publish(FEED_STATUS_SUBJECT, encode(standby));
  const shown = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.standby?.live && h;
  }, 'the standby on /health');
  expect(shown.body.feed.standby).toMatchObject({ live: true, session: 1, sender: '127.0.0.1:4000', waiting: null, published: 2 });
  expect(shown.body.feed.clearing).toMatchObject({ gaps: bridgeBefore.gaps, last_seq: bridgeBefore.last_seq });
  const metrics = await fetch(`${sys.url}/metrics`).then((r) => r.text());
  expect(metrics).toMatch(/^ndfex_feed_standby_up 1$/m);
  // It stops reporting (killed, not restarted): /health says what that costs.
  const stale = await until(async () => {
    const h = await http.send('GET', '/health');
    return h.body.feed.standby?.live === false && h;
  }, 'the standby taken for down', 15_000);
  expect(stale.body.status).toBe('degraded');
  expect(stale.body.problems).toContainEqual(expect.stringMatching(/^the standby bridge last reported \d+ s ago: fills the exchange sends while the bridge restarts would be lost/));
});
