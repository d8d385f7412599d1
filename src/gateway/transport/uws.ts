import uWS from 'uWebSockets.js';
import { STATUS_TEXT, type Reply, type RequestInfo } from '../http.js';
import type { Transport } from '../ws/session.js';
import { DRAIN_BYTES, DRAIN_MS, type HttpServer, type HttpServerOptions, type WsConnection } from './types.js';
import { plainAddress } from './address.js';
import { HandleSet, type Handle } from '../../shared/handle-set.js';

/**
 * The gateway on uWebSockets.js (C++ HTTP and WebSocket): the fast path,
 * where a build for this Node loads. This module imports uWS itself, so it is
 * only ever loaded through a dynamic import (transport/index.ts).
 *
 * What uWS (20.30) does not answer: it closes the connection without a word
 * on HTTP/1.0, on a malformed request (no Host, bad framing, Content-Length
 * with Transfer-Encoding, oversized heads) and on a request pipelined in the
 * same read as one whose answer is pending. The handler never sees such a
 * request, and a request whose connection closes before its body is whole is
 * `aborted`: nothing it carried reaches the engine. The node server answers
 * all of these (HTTP_SERVER=node). It also drops an unknown method and a
 * Content-Length of 2^31 - 1 or more. A body that stops coming is answered
 * 408 here (BodyWatch), before uWS's own silent close.
 */

function requestInfo(req: uWS.HttpRequest, res: uWS.HttpResponse): RequestInfo {
  const len = req.getHeader('content-length');
  return {
    method: req.getCaseSensitiveMethod().toUpperCase(),
    path: req.getUrl(),
    query: req.getQuery() ?? '',
    contentType: req.getHeader('content-type').toLowerCase(),
    contentLength: len === '' ? null : Number(len),
    authorization: req.getHeader('authorization'),
    idempotencyKey: req.getHeader('idempotency-key'),
    origin: req.getHeader('origin'),
    host: req.getHeader('host'),
    address: plainAddress(Buffer.from(res.getRemoteAddressAsText()).toString()),
  };
}

interface Answer {
  status: number;
  headers: [string, string][];
  body: Buffer | string;
  head: boolean;
}

/**
 * Pipelining: uWS closes a connection whose next request arrives while the
 * previous answer is pending ("we still support sync pipelining" only). So
 * once a request is read, the socket is paused: a pipelined request stays in
 * the kernel's buffer until this one is answered, and then gets its own
 * answer in order. Requests that arrived in the same read as the pending one
 * are beyond reach (uWS closes before calling us).
 */
class UwsReply implements Reply {
  private aborted = false;
  private paused = false;
  private abortCb: (() => void) | null = null;
  /** Reading a body: since when, and when its last chunk came (performance.now()). Null once whole, answered or gone. */
  reading: { since: number; lastAt: number } | null = null;
  /** Its place among the bodies being read (BodyWatch). */
  watched: Handle<UwsReply> | null = null;
  private stallCb: (() => void) | null = null;
  /** The body stopped coming: its answer (a 408) goes out at once, and the connection closes. */
  private stopped = false;
  /**
   * An answer given while the body was still coming (a 413 mid-upload), held while the rest is read and dropped
   * (types.ts, DRAIN_MS): uWS closes at once on an answer that ends the connection, with the upload unread, and a client
   * still sending got a broken pipe. It goes out once the body ends (the connection kept: the body was read whole), or,
   * closing the connection, once `left` bytes more have come, at `until`, or when the body stops (BodyWatch). uWS
   * cannot answer first and drain after, as node does: a response ended while its onData is set reads the rest for
   * as long as 16 KB/s come (uWS renews its timeout), and can no longer be closed from here.
   */
  held: { answer: Answer; left: number; until: number } | null = null;
  constructor(
    private readonly res: uWS.HttpResponse,
    private readonly bodies: BodyWatch,
  ) {
    // Attached before the handler runs: uWS aborts the process for a handler that returns without answering or this.
    res.onAborted(() => {
      this.aborted = true;
      this.held = null;
      this.stopReading();
      this.abortCb?.();
    });
  }
  onAborted(cb: () => void): void {
    this.abortCb = cb;
  }
  onData(cb: (chunk: Buffer, last: boolean) => void): void {
    const now = performance.now();
    this.reading = { since: now, lastAt: now };
    this.bodies.add(this);
    // uWS reuses the ArrayBuffer after this callback returns: copy it. Through a view, a small body is copied into
    // Node's buffer pool; ab.slice(0) made an ArrayBuffer (a backing store to allocate and sweep) per request.
    this.res.onData((ab, last) => {
      if (this.held) return this.drained(ab.byteLength, last);
      if (last) this.stopReading();
      else if (this.reading) this.reading.lastAt = performance.now();
      cb(Buffer.from(new Uint8Array(ab)), last);
    });
  }
  onStalled(cb: () => void): void {
    this.stallCb = cb;
  }
  /** The body stopped coming (BodyWatch): the caller answers 408, and the connection closes with it. A held answer goes out instead. */
  stalled(): void {
    if (this.held) return this.release(true);
    this.stopped = true;
    const cb = this.stallCb;
    this.stallCb = null;
    cb?.();
    this.stopReading();
  }
  private drained(bytes: number, last: boolean): void {
    const held = this.held!;
    held.left -= bytes;
    if (this.reading) this.reading.lastAt = performance.now();
    if (last || held.left < 0) this.release(!last);
  }
  private release(close: boolean): void {
    const { answer } = this.held!;
    this.held = null;
    this.stopReading();
    this.write(answer, close);
  }
  private stopReading(): void {
    if (this.reading) this.bodies.delete(this);
  }
  hold(): void {
    if (this.paused || this.aborted) return;
    this.paused = true;
    this.res.pause();
  }
  end(status: number, headers: [string, string][], body: Buffer | string, head: boolean): void {
    if (this.aborted || this.held) return;
    const answer = { status, headers, body, head };
    if (this.reading && !this.stopped) {
      // uWS may close a body slower than 16 KB/s 10 s after its request began (its timeout, renewed per 160 KB): out before.
      this.held = { answer, left: DRAIN_BYTES, until: Math.min(performance.now() + DRAIN_MS, this.reading.since + BODY_IDLE_MS) };
      return;
    }
    // Answered before its body was whole (a 408): the rest of it would be read as the next request, so the connection closes.
    const close = this.reading !== null;
    this.stopReading();
    this.write(answer, close);
  }
  private write({ status, headers, body, head }: Answer, close: boolean): void {
    // Corked: uWS needs it for answers written after the handler returned.
    this.res.cork(() => {
      // Resumed before end: uWS discards the response object at end.
      if (this.paused) this.res.resume();
      this.res.writeStatus(STATUS_TEXT[status] ?? String(status));
      for (const [k, v] of headers) this.res.writeHeader(k, v);
      // uWS 20.30's endWithoutBody(length) leaves the response pending (it waits for those bytes), so the length goes in by hand.
      if (head) this.res.writeHeader('content-length', String(Buffer.byteLength(body))).endWithoutBody();
      else this.res.end(body, close);
    });
  }
}

