import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import { inboxPrefix, type Role } from '../../proto/roles.js';

export interface ConnectOptions {
  /** Operator tools pass false to fail at once when no server is there. */
  waitForServer?: boolean;
  /** The role this process plays (proto/roles.ts): its private inbox prefix. */
  role?: Role;
  /** Credentials file (the config's nats.creds, NATS_CREDS). Unset: connect without credentials (a test server, an open server). */
  credsFile?: string;
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
  return connect({
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
}

/** The inbox prefix a connection was opened with (replies to this process arrive under it). */
export const inboxPrefixOf = (nc: NatsConnection): string | undefined => (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
