import { beforeAll, describe, expect, it } from 'vitest';
import { buy as buyFor, MULTI_BASKETS, undyBasket, useSystem, type SystemFixture } from './helpers/system.js';
import { eachServer, serverHttp } from './helpers/servers.js';

// The whole API, once per HTTP server.
eachServer('API', (kind) => {
const f = useSystem({ basketsFile: MULTI_BASKETS, maxAmount: 10_000, http: serverHttp(kind) });
let http: SystemFixture['http'];
beforeAll(() => {
  http = f.http;
});

const buy = (clientId: number, quantities: Record<number, number>) => buyFor(f.nc, clientId, quantities);

describe('register', () => {
  it('registers a new account with a fresh client_id, then refuses the same name', async () => {
    const r = await http.register('alice', 'alicepass1');
    expect(r.status).toBe(200);
    expect(r.body.username).toBe('alice');
    expect(r.body.client_id).toBeGreaterThan(2); // the roster holds 1 and 2
    const again = await http.register('alice', 'otherpass1');
    expect(again.status).toBe(400);
    expect(again.body.error.code).toBe('username_taken');
    expect(again.body.error.message).toMatch(/taken/);
    // The first password still works, the second does not.
    expect((await http.holdings('alice', 'alicepass1')).status).toBe(200);
    expect((await http.holdings('alice', 'otherpass1')).status).toBe(401);
  });

  it('refuses missing and invalid usernames and passwords with a 400 naming the field', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ password: 'longenough' }, 'username'],
      [{ username: 'bob' }, 'password'],
      [{ username: '', password: 'longenough' }, 'username'],
      [{ username: 'way_too_long_username_x', password: 'longenough' }, 'username'],
      [{ username: 'bad name', password: 'longenough' }, 'username'],
      [{ username: 'bob', password: 'short' }, 'password'],
      [{ username: 'bob', password: 'x'.repeat(73) }, 'password'],
    ];
    for (const [form, field] of cases) {
      const r = await http.send('POST', '/register', { form });
      expect(r.status, JSON.stringify(form)).toBe(400);
      expect(r.body.error.field).toBe(field);
    }
    expect((await http.send('POST', '/register', { json: { username: 42, password: 'longenough' } })).status).toBe(400);
    // None of them created an account.
    expect((await http.holdings('bob', 'longenough')).status).toBe(401);
  });

  it('accepts JSON bodies', async () => {
    const r = await http.send('POST', '/register', { json: { username: 'json.user', password: 'jsonpass1' } });
    expect(r.status).toBe(200);
  });
});

describe('authentication', () => {
  const routes: [string, string, Record<string, string | number>][] = [
    ['POST', '/create', { amount: 1 }],
    ['POST', '/redeem', { amount: 1 }],
    ['GET', '/holdings', {}],
  ];
  it('answers 401 for a wrong password, an unknown user and missing credentials on every authenticated route', async () => {
    for (const [method, path, extra] of routes) {
      const query = method === 'GET';
      const wrong = { username: 'team1', password: 'wrongpass', ...extra };
      const unknown = { username: 'nobody', password: 'team1pass', ...extra };
      for (const params of [wrong, unknown, extra]) {
        const r = query
          ? await http.send(method, path, { query: Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])) })
          : await http.send(method, path, { form: params });
        expect(r.status, `${path} ${JSON.stringify(params)}`).toBe(401);
        expect(r.body.error.code).toBe('unauthorized');
        // No Basic challenge: it would make a browser keep credentials and replay them cross-site.
        expect(r.headers.get('www-authenticate')).toBeNull();
        expect(r.headers.get('cache-control')).toBe('no-store');
      }
      const basicWrong = await http.send(method, path, { basic: ['team1', 'nope-nope'], ...(query ? {} : { form: extra }) });
      expect(basicWrong.status).toBe(401);
    }
  });

  it('never lets a wrong password through after the right one was cached', async () => {
    expect((await http.holdings('team2', 'team2pass')).status).toBe(200);
    expect((await http.holdings('team2', 'team2pass ')).status).toBe(401);
    expect((await http.holdings('team2', 'team2pas')).status).toBe(401);
    expect((await http.holdings('team2', 'team2pass')).status).toBe(200);
  });
});

