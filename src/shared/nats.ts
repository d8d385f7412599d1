import { connect, type NatsConnection } from '@nats-io/transport-node';

/**
 * Connects with settings every process shares: no async stack traces (they
 * cost ~50 µs per request on the hot path) and endless reconnects, so a
 * nats-server restart is ridden out rather than fatal.
 */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({
    servers: url,
    name,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    // A service started while nats-server is (re)starting waits for it instead of failing.
    waitOnFirstConnect: true,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
}
