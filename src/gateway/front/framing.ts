/**
 * HTTP/1.x message framing for the front (front.ts): where a request or a
 * response starts and ends, and whether uWebSockets.js 20.30 could take it.
 * uWS drops without an answer what its parser refuses (HTTP/1.0, no Host,
 * a space in the target, a NUL or a 49th header line...), so everything it
 * would refuse is refused here first, with a status a client can read.
 */
import type { HttpErrorCode } from '../../../proto/http.js';

/** uWS 20.30 takes at most 48 header lines; the front adds up to two (peer, Host). */
export const MAX_HEADER_LINES = 46;
/** Over this, a head is refused with 431 (uWS itself would take 60 KiB). */
export const MAX_HEAD_BYTES = 16 * 1024;

export type BodyFraming = { type: 'none' } | { type: 'length'; length: number } | { type: 'chunked' };

export interface RequestHead {
  ok: true;
  /** Bytes skipped before the request line (empty lines RFC 9112 §2.2 lets a server ignore). */
  start: number;
  /** Index of the CRLF that ends the request line. */
  lineEnd: number;
  /** Index just past the blank line that ends the head. */
  headEnd: number;
  method: string;
  target: string;
  http10: boolean;
  hasHost: boolean;
  /** The client asked to close after this answer (HTTP/1.0 without keep-alive, or `Connection: close`). */
  close: boolean;
  upgrade: boolean;
  body: BodyFraming;
}

export interface HeadProblem {
  ok: false;
  status: 400 | 431 | 501 | 505;
  code: Extract<HttpErrorCode, 'bad_request' | 'request_header_too_large' | 'not_implemented' | 'http_version_not_supported'>;
  message: string;
}

const METHOD = /^[A-Z]{1,20}$/;
// Origin-form only: visible ASCII, no spaces (RFC 9112 §3.2.1); uWS takes nothing else.
const TARGET = /^\/[\x21-\x7e]*$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t\x20-\x7e\x80-\xff]*$/;

const problem = (status: HeadProblem['status'], code: HeadProblem['code'], message: string): HeadProblem => ({ ok: false, status, code, message });

const CRLF = 0x0d0a;

/**
 * Parses the request head at the start of `buf`. Null: not all of it has
 * arrived yet (and it is still under the size limit).
 */
export function parseRequestHead(buf: Buffer, reservedHeader: string): RequestHead | HeadProblem | null {
  let start = 0;
  while (start + 1 < buf.length && buf.readUInt16BE(start) === CRLF) start += 2;
  const end = buf.indexOf('\r\n\r\n', start, 'latin1');
  if (end < 0) {
    if (buf.length - start > MAX_HEAD_BYTES) return problem(431, 'request_header_too_large', `request head over ${MAX_HEAD_BYTES} bytes`);
    // A bare LF where a line ends would otherwise wait for a CRLF that never comes.
    if (buf.indexOf('\n\n', start, 'latin1') >= 0 || buf.indexOf('\n\r\n', start, 'latin1') >= 0) return problem(400, 'bad_request', 'lines must end with CRLF');
    return null;
  }
  if (end - start > MAX_HEAD_BYTES) return problem(431, 'request_header_too_large', `request head over ${MAX_HEAD_BYTES} bytes`);
  const lines = buf.toString('latin1', start, end).split('\r\n');
  const requestLine = lines[0]!;
  const parts = requestLine.split(' ');
  if (parts.length !== 3) return problem(400, 'bad_request', 'the request line must be METHOD SP path SP HTTP/1.1 (no spaces in the path: encode them as %20)');
  const [method, target, version] = parts as [string, string, string];
  if (!METHOD.test(method)) return problem(400, 'bad_request', `malformed method ${JSON.stringify(method.slice(0, 20))}: methods are upper case`);
  if (!TARGET.test(target)) return problem(400, 'bad_request', 'the request target must be a path starting with / of visible ASCII characters');
  let http10: boolean;
  if (version === 'HTTP/1.1') http10 = false;
  else if (version === 'HTTP/1.0') http10 = true;
  else if (/^HTTP\/[0-9]\.[0-9]$/.test(version)) return problem(505, 'http_version_not_supported', `${version} is not supported: use HTTP/1.1 or HTTP/1.0`);
  else return problem(400, 'bad_request', `malformed HTTP version ${JSON.stringify(version.slice(0, 20))}`);
  if (lines.length - 1 > MAX_HEADER_LINES) return problem(431, 'request_header_too_large', `more than ${MAX_HEADER_LINES} header lines`);

  let hosts = 0;
  let contentLength: number | null = null;
  let transferEncoding: string | null = null;
  let connection = '';
  let upgradeHeader = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const m = HEADER_LINE.exec(line);
    if (!m) {
      if (line.startsWith(' ') || line.startsWith('\t')) return problem(400, 'bad_request', 'folded header lines are not allowed');
      return problem(400, 'bad_request', `malformed header line ${i}: name ":" value, without control characters`);
    }
    const name = m[1]!.toLowerCase();
    const value = line.slice(m[1]!.length + 1).trim();
    switch (name) {
      case 'host':
        hosts++;
        break;
      case 'content-length': {
        if (!/^[0-9]{1,15}$/.test(value)) return problem(400, 'bad_request', 'Content-Length must be a whole number');
        const n = Number(value);
        if (contentLength !== null && contentLength !== n) return problem(400, 'bad_request', 'conflicting Content-Length headers');
        contentLength = n;
        break;
      }
      case 'transfer-encoding':
        transferEncoding = transferEncoding === null ? value.toLowerCase() : `${transferEncoding}, ${value.toLowerCase()}`;
        break;
      case 'connection':
        connection += `${value.toLowerCase()},`;
        break;
      case 'upgrade':
        upgradeHeader = true;
        break;
      default:
        if (name === reservedHeader) return problem(400, 'bad_request', `header ${reservedHeader} is reserved`);
    }
  }
  if (hosts > 1) return problem(400, 'bad_request', 'more than one Host header');
  if (hosts === 0 && !http10) return problem(400, 'bad_request', 'HTTP/1.1 requests need a Host header');
  let body: BodyFraming = contentLength ? { type: 'length', length: contentLength } : { type: 'none' };
  if (transferEncoding !== null) {
    // Both framings at once is how requests are smuggled past a proxy (RFC 9112 §6.3).
    if (contentLength !== null) return problem(400, 'bad_request', 'Content-Length and Transfer-Encoding together');
    if (http10) return problem(400, 'bad_request', 'Transfer-Encoding is not HTTP/1.0');
    if (transferEncoding !== 'chunked') return problem(501, 'not_implemented', `Transfer-Encoding ${JSON.stringify(transferEncoding)} is not supported: send Content-Length or chunked`);
    body = { type: 'chunked' };
  }
  const tokens = connection.split(',').map((t) => t.trim());
  return {
    ok: true,
    start,
    lineEnd: start + requestLine.length,
    headEnd: end + 4,
    method,
    target,
    http10,
    hasHost: hosts === 1,
    close: tokens.includes('close') || (http10 && !tokens.includes('keep-alive')),
    upgrade: upgradeHeader && tokens.includes('upgrade'),
    body,
  };
}

