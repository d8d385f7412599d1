import net from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import type { HttpServerKind } from '../src/gateway/transport/index.js';
import { decodeRecords } from '../proto/codec.js';
import type { CommandBatch } from '../proto/engine.js';
import { ENGINE_COMMAND_SUBJECT } from '../proto/subjects.js';
import { buy, undyBasket, useSystem, type SystemFixture } from './helpers/system.js';
import { eachServer, serverHttp } from './helpers/servers.js';
import { upgradesChosen } from '../src/gateway/transport/node.js';
import { DRAIN_BYTES, DRAIN_MS } from '../src/gateway/transport/types.js';

/**
 * The gateway over a raw TCP socket: pipelining, HEAD, HTTP/1.0, chunked and
 * malformed requests, as a hostile or old client sends them; once per HTTP
 * server. What node:http answers, uWS (20.30) drops: there, what matters is
 * that nothing a dropped request carried is applied.
 */

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * A raw connection that parses responses (Content-Length framing) as they arrive. `readLater`: nothing is read until
 * `startReading()`, as a client that sends its whole request before it looks at the answer (Python's http.client).
 * `allowHalfOpen`: it goes on sending after the server's FIN (Node's sockets end their side then, by default).
 */
function rawConnection(port: number, { readLater = false, allowHalfOpen = false } = {}) {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen });
  let buf = Buffer.alloc(0);
  const responses: RawResponse[] = [];
  const waiters: (() => void)[] = [];
  let closed = false;
  let error: Error | null = null;
  const wake = () => waiters.splice(0).forEach((w) => w());
  const read = (d: Buffer) => {
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
  };
  if (readLater) socket.pause();
  else socket.on('data', read);
  socket.on('close', () => {
    closed = true;
    wake();
  });
  socket.on('error', (err) => (error ??= err));
  // For each request sent: true when it was a HEAD (its answer has a Content-Length but no body).
  const pendingHead: boolean[] = [];
  return {
    socket,
    responses,
    get closed() {
      return closed;
    },
    /** The first socket error (a write into a reset connection: EPIPE or ECONNRESET). */
    get error() {
      return error;
    },
    startReading: () => {
      socket.on('data', read);
      // A paused stream stays paused when a 'data' listener comes.
      socket.resume();
    },
    /** Resolves when the kernel has taken `data` (a blocking send): false if the connection failed. */
    write: (data: Buffer | string) => new Promise<boolean>((resolve) => socket.write(data, (err) => resolve(!err))),
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

/** The head of a create whose body is `size` bytes, or chunked. */
const uploadHead = (body: { chunked: true } | { size: number }) =>
  `POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n${'size' in body ? `Content-Length: ${body.size}` : 'Transfer-Encoding: chunked'}\r\n\r\n`;

/** `size` bytes of body as 64 KiB writes; chunked: a chunk a write, then the last chunk (none for an endless body, `size` Infinity). */
function* uploadWrites(size: number, chunked: boolean): Generator<Buffer> {
  const piece = Buffer.alloc(64 << 10, 'a');
  for (let sent = 0; sent < size; sent += piece.length) {
    const part = piece.subarray(0, Math.min(piece.length, size - sent));
    yield chunked ? Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]) : part;
  }
  if (chunked) yield Buffer.from('0\r\n\r\n');
}

/** Resolves when the gateway has sent a command with this key to the engine: the request was read whole. */
async function commandSent(f: SystemFixture, key: string): Promise<{ done: Promise<void> }> {
  const sub = f.nc.subscribe(ENGINE_COMMAND_SUBJECT);
  await f.nc.flush(); // the subscription is in place before the request goes out
  const done = (async () => {
    for await (const m of sub) {
      const batch = decodeRecords<CommandBatch>(m.data);
      if (batch.cmds.some((c) => 'key' in c.cmd && c.cmd.key === key)) {
        sub.unsubscribe();
        return;
      }
    }
  })();
  return { done };
}


