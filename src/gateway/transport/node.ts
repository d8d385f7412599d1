import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { HTTP_STATUS, type HttpErrorCode } from '../../../proto/http.js';
import type { Reply, RequestInfo } from '../http.js';
import { DRAIN_BYTES, DRAIN_MS, type HttpServer, type HttpServerOptions, type WsConnection, type WsEndpoint } from './types.js';
import type { Transport } from '../ws/session.js';
import { plainAddress } from './address.js';
import { HandleSet, type Handle } from '../../shared/handle-set.js';

/**
 * The gateway on node:http (llhttp) and `ws`: every Node, no native build.
 * HTTP/1.0, keep-alive, pipelining (answers in order), chunked bodies and
 * malformed requests are Node's; its `clientError` answers here in JSON.
 */

/** Between requests a connection is closed after this long (uWS's HTTP idle limit is 10 s too). */
const KEEP_ALIVE_MS = 10_000;
/** A head that stops arriving is a 408 after this long; a whole request (head and body) after REQUEST_MS. */
const HEADERS_MS = 10_000;
const REQUEST_MS = 30_000;
/** How often Node looks for requests past those two limits: its default (30 s) made a 408 come up to 30 s late. */
const TIMEOUT_CHECK_MS = 1_000;

const header = (req: http.IncomingMessage, name: string): string => {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : (v ?? '');
};

/** One value of a header that has one: the first, as uWS takes it (node joins repeats with ", ", which reads as another value). */
const single = (req: http.IncomingMessage, name: string): string => req.headersDistinct[name]?.[0] ?? '';

/**
 * The path and query of a request target. The absolute form (`http://host/symbols`, sent by clients that take the
 * gateway for a proxy; RFC 9112 §3.2.2 has servers accept it) names the same resource as its path: as a path, it was a 404.
 */
