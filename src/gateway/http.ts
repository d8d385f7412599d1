import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { Logger } from '../shared/log.js';
import { FRONT_PEER_HEADER, HTTP_STATUS, type HttpErrorBody, type HttpErrorCode } from '../../proto/http.js';

export const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  409: '409 Conflict',
  429: '429 Too Many Requests',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  408: '408 Request Timeout',
  431: '431 Request Header Fields Too Large',
  500: '500 Internal Server Error',
  501: '501 Not Implemented',
  502: '502 Bad Gateway',
  503: '503 Service Unavailable',
  505: '505 HTTP Version Not Supported',
};

/** What a handler needs from the request: uWS's HttpRequest is only valid until the handler returns, so it is copied here. */
export interface RequestInfo {
  method: string;
  path: string;
  query: string;
  contentType: string;
  contentLength: number | null;
  authorization: string;
  idempotencyKey: string;
  /** The client's address ('' when not asked for). */
  address: string;
}

/** Where a request's client address comes from: uWS's socket, or the front's header when uWS listens behind it. */
export type AddressSource = (req: HttpRequest, res: HttpResponse) => string;
export const socketAddress: AddressSource = (_req, res) => Buffer.from(res.getRemoteAddressAsText()).toString();
export const frontAddress: AddressSource = (req) => req.getHeader(FRONT_PEER_HEADER);

export function requestInfo(req: HttpRequest, res?: HttpResponse, addressOf: AddressSource = socketAddress): RequestInfo {
  const len = req.getHeader('content-length');
  return {
    method: req.getCaseSensitiveMethod().toUpperCase(),
    path: req.getUrl(),
    query: req.getQuery() ?? '',
    contentType: req.getHeader('content-type').toLowerCase(),
    contentLength: len === '' ? null : Number(len),
    authorization: req.getHeader('authorization'),
    idempotencyKey: req.getHeader('idempotency-key'),
    address: res ? addressOf(req, res) : '',
  };
}

/**
 * One HTTP exchange. Tracks abort (uWS forbids touching an aborted response)
 * and corks every write, which uWS needs for responses sent after the handler returned.
 *
 * Pipelining (HTTP_FRONT=direct only: behind the front, src/gateway/front, uWS
 * sees one request at a time): uWS (20.30, HttpContext.h) closes a connection whose next request
 * arrives while the previous answer is pending ("we still support sync
 * pipelining" only). So once a request is read, the socket is paused: a
 * pipelined request stays in the kernel's buffer until this one is answered,
 * and then gets its own answer in order. Requests that arrived in the same
 * read as the pending one are beyond reach (uWS closes before calling us);
 * `aborted` then keeps their work from ever reaching the engine. Behind the
 * front there is nothing to hold (`holdsConnection` false): pausing and
 * resuming would only cost two system calls per request.
 */
export class Exchange {
  aborted = false;
  done = false;
  private paused = false;
  /** The client's address, the key of per-address limits. */
  address = '';
  /** HEAD: same status and headers as GET, no body. */
  readonly head: boolean;
  /** Told the status of the one answer sent (the request metrics). */
  onAnswer: ((status: number) => void) | null = null;
  constructor(
    readonly res: HttpResponse,
    method = '',
    private readonly holdsConnection = true,
  ) {
    this.head = method === 'HEAD';
    res.onAborted(() => {
      this.aborted = true;
    });
  }

  /** Stops reading the connection until this exchange is answered (see the class comment). */
  holdConnection(): void {
    if (!this.holdsConnection || this.paused || this.aborted || this.done) return;
    this.paused = true;
    this.res.pause();
  }

  json(status: number, body: unknown, extraHeaders?: Record<string, string>): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.onAnswer?.(status);
    const payload = JSON.stringify(body);
    this.res.cork(() => {
      // Resumed before end: uWS discards the response object at end.
      if (this.paused) this.res.resume();
      this.res.writeStatus(STATUS_TEXT[status] ?? String(status)).writeHeader('content-type', 'application/json');
      if (extraHeaders) for (const [k, v] of Object.entries(extraHeaders)) this.res.writeHeader(k, v);
      // uWS 20.30's endWithoutBody(length) leaves the response pending (it waits for those bytes), so the length goes in by hand.
      if (this.head) this.res.writeHeader('content-length', String(Buffer.byteLength(payload))).endWithoutBody();
      else this.res.end(payload);
    });
  }

  error(code: HttpErrorCode, message: string, extra?: Record<string, unknown>, headers?: Record<string, string>): void {
    const status = HTTP_STATUS[code];
    const body: HttpErrorBody = { error: { code, message, ...extra } };
    // The challenge tells Basic-auth clients (curl -u, browsers) what to send.
    this.json(status, body, status === 401 ? { 'www-authenticate': 'Basic realm="etf"', ...headers } : headers);
  }

  /** Reads the whole body, refusing it with a 413 as soon as it passes `limit` bytes. */
  readBody(limit: number, declared: number | null): Promise<Buffer | null> {
    return new Promise((resolve) => {
      if (declared !== null && declared > limit) {
        this.error('payload_too_large', `body is over ${limit} bytes`);
        resolve(null);
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      this.res.onData((ab, isLast) => {
        if (this.done) return;
        size += ab.byteLength;
        if (size > limit) {
          this.error('payload_too_large', `body is over ${limit} bytes`);
          resolve(null);
          return;
        }
        // uWS reuses the ArrayBuffer after this callback returns: copy it (once: slice copies, Buffer.from(ArrayBuffer) only wraps).
        chunks.push(Buffer.from(ab.slice(0)));
        if (isLast) {
          this.holdConnection();
          resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
        }
      });
      this.res.onAborted(() => {
        this.aborted = true;
        resolve(null);
      });
    });
  }
}

/** A path whose percent-escapes all decode (`/positions/1/%ZZ` does not: a 400, not a URIError later). */
export function decodablePath(path: string): boolean {
  if (!path.includes('%')) return true;
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs a handler so that the request is always answered: a handler that
 * throws, rejects, or returns without answering gets a 500 JSON answer and a
 * log line, never a hung client or (with uWS) an aborted process.
 */
export function guarded(ex: Exchange, log: Logger, path: string, handler: () => Promise<void> | void): void {
  const fail = (err: unknown) => {
    log.error({ err, path }, err === undefined ? 'request handler returned without an answer' : 'request failed');
    ex.error('internal', 'internal error');
  };
  let result: Promise<void> | void;
  try {
    result = handler();
  } catch (err) {
    return fail(err);
  }
  Promise.resolve(result).then(
    () => {
      if (!ex.done && !ex.aborted) fail(undefined);
    },
    (err: unknown) => fail(err ?? new Error('rejected without a reason')),
  );
}
