import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import {
  api,
  buy,
  killProcess,
  natsClient,
  quietLog,
  spawnEngine,
  startTestNats,
  tempDir,
  testConfig,
  undyBasket,
  until,
} from './helpers/system.js';

/** A create answered 503 (engine paused past the gateway's timeout) can be looked up by the id in that 503. */
let nats: Awaited<ReturnType<typeof startTestNats>>;
let dir: ReturnType<typeof tempDir>;
let engine: Awaited<ReturnType<typeof spawnEngine>>;
let gateway: GatewayHandle;
let nc: Awaited<ReturnType<typeof natsClient>>;
let http: ReturnType<typeof api>;
const t1: [string, string] = ['team1', 'team1pass'];

beforeAll(async () => {
  nats = await startTestNats();
  dir = tempDir();
  const cfg = testConfig(dir.path, { requestTimeoutMs: 300 });
  engine = await spawnEngine(nats.url, cfg);
  gateway = await startGateway(cfg, nats.url, quietLog);
  nc = await natsClient(nats.url);
  http = api(`http://127.0.0.1:${gateway.port}`);
  await buy(nc, 1, undyBasket(10));
});

afterAll(async () => {
  if (engine) {
    engine.kill('SIGCONT');
    await killProcess(engine);
  }
  await nc?.close();
  await gateway?.close();
  await nats?.stop();
  nats?.remove();
  dir?.remove();
});

describe('a 503 names its request', () => {
  it('gives a create without request_id an id in the 503 that finds its outcome once the engine is back', async () => {
    expect((await http.holdings(...t1)).status).toBe(200); // credentials cached: the paused engine is only needed for the create
    engine.kill('SIGSTOP');
    const r = await http.send('POST', '/create', { basic: t1, form: { etf_name: 'UNDY', amount: 2 } });
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('engine_unavailable');
    const id = r.body.error.request_id as string;
    expect(id).toMatch(/^g-[A-Za-z0-9_-]{16}$/);
    expect(r.headers.get('idempotency-key')).toBe(id);
    engine.kill('SIGCONT');
    // The paused engine still had the command in its NATS buffer: it applies it on waking.
    const found = await until(async () => {
      const q = await http.send('GET', `/requests/${id}`, { basic: t1 });
      return q.status === 200 ? q : undefined;
    }, `request ${id} to be recorded`);
    expect(found.body.client_request_id).toBe(id);
    expect((await http.holdings(...t1)).body.holdings.UNDY).toBe(2);
    // Retrying with that id changes nothing more.
    const retry = await http.send('POST', '/create', { basic: t1, form: { etf_name: 'UNDY', amount: 2, request_id: id } });
    expect(retry.status).toBe(200);
    expect(retry.body.replayed).toBe(true);
    expect((await http.holdings(...t1)).body.holdings.UNDY).toBe(2);
  });

  it('says nothing was done when the sign-in itself could not be checked', async () => {
    // team2 never signed in here: its password needs the engine, paused past the gateway's timeout.
    engine.kill('SIGSTOP');
    const r = await http.send('POST', '/create', { basic: ['team2', 'team2pass'], form: { etf_name: 'UNDY', amount: 1 }, headers: { 'idempotency-key': 'cold-1' } });
    engine.kill('SIGCONT');
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('engine_unavailable');
    // Before: the conversion's "may or may not have happened", though it never left the gateway.
    expect(r.body.error.message).toMatch(/sign-in check.*nothing was done/);
    await until(async () => ((await http.holdings('team2', 'team2pass')).status === 200 ? true : undefined), 'team2 to sign in once the engine is back');
    expect((await http.send('GET', '/requests/cold-1', { basic: ['team2', 'team2pass'] })).status).toBe(404);
  });

  it('keeps the client-given key in the 503', async () => {
    engine.kill('SIGSTOP');
    const r = await http.send('POST', '/redeem', { basic: t1, form: { etf_name: 'UNDY', amount: 1 }, headers: { 'idempotency-key': 'mine-7' } });
    engine.kill('SIGCONT');
    expect(r.status).toBe(503);
    expect(r.body.error.request_id).toBe('mine-7');
    const found = await until(async () => {
      const q = await http.send('GET', '/requests/mine-7', { basic: t1 });
      return q.status === 200 ? q : undefined;
    }, 'request mine-7 to be recorded');
    expect(found.body.client_request_id).toBe('mine-7');
  });
});

describe('a conversion no engine received', () => {
  it('says nothing was done, and a new engine has no record of it', async () => {
    expect((await http.holdings(...t1)).status).toBe(200); // credentials cached: no engine needed to sign in
    engine.kill('SIGCONT');
    await killProcess(engine);
    const r = await http.send('POST', '/create', { basic: t1, form: { etf_name: 'UNDY', amount: 1 }, headers: { 'idempotency-key': 'absent-1' } });
    expect(r.status).toBe(503);
    expect(r.body.error).toMatchObject({ code: 'engine_unavailable', request_id: 'absent-1' });
    // Before: "may or may not have happened", though no engine was there to take it.
    expect(r.body.error.message).toMatch(/no engine was running.*nothing was done/);
    engine = await spawnEngine(nats.url, testConfig(dir.path, { requestTimeoutMs: 300 }));
    expect((await http.send('GET', '/requests/absent-1', { basic: t1 })).status).toBe(404);
  });
});