function originForm(target: string): string {
  if (target.startsWith('/')) return target;
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  if (!m) return target;
  const rest = target.slice(m[0].length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}

function requestInfo(req: http.IncomingMessage): RequestInfo {
  const url = originForm(req.url ?? '/');
  const q = url.indexOf('?');
  const len = header(req, 'content-length');
  return {
    method: (req.method ?? '').toUpperCase(),
    path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? '' : url.slice(q + 1),
    contentType: header(req, 'content-type').toLowerCase(),
    contentLength: len === '' ? null : Number(len),
    authorization: header(req, 'authorization'),
    idempotencyKey: single(req, 'idempotency-key'),
    origin: single(req, 'origin'),
    host: header(req, 'host'),
    address: plainAddress(req.socket.remoteAddress ?? ''),
  };
}

const hasBody = (req: http.IncomingMessage) => req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;

/**
 * Connections whose last answer is decided (a `connection: close` of ours, or
 * the client's): Node's parser still hands on requests that came in the same
 * read, and Node would carry them out but never write their answers, so they
 * are not handled at all.
 */
type Closing = WeakSet<Duplex>;

/**
 * Connections closing on an answer given before their request's body was read whole (a 413): after the answer and our
 * FIN, the rest of the upload is read and dropped until the client closes its side, DRAIN_BYTES have come or DRAIN_MS
 * have passed. Node closed at once (destroySoon), the kernel reset the connection on the unread upload, and a client
 * still sending (Python's http.client sends the whole body before it reads) got a broken pipe, never the 413.
 */
class Draining {
  private readonly sockets = new Set<Socket>();

  /** Node ends a connection after its last answer with socket.destroySoon (_http_server.js resOnFinish, Node 20 to 26). */
  afterAnswer(socket: Socket): void {
    (socket as Socket & { destroySoon(): void }).destroySoon = () => this.drain(socket);
  }

  private drain(socket: Socket): void {
    socket.end();
    this.sockets.add(socket);
    const cut = () => socket.destroy();
    const timer = setTimeout(cut, DRAIN_MS);
    let drained = 0;
    // Node's parser goes on reading the body, and drops it; this counts it. A 'data' listener takes the socket off
    // llhttp's direct read (parser.consume), which leaves a paused socket unable to start reading again: so while Node
    // has it paused (a body nobody read filled the request's buffer), the count starts once Node resumes it.
    const count = () =>
      socket.on('data', (chunk: Buffer) => {
        drained += chunk.length;
        if (drained > DRAIN_BYTES) cut();
      });
    if (socket.readableFlowing === false) socket.once('resume', count);
    else count();
    // The client has all it sent for: the answer is out once our side has finished.
    socket.once('end', () => (socket.writableFinished ? cut() : socket.once('finish', cut)));
    socket.once('close', () => {
      clearTimeout(timer);
      this.sockets.delete(socket);
    });
  }

  closeAll(): void {
    for (const s of this.sockets) s.destroy();
  }
}

class NodeReply implements Reply {
  /** Its place among its connection's answers not yet written out (OpenReplies). */
  open: Handle<NodeReply> | null = null;
  private abortCb: (() => void) | null = null;
  private aborted = false;
  constructor(
    readonly req: http.IncomingMessage,
    readonly res: http.ServerResponse,
    private readonly closing: Closing,
    private readonly draining: Draining,
    private readonly expectsContinue = false,
  ) {
    res.on('close', () => {
      if (!res.writableFinished) this.abandon();
    });
  }
  /** The client is gone, or its request cannot be read to its end: nothing more of it is done. */
  abandon(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.abortCb?.();
  }
  onAborted(cb: () => void): void {
    this.abortCb = cb;
  }
  onData(cb: (chunk: Buffer, last: boolean) => void): void {
    // Only now: a request refused by its head (a Content-Length over the limit, a foreign Origin) is answered without a 100 first.
    if (this.expectsContinue) this.res.writeContinue();
    this.req.on('data', (chunk: Buffer) => cb(chunk, false));
    this.req.on('end', () => {
      // A body cut short ('aborted') never ends: only a whole body is handed on.
      if (!this.aborted) cb(Buffer.alloc(0), true);
    });
  }
  hold(): void {
    // Node reads the next pipelined request itself and queues its answer after this one.
  }
  end(status: number, headers: [string, string][], body: Buffer | string, head: boolean): void {
    if (this.aborted || this.res.writableEnded) return;
    const flat: string[] = [];
    for (const [k, v] of headers) flat.push(k, v);
    flat.push('content-length', String(Buffer.byteLength(body)));
    // A body not read to its end (a 413, or any answer before it) would have to be read before the next request: close instead.
    if (!this.req.complete && hasBody(this.req)) {
      flat.push('connection', 'close');
      this.closing.add(this.req.socket);
      this.draining.afterAnswer(this.req.socket);
    }
    this.res.writeHead(status, flat);
    this.res.end(head ? undefined : body);
  }
}

/** What a request Node's parser refused gets: the status, and the JSON error code. */
function refusal(err: NodeJS.ErrnoException): [number, HttpErrorCode, string] {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return [431, 'request_header_too_large', 'request head too large'];
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return [408, 'request_timeout', 'request not received in time'];
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return [400, 'bad_request', 'malformed request: Content-Length with Transfer-Encoding, or an unknown transfer coding'];
    default:
      return [400, 'bad_request', `malformed request (${err.code ?? 'parse error'})`];
  }
}

/** What llhttp lets through but the gateway does not take: another HTTP version, an HTTP/1.1 request without Host. */
function refuseRequest(req: http.IncomingMessage): [number, HttpErrorCode, string] | null {
  if (req.httpVersionMajor !== 1) return [505, 'http_version_not_supported', `HTTP/${req.httpVersion} is not supported: send HTTP/1.1 or 1.0`];
  if (req.httpVersionMinor >= 1 && req.headers.host === undefined) return [400, 'bad_request', 'an HTTP/1.1 request needs a Host header'];
  return null;
}

function answerRaw(socket: Duplex, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}

/** A request llhttp let through that the gateway refuses, answered at once and the connection closed. */
function answerRefused(res: http.ServerResponse, closing: Closing, [status, code, message]: [number, HttpErrorCode, string]): void {
  closing.add(res.req.socket);
  const text = JSON.stringify({ error: { code, message } });
  res.writeHead(status, ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(text)), 'connection', 'close']);
  res.end(text);
}

/**
 * Per connection, the answers not yet written out, and what to do once there
 * are none: a malformed request's answer must wait for those of the requests
 * before it (Node writes answers in order).
 */
class OpenReplies {
  private readonly replies = new WeakMap<Duplex, HandleSet<NodeReply>>();
  private readonly idle = new WeakMap<Duplex, () => void>();