/**
 * uWS closes a connection whose request body stays silent for 10 s (its idle
 * timeout), without a word. Bodies being read are looked at every second: one
 * silent for BODY_IDLE_MS (before uWS's own close) or not whole after
 * REQUEST_MS (node:http's limit too) is answered 408 JSON, as on node.
 */
const BODY_IDLE_MS = 8_000;
const REQUEST_MS = 30_000;

class BodyWatch {
  private readonly open = new HandleSet<UwsReply>();
  private timer: NodeJS.Timeout | null = null;
  add(r: UwsReply): void {
    r.watched = this.open.add(r);
    this.timer ??= setInterval(() => this.check(), 1_000).unref();
  }
  delete(r: UwsReply): void {
    r.reading = null;
    if (r.watched) this.open.delete(r.watched);
    r.watched = null;
  }
  private check(): void {
    const now = performance.now();
    for (const r of this.open.items()) {
      const at = r.reading;
      if (at && (now - at.lastAt >= BODY_IDLE_MS || now - at.since >= REQUEST_MS || (r.held && now >= r.held.until))) r.stalled();
    }
    if (this.open.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.open.clear();
  }
}

interface UserData {
  open: ((t: Transport) => WsConnection) | null;
  conn: WsConnection | null;
  closed: boolean;
}

export function uwsServer(opts: HttpServerOptions): HttpServer {
  const app = uWS.App();
  const { ws } = opts;

  const transport = (socket: uWS.WebSocket<UserData>): Transport => ({
    send: (frame, binary) => (socket.getUserData().closed ? 2 : socket.send(frame, binary)),
    buffered: () => (socket.getUserData().closed ? 0 : socket.getBufferedAmount()),
    end: (code, reason) => {
      if (!socket.getUserData().closed) socket.end(code, reason);
    },
    cork: (fn) => {
      if (socket.getUserData().closed) fn();
      else socket.cork(fn);
    },
  });

  // Before the catch-all route, so upgrades reach it (a plain GET on the path falls through to the handler).
  app.ws<UserData>(ws.path, {
    maxPayloadLength: ws.maxPayloadBytes,
    // uWS drops sends beyond this; the session closes with 4008 before relying on it (see Session.sendData).
    maxBackpressure: ws.maxBackpressureBytes,
    idleTimeout: ws.idleTimeoutS,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      // req is only valid synchronously: read everything now.
      const decision = ws.upgrade(requestInfo(req, res));
      if ('refuse' in decision) {
        res.writeStatus(STATUS_TEXT[decision.refuse.status] ?? String(decision.refuse.status)).writeHeader('content-type', 'application/json');
        res.end(JSON.stringify(decision.refuse.body));
        return;
      }
      res.upgrade<UserData>(
        { open: decision.open, conn: null, closed: false },
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        context,
      );
    },
    open: (socket) => {
      const ud = socket.getUserData();
      ud.conn = ud.open!(transport(socket));
      ud.open = null;
    },
    message: (socket, data, isBinary) => socket.getUserData().conn?.message(data, isBinary),
    drain: (socket) => socket.getUserData().conn?.drain(),
    close: (socket) => {
      const ud = socket.getUserData();
      ud.closed = true;
      ud.conn?.closed();
    },
  });

  const bodies = new BodyWatch();
  app.any('/*', (res, req) => {
    const reply = new UwsReply(res, bodies);
    opts.handler(requestInfo(req, res), reply);
  });

  let listenSocket: uWS.us_listen_socket | null = null;
  return {
    kind: 'uws',
    listen: (host, port) =>
      new Promise((resolve, reject) =>
        app.listen(host, port, (token) => {
          if (!token) return reject(new Error(`cannot listen on ${host}:${port}`));
          listenSocket = token;
          resolve(uWS.us_socket_local_port(token));
        }),
      ),
    close: async () => {
      bodies.stop();
      if (listenSocket) uWS.us_listen_socket_close(listenSocket);
      listenSocket = null;
    },
  };
}
