import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode } from '../../proto/codec.js';
import { FEED_STATUS_SUBJECT, type FeedStatus } from '../../proto/marketdata.js';

/** The bridge publishes its status every second; older than this, the bridge is taken for down. */
const STALE_MS = 5_000;

/** Keeps the feed bridge's latest status for /health (published state: the gateway never asks the bridge). */
export class FeedStatusView {
  private last: { status: FeedStatus; at: number } | null = null;
  private readonly sub: Subscription;

  constructor(nc: NatsConnection) {
    this.sub = nc.subscribe(FEED_STATUS_SUBJECT, {
      callback: (err, msg) => {
        if (err) return;
        try {
          this.last = { status: decode<FeedStatus>(msg.data), at: Date.now() };
        } catch {
          /* a malformed status is ignored; the previous one ages out */
        }
      },
    });
  }

  /** For /health: the counters (gaps, bad datagrams, exchange restarts) and whether the bridge is live. */
  view(): { live: boolean; age_ms: number | null; clearing?: FeedStatus['clearing']; market_data?: FeedStatus['market_data'] } {
    if (!this.last) return { live: false, age_ms: null };
    const age = Date.now() - this.last.at;
    return { live: age < STALE_MS, age_ms: age, clearing: this.last.status.clearing, market_data: this.last.status.market_data };
  }

  close(): void {
    this.sub.unsubscribe();
  }
}