eachServer('HTTP on the wire', (kind: HttpServerKind) => {
  const f = useSystem({ http: serverHttp(kind) });
  let port: number;
  beforeAll(async () => {
    port = f.sys.gateway.port;
    expect(f.sys.gateway.server).toBe(kind);
    await buy(f.nc, 1, undyBasket(50));
  });
  const undy = async () => (await f.http.holdings('team1', 'team1pass')).body.holdings.UNDY ?? 0;
  const raw = () => rawConnection(port);
  const get = 'GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n';

  // A create whose body stops one byte short, sent as soon as the server is up and looked at in the last test:
  // it waits out a server timeout (node: the 30 s request timeout; uWS: 8 s without a chunk, before uWS's own 10 s idle close) while the other tests run.
  const stallKey = `${kind}-stalled`;
  let stalled: Promise<RawResponse[]>;
  beforeAll(() => {
    const c = raw();
    c.send(createReq(stallKey).slice(0, -1));
    stalled = c.until(() => c.closed).then(() => c.responses);
  });

  // A create whose chunked body never ends, over the limit from its first chunk, then a KiB every 200 ms (the client's
  // pace, not a wait): the server drains it for DRAIN_MS at most. Started here, looked at in a later test.
  let dripped: Promise<{ answers: [number, string][]; ms: number }>;
  beforeAll(() => {
    const c = rawConnection(port, { allowHalfOpen: true });
    const started = performance.now();
    const [first] = uploadWrites(64 << 10, true);
    c.socket.write(uploadHead({ chunked: true }));
    c.socket.write(first!);
    const drip = setInterval(() => c.socket.write(`400\r\n${'a'.repeat(1024)}\r\n`), 200);
    dripped = c.until(() => c.closed).then(() => {
      clearInterval(drip);
      return { answers: c.responses.map((r) => [r.status, JSON.parse(r.body).error.code]), ms: performance.now() - started };
    });
  });

  it('answers pipelined creates on one socket each with its own answer, in order, when each comes while the previous is pending', async () => {
    const before = await undy();
    const c = raw();
    let sent = await commandSent(f, `${kind}-pipe-a`);
    c.send(createReq(`${kind}-pipe-a`));
    await sent.done;
    sent = await commandSent(f, `${kind}-pipe-b`);
    c.send(createReq(`${kind}-pipe-b`));
    await sent.done;
    sent = await commandSent(f, `${kind}-pipe-c`);
    c.send(createReq(`${kind}-pipe-c`));
    await sent.done;
    await c.until(() => c.responses.length === 3);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(c.responses.map((r) => JSON.parse(r.body).client_request_id)).toEqual([`${kind}-pipe-a`, `${kind}-pipe-b`, `${kind}-pipe-c`]);
    expect(await undy()).toBe(before + 3);
  });

  it('answers pipelined reads that arrive together (answered before the next is parsed)', async () => {
    const c = raw();
    c.sendMany(get + get + get, 3);
    await c.until(() => c.responses.length === 3);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([404, 404, 404]);
  });

  it('answers HEAD like GET, without a body, and the next answer follows the headers', async () => {
    const c = raw();
    c.send('HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n', true);
    await c.until(() => c.responses.length === 1);
    c.send(get);
    await c.until(() => c.responses.length === 2);
    c.close();
    expect(c.responses[0]!.status).toBe(200);
    expect(Number(c.responses[0]!.headers['content-length'])).toBeGreaterThan(0);
    expect(c.responses[0]!.body).toBe('');
    expect(c.responses[1]!.status).toBe(404);
    expect(JSON.parse(c.responses[1]!.body).error.code).toBe('not_found');
  });

  it('takes a create whose body comes in chunks, in several writes', async () => {
    const before = await undy();
    const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: `${kind}-chunked` });
    const c = raw();
    c.send('POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n');
    const half = Math.floor(body.length / 2);
    for (const part of [body.slice(0, half), body.slice(half)]) c.socket.write(`${part.length.toString(16)}\r\n${part}\r\n`);
    c.socket.write('0\r\n\r\n');
    await c.until(() => c.responses.length === 1);
    c.close();
    expect(c.responses[0]!.status).toBe(200);
    expect(JSON.parse(c.responses[0]!.body).client_request_id).toBe(`${kind}-chunked`);
    expect(await undy()).toBe(before + 1);
  });

  it('applies nothing of a create whose connection closes before its body is whole', async () => {
    const before = await undy();
    const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: `${kind}-cut` });
    const c = raw();
    c.socket.write(`POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, -3)}`);
    c.socket.end();
    await c.until(() => c.closed);
    // node answers the cut request's end with a 400; uWS says nothing. Neither applies it.
    expect(c.responses.filter((r) => r.status === 200)).toHaveLength(0);
    expect(await undy()).toBe(before);
    expect((await f.http.send('GET', `/requests/${kind}-cut`, { basic: ['team1', 'team1pass'] })).status).toBe(404);
  });

  // A chunk extension (`3;a`) is valid HTTP/1.1: node reads past it; uWS (20.30) never finds the body's end.
  const extensionKey = `${kind}-extension`;
  const extensionBody = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: extensionKey });
  const chunkExtension =
    'POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n' +
    `3;a\r\n${extensionBody.slice(0, 3)}\r\n${(extensionBody.length - 3).toString(16)}\r\n${extensionBody.slice(3)}\r\n0\r\n\r\n`;

  it('applies a chunked create with a chunk extension (3;a) only if it answers it: node takes it, uWS never finds its end and answers 408', async () => {
    const before = await undy();
    const c = raw();
    c.send(chunkExtension);
    await c.until(() => c.responses.length === 1);
    c.close();
    if (kind === 'node') expect(c.responses.map((r) => [r.status, JSON.parse(r.body).client_request_id])).toEqual([[200, extensionKey]]);
    else expect(c.responses.map((r) => [r.status, JSON.parse(r.body).error.code])).toEqual([[408, 'request_timeout']]);
    const created = c.responses.filter((r) => r.status === 200).length;
    expect(await undy()).toBe(before + created);
    expect((await f.http.send('GET', `/requests/${extensionKey}`, { basic: ['team1', 'team1pass'] })).status).toBe(created ? 200 : 404);
  });

  it('never runs a request hidden in a chunked body\'s trailer section', async () => {
    const name = `smuggled${kind}`;
    const hidden = form({ username: name, password: 'password1' });
    const c = raw();
    c.send(
      'GET /health HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n' +
        `POST /register HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`,
    );
    c.socket.end();
    await c.until(() => c.closed);
    // At most the GET is answered; the hidden registration never happened, so the name is still free.
    expect(c.responses.length).toBeLessThanOrEqual(1);
    expect((await f.http.register(name, 'password1')).status).toBe(200);
  });

  it('reads a repeated Idempotency-Key or Origin as its first value, as either server does', async () => {
    const key = `${kind}-twice`;
    const c = raw();
    // Before, node joined them ("k, k"): a 400 for the key, a 403 for the origin, where uWS took the first.
    const twice = `Idempotency-Key: ${key}\r\nIdempotency-Key: ${key}\r\nOrigin: http://127.0.0.1:${port}\r\nOrigin: http://127.0.0.1:${port}\r\n`;
    const body = 'etf_name=UNDY&amount=1';
    c.send(`POST /create HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Basic ${Buffer.from('team1:team1pass').toString('base64')}\r\n${twice}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await c.until(() => c.closed || c.responses.length === 1);
    c.close();
    expect(c.responses.map((r) => r.status)).toEqual([200]);
    expect((await f.http.send('GET', `/requests/${key}`, { basic: ['team1', 'team1pass'] })).status).toBe(200);
  });

  it.skipIf(kind === 'uws')('answers a request whose target is in absolute form as its path (uWS drops it: README)', async () => {
    const c = raw();
    c.send(`GET http://127.0.0.1:${port}/symbols HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await c.until(() => c.closed || c.responses.length === 1);
    c.send(`GET http://127.0.0.1:${port}/nowhere?x=1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await c.until(() => c.closed || c.responses.length === 2);
    c.close();
    // Before: 404 "no route http://127.0.0.1:<port>/symbols".
    expect(c.responses.map((r) => r.status)).toEqual([200, 404]);
    expect(JSON.parse(c.responses[1]!.body).error.message).toBe('no route /nowhere');
  });

  // What Java's java.net.http.HttpClient adds to every plain-http request by default.
  const h2c = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n';

  it('takes a request offering Upgrade: h2c as an ordinary HTTP/1.1 request (node on Node 20: a JSON 501 saying how to send it)', async () => {
    const key = `${kind}-h2c`;
    const declined = kind === 'node' && !upgradesChosen;
    const c = raw();
    c.send(`GET /symbols HTTP/1.1\r\nHost: test\r\n${h2c}\r\n`);
    await c.until(() => c.closed || c.responses.length === 1);
    c.send(createReq(key).replace('\r\n', `\r\n${h2c}`));
    await c.until(() => c.closed || c.responses.length === 2);
    const other = raw();
    if (declined) {
      other.send(createReq(key).replace('\r\n', `\r\n${h2c}`));
      await other.until(() => other.closed || other.responses.length === 1);
    }
    c.close();
    other.close();
    if (declined) {
      expect([...c.responses, ...other.responses].map((r) => [r.status, JSON.parse(r.body).error.code])).toEqual([[501, 'not_implemented'], [501, 'not_implemented']]);
      expect((await f.http.send('GET', `/requests/${key}`, { basic: ['team1', 'team1pass'] })).status).toBe(404);
      return;
    }
    expect(c.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(c.responses[0]!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(c.responses[1]!.body).client_request_id).toBe(key);
    expect((await f.http.send('GET', `/requests/${key}`, { basic: ['team1', 'team1pass'] })).status).toBe(200);
  });

  // [name, a request answered with the connection's last answer]: node answers each; uWS may drop the pair.
  const lastAnswers: [string, string, number][] = [
    ['a foreign Origin POST (403)', `POST /register HTTP/1.1\r\nHost: test\r\nOrigin: https://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b`, 403],
    ['a body over the limit (413)', post('/create', 'a='.padEnd(20_000, 'x')), 413],
    ['a POST to a GET route (405)', post('/holdings', 'username=team1&password=team1pass'), 405],
    ['no Host (400)', `POST /create HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b`, 400],
    ['Connection: close from the client', 'GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n', 200],
  ];

  it.each(lastAnswers)('carries out a create pipelined after %s only if it answers it', async (name, first, status) => {
    const key = `${kind}-after-${name.replace(/\W+/g, '-')}`;
    const sent = await commandSent(f, key);
    const c = raw();
    c.sendMany(first + createReq(key), 2);
    await c.until(() => c.closed || c.responses.length === 2);
    c.close();
    // The gateway sends a create's command after its credentials are checked (a bcrypt): a second is plenty.
    const applied = await Promise.race([sent.done.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1_000))]);
    const answered = c.responses.some((r) => JSON.parse(r.body).client_request_id === key);
    expect({ applied, answered }).toEqual({ applied: answered, answered });
    if (kind === 'node') expect(c.responses[0]?.status).toBe(status);
  });

  it.each([
    ['a Content-Length', false],
    ['a chunked', true],
  ] as const)('answers a create with %s body of 8 MiB (the limit: 16 KiB) 413, read by a client that sends the whole body before reading', async (_name, chunked) => {
    const size = 8 << 20;
    const c = rawConnection(port, { readLater: true });
    for (const part of [Buffer.from(uploadHead(chunked ? { chunked } : { size })), ...uploadWrites(size, chunked)]) {
      if (!(await c.write(part))) break;
    }
    c.startReading();
    await c.until(() => c.closed || c.responses.length === 1);
    c.close();
    // Before (node; uWS with a chunked body): the server closed with the upload unread, the kernel reset the
    // connection, and the client's write failed (EPIPE), the 413 never read (Python: BrokenPipeError).
    expect({ error: c.error?.message ?? null, answers: c.responses.map((r) => [r.status, JSON.parse(r.body).error.code]) }).toEqual({
      error: null,
      answers: [[413, 'payload_too_large']],
    });
  });

  it('answers 413 to a client that never stops uploading, and cuts it off once about DRAIN_BYTES more have come', async () => {
    const c = rawConnection(port, { allowHalfOpen: true });
    await c.write(uploadHead({ chunked: true }));
    let sent = 0;
    for (const part of uploadWrites(Infinity, true)) {
      if (!(await c.write(part))) break;
      sent += part.length;
    }
    await c.until(() => c.closed);
    const answers = c.responses.map((r) => [r.status, JSON.parse(r.body).error.code]);
    // node answers at once; uWS holds the answer until the cut (transport/uws.ts), and closes with the upload unread:
    // the client's next write may fail on the reset before it has read the 413.
    if (kind === 'node' || answers.length > 0) expect(answers).toEqual([[413, 'payload_too_large']]);
    expect(sent).toBeGreaterThan(DRAIN_BYTES);
    // What the kernel's buffers on both sides took beyond what the server read: tens of MiB on loopback at most.
    expect(sent).toBeLessThan(DRAIN_BYTES + (64 << 20));
  });

  it('answers 413 to a client whose body never ends, and cuts it off after DRAIN_MS (uWS: 8 s after the request began)', async () => {
    const { answers, ms } = await dripped;
    expect(answers).toEqual([[413, 'payload_too_large']]);
    // Drained for a while, then cut: uWS before its own close of a body this slow (10 s), node at DRAIN_MS; the
    // servers' limits on a whole request (30 s) would cut it later.
    expect(ms).toBeGreaterThan(5_000);
    expect(ms).toBeLessThan(DRAIN_MS + 8_000);
  }, 30_000);

  const body = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: `${kind}-bad` });
  // [name, request, the node server's answer]: uWS drops each without one.
  const malformed: [string, string, number, string][] = [
    ['a space in the path', `POST /cre ate HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['a NUL in a header', `POST /create HTTP/1.1\r\nHost: test\r\nX-Note: a\0b\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['no Host in HTTP/1.1', `POST /create HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['a lower-case method', `post /create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['Content-Length with Transfer-Encoding (smuggling)', `POST /create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`, 400, 'bad_request'],
    ['two Content-Lengths', `POST /create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\nContent-Length: 3\r\n\r\n${body}`, 400, 'bad_request'],
    ['a gzip Transfer-Encoding', `POST /create HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n`, 400, 'bad_request'],
    ['HTTP/2.0 in the request line', `POST /create HTTP/2.0\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 505, 'http_version_not_supported'],
    ['a 20 KiB header', `GET /health HTTP/1.1\r\nHost: test\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`, 431, 'request_header_too_large'],
    ['an unknown method', `BREW /create HTTP/1.1\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 400, 'bad_request'],
    ['a Content-Length of 2^31', `POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${2 ** 31}\r\n\r\n${body}`, 413, 'payload_too_large'],
  ];

  if (kind === 'node') {
    it('answers pipelined creates that arrive in one write, each with its own answer, in order', async () => {
      const before = await undy();
      const c = raw();
      c.sendMany(createReq('same-1') + createReq('same-2') + createReq('same-3'), 3);
      await c.until(() => c.responses.length === 3);
      c.close();
      expect(c.responses.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(c.responses.map((r) => JSON.parse(r.body).client_request_id)).toEqual(['same-1', 'same-2', 'same-3']);
      expect(await undy()).toBe(before + 3);
    });

    it('answers Expect: 100-continue with a body over the limit 413 without a 100 first', async () => {
      const e = raw();
      e.send(`POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: ${3 << 20}\r\n\r\n`);
      await e.until(() => e.closed || e.responses.length === 1);
      e.close();
      expect(e.responses.map((r) => [r.status, JSON.parse(r.body).error.code])).toEqual([[413, 'payload_too_large']]);
    });

    it('sends 100 Continue to an Expect: 100-continue create once it reads the body, and applies it', async () => {
      const key = 'expect-continue';
      const b = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: key });
      const e = raw();
      e.send(`POST /create HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: ${b.length}\r\n\r\n`);
      await e.until(() => e.closed || e.responses.length === 1);
      e.send(b);
      await e.until(() => e.closed || e.responses.length === 2);
      e.close();
      expect(e.responses.map((r) => r.status)).toEqual([100, 200]);
      expect(JSON.parse(e.responses[1]!.body).client_request_id).toBe(key);
    });

    it('answers an HTTP/1.0 GET and closes the connection after it', async () => {
      const c = raw();
      c.send('GET /health HTTP/1.0\r\n\r\n');
      await c.until(() => c.closed);
      expect(c.responses).toHaveLength(1);
      expect(c.responses[0]!.status).toBe(200);
      expect(JSON.parse(c.responses[0]!.body).status).toBeDefined();
    });

    it('runs an HTTP/1.0 create once and answers it', async () => {
      const before = await undy();
      const b = form({ username: 'team1', password: 'team1pass', etf_name: 'UNDY', amount: 1, request_id: 'old-1' });
      const c = raw();
      c.send(`POST /create HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
      await c.until(() => c.closed);
      expect(c.responses.map((r) => r.status)).toEqual([200]);
      expect(JSON.parse(c.responses[0]!.body).client_request_id).toBe('old-1');
      expect(await undy()).toBe(before + 1);
    });

    it('answers every request a client sent before closing its side, a create answered after the close too', async () => {
      const key = 'half-closed';
      const c = raw();
      c.sendMany(get + get + createReq(key), 3);
      c.socket.end();
      await c.until(() => c.closed);
      expect(c.responses.map((r) => r.status)).toEqual([404, 404, 200]);
      expect(JSON.parse(c.responses[2]!.body).client_request_id).toBe(key);
      expect((await f.http.send('GET', `/requests/${key}`, { basic: ['team1', 'team1pass'] })).status).toBe(200);
    });

    it.each(malformed)('answers %s with a JSON error and closes, changing nothing', async (_name, request, status, code) => {
      const before = await undy();
      const c = raw();
      c.send(request);
      await c.until(() => c.closed);
      expect(c.responses).toHaveLength(1);
      expect(c.responses[0]!.status).toBe(status);
      expect(c.responses[0]!.headers['content-type']).toBe('application/json');
      expect(JSON.parse(c.responses[0]!.body).error.code).toBe(code);
      expect(await undy()).toBe(before);
    });

    it('answers the requests before a malformed one, then the malformed one, in order', async () => {
      const c = raw();
      c.sendMany(get + get + 'GET /no where HTTP/1.1\r\nHost: test\r\n\r\n', 3);
      await c.until(() => c.closed);
      expect(c.responses.map((r) => r.status)).toEqual([404, 404, 400]);
    });
  } else {
    it('applies none of the pipelined creates uWS drops (one write), and answers only what it applied', async () => {
      const before = await undy();
      const c = raw();
      c.sendMany(createReq('drop-1') + createReq('drop-2') + createReq('drop-3'), 3);
      await c.until(() => c.closed || c.responses.length === 3);
      c.close();
      const applied = c.responses.filter((r) => r.status === 200).length;
      expect(await undy()).toBe(before + applied);
    });

    it.each([
      ['an HTTP/1.0 create', `POST /create HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`] as const,
      ...malformed.map(([name, request]) => [name, request] as const),
    ])('applies %s only if it answers it', async (_name, request) => {
      const before = await undy();
      const c = raw();
      c.send(request);
      // Our side ends after the request: uWS closes the connection then (without this, a drop waits out its 10 s idle timeout).
      c.socket.end();
      await c.until(() => c.closed);
      const created = c.responses.filter((r) => r.status === 200 && JSON.parse(r.body).client_request_id !== undefined).length;
      expect(await undy()).toBe(before + created);
    });
  }

  it('answers a body that stops coming with a JSON 408 and closes the connection, and applies nothing of it', async () => {
    const responses = await stalled;
    expect(responses.map((r) => [r.status, r.headers['content-type'], JSON.parse(r.body).error.code])).toEqual([[408, 'application/json', 'request_timeout']]);
    expect((await f.http.send('GET', `/requests/${stallKey}`, { basic: ['team1', 'team1pass'] })).status).toBe(404);
  }, 50_000); // node answers at its 30 s request timeout (REQUEST_MS), running since beforeAll
});
