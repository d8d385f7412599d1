import { connect, type NatsConnection } from '@nats-io/transport-node';

/**
 * Connects with settings every process shares: no async stack traces (they
 * cost ~50 µs per request on the hot path) and endless reconnects, so a
 * nats-server restart is ridden out rather than fatal. Operator tools pass
 * `waitForServer: false` to fail at once when no server is there.
 */
export async function connectNats(url: string, name: string, opts: { waitForServer?: boolean } = {}): Promise<NatsConnection> {
  return connect({
    servers: url,
    name,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    // A service started while nats-server is (re)starting waits for it instead of failing.
    waitOnFirstConnect: opts.waitForServer ?? true,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
}
