import type { NatsConnection } from '@nats-io/transport-node';
import { encode } from '../../proto/codec.js';
import { PRICING_STATUS_SUBJECT, PRICING_STATUS_VERSION, type PricingBadSymbol, type PricingFailing, type PricingOutput, type PricingStatus } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';

/** A write failing for less than this is a leader election or a server restart riding by: counted, not reported as failing. */
export const FAILING_AFTER_MS = 3_000;
export const STATUS_INTERVAL_MS = 1_000;

/** What the status reads from each output writer (src/shared/latest-kv.ts, src/pricing/desk.ts). */
export interface FailureSource {
  failing(): { since: number; error: string } | null;
  lastFailure(): { error: string; ts: number } | null;
}

export type PricingCounters = Pick<PricingStatus, 'bbos' | 'bad_bbos' | 'published' | 'stored' | 'publish_errors' | 'desk'>;

export interface StatusSources {
  counters(): PricingCounters;
  /** The writers opened so far: a starting service has none yet. */
  outputs(): Partial<Record<PricingOutput, FailureSource>>;
  /** Symbols whose Bbos have all been bad long enough to report, at `now`. */
  badSymbols(now: number): PricingBadSymbol[];
}

/** Where a start is: its step, and what JetStream last answered it while it is waited for. */
export interface StartStep {
  step: string;
  waiting?: string;
}

/** The status as it stands at `now`; `start` null once the service is ready. */
export function pricingStatus(started: number, start: StartStep | null, src: StatusSources, now = Date.now()): PricingStatus {
  const failing: PricingFailing[] = [];
  let last: PricingStatus['last_error'];
  for (const [what, out] of Object.entries(src.outputs()) as [PricingOutput, FailureSource][]) {
    const f = out.failing();
    if (f && now - f.since >= FAILING_AFTER_MS) failing.push({ what, error: f.error, since: f.since, for_ms: now - f.since });
    const l = out.lastFailure();
    if (l && (!last || l.ts > last.ts)) last = { what, error: l.error, ts: l.ts };
  }
  const bad = src.badSymbols(now);
  return {
    v: PRICING_STATUS_VERSION,
    started,
    phase: start ? 'starting' : 'ready',
    ...(start ? { start: { ...start, for_ms: now - started } } : {}),
    ...src.counters(),
    ...(bad.length ? { bad_bbo_symbols: bad } : {}),
    ...(failing.length ? { failing } : {}),
    ...(last ? { last_error: last } : {}),
    ts: now,
  };
}

/**
 * Publishes the status every STATUS_INTERVAL_MS from the service's own event
 * loop: a pricing process that crashed or hangs goes quiet, which the gateway
 * turns into a problem on /health. It reports from the service's connection
 * to NATS on, `starting` until ready: a start slowed by JetStream or by a busy
 * machine is heard as a start, not taken for a service that is not there.
 */
export class StatusReporter {
  private timer: NodeJS.Timeout | undefined;
  private failedPublishes = 0;
  private starting: StartStep | null = { step: 'connected to NATS' };

  constructor(
    private readonly nc: NatsConnection,
    private readonly src: StatusSources,
    private readonly log: Logger,
    private readonly started = Date.now(),
    private readonly intervalMs = STATUS_INTERVAL_MS,
  ) {}

  /** One status now (a restarted service is heard at once), then every interval. */
  start(): void {
    this.publish();
    this.timer = setInterval(() => this.publish(), this.intervalMs);
    this.timer.unref();
  }

  /** The start's next step; what the step before waited on no longer applies. */
  step(step: string): void {
    if (this.starting) this.starting = { step };
  }

  /** JetStream's answer to the step, retried: said until the step is done. */
  waiting(error: string): void {
    if (this.starting) this.starting = { ...this.starting, waiting: error };
  }

  /** Started: said at once, so the gateway does not wait a second to know. */
  ready(): void {
    this.starting = null;
    this.publish();
  }

  status(): PricingStatus {
    return pricingStatus(this.started, this.starting, this.src);
  }

  private publish(): void {
    try {
      this.nc.publish(PRICING_STATUS_SUBJECT, encode(this.status()));
    } catch (err) {
      // Only a closed connection throws here; the gateway sees the silence either way.
      if (this.failedPublishes++ % 60 === 0) this.log.warn({ err: String(err), times: this.failedPublishes }, 'pricing status not published');
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
