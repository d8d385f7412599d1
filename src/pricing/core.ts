import { basketInForce, type Basket } from '../config/baskets.js';
import type { BasketVersions, Bbo, EtfPrice } from '../../proto/marketdata.js';

/** Top of book per symbol id. */
export type Books = ReadonlyMap<number, Bbo>;

const sum = (basket: Basket, books: Books, pick: (b: Bbo) => number | null): number | null => {
  let total = 0;
  for (const c of basket.components) {
    const b = books.get(c.symbol);
    const p = b ? pick(b) : null;
    if (p === null) return null;
    total += c.weight * p;
  }
  return total;
};

const mid = (b: Bbo): number | null => (b.bid !== null && b.ask !== null ? (b.bid + b.ask) / 2 : null);

/**
 * One ETF's prices from the books: what the basket costs, fetches and is
 * worth for one creation unit, against the ETF's own quotes. A figure that
 * needs a missing quote is null rather than a guess.
 */
export function computePrice(basket: Basket, books: Books, ts: number = Date.now()): EtfPrice {
  const nav = sum(basket, books, mid);
  const create_cost = sum(basket, books, (b) => b.ask);
  const redeem_proceeds = sum(basket, books, (b) => b.bid);
  const own = books.get(basket.symbol);
  const etf_bid = own?.bid ?? null;
  const etf_ask = own?.ask ?? null;
  const etfMid = own ? mid(own) : null;
  return {
    etf: basket.name,
    symbol: basket.symbol,
    nav,
    create_cost,
    redeem_proceeds,
    etf_bid,
    etf_ask,
    premium: nav !== null && nav !== 0 && etfMid !== null ? (etfMid - nav) / nav : null,
    create_edge: etf_bid !== null && create_cost !== null ? etf_bid - create_cost : null,
    redeem_edge: redeem_proceeds !== null && etf_ask !== null ? redeem_proceeds - etf_ask : null,
    ts,
  };
}

/** True when two prices differ in anything but the time they were computed. */
export function priceChanged(a: EtfPrice | undefined, b: EtfPrice): boolean {
  if (!a) return true;
  return (
    a.nav !== b.nav ||
    a.create_cost !== b.create_cost ||
    a.redeem_proceeds !== b.redeem_proceeds ||
    a.etf_bid !== b.etf_bid ||
    a.etf_ask !== b.etf_ask ||
    a.premium !== b.premium
  );
}

/** Moved beside the Bbo type (proto/marketdata.ts); exported here for those that import it from the pricing core. */
export { bboProblem } from '../../proto/marketdata.js';

/**
 * Why a Bbo of the right shape cannot be priced from, or null. The bridge
 * never publishes a book it trusts crossed, and NDFEX prices are above zero:
 * one that is either was built wrong, and priced from it an ETF would show an
 * edge on both sides at once. (A locked book, bid = ask, prices fine.)
 */
export function bboUnusable(b: Bbo): string | null {
  if (b.bid !== null && b.bid <= 0) return `bid ${b.bid} is not above zero`;
  if (b.ask !== null && b.ask <= 0) return `ask ${b.ask} is not above zero`;
  if (b.bid !== null && b.ask !== null && b.bid > b.ask) return `crossed: bid ${b.bid} above ask ${b.ask}`;
  return null;
}

/** A symbol's bad Bbos since its last good one. */
export interface BadStreak {
  count: number;
  /** When the first of them came (ms). */
  since: number;
  /** Why the newest one was bad. */
  problem: string;
}

/** Symbols followed at most: more than NDFEX lists, and bounded whatever the subjects published. */
const MAX_BAD_SYMBOLS = 1024;

/**
 * Per symbol, the bad Bbos since its last good one. Meanwhile its book keeps
 * the last good quote, so every ETF priced from it stops moving: a streak
 * that lasts is what the status reports, and a good Bbo ends it.
 */
export class BadBbos {
  private readonly streaks = new Map<number, BadStreak>();

  /** Counts one; true when it starts a streak (the one to log). */
  bad(symbol: number, problem: string, now: number): boolean {
    const s = this.streaks.get(symbol);
    if (s) {
      s.count++;
      s.problem = problem;
      return false;
    }
    if (this.streaks.size >= MAX_BAD_SYMBOLS) return false;
    this.streaks.set(symbol, { count: 1, since: now, problem });
    return true;
  }

