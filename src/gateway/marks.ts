import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { decode } from '../../proto/codec.js';
import { BBO_BUCKET, type Bbo } from '../../proto/marketdata.js';
import type { Logger } from '../shared/log.js';

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
 * (KV bucket ndfex_bbo, watched: its current values, then every change).
 * Published state only: the gateway never asks the bridge.
 */
export class Marks {
  private readonly mids = new Map<number, number>();
  private stop: (() => void) | null = null;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
  ) {
    this.follow();
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
    this.closed = true;
    this.stop?.();
  }

  private follow(): void {
    if (this.closed) return;
    const again = () => !this.closed && setTimeout(() => this.follow(), 1000).unref();
    (async () => {
      const kv = await new Kvm(this.nc).open(BBO_BUCKET);
      const entries = await kv.watch();
      this.stop = () => entries.stop();
      for await (const e of entries) {
        const symbol = Number(e.key);
        if (e.operation !== 'PUT') {
          this.mids.delete(symbol);
          continue;
        }
        try {
          const b = decode<Bbo>(e.value);
          if (b.bid !== null && b.ask !== null) this.mids.set(symbol, (b.bid + b.ask) / 2);
          else this.mids.delete(symbol);
        } catch {
          /* an unreadable entry leaves the mark as it was */
        }
      }
    })().then(again, (err: unknown) => {
      this.log.debug({ err: err instanceof Error ? err.message : err }, 'best bid/ask bucket not followed yet: retrying');
      again();
    });
  }
}
