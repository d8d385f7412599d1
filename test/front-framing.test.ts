import { describe, expect, it } from 'vitest';
import { ChunkedBody, MAX_HEADER_LINES, parseRequestHead, parseResponseHead, type RequestHead } from '../src/gateway/front/framing.js';

/**
 * The front's framing rules (src/gateway/front/framing.ts) on their own:
 * where messages end, whatever way their bytes are split.
 */
const PEER = 'x-etf-peer';
const head = (s: string) => parseRequestHead(Buffer.from(s, 'latin1'), PEER);
const ok = (s: string): RequestHead => {
  const h = head(s);
  if (!h || !h.ok) throw new Error(`expected a head, got ${JSON.stringify(h)}`);
  return h;
};

describe('request heads', () => {
  it('waits for a head until its blank line', () => {
    expect(head('GET / HTTP/1.1\r\nHost: a\r\n')).toBeNull();
    expect(ok('GET / HTTP/1.1\r\nHost: a\r\n\r\n').headEnd).toBe(27);
  });

  it('frames bodies by Content-Length, chunked or none, and reads HTTP/1.0 keep-alive', () => {
    expect(ok('POST /create HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n').body).toEqual({ type: 'length', length: 12 });
    expect(ok('POST /create HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n').body).toEqual({ type: 'chunked' });
    expect(ok('GET / HTTP/1.1\r\nHost: a\r\n\r\n').body).toEqual({ type: 'none' });
    expect(ok('GET / HTTP/1.0\r\n\r\n')).toMatchObject({ http10: true, close: true, hasHost: false });
    expect(ok('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').close).toBe(false);
    expect(ok('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').close).toBe(true);
    expect(ok('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n').upgrade).toBe(true);
  });

  it('skips empty lines before the request line', () => {
    const h = ok('\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(h.start).toBe(4);
    expect(h.target).toBe('/');
  });

  it('refuses what would let two parsers disagree on where a request ends', () => {
    expect(head('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')).toMatchObject({ ok: false, status: 400 });
    expect(head('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n')).toMatchObject({ ok: false, status: 400 });
    expect(head('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n')).toMatchObject({ ok: false, status: 400 });
    expect(head('GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n')).toMatchObject({ ok: false, status: 400 });
    expect(head('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')).toMatchObject({ ok: false, status: 400 });
    expect(head('GET / HTTP/1.1\nHost: a\n\n')).toMatchObject({ ok: false, status: 400 });
  });

  it('counts header lines against what uWS can take', () => {
    const lines = (n: number) => `GET / HTTP/1.1\r\nHost: a\r\n${Array.from({ length: n - 1 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`;
    expect(ok(lines(MAX_HEADER_LINES)).method).toBe('GET');
    expect(head(lines(MAX_HEADER_LINES + 1))).toMatchObject({ ok: false, status: 431 });
  });
});

describe('response heads', () => {
  const res = (s: string, method = 'GET') => parseResponseHead(Buffer.from(s, 'latin1'), method);
  it('knows which answers carry no body', () => {
    expect(res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', 'HEAD')!.body).toEqual({ type: 'none' });
    expect(res('HTTP/1.1 204 No Content\r\n\r\n')!.body).toEqual({ type: 'none' });
    expect(res('HTTP/1.1 100 Continue\r\n\r\n')!.body).toEqual({ type: 'none' });
    expect(res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n')!.body).toEqual({ type: 'length', length: 5 });
    expect(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')!.body).toEqual({ type: 'chunked' });
    expect(res('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n')).toMatchObject({ close: true, body: { type: 'until-close' } });
  });
});

describe('chunked bodies', () => {
  const body = Buffer.from('5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT', 'latin1');
  const end = body.length - 4;

  it('finds the end of a chunked body however its bytes are split', () => {
    for (let cut = 0; cut <= body.length; cut++) {
      const walker = new ChunkedBody();
      const first = walker.feed(body.subarray(0, cut), 0);
      const found = first >= 0 ? first : cut + walker.feed(body.subarray(cut), 0);
      expect(walker.error).toBeNull();
      expect(found).toBe(end);
    }
  });

  it('finds it byte by byte', () => {
    const walker = new ChunkedBody();
    let found = -1;
    for (let i = 0; i < body.length && found < 0; i++) if (walker.feed(body.subarray(i, i + 1), 0) === 1) found = i + 1;
    expect(found).toBe(end);
  });

  it('refuses malformed chunk sizes and endings', () => {
    for (const bad of ['x\r\n', '5\r\nhelloXX', '5\nhello', '1234567890abc\r\n']) {
      const walker = new ChunkedBody();
      expect(walker.feed(Buffer.from(bad, 'latin1'), 0)).toBe(-1);
      expect(walker.error).not.toBeNull();
    }
  });
});
