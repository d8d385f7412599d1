import { request } from 'node:http';
import WebSocket from 'ws';
import { WS_CLOSE, retryAfterOfReason } from '../proto/ws.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, THROTTLE_DEFAULTS, loadConfig } from '../src/config/config.js';
import { Throttle, hostKey } from '../src/gateway/throttle.js';
import { startGateway, type GatewayHandle } from '../src/gateway/server.js';
import { buy, quietLog, testConfig, undyBasket, useSystem } from './helpers/system.js';
import { eachServer } from './helpers/servers.js';

/**
 * Rate limits with small, test-sized budgets. `loopback: 'each'` makes every
 * loopback address (127.x.y.z, ::1) a host of its own, so each case has its
 * own budget and an attack can come from many hosts of one machine; the
 * gateway listens on both IPv4 and IPv6. The login cache expires at once
 * (credentialsCacheMs 0): every request is one after the expiry that, with
 * 30 s, came every ~37 s under attack.
 */
const ROSTER = '1 team1 team1pass\n2 team2 team2pass\n3 team3 team3pass\n4 team4 team4pass\n5 team5 team5pass\n';
const f = useSystem({
  http: { host: '::', port: 0, maxBodyBytes: 16384 },
  credentialsCacheMs: 0,
  operator: { username: 'boss', password: 'boss-password' },
  throttle: {
    enabled: true,
    loopback: 'each',
    address: { burst: 1000, perMinute: 60_000 },
    team: { burst: 1000, perMinute: 60_000 },
    conversions: { burst: 2, perMinute: 1 },
    registrations: THROTTLE_DEFAULTS.registrations,
    loginFailuresPerUser: { burst: 3, perMinute: 1 },
    loginFailuresPerAddress: { burst: 5, perMinute: 1 },
  },
  roster: ROSTER,
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** One request from a chosen local address (node's http, bound to `from`); an IPv6 one goes to the gateway's IPv6 loopback. */
function from(address: string, method: string, path: string, opts: { form?: Record<string, string | number>; basic?: [string, string]; base?: string } = {}): Promise<Answer> {
  const base = opts.base ?? f.sys.url;
  const url = new URL((address.includes(':') ? base.replace('127.0.0.1', '[::1]') : base) + path);
  const body = opts.form ? new URLSearchParams(Object.entries(opts.form).map(([k, v]) => [k, String(v)])).toString() : undefined;
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
  if (opts.basic) headers.authorization = `Basic ${Buffer.from(opts.basic.join(':')).toString('base64')}`;
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port, path: url.pathname + url.search, method, headers, localAddress: address, agent: false }, (res) => {
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

/** A WebSocket sign-in's first answer: a welcome, or the close; by the Basic header of the upgrade or the auth frame. */
function wsSignIn(address: string, username: string, password: string, how: 'upgrade' | 'frame'): Promise<{ welcome: boolean; code?: number; reason?: string }> {
  return new Promise((resolve) => {
    const headers = how === 'upgrade' ? { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` } : undefined;
    const ws = new WebSocket(`${f.sys.url.replace('http', 'ws')}/ws`, { localAddress: address, headers });
    if (how === 'frame') ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', username, password })));
    ws.on('message', (data) => {
      if (JSON.parse(String(data)).type === 'welcome') {
        ws.close();
        resolve({ welcome: true });
      }
    });
    ws.on('close', (code, reason) => resolve({ welcome: false, code, reason: String(reason) }));
  });
}

/** Closed as the throttle's "retry later" (4029), naming the limit and a wait of whole seconds: never 4001's "wrong password". */
function expectThrottled(r: { welcome: boolean; code?: number; reason?: string }, scope: string) {
  expect(r).toMatchObject({ welcome: false, code: WS_CLOSE.throttled.code });
  expect(r.reason).toMatch(new RegExp(`^too many sign-in attempts \\(${scope}\\): retry after \\d+ s$`));
  expect(retryAfterOfReason(r.reason!)).toBeGreaterThanOrEqual(1);
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

  it('applies the same lockout to WebSocket sign-ins, as "retry later" (4029 with the wait), not as a wrong password', async () => {
    for (let i = 0; i < 5; i++) expect((await holdings('127.0.0.10', `ws-nobody${i}`, 'bad-guess')).status).toBe(401);
    for (const how of ['upgrade', 'frame'] as const) expectThrottled(await wsSignIn('127.0.0.10', 'team3', 'team3pass', how), 'login_address');
    expect((await wsSignIn('127.0.0.1', 'team3', 'team3pass', 'upgrade')).welcome).toBe(true);
    // A wrong password from a host that is not locked is still 4001.
    expect(await wsSignIn('127.0.0.12', 'team3', 'not-team3pass', 'frame')).toEqual({ welcome: false, code: WS_CLOSE.authFailed.code, reason: WS_CLOSE.authFailed.reason });
  });

  it('closes a WebSocket sign-in refused by the username\'s failure budget with 4029, the right password included', async () => {
    // Registered, never signed in: the gateway does not know the password, so it must be checked (the budget applies).
    expect((await from('127.0.0.30', 'POST', '/register', { form: { username: 'wsbudget', password: 'wsbudget-pass' } })).status).toBe(200);
    // Three hosts, one guess each: the username's budget (3) goes, no host's (5).
    for (const h of ['127.0.0.31', '127.0.0.32', '127.0.0.33']) expect((await holdings(h, 'wsbudget', `guess-${h}`)).status).toBe(401);
    expectThrottled(await wsSignIn('127.0.0.34', 'wsbudget', 'wsbudget-pass', 'upgrade'), 'login_user');
    expectThrottled(await wsSignIn('127.0.0.35', 'wsbudget', 'wsbudget-pass', 'frame'), 'login_user');
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

  it('refuses at login a username no account can have (registration and the roster refuse it), without bcrypt or the engine', async () => {
    const runs = f.sys.gateway.auth.bcryptRuns;
    for (const username of ['u'.repeat(4000), 'team1 ', 'seventeen-chars-x', 'té']) {
      const r = await holdings('127.0.0.9', username, 'team1pass');
      expect(r.status, username.slice(0, 20)).toBe(401);
      expect(r.body.error.code).toBe('unauthorized');
      expect(await wsSignIn('127.0.0.9', username, 'team1pass', 'frame')).toMatchObject({ welcome: false, code: WS_CLOSE.authFailed.code });
    }
    // Before, each was an unknown username: an engine read and a bcrypt run (the dummy hash), ten in all.
    expect(f.sys.gateway.auth.bcryptRuns).toBe(runs);
  });
});

describe('passwords past the 72 bytes bcrypt reads, over the WebSocket', () => {
  it('refuses the right 72 bytes followed by anything, by either way in, without bcrypt and as often as it is sent', async () => {
    const p72 = 'P'.repeat(72);
    expect((await from('127.0.0.21', 'POST', '/register', { form: { username: 'long72', password: p72 } })).status).toBe(200);
    expect(await wsSignIn('127.0.0.21', 'long72', p72, 'frame')).toMatchObject({ welcome: true });
    const runs = f.sys.gateway.auth.bcryptRuns;
    // More than both failure budgets (5 per address, 3 per username): each suffix was a cache miss and a bcrypt run, and
    // passed, so the throttle never filled.
    for (let i = 0; i < 8; i++) {
      for (const how of ['frame', 'upgrade'] as const) {
        for (const suffix of [String(i), `é${i}`, 'x'.repeat(900)]) {
          expect(await wsSignIn('127.0.0.22', 'long72', p72 + suffix, how), `${how} +${suffix.length}`).toMatchObject({ welcome: false, code: WS_CLOSE.authFailed.code });
        }
      }
    }
    expect(f.sys.gateway.auth.bcryptRuns).toBe(runs);
    // Over HTTP as well (refused at parsing before; now by the authenticator too).
    expect((await holdings('127.0.0.22', 'long72', `${p72}1`)).status).toBe(401);
    expect(await wsSignIn('127.0.0.23', 'long72', p72, 'upgrade')).toMatchObject({ welcome: true });
  });
});

describe('registrations and conversions', () => {
  it('lets a class of 60 register from one address at once, and refuses a flood past that (the default bucket)', async () => {
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => from('127.0.0.5', 'POST', '/register', { form: { username: `class${i}`, password: 'password1' } })));
    expect(answers.map((a) => a.status)).toEqual(Array(60).fill(200));
    // The same host goes on: refused but for the one a minute's refill gives back every 6 s
    // (15 of 20 refused holds unless the class alone took half a minute).
    const flood = await Promise.all(Array.from({ length: 20 }, (_, i) => from('127.0.0.5', 'POST', '/register', { form: { username: `flood${i}`, password: 'password1' } })));
    const refused = flood.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThanOrEqual(15);
    expect(refused.length + flood.filter((r) => r.status === 200).length).toBe(20);
    expect429(refused[0]!, 'register');
    expect((await from('127.0.0.6', 'POST', '/register', { form: { username: 'reg4', password: 'password1' } })).status).toBe(200);
  });

  it('refuses the usernames the system uses, naming the field, whatever their case', async () => {
    for (const username of ['operator', 'Operator', 'boss', 'BOSS']) {
      const r = await from('127.0.0.6', 'POST', '/register', { form: { username, password: 'password1' } });
      expect(r.status).toBe(400);
      expect(r.body.error).toMatchObject({ code: 'invalid_parameter', field: 'username' });
      expect(r.body.error.message).toMatch(/reserved/);
    }
  });

  it('limits conversions per team, and a refused one changes nothing', async () => {
    const create = () => from('127.0.0.1', 'POST', '/create', { basic: ['team1', 'team1pass'], form: { etf_name: 'UNDY', amount: 1 } });
    expect((await create()).status).toBe(200);
    expect((await create()).status).toBe(200);
    expect429(await create(), 'conversion');
    expect((await holdings('127.0.0.1', 'team1', 'team1pass')).body.holdings.UNDY).toBe(2);
  });
});

describe('a username under attack keeps its owner working', () => {
  const attack = async (user: string, hosts: string[], perHost: number) => {
    const statuses: number[] = [];
    for (let i = 0; i < perHost; i++) for (const h of hosts) statuses.push((await holdings(h, user, `guess-${h}-${i}`)).status);
    return statuses;
  };

  it('from many IPv4 and IPv6 addresses, across every expiry of the login cache', async () => {
    // The owner signs in from its address, then the guesses come from 20 others and from IPv6.
    expect((await holdings('127.0.0.20', 'team5', 'team5pass')).status).toBe(200);
    const hosts = [...Array.from({ length: 20 }, (_, i) => `127.0.1.${i + 1}`), '::1'];
    const statuses = await attack('team5', hosts, 2);
    expect(statuses.filter((s) => s === 401)).toHaveLength(3); // the username's burst, then 429 only
    expect(statuses.filter((s) => s === 429)).toHaveLength(statuses.length - 3);
    expect429(await holdings('::1', 'team5', 'one-more-guess'), 'login_user');
    // The cache expires at every request here: each of these is a login after the expiry.
    for (let i = 0; i < 5; i++) expect((await holdings('127.0.0.20', 'team5', 'team5pass')).status).toBe(200);
    // Its right password is right from anywhere (the gateway knows it: no guess, no bcrypt).
    const runs = f.sys.gateway.auth.bcryptRuns;
    expect((await holdings('::1', 'team5', 'team5pass')).status).toBe(200);
    expect(f.sys.gateway.auth.bcryptRuns).toBe(runs);
  });

  it('a typo from the owner\'s proven address is a 401, and still counts there', async () => {
    const r = await holdings('127.0.0.20', 'team5', 'team5typo');
    expect(r.status).toBe(401); // not the attacked username's 429
    expect((await holdings('127.0.0.20', 'team5', 'team5pass')).status).toBe(200);
    // A guesser on the owner's own address has the pair's budget, no more.
    for (let i = 0; i < 2; i++) expect((await holdings('127.0.0.20', 'team5', `typo${i}`)).status).toBe(401);
    expect429(await holdings('127.0.0.20', 'team5', 'typo-again'), 'login_user');
    // A new address is refused a new password for the attacked username.
    expect429(await holdings('127.0.0.21', 'team5', 'another-guess'), 'login_user');
  });
});

describe('the operator API', () => {
  const op = (address: string, password: string, username = 'boss') => from(address, 'GET', '/operator/api/alerts', { basic: [username, password] });

  it('is throttled like logins: per username (429 with Retry-After), per address, and a signed-in operator keeps working', async () => {
    expect((await op('127.0.2.1', 'boss-password')).status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await op(i % 3 === 2 ? '::1' : `127.0.3.${i}`, `guess${i}`)).status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(3);
    expect429(await op('127.0.3.99', 'guess-more'), 'login_user');
    // Per address, whatever the usernames.
    for (let i = 0; i < 5; i++) expect((await op('127.0.4.1', 'pw', `nobody${i}`)).status).toBe(401);
    expect429(await op('127.0.4.1', 'pw', 'nobody9'), 'login_address');
    // The operator from the address it signed in from is still served; a new address waits.
    expect((await op('127.0.2.1', 'boss-password')).status).toBe(200);
    expect429(await op('127.0.5.1', 'boss-password'), 'login_user');
  });
});

describe('hosts: IPv6 by /64, loopback aliases as one host, IPv4-mapped as IPv4', () => {
  it('names the host an address counts as', () => {
    expect(hostKey('2001:db8:1:2::1')).toBe(hostKey('2001:0db8:0001:0002:ffff:ffff:ffff:fffe'));
    expect(hostKey('2001:db8:1:2::1')).not.toBe(hostKey('2001:db8:1:3::1'));
    expect(hostKey('2001:db8:1:2::1')).toBe('2001:db8:1:2:0:0:0:0/64');
    for (const a of ['127.0.0.1', '127.0.0.2', '127.255.1.9', '::1', '::ffff:127.0.0.5', '0:0:0:0:0:ffff:7f00:3', '[::1]']) expect(hostKey(a)).toBe('loopback');
    expect(hostKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(hostKey('0000:0000:0000:0000:0000:ffff:c000:0207')).toBe('192.0.2.7');
    expect(hostKey('fe80::1%eth0')).toBe(hostKey('fe80::2'));
    expect(hostKey('192.0.2.7')).not.toBe(hostKey('192.0.2.8'));
    expect(hostKey('')).toBe('');
    // A site that hands out /56s can be grouped so.
    expect(hostKey('2001:db8:1:2::1', { loopback: 'one', ipv6Prefix: 56 })).toBe(hostKey('2001:db8:1:ff::1', { loopback: 'one', ipv6Prefix: 56 }));
  });

  it('counts every address of an IPv6 /64 against one budget', () => {
    const t = new Throttle({ enabled: true, registrations: { burst: 2, perMinute: 1 } });
    expect(t.registration('2001:db8:1:2::1')).toBeNull();
    expect(t.registration('2001:db8:1:2:aaaa::7')).toBeNull();
    expect(t.registration('2001:db8:1:2:ffff:ffff:ffff:ffff')?.scope).toBe('register');
    expect(t.registration('2001:db8:1:3::1')).toBeNull();
    t.close();
  });

  // node:http reports an IPv4 peer on a dual-stack socket as ::ffff:127.x; uWS reports its own text form.
  eachServer('on a gateway with the default grouping', (server) => {
    let g: GatewayHandle;
    let base: string;
    beforeAll(async () => {
      const cfg = testConfig(f.dir.path, { roster: ROSTER, http: { host: '::', port: 0, maxBodyBytes: 16384, server }, throttle: { ...THROTTLE_DEFAULTS, registrations: { burst: 3, perMinute: 1 } } });
      g = await startGateway(cfg, f.nats.url, quietLog);
      base = `http://127.0.0.1:${g.port}`;
    });
    afterAll(() => g?.close());

    it('counts 127.x, ::1 and ::ffff:127.x as one host (300 registrations in 12 s by rotating 127.x)', async () => {
      const statuses: number[] = [];
      for (const address of ['127.0.7.1', '127.0.7.2', '::1', '127.0.7.3', '127.9.9.9']) {
        statuses.push((await from(address, 'POST', '/register', { base, form: { username: `${server}${statuses.length}`, password: 'password1' } })).status);
      }
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
    });
  });
});

describe('registration closed', () => {
  let g: GatewayHandle;
  beforeAll(async () => {
    g = await startGateway(testConfig(f.dir.path, { roster: ROSTER, registration: 'closed' }), f.nats.url, quietLog);
  });
  afterAll(() => g?.close());

  it('answers 403 registration_closed and registers nobody; logins work as before', async () => {
    const base = `http://127.0.0.1:${g.port}`;
    const r = await from('127.0.8.1', 'POST', '/register', { base, form: { username: 'latecomer', password: 'password1' } });
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe('registration_closed');
    expect((await holdings('127.0.8.1', 'latecomer', 'password1')).status).toBe(401);
    expect((await from('127.0.8.1', 'GET', '/holdings', { base, basic: ['team1', 'team1pass'] })).status).toBe(200);
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

  it('REGISTRATION is open by default, closed on request, and nothing else', () => {
    expect(loadConfig({}).registration ?? 'open').toBe('open');
    expect(loadConfig({ REGISTRATION: 'closed' }).registration).toBe('closed');
    expect(() => loadConfig({ REGISTRATION: 'shut' })).toThrow(/REGISTRATION/);
    expect(loadConfig({ CREDENTIALS_CACHE_MS: '0' }).credentialsCacheMs).toBe(0);
  });
});
