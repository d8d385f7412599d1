import net from 'node:net';
import type { Logger } from '../../shared/log.js';
import { HTTP_STATUS, type HttpErrorBody, type HttpErrorCode } from '../../../proto/http.js';
import { ChunkedBody, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from './framing.js';
import { STATUS_TEXT } from '../http.js';

/**
 * The gateway's TCP front: it owns the client connections and hands uWS
 * (listening on a private unix socket) one well-formed HTTP/1.1 request at a
 * time per connection. uWS 20.30 drops, without an answer, what its parser
 * refuses (HTTP/1.0, no Host, a space in the path...) and closes a connection
 * whose second request arrives while the first one's answer is pending, after
 * running the first. Here every request gets an answer, in order: refused
 * ones a JSON error, pipelined ones wait in this buffer until the previous
 * answer is out. WebSocket upgrades become a byte tunnel once uWS says 101.
 *
 * The client's address travels in a header (`peerHeader`) that a client
 * cannot send itself (framing.ts refuses it), so per-address limits still see
 * the real peer.
 */

export interface FrontOptions {
  host: string;
  port: number;
  /** The unix socket uWS listens on. */
  upstreamPath: string;
  peerHeader: string;
  /** A connection idle this long between requests is closed; a request head this slow is answered 408. */
  idleTimeoutMs: number;
  log: Logger;
}

export interface Front {
  port: number;
  /** Stops accepting; open connections close after their answer in flight (tunnels when uWS closes them). */
  close(graceMs?: number): Promise<void>;
}

/** Pipelined bytes kept while an answer is pending; above this the client is not read (TCP pushes back). */
const PIPELINE_BUFFER = 64 * 1024;
/** uWS's own heads are small; one this large means a broken upstream. */
const MAX_RESPONSE_HEAD = 64 * 1024;
const EMPTY = Buffer.alloc(0);

export async function startFront(opts: FrontOptions): Promise<Front> {
  const open = new Set<FrontConnection>();
  let closing = false;
  /** Resolves the close() waiting for the last connection to go. */
  let lastGone: (() => void) | null = null;
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    if (closing) return void socket.destroy();
    const conn = new FrontConnection(socket, opts, () => {
      open.delete(conn);
      if (open.size === 0) lastGone?.();
    });
    open.add(conn);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: async (graceMs = 5_000) => {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      const allGone = new Promise<void>((resolve) => (lastGone = resolve));
      for (const conn of open) conn.drain();
      if (open.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([allGone, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
      }
      for (const conn of open) conn.destroy();
      await stopped;
    },
  };
}

type State =
  /** Between requests: the next head is parsed from `pending` as soon as it is whole. */
  | 'idle'
  /** A request went to uWS; its answer is on its way back. */
  | 'exchange'
  /** After a 101: bytes pass both ways untouched. */
  | 'tunnel'
  /** The last answer is written; the connection ends. */
  | 'closing';

class FrontConnection {
  private state: State = 'idle';
  /** Client bytes not yet sent upstream: the rest of a request body, pipelined requests. */
  private pending: Buffer = EMPTY;
  private upstream: net.Socket | null = null;
  private readonly peer: string;

  private request: RequestHead | null = null;
  private requestBodyLeft = 0;
  private requestChunks: ChunkedBody | null = null;
  private requestSent = true;

  private response: ResponseHead | null = null;
  private responseHead: Buffer = EMPTY;
  private responseBodyLeft = 0;
  private responseChunks: ChunkedBody | null = null;
  /** Bytes of the current answer already written to the client (after that, a failure can only cut the connection). */
  private answered = false;

  private draining = false;
  /** The client ended its side: pipelined requests already here are still answered, then the connection ends. */
  private halfClosed = false;
  /** Reasons the client is not read: a full pipeline buffer, an upstream that pushes back. */
  private pausedFull = false;
  private pausedUpstream = false;
  private pausedClient = false;

  constructor(
    private readonly client: net.Socket,
    private readonly opts: FrontOptions,
    private readonly gone: () => void,
  ) {
    this.peer = (client.remoteAddress ?? '').replace(/^::ffff:/, '');
    client.setTimeout(opts.idleTimeoutMs);
    client.on('data', (d) => this.fromClient(d));
    client.on('timeout', () => this.timedOut());
    client.on('end', () => this.clientEnded());
    client.on('error', () => {});
    client.on('close', () => {
      this.upstream?.destroy();
      this.gone();
    });
    client.on('drain', () => {
      if (!this.pausedClient) return;
      this.pausedClient = false;
      this.upstream?.resume();
    });
  }

  /** The front is closing: an idle connection ends now, a busy one after its answer. */
  drain(): void {
    this.draining = true;
    if (this.state === 'idle' && this.pending.length === 0) this.end();
  }

  destroy(): void {
    this.client.destroy();
  }

  private fromClient(d: Buffer): void {
    if (this.state === 'tunnel') return this.toUpstream(d);
    if (this.state === 'closing') return;
    this.pending = this.pending.length === 0 ? d : Buffer.concat([this.pending, d]);
    if (this.state === 'exchange') {
      if (!this.requestSent) this.sendBody();
      if (this.pending.length > PIPELINE_BUFFER && !this.pausedFull) {
        this.pausedFull = true;
        this.client.pause();
      }
      return;
    }
    this.next();
  }

  /** Takes the next request from `pending`, if it is whole enough to start. */
  private next(): void {
    if (this.pending.length === 0) {
      if (this.draining || this.halfClosed) this.end();
      return;
    }
    const head = parseRequestHead(this.pending, this.opts.peerHeader);
    if (head === null) {
      if (this.halfClosed) this.refuse('bad_request', 'the connection ended inside a request head');
      return;
    }
    if (!head.ok) return this.refuse(head.code, head.message);
    this.state = 'exchange';
    this.request = head;
    this.answered = false;
    this.requestSent = head.body.type === 'none';
    this.requestBodyLeft = head.body.type === 'length' ? head.body.length : 0;
    this.requestChunks = head.body.type === 'chunked' ? new ChunkedBody() : null;
    const up = this.connectUpstream();
    up.cork();
    // The request line again, as HTTP/1.1 (uWS takes nothing else), then the peer and, for HTTP/1.0 without one, a Host.
    up.write(`${head.method} ${head.target} HTTP/1.1\r\n${this.opts.peerHeader}: ${this.peer}\r\n${head.hasHost ? '' : 'host: localhost\r\n'}`, 'latin1');
    this.toUpstream(this.pending.subarray(head.lineEnd + 2, head.headEnd));
    this.pending = this.pending.subarray(head.headEnd);
    if (!this.requestSent) this.sendBody();
    // Head and what body there is leave in one write.
    up.uncork();
  }

  /** Sends what has arrived of the current request's body. */
  private sendBody(): void {
    if (this.pending.length === 0) return;
    if (this.requestChunks) {
      const end = this.requestChunks.feed(this.pending, 0);
      if (this.requestChunks.error) return this.abandon('bad_request', `malformed chunked body: ${this.requestChunks.error}`);
      const take = end < 0 ? this.pending.length : end;
      this.toUpstream(this.pending.subarray(0, take));
      this.pending = this.pending.subarray(take);
      if (end >= 0) this.requestSent = true;
      return;
    }
    const take = Math.min(this.requestBodyLeft, this.pending.length);
    this.toUpstream(this.pending.subarray(0, take));
    this.pending = this.pending.subarray(take);
    this.requestBodyLeft -= take;
    if (this.requestBodyLeft === 0) this.requestSent = true;
  }

  private connectUpstream(): net.Socket {
    if (this.upstream) return this.upstream;
    const up = net.connect(this.opts.upstreamPath);
    this.upstream = up;
    up.on('data', (d) => this.fromUpstream(d));
    up.on('drain', () => {
      if (!this.pausedUpstream) return;
      this.pausedUpstream = false;
      this.resumeClient();
    });
    up.on('error', (err) => {
      if (this.state !== 'idle') this.opts.log.warn({ err: err.message, peer: this.peer }, 'front: upstream connection failed');
    });
    up.on('close', () => this.upstreamClosed(up));
    return up;
  }

  private fromUpstream(d: Buffer): void {
    if (this.state === 'tunnel') return this.toClient(d);
    if (this.state !== 'exchange') return; // uWS speaks only when asked; nothing to pass on
    const buf = this.responseHead.length === 0 ? d : Buffer.concat([this.responseHead, d]);
    this.responseHead = EMPTY;
    // Everything of this answer in `buf` goes out in one write: a write is a syscall, the front's main cost.
    let at = 0;
    while (at < buf.length) {
      if (!this.response) {
        const head = parseResponseHead(at === 0 ? buf : buf.subarray(at), this.request!.method);
        if (!head) {
          if (buf.length - at > MAX_RESPONSE_HEAD) return this.cut('front: response head too large');
          this.toClient(buf.subarray(0, at));
          this.responseHead = buf.subarray(at);
          return;
        }
        if (head.status === 101) {
          this.toClient(buf);
          return this.tunnel();
        }
        at += head.headEnd;
        if (head.status < 200) continue; // 100 Continue: the final answer follows
        this.response = head;
        this.responseBodyLeft = head.body.type === 'length' ? head.body.length : 0;
        this.responseChunks = head.body.type === 'chunked' ? new ChunkedBody() : null;
        if (head.body.type === 'none') break;
        continue;
      }
      const body = this.response.body;
      if (body.type === 'until-close') return this.toClient(buf);
      if (body.type === 'chunked') {
        const end = this.responseChunks!.feed(buf, at);
        if (this.responseChunks!.error) return this.cut(`front: malformed chunked response: ${this.responseChunks!.error}`);
        at = end < 0 ? buf.length : end;
        if (end >= 0) this.responseChunks = null;
        break;
      }
      const take = Math.min(this.responseBodyLeft, buf.length - at);
      at += take;
      this.responseBodyLeft -= take;
      break;
    }
    this.toClient(at === buf.length ? buf : buf.subarray(0, at));
    const r = this.response;
    if (r && (r.body.type === 'none' || (r.body.type === 'length' && this.responseBodyLeft === 0) || (r.body.type === 'chunked' && this.responseChunks === null))) this.answeredWhole();
  }

  /** The current answer is out: the next pipelined request may go. */
  private answeredWhole(): void {
    const request = this.request!;
    const response = this.response!;
    this.request = null;
    this.response = null;
    this.responseChunks = null;
    // A body uWS answered before reading (a 413, say) cannot be skipped reliably: the connection ends with the answer.
    if (request.close || response.close || !this.requestSent || this.draining) {
      if (!this.requestSent) this.upstream?.destroy();
      return this.end();
    }
    this.state = 'idle';
    if (this.pausedFull) {
      this.pausedFull = false;
      this.resumeClient();
    }
    this.next();
  }

  private tunnel(): void {
    this.state = 'tunnel';
    this.request = null;
    // The WebSocket has its own pings and idle limit (uWS's).
    this.client.setTimeout(0);
    if (this.pausedFull) {
      this.pausedFull = false;
      this.resumeClient();
    }
    const early = this.pending;
    this.pending = EMPTY;
    if (early.length > 0) this.toUpstream(early);
  }

  private upstreamClosed(up: net.Socket): void {
    if (this.upstream !== up) return;
    this.upstream = null;
    switch (this.state) {
      case 'tunnel':
        this.client.end();
        this.state = 'closing';
        return;
      case 'exchange':
        if (this.response?.body.type === 'until-close') return this.end();
        // uWS dropped the request it was given (it should not): whatever it did, the client must hear something.
        if (!this.answered) return this.refuse('bad_gateway', 'the gateway dropped this request before answering; its outcome is unknown: look a conversion up with GET /requests/<request_id>');
        return this.cut('front: upstream closed mid-answer');
      default:
        return; // idle: the next request opens a new one
    }
  }

  private timedOut(): void {
    if (this.state === 'idle') {
      if (this.pending.length === 0) return this.end();
      return this.refuse('request_timeout', `the request head did not arrive within ${this.opts.idleTimeoutMs / 1000} s`);
    }
    // A body that stopped arriving: uWS holds a half request, so the connection cannot be reused.
    if (this.state === 'exchange' && !this.requestSent) this.abandon('request_timeout', `the request body did not arrive within ${this.opts.idleTimeoutMs / 1000} s`);
    // Otherwise the answer is pending: the engine's own timeout answers it.
  }

  private clientEnded(): void {
    // Half-close: the client sent all it will; answers still go out, then the connection ends.
    if (this.state === 'idle') {
      // Whole heads in `pending` were taken already: what is left is a cut one.
      if (this.pending.length > 0) return this.refuse('bad_request', 'the connection ended inside a request head');
      this.end();
    } else if (this.state === 'tunnel') this.upstream?.end();
    else this.halfClosed = true;
  }

  /** Answers a request the front refuses, then ends the connection (what follows it cannot be framed). */
  private refuse(code: HttpErrorCode, message: string): void {
    const status = HTTP_STATUS[code];
    const body = JSON.stringify({ error: { code, message } } satisfies HttpErrorBody);
    this.client.write(
      `HTTP/1.1 ${STATUS_TEXT[status] ?? status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
    this.end();
  }

  /** A request went wrong halfway through its body: uWS never gets its end, so it never runs; the client gets the reason. */
  private abandon(code: HttpErrorCode, message: string): void {
    this.upstream?.destroy();
    this.upstream = null;
    if (this.answered) return this.cut(message);
    this.refuse(code, message);
  }

  private cut(reason: string): void {
    this.opts.log.warn({ peer: this.peer, reason }, 'front: connection cut');
    this.upstream?.destroy();
    this.client.destroy();
  }

  private end(): void {
    this.state = 'closing';
    this.pending = EMPTY;
    this.client.end();
  }

  private toClient(b: Buffer): void {
    if (b.length === 0) return;
    this.answered = true;
    if (!this.client.write(b) && !this.pausedClient) {
      this.pausedClient = true;
      this.upstream?.pause();
    }
  }

  private toUpstream(b: Buffer): void {
    if (b.length === 0 || !this.upstream) return;
    if (!this.upstream.write(b) && !this.pausedUpstream) {
      this.pausedUpstream = true;
      this.client.pause();
    }
  }

  private resumeClient(): void {
    if (!this.pausedFull && !this.pausedUpstream) this.client.resume();
  }
}
