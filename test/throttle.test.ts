import { request } from 'node:http';
import WebSocket from 'ws';
import { WS_CLOSE } from '../proto/ws.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, THROTTLE_DEFAULTS, loadConfig } from '../src/config/config.js';
import { buy, undyBasket, useSystem } from './helpers/system.js';

/**
 * Rate limits with small, test-sized budgets. Every client address is a
 * loopback address of its own (127.0.0.x), so each case has its own budget.
 */
const f = useSystem({
  throttle: {
    enabled: true,
    address: { burst: 1000, perMinute: 60_000 },
    team: { burst: 1000, perMinute: 60_000 },
    conversions: { burst: 2, perMinute: 1 },
    registrations: { burst: 3, perMinute: 1 },
    loginFailuresPerUser: { burst: 3, perMinute: 1 },
    loginFailuresPerAddress: { burst: 5, perMinute: 1 },
  },
  roster: '1 team1 team1pass\n2 team2 team2pass\n3 team3 team3pass\n4 team4 team4pass\n',
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** One request from a chosen local address (node's http, bound to `from`). */
function from(address: string, method: string, path: string, opts: { form?: Record<string, string | number>; basic?: [string, string] } = {}): Promise<Answer> {
  const url = new URL(f.sys.url + path);
  const body = opts.form ? new URLSearchParams(Object.entries(opts.form).map(([k, v]) => [k, String(v)])).toString() : undefined;
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
  if (opts.basic) headers.authorization = `Basic ${Buffer.from(opts.basic.join(':')).toString('base64')}`;
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, localAddress: address, agent: false }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const holdings = (addr: string, user: string, password: string) => from(addr, 'GET', '/holdings', { basic: [user, password] });

function expect429(r: Answer, scope: string) {
  expect(r.status).toBe(429);
  expect(r.body.error.code).toBe('too_many_requests');
  expect(r.body.error.scope).toBe(scope);
  const retry = Number(r.headers['retry-after']);
  expect(retry).toBeGreaterThanOrEqual(1);
  expect(r.body.error.retry_after).toBe(retry);
}

beforeAll(async () => {
  await buy(f.nc, 1, undyBasket(10));
});

describe('failed logins', () => {
  it('locks a username out after the configured failures, before any bcrypt, and keeps its signed-in owner working', async () => {
    // The owner signs in first (from its own address): its password is now known to the gateway.
    expect((await holdings('127.0.0.1', 'team2', 'team2pass')).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await holdings('127.0.0.2', 'team2', `wrong-${i}`)).status).toBe(401);
    const runs = f.sys.gateway.auth.bcryptRuns;
    const locked = await holdings('127.0.0.2', 'team2', 'wrong-3');
    expect429(locked, 'login_user');
    expect(f.sys.gateway.auth.bcryptRuns).toBe(runs); // refused before bcrypt
    // A new password for the locked username is refused from anywhere...
    expect429(await holdings('127.0.0.7', 'team2', 'another-guess'), 'login_user');
    // ...while the owner's known password still works.
    expect((await holdings('127.0.0.1', 'team2', 'team2pass')).status).toBe(200);
  });

  it('locks an address out after the configured failures, whatever the usernames', async () => {
    for (let i = 0; i < 5; i++) expect((await holdings('127.0.0.3', `nobody${i}`, 'whatever1')).status).toBe(401);
    expect429(await holdings('127.0.0.3', 'nobody9', 'whatever1'), 'login_address');
    // Locked: not even a right password is tried from there; other addresses are untouched.
    expect429(await holdings('127.0.0.3', 'team3', 'team3pass'), 'login_address');
    expect((await holdings('127.0.0.1', 'team3', 'team3pass')).status).toBe(200);
  });

  it('applies the same lockout to WebSocket sign-ins', async () => {
    for (let i = 0; i < 5; i++) expect((await holdings('127.0.0.10', `ws-nobody${i}`, 'bad-guess')).status).toBe(401);
    // The first frame says whether the sign-in was taken: a welcome, or a close.
    const signIn = (address: string) =>
      new Promise<{ welcome: boolean; code?: number }>((resolve) => {
        const ws = new WebSocket(`${f.sys.url.replace('http', 'ws')}/ws`, { localAddress: address, headers: { authorization: `Basic ${Buffer.from('team3:team3pass').toString('base64')}` } });
        ws.on('message', (data) => {
          const m = JSON.parse(String(data));
          if (m.type === 'welcome') {
            ws.close();
            resolve({ welcome: true });
          }
        });
        ws.on('close', (code) => resolve({ welcome: false, code }));
      });
    expect(await signIn('127.0.0.10')).toEqual({ welcome: false, code: WS_CLOSE.authFailed.code });
    expect((await signIn('127.0.0.1')).welcome).toBe(true);
  });

  it('answers known and unknown usernames the same way, each for one bcrypt', async () => {
    const runs0 = f.sys.gateway.auth.bcryptRuns;
    const known = await holdings('127.0.0.4', 'team4', 'not-the-password');
    const runs1 = f.sys.gateway.auth.bcryptRuns;
    const unknown = await holdings('127.0.0.4', 'no-such-team', 'not-the-password');
    const runs2 = f.sys.gateway.auth.bcryptRuns;
    // The same wrong password again: still a bcrypt, not a remembered failure that would answer faster.
    const again = await holdings('127.0.0.4', 'team4', 'not-the-password');
    const runs3 = f.sys.gateway.auth.bcryptRuns;
    expect([known.status, unknown.status, again.status]).toEqual([401, 401, 401]);
    expect(unknown.body).toEqual(known.body);
    expect([runs1 - runs0, runs2 - runs1, runs3 - runs2]).toEqual([1, 1, 1]);
  });

  it('refuses at login a password registration refuses (over 72 bytes), without bcrypt', async () => {
    const long = `team1pass${'x'.repeat(70)}`;
    const runs = f.sys.gateway.auth.bcryptRuns;
    const r = await holdings('127.0.0.8', 'team1', long);
    expect(r.status).toBe(401);
    expect(r.body.error.message).toMatch(/72 bytes/);
    expect(f.sys.gateway.auth.bcryptRuns).toBe(runs);
    const reg = await from('127.0.0.8', 'POST', '/register', { form: { username: 'longpass', password: long } });
    expect(reg.status).toBe(400);
    expect(reg.body.error.field).toBe('password');
  });
});

describe('registrations and conversions', () => {
  it('limits registrations per address', async () => {
    for (let i = 0; i < 3; i++) expect((await from('127.0.0.5', 'POST', '/register', { form: { username: `reg${i}`, password: 'password1' } })).status).toBe(200);
    expect429(await from('127.0.0.5', 'POST', '/register', { form: { username: 'reg3', password: 'password1' } }), 'register');
    expect((await from('127.0.0.6', 'POST', '/register', { form: { username: 'reg4', password: 'password1' } })).status).toBe(200);
  });

  it('limits conversions per team, and a refused one changes nothing', async () => {
    const create = () => from('127.0.0.1', 'POST', '/create', { basic: ['team1', 'team1pass'], form: { etf_name: 'UNDY', amount: 1 } });
    expect((await create()).status).toBe(200);
    expect((await create()).status).toBe(200);
    expect429(await create(), 'conversion');
    expect((await holdings('127.0.0.1', 'team1', 'team1pass')).body.holdings.UNDY).toBe(2);
  });
});

describe('throttle configuration', () => {
  it('is on by default (config/default.json), and set by THROTTLE, LOGIN_MAX_FAILURES, REGISTRATIONS_PER_MINUTE', () => {
    const base = loadConfig({});
    expect(base.throttle?.enabled).toBe(true);
    expect(base.throttle?.loginFailuresPerUser).toEqual(THROTTLE_DEFAULTS.loginFailuresPerUser);
    expect(loadConfig({ THROTTLE: 'off' }).throttle?.enabled).toBe(false);
    const tuned = loadConfig({ LOGIN_MAX_FAILURES: '9', REGISTRATIONS_PER_MINUTE: '30' });
    expect(tuned.throttle?.loginFailuresPerUser?.burst).toBe(9);
    expect(tuned.throttle?.registrations?.perMinute).toBe(30);
    expect(() => loadConfig({ THROTTLE: 'maybe' })).toThrow(ConfigError);
  });
});
