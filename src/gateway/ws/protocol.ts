import { z } from 'zod';
import { decode, encode } from '../../../proto/codec.js';
import { WS_LIMITS, WS_PROTOCOL_VERSION, type ClientMessage, type ErrorMessage, type ServerMessage, type WsErrorCode, type WsFormat } from '../../../proto/ws.js';

/** ETF names as the baskets config spells them; "*" means every ETF. */
const etfName = z.string().regex(/^(\*|[A-Za-z0-9_.-]{1,32})$/, 'an ETF name or "*"');
const id = z.union([z.string().max(64), z.number()]).optional();
const seq = z.number().int().min(0);

const clientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('auth'), id, username: z.string().min(1).max(256), password: z.string().max(1024), resume_from: seq.optional() }),
  z.object({ type: z.literal('resume'), id, from_seq: seq }),
  z.object({ type: z.literal('snapshot'), id }),
  z.object({ type: z.literal('subscribe'), id, prices: z.array(etfName).max(WS_LIMITS.maxPriceSubscriptions).optional(), requests: z.boolean().optional() }),
  z.object({ type: z.literal('unsubscribe'), id, prices: z.array(etfName).max(WS_LIMITS.maxPriceSubscriptions).optional(), requests: z.boolean().optional() }),
  z.object({ type: z.literal('ping'), id }),
]);

export type Parsed = { ok: true; msg: ClientMessage } | { ok: false; code: WsErrorCode; message: string; id?: string | number };

const KNOWN_TYPES = new Set(['auth', 'resume', 'snapshot', 'subscribe', 'unsubscribe', 'ping']);

/** A client frame: text is JSON, binary is msgpack, whatever the connection's output format. */
export function parseClientMessage(data: ArrayBuffer, isBinary: boolean): Parsed {
  let raw: unknown;
  try {
    raw = isBinary ? decode(new Uint8Array(data)) : JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    return { ok: false, code: 'bad_message', message: isBinary ? 'binary frame is not msgpack' : 'text frame is not JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, code: 'bad_message', message: 'message must be an object' };
  const rawId = (raw as { id?: unknown }).id;
  const echo = typeof rawId === 'string' || typeof rawId === 'number' ? { id: rawId } : {};
  const type = (raw as { type?: unknown }).type;
  if (typeof type !== 'string' || !KNOWN_TYPES.has(type)) {
    return { ok: false, code: 'unknown_type', message: `type must be one of ${[...KNOWN_TYPES].join(', ')}`, ...echo };
  }
  const parsed = clientMessage.safeParse(raw);
  if (!parsed.success) {
    // Never echo the input: an auth message carries a password.
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || type}: ${i.message}`).join('; ');
    return { ok: false, code: 'bad_message', message: issues, ...echo };
  }
  return { ok: true, msg: parsed.data as ClientMessage };
}

/** Bytes, not strings: uWS would otherwise convert a JS string to UTF-8 again for every connection it goes to. */
export type Frame = Uint8Array;

/**
 * One server message encoded at most once per format, however many
 * connections it goes to.
 */
export class SharedFrame {
  private json?: Uint8Array;
  private msgpack?: Uint8Array;
  constructor(readonly msg: ServerMessage) {}
  get(format: WsFormat): Frame {
    if (format === 'json') return (this.json ??= Buffer.from(JSON.stringify(this.msg), 'utf8'));
    return (this.msgpack ??= encode(this.msg));
  }
}

export const errorMessage = (code: WsErrorCode, message: string, id?: string | number): ErrorMessage => ({
  v: WS_PROTOCOL_VERSION,
  type: 'error',
  code,
  message,
  ...(id !== undefined ? { id } : {}),
});

export type UpgradeQuery = { ok: true; format: WsFormat; resumeFrom?: number } | { ok: false; message: string };

/** `/ws?format=json|msgpack&resume_from=N` */
export function parseUpgradeQuery(query: string): UpgradeQuery {
  const q = new URLSearchParams(query);
  const f = q.get('format');
  if (f !== null && f !== '' && f !== 'json' && f !== 'msgpack') return { ok: false, message: 'format must be json or msgpack' };
  const format: WsFormat = f === 'msgpack' ? 'msgpack' : 'json';
  const r = q.get('resume_from');
  if (r === null || r === '') return { ok: true, format };
  const resumeFrom = Number(r);
  if (!/^\d+$/.test(r) || !Number.isSafeInteger(resumeFrom)) return { ok: false, message: 'resume_from must be a non-negative integer' };
  return { ok: true, format, resumeFrom };
}

