/** Order sides as the NDFEX feeds carry them. */
export const BUY = 1;
export const SELL = 2;
export type Side = typeof BUY | typeof SELL;

export const opposite = (side: Side): Side => (side === BUY ? SELL : BUY);

export interface RestingOrder {
  id: bigint;
  /** client_id of the trader who owns it. */
  owner: number;
  symbol: number;
  side: Side;
  quantity: number;
  price: number;
}

/** One match of an incoming order against a resting one, at the resting order's price. */
export interface Execution {
  resting: RestingOrder;
  quantity: number;
  price: number;
}

/**
 * One symbol's limit order book with price-time priority. Each side is an
 * array kept best-first: books here hold tens of orders, where a sorted array
 * beats any tree.
 */
export class OrderBook {
  /** Best (highest) price first; equal prices in arrival order. */
  readonly bids: RestingOrder[] = [];
  /** Best (lowest) price first; equal prices in arrival order. */
  readonly asks: RestingOrder[] = [];

  constructor(readonly symbol: number) {}

  side(side: Side): RestingOrder[] {
    return side === BUY ? this.bids : this.asks;
  }

  best(side: Side): RestingOrder | undefined {
    return this.side(side)[0];
  }

  /** Would an order at `price` on `side` trade against the other side? */
  crosses(side: Side, price: number): boolean {
    const top = this.best(opposite(side));
    return top !== undefined && (side === BUY ? price >= top.price : price <= top.price);
  }

  /** Rests an order behind every order at its price or better. */
  add(o: RestingOrder): void {
    const list = this.side(o.side);
    const behind = o.side === BUY ? (r: RestingOrder) => r.price < o.price : (r: RestingOrder) => r.price > o.price;
    const at = list.findIndex(behind);
    if (at === -1) list.push(o);
    else list.splice(at, 0, o);
  }

  remove(o: RestingOrder): boolean {
    const list = this.side(o.side);
    const at = list.indexOf(o);
    if (at === -1) return false;
    list.splice(at, 1);
    return true;
  }

  /**
   * Matches an incoming order against the other side while it crosses, taking
   * at most `maxFills` resting orders. Resting orders are reduced in place and
   * removed once empty. Returns the executions and the quantity left.
   */
  match(side: Side, price: number, quantity: number, maxFills: number): { executions: Execution[]; left: number } {
    const other = this.side(opposite(side));
    const executions: Execution[] = [];
    let left = quantity;
    while (left > 0 && executions.length < maxFills) {
      const top = other[0];
      if (top === undefined || (side === BUY ? price < top.price : price > top.price)) break;
      const q = Math.min(left, top.quantity);
      top.quantity -= q;
      left -= q;
      executions.push({ resting: top, quantity: q, price: top.price });
      if (top.quantity === 0) other.shift();
    }
    return { executions, left };
  }
}
