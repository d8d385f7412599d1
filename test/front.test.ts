import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import uWS from 'uWebSockets.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRONT_PEER_HEADER } from '../proto/http.js';
import { startFront, type Front } from '../src/gateway/front/front.js';
import { createLogger } from '../src/shared/log.js';

/**
 * The gateway's front (src/gateway/front) in front of a real uWS app on a
 * unix socket, with a short idle timeout: what it does when clients stall,
 * when uWS drops a request, and when it is closed with an answer in flight.
 */
let dir: string;
let front: Front;
let listenSocket: uWS.us_listen_socket;
const held: (() => void)[] = [];
const heldWaiters: (() => void)[] = [];
const IDLE_MS = 300;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'front-test-'));
  const path = join(dir, 'uws.sock');
  const app = uWS.App()
    .get('/ok', (res, req) => {
      res.end(JSON.stringify({ peer: req.getHeader(FRONT_PEER_HEADER) }));
    })
    .get('/held', (res) => {
      // Answered when the test releases it: an answer in flight.
      let aborted = false;
      res.onAborted(() => (aborted = true));
      held.push(() => aborted || res.cork(() => res.end('{"late":true}')));
      heldWaiters.splice(0).forEach((w) => w());
    })
    .get('/drop', (res) => {
      res.close();
    })
    .post('/body', (res) => {
      res.onAborted(() => {});
      res.onData((_ab, last) => last && res.cork(() => res.end('{}')));
    });
  listenSocket = await new Promise((resolve, reject) => app.listen_unix((t) => (t ? resolve(t) : reject(new Error('listen_unix'))), path));
  front = await startFront({ host: '127.0.0.1', port: 0, upstreamPath: path, peerHeader: FRONT_PEER_HEADER, idleTimeoutMs: IDLE_MS, log: createLogger('front', 'silent') });
});

afterAll(async () => {
  await front?.close();
  uWS.us_listen_socket_close(listenSocket);
  rmSync(dir, { recursive: true, force: true });
});

/** Sends `data`, resolves with everything received until the server closes. */
function exchange(data: string | string[], opts: { afterFirst?: Promise<void> } = {}): { text: Promise<string>; socket: net.Socket } {
  const socket = net.connect(front.port, '127.0.0.1');
  const parts = Array.isArray(data) ? data : [data];
  let text = '';
  socket.on('data', (d) => (text += d.toString('latin1')));
  socket.write(parts[0]!);
  if (parts.length > 1) void opts.afterFirst?.then(() => parts.slice(1).forEach((p) => socket.write(p)));
  return { socket, text: new Promise((resolve) => socket.on('close', () => resolve(text))) };
}

const statusOf = (text: string) => Number(text.slice(9, 12));
const bodyOf = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));

describe('the front', () => {
  it('passes the client address to uWS in its peer header', async () => {
    const { text } = exchange('GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n');
    const t = await text;
    expect(statusOf(t)).toBe(200);
    expect(bodyOf(t).peer).toBe('127.0.0.1');
  });

  it('answers a request head that stops arriving with 408', async () => {
    const t = await exchange('GET /ok HTTP/1.1\r\nHost: t\r\n').text;
    expect(statusOf(t)).toBe(408);
    expect(bodyOf(t).error.code).toBe('request_timeout');
  });

  it('answers a body that stops arriving with 408', async () => {
    const t = await exchange('POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc').text;
    expect(statusOf(t)).toBe(408);
    expect(bodyOf(t).error.code).toBe('request_timeout');
  });

  it('closes a connection idle between requests without a word', async () => {
    const t = await exchange('GET /ok HTTP/1.1\r\nHost: t\r\n\r\n').text;
    expect(statusOf(t)).toBe(200);
    expect(t.match(/HTTP\/1\.1/g)).toHaveLength(1);
  });

  it('answers 502 when uWS drops a request it was given', async () => {
    const t = await exchange('GET /drop HTTP/1.1\r\nHost: t\r\n\r\n').text;
    expect(statusOf(t)).toBe(502);
    expect(bodyOf(t).error.code).toBe('bad_gateway');
  });

  it('on close, still delivers the answer in flight, then refuses new connections', async () => {
    const arrived = new Promise<void>((r) => heldWaiters.push(r));
    const inFlight = exchange('GET /held HTTP/1.1\r\nHost: t\r\n\r\n');
    await arrived;
    const closed = front.close(5_000);
    held.shift()!();
    const t = await inFlight.text;
    await closed;
    expect(statusOf(t)).toBe(200);
    expect(bodyOf(t)).toEqual({ late: true });
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(front.port, '127.0.0.1');
      s.on('error', () => resolve(true));
      s.on('connect', () => (s.destroy(), resolve(false)));
    });
    expect(refused).toBe(true);
  });
});
