import type { FeedAlert } from '../../proto/marketdata.js';

/**
 * Caps alerts per key (feed + kind) to `perSecond`: a burst of loss would
 * otherwise send one alert per datagram. What is held back is counted and
 * reported with the next alert that goes out; the counters in FeedStatus stay exact.
 */
export class AlertThrottle {
  private readonly windows = new Map<string, { start: number; sent: number; suppressed: number }>();

  constructor(private readonly perSecond = 10) {}

  /** Whether to send now, and how many alerts of this key were held back before it. */
  admit(key: string, nowMs: number): { send: boolean; suppressed: number } {
    let w = this.windows.get(key);
    if (!w) {
      w = { start: nowMs, sent: 0, suppressed: 0 };
      this.windows.set(key, w);
    }
    if (nowMs - w.start >= 1000) {
      w.start = nowMs;
      w.sent = 0;
    }
    if (w.sent >= this.perSecond) {
      w.suppressed++;
      return { send: false, suppressed: 0 };
    }
    w.sent++;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    return { send: true, suppressed };
  }
}

/**
 * Sends the bridge's alerts through an AlertThrottle, saying with the next
 * alert that goes out how many of its kind were held back. `publish` is the
 * only way out, so the sender runs without NATS in a unit test.
 */
export class AlertSender {
  /** Alerts that went out. */
  sent = 0;
  private readonly throttle = new AlertThrottle();

  constructor(private readonly publish: (a: FeedAlert) => void) {}

  readonly send = (feed: FeedAlert['feed'], a: Omit<FeedAlert, 'ts' | 'feed'>, now = Date.now()): void => {
    const { send, suppressed } = this.throttle.admit(`${feed}/${a.kind}`, now);
    if (!send) return;
    this.sent++;
    const detail = suppressed > 0 ? `${a.detail} (${suppressed} earlier ${a.kind} alerts not sent: rate limit)` : a.detail;
    this.publish({ ...a, detail, feed, ts: now });
  };
}

export type SendAlert = AlertSender['send'];
