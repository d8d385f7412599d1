import { Writable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createHttpServer, type HttpServer, type HttpServerKind } from '../src/gateway/transport/index.js';
import { HttpCall, guarded } from '../src/gateway/http.js';
import { createLogger } from '../src/shared/log.js';
import { OPERATOR_ROUTES } from '../proto/operator.js';
import { api, useSystem } from './helpers/system.js';
import { eachServer, serverHttp } from './helpers/servers.js';

/**
 * The HTTP edge of issue 19, on each server: HEAD on every GET route, a bad
 * percent-escape, and what a browser on another site can make the gateway do.
 */
const OPERATOR = { username: 'op', password: 'op-secret-pass' };
const ALLOWED = 'https://desk.example.edu';
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

eachServer('HTTP edge', (kind: HttpServerKind) => {
  const f = useSystem({ operator: OPERATOR, http: { ...serverHttp(kind), allowedOrigins: [ALLOWED] } });

  it.each(['/', '/operator', '/web/team.js', '/web/style.css', '/metrics', '/health', '/symbols'])('HEAD %s answers like GET without a body, and the gateway lives on', async (path) => {
    const get = await fetch(`${f.sys.url}${path}`);
    const getBody = Buffer.from(await get.arrayBuffer());
    const head = await fetch(`${f.sys.url}${path}`, { method: 'HEAD' });
    expect(head.status).toBe(get.status);
    expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
    // /metrics and /health change between two reads: only the static answers have the same length.
    if (path.startsWith('/web/') || path === '/' || path === '/operator') expect(Number(head.headers.get('content-length'))).toBe(getBody.length);
    else expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    expect((await fetch(`${f.sys.url}/symbols`)).status).toBe(200);
  });

  it('HEAD on the operator API\'s GET routes answers like GET without a body (not 405)', async () => {
    const headers = { authorization: basic(OPERATOR.username, OPERATOR.password) };
    for (const path of [OPERATOR_ROUTES.overview, OPERATOR_ROUTES.rules]) {
      const get = await fetch(`${f.sys.url}${path}`, { headers });
      await get.arrayBuffer();
      const head = await fetch(`${f.sys.url}${path}`, { method: 'HEAD', headers });
      expect(head.status, path).toBe(get.status);
      expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
      expect(head.headers.get('cache-control')).toBe('no-store');
      expect((await head.arrayBuffer()).byteLength).toBe(0);
    }
  });

  it.each(['/positions/1/%ZZ', '/requests/%E0%A4%A', '/holdings%'])('GET %s is a JSON 400', async (path) => {
    const res = await fetch(`${f.sys.url}${path}?username=team1&password=team1pass`);
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe('bad_request');
  });

  const register = (username: string, origin?: string) =>
    fetch(`${f.sys.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(origin ? { origin } : {}) },
      body: `username=${username}&password=password1`,
    });
  /** Whether the username is registered: a second registration is refused then. */
  const taken = async (username: string) => (await (await register(username)).json()).error?.code === 'username_taken';

  it.each([
    ['another site', 'https://evil.example'],
    ['a sandboxed page (Origin: null)', 'null'],
    ['the same host on another port', 'http://127.0.0.1:1'],
  ])('refuses a state-changing request from %s with a JSON 403, applying nothing', async (_name, origin) => {
    const name = `x${kind}${Math.random().toString(36).slice(2, 8)}`;
    const res = await register(name, origin);
    expect(res.status).toBe(403);
    expect((await res.json()).error).toMatchObject({ code: 'forbidden', field: 'origin' });
    expect(await taken(name)).toBe(false);
    // A cross-site form POST /create with Basic credentials: refused before the credentials are looked at.
    const create = await fetch(`${f.sys.url}/create`, { method: 'POST', headers: { origin, authorization: basic('team1', 'team1pass'), 'content-type': 'application/x-www-form-urlencoded' }, body: 'amount=1' });
    expect(create.status).toBe(403);
    const rules = await fetch(`${f.sys.url}${OPERATOR_ROUTES.rules}`, { method: 'PUT', headers: { origin, authorization: basic(OPERATOR.username, OPERATOR.password), 'content-type': 'application/json' }, body: '{}' });
    expect(rules.status).toBe(403);
  });

  it('takes state-changing requests from its own origin, an allowed one, or none (scripts)', async () => {
    const own = `http://127.0.0.1:${f.sys.gateway.port}`;
    for (const origin of [own, ALLOWED, undefined]) {
      const res = await register(`o${kind}${Math.random().toString(36).slice(2, 8)}`, origin);
      expect(res.status, String(origin)).toBe(200);
    }
  });

  it('refuses a WebSocket from a foreign origin with 403, and takes its own', async () => {
    const url = `${f.sys.url.replace('http', 'ws')}/ws`;
    const status = (origin: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url, { origin });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => {
          ws.close();
          resolve(101);
        });
        ws.on('error', () => {});
      });
    expect(await status('https://evil.example')).toBe(403);
    expect(await status(`http://127.0.0.1:${f.sys.gateway.port}`)).toBe(101);
  });

  it('marks authenticated answers no-store, and challenges nobody with WWW-Authenticate', async () => {
    const http = api(f.sys.url);
    const ok = await http.send('GET', '/holdings', { basic: ['team1', 'team1pass'] });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('cache-control')).toBe('no-store');
    for (const [path, auth] of [['/holdings', basic('team1', 'wrong-pass')], [OPERATOR_ROUTES.overview, basic('op', 'wrong-pass')]] as const) {
      const res = await fetch(`${f.sys.url}${path}`, { headers: { authorization: auth } });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBeNull();
      expect(res.headers.get('cache-control')).toBe('no-store');
    }
    const op = await fetch(`${f.sys.url}${OPERATOR_ROUTES.overview}`, { headers: { authorization: basic(OPERATOR.username, OPERATOR.password) } });
    expect(op.status).toBe(200);
    expect(op.headers.get('cache-control')).toBe('no-store');
  });
});

