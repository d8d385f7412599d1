import type { NatsConnection } from '@nats-io/transport-node';
import { BBO_BUCKET, type Bbo } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';
import { watchBucket } from '../shared/kv-watch.js';

/** A team's profit and loss: cash plus every position marked at its mid. */
export interface Pnl {
  cash: number;
  /** Σ quantity × mid over the positions that have a mid. */
  marked: number;
  total: number;
  /** Tickers held without a bid and an ask to mark them at: left out of `marked`. */
  unmarked: string[];
}

/**
 * Mid prices of every symbol, from the feed bridge's published best bid/ask
 * (KV bucket ndfex_bbo). Published state only: the gateway never asks the bridge.
 */
export class Marks {
  private readonly mids = new Map<number, number>();
  private readonly watch: { close(): void };

  constructor(nc: NatsConnection, log: Logger) {
    this.watch = watchBucket<Bbo>(nc, BBO_BUCKET, log, (key, b) => {
      const symbol = Number(key);
      if (b && b.bid !== null && b.ask !== null) this.mids.set(symbol, (b.bid + b.ask) / 2);
      else this.mids.delete(symbol);
    });
  }

  mid(symbol: number): number | undefined {
    return this.mids.get(symbol);
  }

  pnl(cash: number, positions: readonly { symbol: number; ticker: string; quantity: number }[]): Pnl {
    let marked = 0;
    const unmarked: string[] = [];
    for (const p of positions) {
      const mid = this.mids.get(p.symbol);
      if (mid === undefined) unmarked.push(p.ticker);
      else marked += p.quantity * mid;
    }
    return { cash, marked, total: cash + marked, unmarked };
  }

  close(): void {
    this.watch.close();
  }
}