  /** A good one: the streak it ends, if any. */
  good(symbol: number): BadStreak | undefined {
    const s = this.streaks.get(symbol);
    if (s) this.streaks.delete(symbol);
    return s;
  }

  /** Streaks of `afterMs` or longer, the longest first, at most `limit`. */
  standing(now: number, afterMs: number, limit: number): Array<BadStreak & { symbol: number }> {
    const out: Array<BadStreak & { symbol: number }> = [];
    for (const [symbol, s] of this.streaks) if (now - s.since >= afterMs) out.push({ symbol, ...s });
    return out.sort((a, b) => a.since - b.since || a.symbol - b.symbol).slice(0, limit);
  }
}

/**
 * The books the pricing actor knows and which ETFs each symbol moves. Pure:
 * the I/O edge feeds it Bbo messages and asks which ETFs to reprice.
 */
export class PricingState {
  readonly books = new Map<number, Bbo>();
  /** symbol id → names of the ETFs whose price it moves (as a component or as the ETF itself). */
  private readonly dependents = new Map<number, string[]>();
  /** The operator's basket versions (published by the engine), per ETF. */
  private readonly versions = new Map<string, BasketVersions['versions']>();

  constructor(readonly baskets: ReadonlyMap<string, Basket>) {
    this.index();
  }

  /** New basket versions of an ETF; its price follows the version in force. */
  setVersions(etf: string, versions: BasketVersions['versions']): void {
    this.versions.set(etf, versions);
    this.index();
  }

  private index(): void {
    this.dependents.clear();
    for (const b of this.baskets.values()) {
      const symbols = [b.symbol, ...b.components.map((c) => c.symbol), ...(this.versions.get(b.name) ?? []).flatMap((v) => v.components.map((c) => c.symbol))];
      for (const s of symbols) {
        const list = this.dependents.get(s) ?? [];
        if (!list.includes(b.name)) list.push(b.name);
        this.dependents.set(s, list);
      }
    }
  }

  /** The ETFs a symbol's quotes move (as a component, in any of their basket versions, or as the ETF itself). */
  etfsOf(symbol: number): readonly string[] {
    return this.dependents.get(symbol) ?? [];
  }

  /** Applies a live Bbo; returns the ETFs to reprice. */
  apply(bbo: Bbo): readonly string[] {
    this.books.set(bbo.symbol, bbo);
    return this.dependents.get(bbo.symbol) ?? [];
  }

  /** Applies a stored Bbo (read at start) unless a live one already arrived, which is newer. */
  seed(bbo: Bbo): readonly string[] {
    if (this.books.has(bbo.symbol)) return [];
    return this.apply(bbo);
  }

  price(etf: string, ts: number = Date.now()): EtfPrice {
    const basket = this.baskets.get(etf);
    if (!basket) throw new Error(`unknown ETF ${etf}`);
    return computePrice(basketInForce(basket, this.versions.get(etf), ts).basket, this.books, ts);
  }
}

/**
 * At most one publish per key every `intervalMs`, the last change never lost:
 * a change inside the interval is deferred to the interval's end, and any
 * further change before then rides along with it.
 */
export class Throttle {
  private readonly last = new Map<string, number>();
  private readonly pending = new Set<string>();

  constructor(readonly intervalMs: number) {}

  /** `now`: publish now; `{ delayMs }`: schedule one publish then; `pending`: one is already scheduled. */
  request(key: string, nowMs: number): 'now' | 'pending' | { delayMs: number } {
    if (this.pending.has(key)) return 'pending';
    const last = this.last.get(key);
    if (last === undefined || nowMs - last >= this.intervalMs) return 'now';
    this.pending.add(key);
    return { delayMs: last + this.intervalMs - nowMs };
  }

  /** Records a publish at `nowMs`. */
  published(key: string, nowMs: number): void {
    this.pending.delete(key);
    this.last.set(key, nowMs);
  }

  /** A scheduled turn came with nothing new to publish: the interval stays where it was. */
  skipped(key: string): void {
    this.pending.delete(key);
  }
}