  of(socket: Duplex): HandleSet<NodeReply> {
    let set = this.replies.get(socket);
    if (!set) this.replies.set(socket, (set = new HandleSet()));
    return set;
  }

  track(reply: NodeReply): void {
    const socket = reply.req.socket;
    const open = this.of(socket);
    reply.open = open.add(reply);
    reply.res.once('close', () => {
      const h = reply.open;
      if (!h) return;
      reply.open = null;
      open.delete(h);
      if (open.size === 0) this.idle.get(socket)?.();
    });
  }

  whenIdle(socket: Duplex, fn: () => void): void {
    this.idle.set(socket, fn);
  }

  forget(socket: Duplex): void {
    this.idle.delete(socket);
  }
}

/** Node's parser refused a request: a JSON answer after those before it, and the connection closed. */
function answerClientErrors(server: http.Server, open: OpenReplies, log: HttpServerOptions['log']): void {
  const refused = new WeakSet<Duplex>();
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    if (refused.has(socket)) return;
    refused.add(socket);
    const [status, code, message] = refusal(err);
    log.debug({ code: err.code, status }, 'malformed request refused');
    const answer = () => {
      open.forget(socket);
      if (!socket.writable) return socket.destroy();
      answerRaw(socket, status, { error: { code, message } });
    };
    // A request whose body broke off is never read whole: dropped, nothing of it applied.
    const replies = open.of(socket);
    for (const r of replies.items()) {
      if (!r.req.complete) {
        r.abandon();
        if (r.open) replies.delete(r.open);
        r.open = null;
      }
    }
    if (replies.size === 0) answer();
    else open.whenIdle(socket, answer);
  });
}

/** The open WebSockets, so a close can wait for their close handshakes. */
class OpenSockets {
  readonly all = new Set<WebSocket>();
  private allClosed: (() => void) | null = null;

  add(sock: WebSocket): void {
    this.all.add(sock);
  }

  delete(sock: WebSocket): void {
    this.all.delete(sock);
    if (this.all.size === 0) this.allClosed?.();
  }

  /** The hub has sent each WebSocket its 1001: give the close handshakes `ms`, then cut what is left. */
  async close(ms: number): Promise<void> {
    if (this.all.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise<void>((r) => (this.allClosed = r)), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
    }
    for (const s of this.all) s.terminate();
  }
}

/** The hub's view of one `ws` socket: sends refused past the backlog limit (reported as 2, like uWS), corked writes. */
function wsTransport(sock: WebSocket, tcp: Socket, ws: WsEndpoint, closed: () => boolean): Transport {
  return {
    send: (frame, binary) => {
      if (closed()) return 2;
      if (sock.bufferedAmount + frame.byteLength > ws.maxBackpressureBytes) return 2;
      sock.send(frame, { binary });
      return sock.bufferedAmount > 0 ? 0 : 1;
    },
    buffered: () => (closed() ? 0 : sock.bufferedAmount),
    end: (code, reason) => {
      if (!closed()) sock.close(code, reason);
    },
    cork: (fn) => {
      if (closed()) return fn();
      tcp.cork();
      try {
        fn();
      } finally {
        tcp.uncork();
      }
    },
  };
}

/** One upgraded connection, driven as uWS drives its own: pings, messages, drains, and its end. */
function driveSocket(sock: WebSocket, tcp: Socket, ws: WsEndpoint, open: (t: Transport) => WsConnection, sockets: OpenSockets): void {
  sock.binaryType = 'arraybuffer';
  sockets.add(sock);
  let closed = false;
  const conn = open(wsTransport(sock, tcp, ws, () => closed));
  // Pings as uWS sends them: a connection that answered nothing within idleTimeoutS is cut.
  let alive = true;
  const heartbeat = setInterval(
    () => {
      if (!alive) return sock.terminate();
      alive = false;
      sock.ping();
    },
    (ws.idleTimeoutS * 1000) / 2,
  );
  heartbeat.unref();
  sock.on('pong', () => (alive = true));
  sock.on('message', (data: ArrayBuffer, isBinary: boolean) => {
    alive = true;
    conn.message(data, isBinary);
  });
  tcp.on('drain', () => conn.drain());
  sock.on('error', () => sock.terminate());
  sock.on('close', () => {
    closed = true;
    clearInterval(heartbeat);
    sockets.delete(sock);
    conn.closed();
  });
}

