import { errors } from '@nats-io/transport-node';
import { JetStreamApiError } from '@nats-io/jetstream';
import type { Logger } from './log.js';

/**
 * JetStream answers that say "not now" rather than "no": on a cluster, while a
 * stream's leader moves (a node died) or the meta leader is being elected, a
 * publish or API call goes unanswered (timeout), finds nobody listening (503
 * no responders), or is told the system is temporarily unavailable. On one
 * server the same happens while it restarts. Retried, they succeed.
 */
export function isTransientJsError(err: unknown): boolean {
  if (err instanceof errors.TimeoutError || err instanceof errors.NoRespondersError) return true;
  if (err instanceof errors.RequestError) return err.isNoResponders() || err.cause instanceof errors.TimeoutError;
  // nats.js reports "no responders" on a JetStream subject as JetStream not enabled.
  if (err instanceof Error && err.name === 'JetStreamNotEnabled') return true;
  if (err instanceof JetStreamApiError) {
    // 10008: JetStream system temporarily unavailable; 503s: no leader (yet), or a peer is catching up.
    return err.status === 503 || err.code === 10008;
  }
  // A request made while the connection is between servers.
  if (err instanceof errors.ConnectionError) return true;
  return false;
}

export interface RetryOptions {
  /** Give up (throw the last error) once this much time has passed since the first attempt. */
  deadlineMs: number;
  log?: Logger;
  /** Which errors are worth another attempt (default: isTransientJsError). */
  transient?: (err: unknown) => boolean;
  /** First pause; doubled each attempt up to maxPauseMs, with jitter. */
  basePauseMs?: number;
  maxPauseMs?: number;
}

/**
 * Runs `attempt` until it succeeds, a non-transient error is thrown, or the
 * deadline passes. The caller makes retries harmless (a publish carries the
 * same Nats-Msg-Id each time, so JetStream stores it once).
 */
export async function retryTransient<T>(what: string, attempt: (n: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const transient = opts.transient ?? isTransientJsError;
  const start = Date.now();
  const base = opts.basePauseMs ?? 50;
  const max = opts.maxPauseMs ?? 1000;
  for (let n = 0; ; n++) {
    try {
      const result = await attempt(n);
      if (n > 0) opts.log?.info({ what, attempts: n + 1, ms: Date.now() - start }, 'JetStream answered again');
      return result;
    } catch (err) {
      const elapsed = Date.now() - start;
      if (!transient(err) || elapsed >= opts.deadlineMs) throw err;
      if (n === 0 || n % 10 === 0) opts.log?.warn({ what, attempt: n + 1, elapsedMs: elapsed, err: describe(err) }, 'JetStream unavailable: retrying');
      const pause = Math.min(max, base * 2 ** Math.min(n, 10));
      // Full jitter on half the pause: writers that failed together do not retry together.
      await new Promise((r) => setTimeout(r, Math.min(pause / 2 + Math.random() * (pause / 2), Math.max(0, opts.deadlineMs - elapsed))));
    }
  }
}

const describe = (err: unknown): string => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));