export interface ResponseHead {
  headEnd: number;
  status: number;
  close: boolean;
  body: BodyFraming | { type: 'until-close' };
}

/** Parses the head of a response from uWS (trusted: only the framing is read). Null: not all there yet. */
export function parseResponseHead(buf: Buffer, requestMethod: string): ResponseHead | null {
  const end = buf.indexOf('\r\n\r\n', 0, 'latin1');
  if (end < 0) return null;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const status = Number(lines[0]!.slice(9, 12));
  let length: number | null = null;
  let chunked = false;
  let close = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    if (name === 'content-length') length = Number(line.slice(colon + 1).trim());
    else if (name === 'transfer-encoding') chunked = line.slice(colon + 1).toLowerCase().includes('chunked');
    else if (name === 'connection') close = line.slice(colon + 1).toLowerCase().includes('close');
  }
  let body: ResponseHead['body'];
  if (requestMethod === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304) body = { type: 'none' };
  else if (chunked) body = { type: 'chunked' };
  else if (length !== null) body = length > 0 ? { type: 'length', length } : { type: 'none' };
  else body = { type: 'until-close' };
  return { headEnd: end + 4, status, close, body };
}

/**
 * Finds where a chunked body ends (RFC 9112 §7.1), fed piece by piece; only
 * counts bytes, never copies them. Trailers are allowed and skipped.
 */
export class ChunkedBody {
  private state: 'size' | 'ext' | 'size-lf' | 'data' | 'data-cr' | 'data-lf' | 'trailer-start' | 'trailer' | 'trailer-lf' | 'end-lf' = 'size';
  private size = 0;
  private digits = 0;
  private remaining = 0;
  error: string | null = null;

  /** Consumes bytes of `buf` from `from`; returns the index just past the body's end, or -1 when it needs more. */
  feed(buf: Buffer, from: number): number {
    let i = from;
    while (i < buf.length) {
      const c = buf[i]!;
      switch (this.state) {
        case 'size': {
          const d = hexDigit(c);
          if (d >= 0) {
            if (++this.digits > 12) return this.fail('chunk size too large');
            this.size = this.size * 16 + d;
          } else if (this.digits === 0) return this.fail('malformed chunk size');
          else if (c === 0x3b || c === 0x20 || c === 0x09) this.state = 'ext';
          else if (c === 0x0d) this.state = 'size-lf';
          else return this.fail('malformed chunk size');
          i++;
          break;
        }
        case 'ext':
          if (c === 0x0d) this.state = 'size-lf';
          else if (c === 0x0a || c === 0) return this.fail('malformed chunk extension');
          i++;
          break;
        case 'size-lf':
          if (c !== 0x0a) return this.fail('chunk size line must end with CRLF');
          i++;
          if (this.size === 0) this.state = 'trailer-start';
          else {
            this.remaining = this.size;
            this.state = 'data';
          }
          break;
        case 'data': {
          const take = Math.min(this.remaining, buf.length - i);
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = 'data-cr';
          break;
        }
        case 'data-cr':
          if (c !== 0x0d) return this.fail('chunk data must end with CRLF');
          this.state = 'data-lf';
          i++;
          break;
        case 'data-lf':
          if (c !== 0x0a) return this.fail('chunk data must end with CRLF');
          this.size = 0;
          this.digits = 0;
          this.state = 'size';
          i++;
          break;
        case 'trailer-start':
          i++;
          if (c === 0x0d) this.state = 'end-lf';
          else this.state = 'trailer';
          break;
        case 'trailer':
          if (c === 0x0d) this.state = 'trailer-lf';
          i++;
          break;
        case 'trailer-lf':
          if (c !== 0x0a) return this.fail('trailer lines must end with CRLF');
          this.state = 'trailer-start';
          i++;
          break;
        case 'end-lf':
          if (c !== 0x0a) return this.fail('the chunked body must end with CRLF');
          return i + 1;
      }
    }
    return -1;
  }

  private fail(message: string): -1 {
    this.error = message;
    return -1;
  }
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