describe('create and redeem', () => {
  it('refuses a create without holdings, naming each short symbol with have and need', async () => {
    const r = await http.create('team1', 'team1pass', 2, 'UNDY');
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('insufficient_holdings');
    const short = r.body.error.shortfalls.map((s: { ticker: string }) => s.ticker);
    expect(short).toEqual(['KNAN', 'STED', 'FISH', 'DILN', 'SORN', 'RYAN', 'LYON', 'WLSH', 'LEWI', 'BDIN']);
    expect(r.body.error.shortfalls[0]).toMatchObject({ symbol: 3, have: 0, need: 2 });
    expect(r.body.error.message).toMatch(/KNAN have 0 need 2/);
  });

  it('creates after the basket is bought on the exchange, then redeems back', async () => {
    await buy(1, { ...undyBasket(5), 3: 12 }); // 12 KNAN, 5 of every other component
    const c = await http.create('team1', 'team1pass', 3, 'UNDY');
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ op: 'create', etf_name: 'UNDY', amount: 3, client_id: 1 });
    expect(c.body.deltas).toMatchObject({ KNAN: -3, BDIN: -3, UNDY: 3 });
    const h = await http.holdings('team1', 'team1pass');
    expect(h.status).toBe(200);
    expect(h.body.holdings).toEqual({ KNAN: 9, STED: 2, FISH: 2, DILN: 2, SORN: 2, RYAN: 2, LYON: 2, WLSH: 2, LEWI: 2, BDIN: 2, UNDY: 3 });
    expect(h.body.positions).toContainEqual({ symbol: 13, ticker: 'UNDY', quantity: 3 });

    const tooMany = await http.redeem('team1', 'team1pass', 4, 'UNDY');
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.shortfalls).toEqual([{ symbol: 13, ticker: 'UNDY', have: 3, need: 4 }]);

    const r = await http.redeem('team1', 'team1pass', 3, 'UNDY');
    expect(r.status).toBe(200);
    const after = await http.holdings('team1', 'team1pass');
    expect(after.body.holdings).toEqual({ KNAN: 12, STED: 5, FISH: 5, DILN: 5, SORN: 5, RYAN: 5, LYON: 5, WLSH: 5, LEWI: 5, BDIN: 5 });
  });

  it('handles a weighted basket (TECH = 2 KNAN + 1 STED + 3 FISH)', async () => {
    const reg = await http.register('techteam', 'techpass1');
    const id = reg.body.client_id as number;
    await buy(id, { 3: 5, 4: 2, 5: 6 });
    const r = await http.create('techteam', 'techpass1', 2, 'TECH');
    expect(r.status).toBe(200);
    expect(r.body.holdings).toEqual({ KNAN: 1, TECH: 2 });
    const short = await http.create('techteam', 'techpass1', 1, 'TECH');
    expect(short.body.error.shortfalls).toEqual([
      { symbol: 3, ticker: 'KNAN', have: 1, need: 2 },
      { symbol: 4, ticker: 'STED', have: 0, need: 1 },
      { symbol: 5, ticker: 'FISH', have: 0, need: 3 },
    ]);
    const back = await http.redeem('techteam', 'techpass1', 1, 'TECH');
    expect(back.body.holdings).toEqual({ KNAN: 3, STED: 1, FISH: 3, TECH: 1 });
  });

  it('takes form-encoded, JSON, query-string and Basic-auth requests alike', async () => {
    const reg = await http.register('styles', 'stylespass');
    await buy(reg.body.client_id, undyBasket(10));
    const form = await http.send('POST', '/create', { form: { username: 'styles', password: 'stylespass', etf_name: 'UNDY', amount: '1' } });
    const json = await http.send('POST', '/create', { json: { username: 'styles', password: 'stylespass', etf_name: 'UNDY', amount: 1 } });
    const basic = await http.send('POST', '/create', { basic: ['styles', 'stylespass'], json: { etf_name: 'UNDY', amount: 1 } });
    const basicForm = await http.send('POST', '/redeem', { basic: ['styles', 'stylespass'], form: { etf_name: 'UNDY', amount: 1 } });
    const query = await http.send('POST', '/create', { query: { username: 'styles', password: 'stylespass', etf_name: 'UNDY', amount: '1' } });
    const getBasic = await http.send('GET', '/holdings', { basic: ['styles', 'stylespass'] });
    for (const r of [form, json, basic, basicForm, query, getBasic]) expect(r.status).toBe(200);
    expect(getBasic.body.holdings.UNDY).toBe(3);
  });

  it('answers malformed input with a 4xx naming the problem and changes nothing', async () => {
    const reg = await http.register('malformed', 'malformed1');
    await buy(reg.body.client_id, undyBasket(3));
    const before = (await http.holdings('malformed', 'malformed1')).body;
    const auth = { username: 'malformed', password: 'malformed1' };
    const bad: [unknown, string][] = [
      [{ ...auth, etf_name: 'UNDY' }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: 1.9 }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: true }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: '1.0' }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: '1e2' }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: ' 1' }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: -1 }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: '-1' }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: 0 }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: 10_001 }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: 1e300 }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: '99999999999999999999' }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: [1] }, 'amount'],
      [{ ...auth, etf_name: 'UNDY', amount: null }, 'amount'],
      [{ ...auth, etf_name: 'NOPE', amount: 1 }, 'etf_name'],
      [{ ...auth, etf_name: 7, amount: 1 }, 'etf_name'],
      [{ ...auth, amount: 1 }, 'etf_name'], // two ETFs are configured: the name is required
    ];
    for (const [body, field] of bad) {
      for (const path of ['/create', '/redeem']) {
        const r = await http.send('POST', path, { json: body });
        expect(r.status, `${path} ${JSON.stringify(body)}`).toBe(400);
        expect(r.body.error.field, `${path} ${JSON.stringify(body)}`).toBe(field);
      }
    }
    const form = await http.send('POST', '/create', { form: { ...auth, etf_name: 'UNDY', amount: '2.5' } });
    expect(form.status).toBe(400);
    const badJson = await http.send('POST', '/create', { raw: '{"username": "malformed", ', headers: { 'content-type': 'application/json' } });
    expect(badJson.status).toBe(400);
    expect(badJson.body.error.message).toMatch(/JSON/);
    const arrayJson = await http.send('POST', '/create', { raw: '[1,2]', headers: { 'content-type': 'application/json' } });
    expect(arrayJson.status).toBe(400);
    const xml = await http.send('POST', '/create', { raw: '<a/>', headers: { 'content-type': 'application/xml' } });
    expect(xml.status).toBe(415);
    const huge = await http.send('POST', '/create', { raw: 'x'.repeat(20_000), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(huge.status).toBe(413);
    expect((await http.holdings('malformed', 'malformed1')).body).toEqual(before);
  });
});

describe('routes', () => {
  it('answers unknown routes 404, wrong methods 405, and health', async () => {
    const nf = await http.send('GET', '/nope');
    expect(nf.status).toBe(404);
    expect(nf.body.error.code).toBe('not_found');
    const m = await http.send('GET', '/create');
    expect(m.status).toBe(405);
    expect(m.headers.get('allow')).toBe('POST');
    expect((await http.send('DELETE', '/holdings')).status).toBe(405);
    const h = await http.send('GET', '/health');
    expect(h.status).toBe(200);
    // No feed bridge and no exchange here: served, but not "ok".
    expect(h.body).toMatchObject({ status: 'degraded', nats: true, engine: true, ws: { connections: 0 } });
    expect(h.body.problems[0]).toMatch(/feed bridge has not reported/);
  });
});
});
