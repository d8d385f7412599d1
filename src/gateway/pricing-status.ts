import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decodeAs } from '../../proto/codec.js';
import { PRICING_STATUS_SUBJECT, pricingStatusShape, type PricingBadSymbol, type PricingFailing, type PricingStart, type PricingStatus } from '../../proto/marketdata.js';
import type { OperatorPricing } from '../../proto/operator.js';
import type { Logger } from '../shared/log.js';
import { UnreadableStatuses } from './unreadable-status.js';

/** Pricing publishes its status every second (src/pricing/status.ts); older than this, it is taken for down. */
const STALE_MS = 5_000;
/**
 * How long a start may take before it is a problem: never heard since this
 * gateway started, or heard `starting` for longer. Its first status goes out
 * once it is connected to NATS, but a busy machine takes seconds to get a
 * process that far, and a start waits for JetStream (up to a minute).
 */
export const START_GRACE_MS = 30_000;
/** Restarts heard within this long: two or more is a crash loop (each run may live long enough to be heard). */
const RESTART_WINDOW_MS = 60_000;
const CRASH_LOOP_RESTARTS = 2;

/** What /health shows of the pricing service (the operator page adds its problems). */
export type PricingView = Omit<OperatorPricing, 'problems'>;

const FROZEN = 'ETF prices (GET /etfs, the WebSocket stream), the charts and the scorecards are not being updated';

/**
 * Keeps the pricing service's latest status for /health, /metrics and the
 * operator page: pricing serves nothing itself, so a pricing that stopped, or
 * whose writes fail, showed nowhere while the prices teams trade on froze.
 *
 * Never heard from is a problem only when this gateway is told the system runs
 * pricing (`expected`: the launcher does), and only once a start would have
 * been heard (`startGraceMs` from the gateway's start); otherwise (a gateway
 * run alone, as in most tests, or beside a pricing run elsewhere) its absence
 * counts once it has reported, as the standby bridge's does. A service heard
 * `starting` is a problem once its start has taken `startGraceMs`; heard, then
 * silent for STALE_MS, whether it was starting or not.
 */
export class PricingStatusView {
  private last: { status: PricingStatus; at: number } | null = null;
  private readonly createdAt = Date.now();
  /** When a status from another run than the one before was heard (a restart, or a second pricing service). */
  private restartsAt: number[] = [];
  private restartsTotal = 0;
  /** Statuses on the subject not of their shape (another version's pricing?). */
  private readonly unreadable: UnreadableStatuses;
  private readonly sub: Subscription;

  private readonly expected: boolean;
  private readonly startGraceMs: number;

  constructor(nc: NatsConnection, opts: { expected: boolean; startGraceMs?: number | undefined }, log?: Logger) {
    this.expected = opts.expected;
    this.startGraceMs = opts.startGraceMs ?? START_GRACE_MS;
    this.unreadable = new UnreadableStatuses('pricing service', log);
    this.sub = nc.subscribe(PRICING_STATUS_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const status = decodeAs(msg.data, pricingStatusShape);
          const now = Date.now();
          if (this.last && this.last.status.started !== status.started) {
            this.restartsTotal++;
            this.restartsAt = [...this.restartsAt.filter((t) => now - t < RESTART_WINDOW_MS), now];
          }
          this.last = { status, at: now };
        } catch (err) {
          // A status that does not read is not a pricing that is down: said as such below.
          this.unreadable.note(err);
        }
      },
    });
  }

  view(): PricingView {
    if (!this.last) return { live: false, age_ms: null };
    const age = Date.now() - this.last.at;
    const { ts: _ts, v: _v, ...status } = this.last.status;
    return { live: age < STALE_MS, age_ms: age, ...status, ...(this.restartsTotal ? { restarts: this.restartsTotal } : {}) };
  }

  /** Why ETF prices, the charts or the scorecards may not be current, or none. */
  problems(): string[] {
    const now = Date.now();
    const v = this.view();
    const bad = v.live ? null : this.unreadable.recent(STALE_MS);
    if (bad !== null) {
      return [`the pricing service's status does not read (${bad}; ${this.unreadable.count} so far): is it another version than this gateway? Whether ETF prices, the charts and the scorecards are being updated cannot be told`];
    }
    if (v.age_ms === null) {
      const waited = now - this.createdAt;
      return this.expected && waited >= this.startGraceMs ? [`the pricing service has not reported since this gateway started ${Math.round(waited / 1000)} s ago: ${FROZEN} (is it running, and on this NATS? it reports from its connection on, starting or not)`] : [];
    }
    if (!v.live) {
      const during = v.phase === 'starting' && v.start ? ` while starting (${startedHow(v.start)})` : '';
      return [`the pricing service last reported ${Math.round(v.age_ms / 1000)} s ago${during}: ${FROZEN} (stopped, or hung? the launcher restarts it when it exits, and its log says why)`];
    }
    const out: string[] = [];
    if (v.phase === 'starting' && v.start && v.start.for_ms >= this.startGraceMs) {
      out.push(`the pricing service has been starting for ${Math.round(v.start.for_ms / 1000)} s (${startedHow(v.start)}): ${FROZEN} until it is ready`);
    }
    const recent = this.restartsAt.filter((t) => now - t < RESTART_WINDOW_MS).length;
    if (recent >= CRASH_LOOP_RESTARTS) out.push(`the pricing service restarted ${recent} times in the last minute: is it crashing (its log says why), or do two run at once? ${FROZEN} between its runs`);
    for (const f of v.failing ?? []) out.push(failingProblem(f));
    for (const b of v.bad_bbo_symbols ?? []) out.push(badSymbolProblem(b));
    return out;
  }

  close(): void {
    this.sub.unsubscribe();
  }
}

function startedHow(start: PricingStart): string {
  return start.waiting ? `${start.step}, waiting for JetStream: ${start.waiting}` : start.step;
}

function badSymbolProblem(b: PricingBadSymbol): string {
  const name = b.ticker === String(b.symbol) ? `symbol ${b.symbol}` : `symbol ${b.symbol} (${b.ticker})`;
  const etfs = b.etfs.length ? `the prices of ${b.etfs.join(', ')} keep its last good quote and do not move with it` : 'no ETF is priced from it';
  return `the pricing service has had only bad best bids/offers of ${name} for ${Math.round(b.for_ms / 1000)} s (${b.count}, the last: ${b.problem}): ${etfs} (is the feed bridge's book of it wrong? its alerts and log may say)`;
}

function failingProblem(f: PricingFailing): string {
  const s = Math.round(f.for_ms / 1000);
  return f.what === 'prices'
    ? `the pricing service has not stored an ETF price for ${s} s (${f.error}): GET /etfs and the WebSocket stream keep showing the last prices stored (it keeps retrying)`
    : `the pricing service has not written the desk stream for ${s} s (${f.error}): the charts and the conversions' scorecards miss what is not written`;
}
