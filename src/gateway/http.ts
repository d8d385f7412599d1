import type { Logger } from '../shared/log.js';
import { HTTP_STATUS, type HttpErrorBody, type HttpErrorCode } from '../../proto/http.js';

export const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
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

/** What a handler needs from the request, copied before the server's own request object goes away. */
export interface RequestInfo {
  method: string;
  path: string;
  query: string;
  contentType: string;
  contentLength: number | null;
  authorization: string;
  idempotencyKey: string;
  /** `Origin` and `Host` ('' when absent): a state-changing request from a foreign origin is refused. */
  origin: string;
  host: string;
  /** The client's address, the key of per-address limits. */
  address: string;
}

/**
 * One answer as a server adapter (src/gateway/transport) writes it: the only
 * part of an HTTP call that differs between uWS and node:http.
 */
export interface Reply {
  /** `cb` runs once if the client goes away before the answer is written. */
  onAborted(cb: () => void): void;
  /** The body in chunks, the last one flagged. Must be asked for before the handler first awaits (uWS). */
  onData(cb: (chunk: Buffer, last: boolean) => void): void;
  /**
   * `cb` runs once if the body stops coming before its end (answered 408 by
   * the caller). Servers that time requests out themselves (node:http) never call it.
   */
  onStalled?(cb: () => void): void;
  /** Reads no further request of this connection until this one is answered (uWS pipelining; node: nothing to do). */
  hold(): void;
  /** The whole answer at once; `head`: the headers with the body's length, and no body. */
  end(status: number, headers: [string, string][], body: Buffer | string, head: boolean): void;
}

/**
 * One HTTP call (a request and its one answer; not named Exchange in a codebase about an exchange): at most one answer, never after the client left, and
 * the body read with a size limit. The same for every server.
 */
export class HttpCall {
  aborted = false;
  done = false;
  /** The client's address, the key of per-address limits. */
  address = '';
  /** HEAD: same status and headers as GET, no body. */
  readonly head: boolean;
  /** Told the status of the one answer sent (the request metrics). */
  onAnswer: ((status: number) => void) | null = null;
  /** Headers every answer of this call carries (e.g. cache-control on authenticated routes). */
  readonly headers: [string, string][] = [];
  private abortWaiter: (() => void) | null = null;
  constructor(
    private readonly reply: Reply,
    method = '',
  ) {
    this.head = method === 'HEAD';
    reply.onAborted(() => {
      this.aborted = true;
      this.abortWaiter?.();
    });
  }

  /** Stops reading the connection until this call is answered (see the uWS adapter). */
  holdConnection(): void {
    if (!this.aborted && !this.done) this.reply.hold();
  }

  /** Any answer: `type` its content type, `body` what a GET gets (a HEAD gets only its length). */
  send(status: number, type: string, body: Buffer | string, extraHeaders?: Record<string, string> | [string, string][]): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.onAnswer?.(status);
    const headers: [string, string][] = [['content-type', type], ...this.headers];
    if (extraHeaders) headers.push(...(Array.isArray(extraHeaders) ? extraHeaders : Object.entries(extraHeaders)));
    this.reply.end(status, headers, body, this.head);
  }

  json(status: number, body: unknown, extraHeaders?: Record<string, string>): void {
    if (this.aborted || this.done) return;
    this.send(status, 'application/json', JSON.stringify(body), extraHeaders);
  }

  error(code: HttpErrorCode, message: string, extra?: Record<string, unknown>, headers?: Record<string, string>): void {
    // No WWW-Authenticate on a 401: both pages sign in with their own forms, and a
    // challenge would make browsers keep the credentials and replay them on cross-site requests.
    const body: HttpErrorBody = { error: { code, message, ...extra } };
    this.json(HTTP_STATUS[code], body, headers);
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
      this.abortWaiter = () => resolve(null);
      this.reply.onStalled?.(() => {
        this.error('request_timeout', 'the request body stopped coming before its end: send it whole');
        resolve(null);
      });
      this.reply.onData((chunk, isLast) => {
        if (this.done) return;
        size += chunk.length;
        if (size > limit) {
          this.error('payload_too_large', `body is over ${limit} bytes`);
          resolve(null);
          return;
        }
        if (chunk.length > 0) chunks.push(chunk);
        if (isLast) {
          this.holdConnection();
          resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
        }
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
export function guarded(ex: HttpCall, log: Logger, path: string, handler: () => Promise<void> | void): void {
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

/** Methods that change state: refused from a foreign origin. */
export const STATE_CHANGING = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

/**
 * A browser's request from another site: an `Origin` that is neither this
 * gateway (the request's own Host) nor one of `allowed` (HTTP_ALLOWED_ORIGINS,
 * e.g. behind a proxy that changes the Host). `Origin: null` (sandboxed or
 * file: pages) is foreign. No Origin at all is a script or curl: not a browser
 * acting for someone else.
 */
export function foreignOrigin(info: RequestInfo, allowed: ReadonlySet<string>): boolean {
  if (info.origin === '' || allowed.has(info.origin)) return false;
  try {
    return new URL(info.origin).host !== info.host.toLowerCase();
  } catch {
    return true;
  }
}
