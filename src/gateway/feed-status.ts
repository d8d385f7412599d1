import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import { FEED_STATUS_SUBJECT, type FeedStatus } from '../../proto/marketdata.js';

/** The bridge publishes its status every second; older than this, the bridge is taken for down. */
const STALE_MS = 5_000;

/** Keeps the feed bridge's latest status for /health (published state: the gateway never asks the bridge). */
export class FeedStatusView {
  private last: { status: FeedStatus; at: number } | null = null;
  /** When the bridge last reported new market-data datagrams: NDFEX sends at least a heartbeat every 500 ms. */
  private exchangeHeardAt = 0;
  private readonly sub: Subscription;

  constructor(nc: NatsConnection) {
    this.sub = nc.subscribe(FEED_STATUS_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const status = decode<FeedStatus>(msg.data);
          const before = this.last?.status.market_data.datagrams ?? 0;
          if (status.market_data.datagrams > before) this.exchangeHeardAt = Date.now();
          this.last = { status, at: Date.now() };
        } catch {
          /* a malformed status is ignored; the previous one ages out */
        }
      },
    });
  }

  /**
   * For /health: the counters (gaps, bad datagrams, exchange restarts), whether
   * the bridge is live, and whether the exchange is heard (`exchange_live`).
   */
  view(): { live: boolean; exchange_live: boolean; age_ms: number | null; clearing?: FeedStatus['clearing']; market_data?: FeedStatus['market_data'] } {
    if (!this.last) return { live: false, exchange_live: false, age_ms: null };
    const now = Date.now();
    const age = now - this.last.at;
    const live = age < STALE_MS;
    return { live, exchange_live: live && now - this.exchangeHeardAt < STALE_MS, age_ms: age, clearing: this.last.status.clearing, market_data: this.last.status.market_data };
  }

  /** Why the exchange's positions may not be current, or none. */
  problems(): string[] {
    const v = this.view();
    if (!v.live) return [v.age_ms === null ? 'the feed bridge has not reported: exchange fills are not being taken in' : `the feed bridge last reported ${Math.round(v.age_ms / 1000)} s ago: exchange fills are not being taken in`];
    if (!v.exchange_live) return ['no market data from the exchange for 5 s (it sends a heartbeat every 500 ms): is the exchange running, and on these multicast groups?'];
    return [];
  }

  close(): void {
    this.sub.unsubscribe();
  }
}
