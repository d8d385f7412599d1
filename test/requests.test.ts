import { beforeAll, describe, expect, it } from 'vitest';
import { buy, undyBasket, useSystem, type SystemFixture } from './helpers/system.js';

const f = useSystem();
const t1 = ['team1', 'team1pass'] as [string, string];
const t2 = ['team2', 'team2pass'] as [string, string];
let http: SystemFixture['http'];

beforeAll(async () => {
  http = f.http;
  await buy(f.nc, 1, undyBasket(10));
});

describe('idempotent requests', () => {
  it('returns the original result for a retry with the same request_id and changes nothing', async () => {
    const first = await http.send('POST', '/create', { basic: t1, json: { etf_name: 'UNDY', amount: 2, request_id: 'order-1' } });
    expect(first.status).toBe(200);
    expect(first.body.request_id).toMatch(/^r\d+$/);
    expect(first.body.client_request_id).toBe('order-1');
    const retry = await http.send('POST', '/create', { basic: t1, json: { etf_name: 'UNDY', amount: 2, request_id: 'order-1' } });
    expect(retry.status).toBe(200);
    expect(retry.body.replayed).toBe(true);
    expect(retry.body.request_id).toBe(first.body.request_id);
    expect(retry.body.holdings).toEqual(first.body.holdings);
    expect((await http.holdings(...t1)).body.holdings.UNDY).toBe(2);
    // The header works too, and is the same key space.
    const header = await http.send('POST', '/create', { basic: t1, form: { etf_name: 'UNDY', amount: 2 }, headers: { 'idempotency-key': 'order-1' } });
    expect(header.body.request_id).toBe(first.body.request_id);
    expect((await http.holdings(...t1)).body.holdings.UNDY).toBe(2);
  });

  it('answers 409 for the same request_id with different parameters', async () => {
    const conflict = await http.send('POST', '/create', { basic: t1, json: { etf_name: 'UNDY', amount: 3, request_id: 'order-1' } });
    expect(conflict.status).toBe(409);
    expect(conflict.body.error.code).toBe('idempotency_conflict');
    const redeem = await http.send('POST', '/redeem', { basic: t1, json: { etf_name: 'UNDY', amount: 2, request_id: 'order-1' } });
    expect(redeem.status).toBe(409);
    expect((await http.holdings(...t1)).body.holdings.UNDY).toBe(2);
  });

  it('keeps keys per account: another team may use the same key', async () => {
    const other = await http.send('POST', '/create', { basic: t2, json: { etf_name: 'UNDY', amount: 1, request_id: 'order-1' } });
    expect(other.status).toBe(400); // team2 holds nothing: a fresh decision, not team1's result
    expect(other.body.error.code).toBe('insufficient_holdings');
  });

  it('replays a rejection for a retried key, and refuses malformed keys', async () => {
    const a = await http.send('POST', '/redeem', { basic: t1, json: { amount: 50, request_id: 'too-big' } });
    expect(a.status).toBe(400);
    const b = await http.send('POST', '/redeem', { basic: t1, json: { amount: 50, request_id: 'too-big' } });
    expect(b.status).toBe(400);
    // The refusal of then, said to be one (what it says may no longer hold), naming the request it replays.
    const first = await http.send('GET', '/requests/too-big', { basic: t1 });
    expect(first.body).toMatchObject({ status: 'rejected', client_request_id: 'too-big' });
    expect(a.body.error.replayed).toBeUndefined();
    expect(b.body).toEqual({ error: { ...a.body.error, replayed: true, request_id: first.body.request_id } });
    const bad = await http.send('POST', '/create', { basic: t1, json: { amount: 1, request_id: 'has space' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('request_id');
  });
});

describe('a retry with or without etf_name', () => {
  it('is the same request either way, refused or accepted (one ETF: no name is that ETF)', async () => {
    // Refused first without the name, then retried with it (and the reverse): before, the first order was a 409.
    for (const [first, again] of [[{}, { etf_name: 'UNDY' }], [{ etf_name: 'UNDY' }, {}]] as const) {
      const key = `too-big-${Object.keys(first).length}`;
      const a = await http.send('POST', '/create', { basic: t1, json: { amount: 90, request_id: key, ...first } });
      expect(a.status).toBe(400);
      const b = await http.send('POST', '/create', { basic: t1, json: { amount: 90, request_id: key, ...again } });
      expect(b.status, JSON.stringify(b.body)).toBe(400);
      expect(b.body.error).toMatchObject({ code: a.body.error.code, replayed: true });
    }
    // Another ETF than the one it named is another request.
    const other = await http.send('POST', '/create', { basic: t1, json: { amount: 90, request_id: 'too-big-1', etf_name: 'NOPE' } });
    expect(other.status).toBe(409);
  });
});

describe('keys of the engine id form', () => {
  it('refuses a key shaped like an engine request id (r<number>) in every way a key is sent, and changes nothing', async () => {
    const first = await http.send('POST', '/create', { basic: t1, json: { etf_name: 'UNDY', amount: 1 } });
    expect(first.status).toBe(200);
    const taken = first.body.request_id as string;
    // A key equal to that engine id: GET /requests/<id> would have answered the other request for it.
    const sends: { json?: Record<string, string | number>; form?: Record<string, string>; headers?: Record<string, string> }[] = [
      { json: { etf_name: 'UNDY', amount: 1, request_id: taken } },
      { form: { etf_name: 'UNDY', amount: '1', request_id: 'r1' } },
      { form: { etf_name: 'UNDY', amount: '1' }, headers: { 'idempotency-key': 'r42' } },
      { json: { etf_name: 'UNDY', amount: 1, request_id: 'r9999999999999999' } },
    ];
    for (const how of sends) {
      const r = await http.send('POST', '/create', { basic: t1, ...how });
      expect(r.status, JSON.stringify(how)).toBe(400);
      expect(r.body.error).toMatchObject({ code: 'invalid_parameter', field: 'request_id' });
      expect(r.body.error.message).toMatch(/engine's own request ids/);
    }
    const redeem = await http.send('POST', '/redeem', { basic: t1, json: { etf_name: 'UNDY', amount: 1, request_id: 'r7' } });
    expect(redeem.status).toBe(400);
    const after = (await http.holdings(...t1)).body;
    expect(after.holdings).toEqual(first.body.holdings);
    expect(after.seq).toBe(first.body.seq);
    const found = await http.send('GET', `/requests/${taken}`, { basic: t1 });
    expect(found.body).toMatchObject({ request_id: taken, status: 'accepted', amount: 1 });
    expect(found.body.client_request_id).not.toBe(taken);
    // Keys merely near that form are keys as before.
    for (const key of ['r0', 'r01', 'R2', 'r2x', 'rr2']) {
      const r = await http.send('POST', '/create', { basic: t1, json: { etf_name: 'UNDY', amount: 1, request_id: key, dry_run: true } });
      expect(r.status, key).toBe(200);
    }
    // The account as the tests after this one expect it.
    expect((await http.send('POST', '/redeem', { basic: t1, json: { etf_name: 'UNDY', amount: 1 } })).status).toBe(200);
  });
});

describe('request status and history', () => {
  it('finds a request by its id or key, for its own account only', async () => {
    const r = await http.send('POST', '/redeem', { basic: t1, json: { amount: 1, request_id: 'redeem-1' } });
    expect(r.status).toBe(200);
    const byId = await http.send('GET', `/requests/${r.body.request_id}`, { basic: t1 });
    expect(byId.status).toBe(200);
    expect(byId.body).toMatchObject({ request_id: r.body.request_id, kind: 'redeem', status: 'accepted', client_id: 1, etf: 'UNDY', amount: 1, client_request_id: 'redeem-1' });
    expect(byId.body.holdings).toContainEqual({ symbol: 13, ticker: 'UNDY', quantity: 1 });
    const byKey = await http.send('GET', '/requests/redeem-1', { basic: t1 });
    expect(byKey.body).toEqual(byId.body);
    // Another team asking for it gets the same 404 as for an id that does not exist.
    const foreign = await http.send('GET', `/requests/${r.body.request_id}`, { basic: t2 });
    expect(foreign.status).toBe(404);
    expect(JSON.stringify(foreign.body)).not.toMatch(/UNDY|team1/);
    expect((await http.send('GET', '/requests/redeem-1', { basic: t2 })).status).toBe(404);
    expect((await http.send('GET', '/requests/r999999', { basic: t1 })).status).toBe(404);
    expect((await http.send('GET', `/requests/${r.body.request_id}`, { basic: ['team1', 'wrong-pass'] })).status).toBe(401);
  });

  it('lists a team its own entries, newest first, with rejections and reasons, paginated', async () => {
    const all = await http.send('GET', '/history', { basic: t1, query: { limit: '500' } });
    expect(all.status).toBe(200);
    const entries = all.body.entries as { request_id: string; kind: string; status: string; error?: { code: string } }[];
    const ids = entries.map((e) => Number(e.request_id.slice(1)));
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    expect(entries.some((e) => e.status === 'rejected' && e.error?.code === 'insufficient_holdings')).toBe(true);
    expect(entries.every((e) => (e as unknown as { client_id: number }).client_id === 1)).toBe(true);

    const page1 = await http.send('GET', '/history', { basic: t1, query: { limit: '2' } });
    expect(page1.body.entries).toHaveLength(2);
    const page2 = await http.send('GET', '/history', { basic: t1, query: { limit: '2', before: page1.body.next } });
    expect([...page1.body.entries, ...page2.body.entries]).toEqual(entries.slice(0, 4));
    expect((await http.send('GET', '/history', { basic: t1, query: { limit: '0' } })).status).toBe(400);
    expect((await http.send('GET', '/history', { basic: t1, query: { before: 'x' } })).status).toBe(400);

    const reg = await http.register('historian', 'historian1');
    const h = await http.send('GET', '/history', { basic: ['historian', 'historian1'] });
    expect(h.body.entries).toEqual([expect.objectContaining({ request_id: reg.body.request_id, kind: 'register', status: 'accepted', username: 'historian' })]);
  });
});
