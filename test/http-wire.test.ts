import net from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { decode } from '../proto/codec.js';
import type { CommandBatch } from '../proto/engine.js';
import { ENGINE_COMMAND_SUBJECT } from '../proto/subjects.js';
import { buy, undyBasket, useSystem } from './helpers/system.js';

/**
 * The gateway over a raw TCP socket: pipelining, HEAD, HTTP/1.0 and
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

  it('never applies a create whose connection uWS closed for pipelining (requests in one write)', async () => {
    // uWS 20.30 closes a connection when a second request is parsed while the first
    // is pending; none of them can be answered, so none may change anything.
    const before = await undy();
    const c = rawConnection();
    c.sendMany(createReq('same-1') + createReq('same-2') + createReq('same-3'), 3);
    await c.until(() => c.closed);
    const looked = await Promise.all(['same-1', 'same-2', 'same-3'].map((k) => f.http.send('GET', `/requests/${k}`, { basic: ['team1', 'team1pass'] })));
    // Every write either was answered on the wire or did nothing at all.
    const applied = looked.filter((r) => r.status === 200).length;
    expect(applied).toBe(c.responses.length);
    expect(await undy()).toBe(before + c.responses.length);
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

describe('requests uWS cannot parse', () => {
  // uWS 20.30's parser (C++) accepts only HTTP/1.1 with a Host header; it never
  // hands anything else to JavaScript and drops the connection at its 10 s idle
  // timeout. The gateway cannot answer those; what it guarantees is that they do nothing.
  it('does nothing for an HTTP/1.0 create or a malformed one', async () => {
    const before = await undy();
    const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'old-1' });
    const old = rawConnection();
    old.send(`POST /create HTTP/1.0\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const bad = rawConnection();
    bad.send(`POST /cre ate HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    // The same create on a well-formed connection afterwards is the first and only one with that key.
    const ok = await f.http.send('POST', '/create', { form: { username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'old-1' } });
    old.close();
    bad.close();
    expect(ok.status).toBe(200);
    expect(ok.body.replayed).toBeUndefined();
    expect(await undy()).toBe(before + 1);
  });
});
