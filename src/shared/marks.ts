import type { NatsConnection } from '@nats-io/transport-node';
import { BBO_BUCKET, bboShape, type Bbo } from '../../proto/marketdata.js';
import type { PnlBody, StaleMark } from '../../proto/http.js';
import type { Logger } from './log.js';
import { watchBucket } from './kv-watch.js';

/** A team's profit and loss: cash plus every position marked at its mid (proto/http.ts PnlBody). */
export type Pnl = PnlBody;

interface Mark {
  mid: number;
  /** When its book was last heard two-sided (ms); `live` while it still is. */
  at: number;
  live: boolean;
}

/**
 * Mid prices of every symbol, from the feed bridge's published best bid/ask
 * (KV bucket ndfex_bbo). Published state only: the gateway never asks the bridge.
 *
 * A book that goes one-sided (a market maker pulls a side for a moment) keeps
 * its last two-sided mid, marked stale with its age: dropping the mark would
 * swing a team's P&L by its whole position and back within seconds. A symbol
 * never heard two-sided since this gateway started has no mark (`unmarked`).
 */
export class Marks {
  private readonly marks = new Map<number, Mark>();
  private readonly watch: { close(): void };

  constructor(nc: NatsConnection, log: Logger, private readonly now: () => number = Date.now) {
    this.watch = watchBucket(nc, BBO_BUCKET, log, bboShape, (key, b) => {
      const symbol = Number(key);
      if (b && b.bid !== null && b.ask !== null) {
        this.marks.set(symbol, { mid: (b.bid + b.ask) / 2, at: this.now(), live: true });
        return;
      }
      const m = this.marks.get(symbol);
      if (m?.live) this.marks.set(symbol, { ...m, live: false });
    });
  }

  /** The symbol's mid: live, or the last two-sided one. */
  mid(symbol: number): number | undefined {
    return this.marks.get(symbol)?.mid;
  }

  /** The symbol's mid only while its book is two-sided: a conversion is judged at the prices of its moment, and an old mid would give it an edge nobody could trade at. */
  liveMid(symbol: number): number | undefined {
    const m = this.marks.get(symbol);
    return m?.live ? m.mid : undefined;
  }

  pnl(cash: number, positions: readonly { symbol: number; ticker: string; quantity: number }[]): Pnl {
    let marked = 0;
    const unmarked: string[] = [];
    const stale: StaleMark[] = [];
    const now = this.now();
    for (const p of positions) {
      const m = this.marks.get(p.symbol);
      if (m === undefined) {
        unmarked.push(p.ticker);
        continue;
      }
      marked += p.quantity * m.mid;
      if (!m.live) stale.push({ ticker: p.ticker, mid: m.mid, age_ms: Math.max(0, now - m.at) });
    }
    return { cash, marked, total: cash + marked, unmarked, ...(stale.length ? { stale } : {}) };
  }

  close(): void {
    this.watch.close();
  }
}
