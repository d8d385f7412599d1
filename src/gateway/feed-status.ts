import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode, decodeAs } from '../../proto/codec.js';
import { FEED_STATUS_SUBJECT, feedStatusShape, standbyStatusShape, type FeedStatus, type StandbyStatus } from '../../proto/marketdata.js';
import type { FeedProblem } from '../../proto/feed.js';
import type { Logger } from '../shared/log.js';
import { UnreadableStatuses } from './unreadable-status.js';

/** The bridge publishes its status every second; older than this, the bridge is taken for down. */
const STALE_MS = 5_000;

export type StandbyView = Omit<StandbyStatus, 'role' | 'ts'> & { live: boolean; age_ms: number };

/** Keeps the feed bridge's latest status for /health (published state: the gateway never asks the bridge). */
export class FeedStatusView {
  private last: { status: FeedStatus; at: number } | null = null;
  /** The standby bridge's latest status (src/feed/standby.ts), once one has reported. */
  private standby: { status: StandbyStatus; at: number } | null = null;
  /** When the bridge last reported new market-data datagrams: NDFEX sends at least a heartbeat every 500 ms. */
  private exchangeHeardAt = 0;
  /** Statuses on the subject not of their shape (another version's bridge?). */
  private readonly unreadable: UnreadableStatuses;
  private readonly sub: Subscription;

  constructor(nc: NatsConnection, log?: Logger) {
    this.unreadable = new UnreadableStatuses('feed bridge', log);
    this.sub = nc.subscribe(FEED_STATUS_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const any = decode<unknown>(msg.data);
          // The standby's status shares the subject; it carries no counters of the feeds.
          if (standbyStatusShape.problem(any) === null) {
            this.standby = { status: any as StandbyStatus, at: Date.now() };
            return;
          }
          const status = decodeAs(msg.data, feedStatusShape);
          // Only well-formed datagrams say the exchange is there: malformed ones (anyone can send those) must not turn /health back to ok.
          const good = (s?: FeedStatus) => (s ? s.market_data.datagrams - s.market_data.bad_datagrams : 0);
          if (good(status) > good(this.last?.status)) this.exchangeHeardAt = Date.now();
          this.last = { status, at: Date.now() };
        } catch (err) {
          // Ignored, but not unheard: a bridge whose every status fails to read is not a bridge that is down.
          this.unreadable.note(err);
        }
      },
    });
  }

  /**
   * For /health: the counters (gaps, bad datagrams, exchange restarts), whether
   * the bridge is live, and whether the exchange is heard (`exchange_live`).
   */
  view(): { live: boolean; exchange_live: boolean; age_ms: number | null; clearing?: FeedStatus['clearing']; market_data?: FeedStatus['market_data']; problems?: FeedProblem[]; unstored?: FeedStatus['unstored']; progress_unsaved?: FeedStatus['progress_unsaved']; standby?: StandbyView } {
    const standby = this.standbyView();
    if (!this.last) return { live: false, exchange_live: false, age_ms: null, ...(standby ? { standby } : {}) };
    const now = Date.now();
    const age = now - this.last.at;
    const live = age < STALE_MS;
    const problems = this.last.status.problems ?? [];
    return {
      live,
      exchange_live: live && now - this.exchangeHeardAt < STALE_MS,
      age_ms: age,
      clearing: this.last.status.clearing,
      market_data: this.last.status.market_data,
      ...(problems.length ? { problems } : {}),
      ...(this.last.status.unstored ? { unstored: this.last.status.unstored } : {}),
      ...(this.last.status.progress_unsaved ? { progress_unsaved: this.last.status.progress_unsaved } : {}),
      ...(standby ? { standby } : {}),
    };
  }

  /** The standby bridge as /health shows it, once one has reported. */
  private standbyView(): StandbyView | undefined {
    if (!this.standby) return undefined;
    const { role: _role, ts: _ts, ...status } = this.standby.status;
    const age = Date.now() - this.standby.at;
    return { live: age < STALE_MS, age_ms: age, ...status };
  }

  /** Why the exchange's positions may not be current, or none. */
  problems(): string[] {
    const v = this.view();
    const bad = v.live ? null : this.unreadable.recent(STALE_MS);
    if (bad !== null) {
      return [`the feed bridge's status does not read (${bad}; ${this.unreadable.count} so far): is the bridge another version than this gateway? Whether exchange fills are taken in cannot be told`];
    }
    if (!v.live) return [v.age_ms === null ? 'the feed bridge has not reported: exchange fills are not being taken in' : `the feed bridge last reported ${Math.round(v.age_ms / 1000)} s ago: exchange fills are not being taken in`];
    const out: string[] = [];
    // Once a standby has reported, its absence means a bridge restart now loses what the exchange sends meanwhile.
    if (v.standby && !v.standby.live) out.push(`the standby bridge last reported ${Math.round(v.standby.age_ms / 1000)} s ago: fills the exchange sends while the bridge restarts would be lost`);
    // The bridge is live and hears the exchange, yet no position moves: the one sign of it outside the bridge's log.
    const u = v.unstored;
    if (u) out.push(`${u.fills} exchange fill(s) not stored in the fill stream for ${Math.round(u.oldest_ms / 1000)} s${u.last_error ? ` (${u.last_error})` : ''}: positions do not move until they are (the bridge keeps retrying)`);
    if (!v.exchange_live) out.push('no market data from the exchange for 5 s (it sends a heartbeat every 500 ms): is the exchange running, and on these multicast groups?');
    // Standing until the operator acknowledges or decides them (POST /operator/api/feed/ack, /feed/verdict).
    for (const p of v.problems ?? []) out.push(`${p.kind} on ${p.feed} [${p.id}, operator: ${p.actions.join(' | ')}]: ${p.detail}`);
    return out;
  }

  close(): void {
    this.sub.unsubscribe();
  }
}
