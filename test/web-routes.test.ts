import { readFileSync, statSync } from 'node:fs';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { operatorFile } from '../src/gateway/operator.js';
import { createLogger } from '../src/shared/log.js';
import { OPERATOR_ROUTES } from '../proto/operator.js';
import { buy, tempDir, testConfig, useSystem } from './helpers/system.js';

const OPERATOR = { username: 'op', password: 'op-secret-pass' };
const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

describe('pages and assets', () => {
  const f = useSystem({ operator: OPERATOR });

  it.each([
    ['/', 'text/html; charset=utf-8', '<title>NDFEX ETF desk</title>'],
    ['/operator', 'text/html; charset=utf-8', '<title>NDFEX ETF operator</title>'],
    ['/web/team.js', 'text/javascript; charset=utf-8', 'WebSocket'],
    ['/web/operator.js', 'text/javascript; charset=utf-8', OPERATOR_ROUTES.overview],
    ['/web/common.js', 'text/javascript; charset=utf-8', 'export function el'],
    ['/web/style.css', 'text/css; charset=utf-8', ':root'],
    ['/board', 'text/html; charset=utf-8', '<title>NDFEX ETF leaderboard</title>'],
    ['/web/charts.js', 'text/javascript; charset=utf-8', 'export function priceChart'],
    // The charting library from node_modules (no CDN: lab networks are closed).
    ['/web/uPlot.iife.min.js', 'text/javascript; charset=utf-8', 'uPlot'],
    ['/web/uPlot.min.css', 'text/css; charset=utf-8', '.uplot'],
  ])('GET %s is served as %s', async (path, type, contains) => {
    const res = await fetch(`${f.sys.url}${path}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(type);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await res.text()).toContain(contains);
  });

  it.each(['/web/nope.js', '/web/..%2Fpackage.json', '/web/.hidden', '/web/'])('GET %s is a JSON 404', async (path) => {
    const res = await fetch(`${f.sys.url}${path}`);
    expect(res.status).toBe(404);
    expect((await res.json()).error.code).toBe('not_found');
  });

  it('other methods on a page are a JSON 405', async () => {
    const res = await fetch(`${f.sys.url}/`, { method: 'POST', body: 'x' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET');
    expect((await res.json()).error.code).toBe('method_not_allowed');
  });
});

describe('operator API', () => {
  const f = useSystem({ operator: OPERATOR });
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => fetch(`${f.sys.url}${path}`, { method, headers });

  it('refuses missing or wrong credentials with a JSON 401 and no browser challenge', async () => {
    for (const headers of [{}, basic('op', 'wrong-password'), basic('team1', 'team1pass'), { authorization: 'Bearer x' }]) {
      const res = await get(OPERATOR_ROUTES.overview, headers);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBeNull();
      expect((await res.json()).error.code).toBe('unauthorized');
    }
  });

  it("lists every team's positions from the engine, with the stream positions they reflect", async () => {
    await buy(f.nc, 2, { 3: 7, 13: 2 });
    const res = await get(OPERATOR_ROUTES.accounts, basic(OPERATOR.username, OPERATOR.password));
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.fill_seq).toBeGreaterThanOrEqual(2);
    expect(body.accounts).toEqual([
      { client_id: 1, username: 'team1', holdings: {}, cash: 0, pnl: { cash: 0, marked: 0, total: 0, unmarked: [] } },
      // Bought at 100 a unit; no market to mark at here.
      { client_id: 2, username: 'team2', holdings: { KNAN: 7, UNDY: 2 }, cash: -900, pnl: { cash: -900, marked: 0, total: -900, unmarked: ['KNAN', 'UNDY'] } },
    ]);
  });

  it('overview: conversions of every team newest first, feed status, alerts, stream counters', async () => {
    await buy(f.nc, 1, { 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: 1 });
    expect((await f.http.create('team1', 'team1pass', 1)).status).toBe(200);
    expect((await f.http.redeem('team2', 'team2pass', 5)).status).toBe(400);
    const res = await get(OPERATOR_ROUTES.overview, basic(OPERATOR.username, OPERATOR.password));
    expect(res.status).toBe(200);
    const o = await res.json();
    expect(o.conversions.map((c: any) => [c.username, c.kind, c.status])).toEqual([
      ['team2', 'redeem', 'rejected'],
      ['team1', 'create', 'accepted'],
    ]);
    expect(o.feed).toEqual({ live: false, exchange_live: false, age_ms: null });
    expect(o.alerts).toEqual([]);
    expect(o.ws).toEqual({ connections: 0, accounts: 0, changes: 0 });
    expect(o.accounts.find((a: any) => a.username === 'team1').holdings).toEqual({ UNDY: 1 });
  });

  it('is read-only (405) and unknown operator routes are 404', async () => {
    const auth = basic(OPERATOR.username, OPERATOR.password);
    expect((await get(OPERATOR_ROUTES.accounts, auth, 'POST')).status).toBe(405);
    expect((await get('/operator/api/nothing', auth)).status).toBe(404);
  });
});

describe('operator credentials', () => {
  const f = useSystem();
  const gateways: GatewayHandle[] = [];
  const dir = tempDir();
  afterAll(async () => {
    for (const g of gateways) await g.close();
    dir.remove();
  });

  it('without configured ones, the gateway generates them into DATA_DIR (0600), logs the file and never the password', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
    const cfg = testConfig(dir.path);
    const g = await startGateway(cfg, f.nats.url, createLogger('gateway', 'info', sink));
    gateways.push(g);
    const file = operatorFile(cfg);
    expect(file).toBe(join(dir.path, 'operator.json'));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const creds = JSON.parse(readFileSync(file, 'utf8'));
    expect(creds.username).toBe('operator');
    expect(creds.password.length).toBeGreaterThanOrEqual(20);
    const generated = lines.find((l) => l.includes('operator credentials generated'));
    expect(generated).toContain(file);
    expect(lines.join('')).not.toContain(creds.password);

    const res = await fetch(`http://127.0.0.1:${g.port}${OPERATOR_ROUTES.accounts}`, { headers: basic(creds.username, creds.password) });
    expect(res.status).toBe(200);

    // A restart (or a second gateway) reads the same file: the instructor's password does not change under them.
    const again = await startGateway(cfg, f.nats.url, createLogger('gateway', 'silent'));
    gateways.push(again);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(creds);
    expect((await fetch(`http://127.0.0.1:${again.port}${OPERATOR_ROUTES.accounts}`, { headers: basic(creds.username, creds.password) })).status).toBe(200);
  });

  it('OPERATOR_USER / OPERATOR_PASSWORD override the config; a short password stops start-up with a clear message', () => {
    const cfg = loadConfig({ OPERATOR_USER: 'prof', OPERATOR_PASSWORD: 'long-enough-pw' });
    expect(cfg.operator).toEqual({ username: 'prof', password: 'long-enough-pw' });
    expect(loadConfig({ OPERATOR_PASSWORD: 'long-enough-pw' }).operator).toEqual({ username: 'operator', password: 'long-enough-pw' });
    expect(() => loadConfig({ OPERATOR_USER: 'prof', OPERATOR_PASSWORD: 'short' })).toThrow(/operator password must be at least 8 characters/);
    expect(loadConfig({}).operator).toBeUndefined();
  });
});
