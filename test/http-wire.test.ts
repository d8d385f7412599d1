import net from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { decode } from '../proto/codec.js';
import type { CommandBatch } from '../proto/engine.js';
import { ENGINE_COMMAND_SUBJECT } from '../proto/subjects.js';
import { buy, undyBasket, useSystem } from './helpers/system.js';

/**
 * The gateway over a raw TCP socket: pipelining, HEAD, HTTP/1.0, chunked and
 * malformed requests, as a hostile or old client sends them.
 */
const f = useSystem();
let port: number;

beforeAll(async () => {
  port = f.sys.gateway.port;
  await buy(f.nc, 1, undyBasket(20));
});

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A raw connection that parses responses (Content-Length framing) as they arrive. */
function rawConnection() {
  const socket = net.connect(port, '127.0.0.1');
  let buf = Buffer.alloc(0);
  const responses: RawResponse[] = [];
  const waiters: (() => void)[] = [];
  let closed = false;
  const wake = () => waiters.splice(0).forEach((w) => w());
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) break;
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      const len = Number(headers['content-length'] ?? 0);
      const bodyLen = pendingHead[0] ? 0 : len;
      if (buf.length < end + 4 + bodyLen) break;
      pendingHead.shift();
      responses.push({ status: Number(lines[0]!.split(' ')[1]), headers, body: buf.subarray(end + 4, end + 4 + bodyLen).toString('utf8') });
      buf = buf.subarray(end + 4 + bodyLen);
    }
    wake();
  });
  socket.on('close', () => {
    closed = true;
    wake();
  });
  socket.on('error', () => {});
  // For each request sent: true when it was a HEAD (its answer has a Content-Length but no body).
  const pendingHead: boolean[] = [];
  return {
    socket,
    responses,
    get closed() {
      return closed;
    },
    /** Trailing bytes received after the last whole response (a HEAD answer must leave none). */
    rest: () => buf,
    send(data: string, head = false) {
      pendingHead.push(head);
      socket.write(data);
    },
    sendMany(data: string, count: number) {
      for (let i = 0; i < count; i++) pendingHead.push(false);
      socket.write(data);
    },
    async until(check: () => boolean): Promise<void> {
      while (!check()) {
        if (closed) return;
        await new Promise<void>((r) => waiters.push(r));
      }
    },
    close: () => socket.destroy(),
  };
}

const form = (fields: Record<string, string | number>) => new URLSearchParams(Object.entries(fields).map(([k, v]) => [k, String(v)])).toString();
const post = (path: string, body: string) =>
  `POST ${path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
const createReq = (key: string) => post('/create', form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: key }));

/** Resolves when the gateway has sent a command with this key to the engine: the request was read whole. */
async function commandSent(key: string): Promise<{ done: Promise<void> }> {
  const sub = f.nc.subscribe(ENGINE_COMMAND_SUBJECT);
  await f.nc.flush(); // the subscription is in place before the request goes out
  const done = (async () => {
    for await (const m of sub) {
      const batch = decode<CommandBatch>(m.data);
      if (batch.cmds.some((c) => 'key' in c.cmd && c.cmd.key === key)) {
        sub.unsubscribe();
        return;
      }
    }
  })();
  return { done };
}

const undy = async () => (await f.http.holdings('team1', 'team1pass')).body.holdings.UNDY ?? 0;

describe('pipelining', () => {
  it('answers pipelined creates on one socket each with its own answer, in order', async () => {
    const before = await undy();
    const c = rawConnection();
    // Each create is written while the previous one's answer is still pending:
    // the gateway does not read it until that answer is out.
    let sent = await commandSent('pipe-a');
    c.send(createReq('pipe-a'));
    await sent.done;
    sent = await commandSent('pipe-b');
    c.send(createReq('pipe-b'));
    await sent.done;
    expect(c.responses.length).toBeGreaterThanOrEqual(1);
    sent = await commandSent('pipe-c');
    c.send(createReq('pipe-c'));
    await sent.done;
    await c.until(() => c.responses.length === 3);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(c.responses.map((r) => JSON.parse(r.body).client_request_id)).toEqual(['pipe-a', 'pipe-b', 'pipe-c']);
    expect(await undy()).toBe(before + 3);
  });

  it('answers pipelined reads that arrive together (answered before the next is parsed)', async () => {
    const c = rawConnection();
    const get = 'GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n';
    c.sendMany(get + get + get, 3);
    await c.until(() => c.responses.length === 3);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([404, 404, 404]);
  });

  it('answers pipelined creates that arrive in one write, each with its own answer, in order', async () => {
    const before = await undy();
    const c = rawConnection();
    c.sendMany(createReq('same-1') + createReq('same-2') + createReq('same-3'), 3);
    await c.until(() => c.responses.length === 3);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(c.responses.map((r) => JSON.parse(r.body).client_request_id)).toEqual(['same-1', 'same-2', 'same-3']);
    expect(await undy()).toBe(before + 3);
  });

  it('answers every request a client sent before closing its side', async () => {
    const c = rawConnection();
    const get = 'GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n';
    c.sendMany(get + get, 2);
    c.socket.end();
    await c.until(() => c.closed);
    expect(c.responses.map((r) => r.status)).toEqual([404, 404]);
  });
});

describe('HEAD', () => {
  it('answers HEAD like GET, without a body', async () => {
    const c = rawConnection();
    c.send('HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n', true);
    await c.until(() => c.responses.length === 1);
    c.send('GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n');
    await c.until(() => c.responses.length === 2);
    c.close();
    expect(c.responses[0]!.status).toBe(200);
    expect(Number(c.responses[0]!.headers['content-length'])).toBeGreaterThan(0);
    expect(c.responses[0]!.body).toBe('');
    // The next answer starts right where the HEAD answer's headers ended.
    expect(c.responses[1]!.status).toBe(404);
    expect(JSON.parse(c.responses[1]!.body).error.code).toBe('not_found');
  });
});

describe('HTTP/1.0', () => {
  it('answers an HTTP/1.0 GET and closes the connection after it', async () => {
    const c = rawConnection();
    c.send('GET /health HTTP/1.0\r\n\r\n');
    await c.until(() => c.closed);
    expect(c.responses).toHaveLength(1);
    expect(c.responses[0]!.status).toBe(200);
    expect(JSON.parse(c.responses[0]!.body).status).toBeDefined();
  });

  it('runs an HTTP/1.0 create once and answers it', async () => {
    const before = await undy();
    const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'old-1' });
    const c = rawConnection();
    c.send(`POST /create HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await c.until(() => c.closed);
    expect(c.responses.map((r) => r.status)).toEqual([200]);
    expect(JSON.parse(c.responses[0]!.body).client_request_id).toBe('old-1');
    expect(await undy()).toBe(before + 1);
  });

  it('keeps an HTTP/1.0 connection that asks for keep-alive', async () => {
    const c = rawConnection();
    const get = 'GET /nowhere HTTP/1.0\r\nConnection: keep-alive\r\n\r\n';
    c.send(get);
    await c.until(() => c.responses.length === 1);
    c.send(get);
    await c.until(() => c.responses.length === 2);
    expect(c.closed).toBe(false);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([404, 404]);
  });
});

