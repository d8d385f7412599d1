import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import { inboxPrefix, type Role } from '../../proto/roles.js';
import type { Logger } from './log.js';

export interface ConnectOptions {
  /** Operator tools pass false to fail at once when no server is there. */
  waitForServer?: boolean;
  /** The role this process plays (proto/roles.ts): its private inbox prefix. */
  role?: Role;
  /** Credentials file (the config's nats.creds, NATS_CREDS). Unset: connect without credentials (a test server, an open server). */
  credsFile?: string;
  /** Where the server's refusals of this connection's publishes and subscriptions are said (followRefusals). */
  log?: Logger;
}

/**
 * A NATS credentials file: a standard `.creds` file (user JWT + nkey seed, for
 * servers with decentralized auth), or the launcher's JSON `{"user", "password"}`.
 */
export function credentialsOptions(file: string): Partial<ConnectionOptions> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`NATS credentials file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
  }
  if (text.includes('-----BEGIN NATS USER JWT-----')) return { authenticator: credsAuthenticator(new TextEncoder().encode(text)) };
  try {
    const c = JSON.parse(text) as { user?: unknown; password?: unknown };
    if (typeof c.user === 'string' && typeof c.password === 'string') return { user: c.user, pass: c.password };
  } catch {
    /* reported below */
  }
  throw new Error(`NATS credentials file ${file}: neither a .creds file nor {"user", "password"} JSON`);
}

/**
 * The servers a NATS_URL names: one URL, or a comma-separated list (the nodes
 * of a cluster; the client also learns the others from the one it reaches).
 */
export const natsServers = (url: string): string[] =>
  url
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');

/**
 * Connects with settings every process shares: no async stack traces (they
 * cost ~50 µs per request on the hot path) and endless reconnects, to any
 * server of the list (or of the cluster), with jitter so a cluster's clients
 * do not all land on a survivor at once: a nats-server restart, or a node of a
 * cluster dying, is ridden out rather than fatal.
 */
export async function connectNats(url: string, name: string, opts: ConnectOptions = {}): Promise<NatsConnection> {
  const credsFile = opts.credsFile;
  const nc = await connect({
    servers: natsServers(url),
    name,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    // A service started while nats-server is (re)starting waits for it instead of failing.
    waitOnFirstConnect: opts.waitForServer ?? true,
    reconnectTimeWait: 250,
    reconnectJitter: 250,
    pingInterval: 10_000,
    ...(opts.role ? { inboxPrefix: inboxPrefix(opts.role) } : {}),
    ...(credsFile ? credentialsOptions(credsFile) : {}),
  });
  if (opts.log) followRefusals(nc, opts.log);
  guardCallbacks(nc, opts.log);
  return nc;
}

type SubscribeOpts = Parameters<NatsConnection['subscribe']>[1];
type Callback = NonNullable<NonNullable<SubscribeOpts>['callback']>;

/** Throws caught in subscription callbacks, by subject, on connections opened by connectNats. */
const callbackThrowsOf = new WeakMap<NatsConnection, { total: number }>();

/** The throws a connection's subscription callbacks made (caught, logged): zero for one connectNats did not open. */
export const callbackThrows = (nc: NatsConnection): number => callbackThrowsOf.get(nc)?.total ?? 0;

/**
 * Every subscription callback of the connection runs guarded. nats.js calls a
 * callback inside its protocol parser, and a throw there ends the reader of
 * the whole connection: it prints "reader closed" to the console, and the
 * process hears nothing more on any subscription (answers, fills, notices)
 * until its pings time out and it reconnects, tens of seconds later. Caught
 * here, the throw costs that one message its handler and is logged (the first
 * per subject, then at every power of ten) and counted.
 */
function guardCallbacks(nc: NatsConnection, log: Logger | undefined): void {
  const counts = { total: 0 };
  callbackThrowsOf.set(nc, counts);
  const perSubject = new Map<string, number>();
  const subscribe = nc.subscribe.bind(nc);
  const guard = (subject: string, callback: Callback): Callback => (err, msg) => {
    try {
      callback(err, msg);
    } catch (thrown) {
      counts.total++;
      const n = (perSubject.get(subject) ?? 0) + 1;
      if (perSubject.size < 1_000 || perSubject.has(subject)) perSubject.set(subject, n);
      if (!/^10*$/.test(String(n))) return;
      const words = 'a NATS subscription handler threw: that message is lost to it, the connection reads on';
      if (log) log.error({ subject, err: thrown, times: n }, words);
      else process.emitWarning(`${words} (${subject}, ${n} times): ${String(thrown)}`, { code: 'ETF_NATS_CALLBACK' });
    }
  };
  nc.subscribe = (subject, opts) => subscribe(subject, opts?.callback ? { ...opts, callback: guard(subject, opts.callback) } : opts);
}

/** What the server refused of one connection, counted per kind. */
export interface NatsRefusals {
  /** Every refusal (permission violations, other -ERR). */
  total: number;
}

const refusalsOf = new WeakMap<NatsConnection, NatsRefusals>();

/** The refusals counted on a connection opened with a logger (none: zero). */
export const natsRefusals = (nc: NatsConnection): NatsRefusals => refusalsOf.get(nc) ?? { total: 0 };

/**
 * A publish or subscription the server refuses (a role's permissions, a
 * subject mistyped) throws nothing and returns nothing: the message is simply
 * gone, or the subscription never hears a thing. The server's -ERR comes back
 * only as a connection status, so it is logged here (the first of each
 * operation and subject, then at every power of ten) and counted.
 */
export function followRefusals(nc: NatsConnection, log: Logger): NatsRefusals {
  const counts: NatsRefusals = { total: 0 };
  refusalsOf.set(nc, counts);
  const perKey = new Map<string, number>();
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'ldm') log.warn({ server: s.server }, 'NATS server entering lame duck mode: this connection moves to another server soon');
      if (s.type !== 'error') continue;
      counts.total++;
      const e = s.error as Error & { operation?: string; subject?: string };
      const key = `${e.operation ?? '-'} ${e.subject ?? e.message}`;
      const n = (perKey.get(key) ?? 0) + 1;
      if (perKey.size < 1_000 || perKey.has(key)) perKey.set(key, n);
      if (/^10*$/.test(String(n))) log.error({ operation: e.operation, subject: e.subject, err: e.message, times: n }, 'the NATS server refused this: what it carried is lost (a publish) or never heard (a subscription)');
    }
  })().catch((err: unknown) => log.warn({ err: String(err) }, 'NATS status no longer followed: refusals go unlogged'));
  return counts;
}

/** NATS's default payload limit, held to until the server has said its own. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/**
 * Room for the headers a JetStream publish of ours adds (Nats-Msg-Id, Nats-Expected-Last-Sequence,
 * Nats-Expected-Last-Msg-Id: under 200 bytes with our ids), which count against max_payload with the data.
 */
export const JS_HEADER_BYTES = 256;

/** The largest message the server takes (its max_payload): a publish over it throws, it is never sent. */
export const maxPayload = (nc: NatsConnection): number => nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;

/** The inbox prefix a connection was opened with (replies to this process arrive under it). */
export const inboxPrefixOf = (nc: NatsConnection): string | undefined => (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