const wantsWebSocket = (req: http.IncomingMessage) => (req.headers.upgrade ?? '').toLowerCase() === 'websocket';

/**
 * Whether this Node lets the server say which Upgrade requests are upgrades
 * (`shouldUpgradeCallback`, Node 22 on): there, any other (`Upgrade: h2c`,
 * which Java's HttpClient puts on every plain-http request) is an ordinary
 * request. Node 20 hands every Upgrade request to 'upgrade'.
 */
export const upgradesChosen = typeof (http.createServer() as http.Server & { shouldUpgradeCallback?: unknown }).shouldUpgradeCallback === 'function';

/** Upgrades to the WebSocket endpoint, refused in JSON like any other request. */
function acceptWebSockets(server: http.Server, ws: WsEndpoint, sockets: OpenSockets): void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: ws.maxPayloadBytes, perMessageDeflate: false, clientTracking: false });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const refuse = (status: number, body: unknown) => {
      answerRaw(socket, status, body);
      // Node hands the socket over paused: unread, the client's end never arrives and the half-open socket stays (holding server.close).
      socket.resume();
    };
    const info = requestInfo(req);
    if (!wantsWebSocket(req)) {
      // Only on a Node without shouldUpgradeCallback: the request cannot be handed back to the HTTP parser, so it says how to send it.
      const message = `Upgrade: ${String(req.headers.upgrade)} is not taken by this gateway on Node ${process.version}: send the request without Upgrade (Java's HttpClient: .version(HttpClient.Version.HTTP_1_1))`;
      return refuse(HTTP_STATUS.not_implemented, { error: { code: 'not_implemented', message } });
    }
    if (info.path !== ws.path) {
      return refuse(HTTP_STATUS.not_found, { error: { code: 'not_found', message: `no WebSocket at ${info.path}` } });
    }
    const decision = ws.upgrade(info);
    if ('refuse' in decision) return refuse(decision.refuse.status, decision.refuse.body);
    wss.handleUpgrade(req, socket, head, (sock) => driveSocket(sock, socket as Socket, ws, decision.open, sockets));
  });
}

export function nodeServer(opts: HttpServerOptions): HttpServer {
  const open = new OpenReplies();
  const closing: Closing = new WeakSet();
  const draining = new Draining();
  // Host is checked here rather than by Node (requireHostHeader), whose 400 has no JSON body.
  const options: http.ServerOptions & { shouldUpgradeCallback?: (req: http.IncomingMessage) => boolean } = {
    keepAliveTimeout: KEEP_ALIVE_MS,
    headersTimeout: HEADERS_MS,
    requestTimeout: REQUEST_MS,
    connectionsCheckingInterval: TIMEOUT_CHECK_MS,
    requireHostHeader: false,
    // Ignored by Node 20 (upgradesChosen).
    shouldUpgradeCallback: wantsWebSocket,
  };
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse, expectsContinue = false) => {
    if (closing.has(req.socket)) return;
    if (!res.shouldKeepAlive) closing.add(req.socket);
    const refused = refuseRequest(req);
    if (refused) return answerRefused(res, closing, refused);
    const reply = new NodeReply(req, res, closing, draining, expectsContinue);
    open.track(reply);
    opts.handler(requestInfo(req), reply);
  };
  const server = http.createServer(options, onRequest);
  // Node would send 100 Continue before the handler has looked at the head.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => onRequest(req, res, true));
  // Node's default drops the answers still pending when a client ends its side (`printf … | nc`, socket.end()),
  // though their requests are carried out: answered instead, the connection ending after the last one.
  // Node has read this property since long before 20 (_http_server.js socketOnEnd); @types/node does not list it.
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  answerClientErrors(server, open, opts.log);
  const sockets = new OpenSockets();
  acceptWebSockets(server, opts.ws, sockets);

  return {
    kind: 'node',
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve((server.address() as { port: number }).port);
        });
      }),
    close: async () => {
      // Stops listening and ends idle keep-alive connections; answers in flight still go out.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      draining.closeAll();
      await sockets.close(2_000);
      const late = setTimeout(() => server.closeAllConnections(), 5_000);
      await closed;
      clearTimeout(late);
    },
  };
}