describe('chunked request bodies', () => {
  it('takes a create whose body comes in chunks, in several writes', async () => {
    const before = await undy();
    const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'chunked-1' });
    const c = rawConnection();
    c.send('POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n');
    const half = Math.floor(body.length / 2);
    for (const part of [body.slice(0, half), body.slice(half)]) c.socket.write(`${part.length.toString(16)}\r\n${part}\r\n`);
    c.socket.write('0\r\n\r\n');
    await c.until(() => c.responses.length === 1);
    c.close();
    expect(c.responses[0]!.status).toBe(200);
    expect(JSON.parse(c.responses[0]!.body).client_request_id).toBe('chunked-1');
    expect(await undy()).toBe(before + 1);
  });
});

describe('malformed requests', () => {
  const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'bad-1' });
  const cases: [string, string, number, string][] = [
    ['a space in the path', `POST /cre ate HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['a NUL in a header', `POST /create HTTP/1.1\r\nHost: test\r\nX-Note: a\0b\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['no Host in HTTP/1.1', `POST /create HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['a lower-case method', `post /create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['an absolute-form target', `POST http://test/create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['lines ending in a bare LF', `POST /create HTTP/1.1\nHost: test\nContent-Length: ${body.length}\n\n${body}`, 400, 'bad_request'],
    ['Content-Length with Transfer-Encoding', `POST /create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`, 400, 'bad_request'],
    ['the front\'s own peer header', `POST /create HTTP/1.1\r\nHost: test\r\nX-Etf-Peer: 10.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['a gzip Transfer-Encoding', `POST /create HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n`, 501, 'not_implemented'],
    ['HTTP/2.0 in the request line', `POST /create HTTP/2.0\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 505, 'http_version_not_supported'],
    ['47 header lines', `POST /create HTTP/1.1\r\nHost: test\r\n${Array.from({ length: 45 }, (_, i) => `X-H${i}: v\r\n`).join('')}Content-Length: ${body.length}\r\n\r\n${body}`, 431, 'request_header_too_large'],
    ['a 20 KiB header', `GET /health HTTP/1.1\r\nHost: test\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`, 431, 'request_header_too_large'],
  ];
  it.each(cases)('answers %s with a JSON error and closes, changing nothing', async (_name, request, status, code) => {
    const before = await undy();
    const c = rawConnection();
    c.send(request);
    await c.until(() => c.closed);
    expect(c.responses).toHaveLength(1);
    expect(c.responses[0]!.status).toBe(status);
    expect(c.responses[0]!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(c.responses[0]!.body).error.code).toBe(code);
    expect(await undy()).toBe(before);
  });

  it('answers the requests before a malformed one, then the malformed one, in order', async () => {
    const c = rawConnection();
    const get = 'GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n';
    c.sendMany(get + get + 'GET /no where HTTP/1.1\r\nHost: test\r\n\r\n', 3);
    await c.until(() => c.closed);
    expect(c.responses.map((r) => r.status)).toEqual([404, 404, 400]);
  });

  it('takes 46 header lines (what uWS itself can take once the front adds its own)', async () => {
    const c = rawConnection();
    c.send(`GET /nowhere HTTP/1.1\r\nHost: test\r\n${Array.from({ length: 45 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`);
    await c.until(() => c.responses.length === 1);
    c.close();
    expect(c.responses[0]!.status).toBe(404);
  });
});