eachServer('the answer guard', (kind: HttpServerKind) => {
  /** A server whose one handler misbehaves as the path says, behind the gateway's guard. */
  const logged: string[] = [];
  let server: HttpServer;
  let url: string;
  beforeAll(async () => {
    const log = createLogger('guard-test', 'error', new Writable({ write: (chunk, _enc, done) => (logged.push(String(chunk)), done()) }));
    const handlers: Record<string, () => Promise<void> | void> = {
      '/silent': () => {},
      '/silent-later': async () => {},
      '/throws': () => {
        throw new Error('boom');
      },
      '/rejects': async () => {
        throw new Error('late boom');
      },
    };
    server = await createHttpServer(
      kind,
      {
        handler: (info, reply) => {
          const ex = new HttpCall(reply, info.method);
          guarded(ex, log, info.path, handlers[info.path] ?? (() => ex.json(200, { ok: true })));
        },
        ws: { path: '/ws', maxPayloadBytes: 1024, maxBackpressureBytes: 1024, idleTimeoutS: 10, upgrade: () => ({ refuse: { status: 404, body: {} } }) },
        log,
      },
      log,
    );
    url = `http://127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
  });
  afterAll(() => server?.close());

  it.each(['/silent', '/silent-later', '/throws', '/rejects'])('a handler that %s gets the client a 500 JSON, a log line, and the server lives on', async (path) => {
    const before = logged.length;
    const res = await fetch(`${url}${path}`);
    expect(res.status).toBe(500);
    expect((await res.json()).error.code).toBe('internal');
    expect(logged.length).toBe(before + 1);
    expect(JSON.parse(logged.at(-1)!).path).toBe(path);
    expect((await fetch(`${url}/fine`)).status).toBe(200);
  });
});
