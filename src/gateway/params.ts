import type { RequestInfo } from './http.js';

export type Params = Record<string, unknown>;

export type ParamsResult = { ok: true; params: Params } | { ok: false; code: 'bad_request' | 'unsupported_media_type'; message: string };

/**
 * Gathers parameters the ways existing clients send them: query string, then a
 * form-encoded or JSON body (body values win), then HTTP Basic credentials for
 * username/password when the parameters carry none.
 */
export function gatherParams(info: RequestInfo, body: Buffer | null): ParamsResult {
  const params: Params = info.query === '' ? {} : Object.fromEntries(new URLSearchParams(info.query));
  if (body && body.length > 0) {
    const type = info.contentType.split(';')[0]!.trim();
    if (type === 'application/json' || type.endsWith('+json')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        return { ok: false, code: 'bad_request', message: 'body is not valid JSON' };
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        return { ok: false, code: 'bad_request', message: 'JSON body must be an object' };
      }
      Object.assign(params, parsed);
    } else if (type === 'application/x-www-form-urlencoded' || type === '') {
      for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params[k] = v;
    } else {
      return {
        ok: false,
        code: 'unsupported_media_type',
        message: `content-type ${type} is not supported: send application/x-www-form-urlencoded or application/json`,
      };
    }
  }
  if (params.request_id === undefined && info.idempotencyKey) params.request_id = info.idempotencyKey;
  if (params.username === undefined && params.password === undefined && info.authorization) {
    const basic = parseBasic(info.authorization);
    if (basic) {
      params.username = basic.username;
      params.password = basic.password;
    }
  }
  return { ok: true, params };
}

/** Credentials of an HTTP Basic `Authorization` header (REST and the WebSocket upgrade alike). */
export function parseBasic(header: string): { username: string; password: string } | null {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
