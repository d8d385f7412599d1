/**
 * Pure order books rebuilt from the NDFEX market-data messages. Orders are
 * found by order_id alone (modify/delete/trade carry no symbol), so one index
 * maps every live order to its symbol's book. Side 1 is a bid, 2 an ask (as on
 * the clearing feed).
 */
export const BOOK_BID = 1;
export const BOOK_ASK = 2;

export interface Order {
  side: number;
  quantity: number;
  price: number;
}

export interface Top {
  bid: number | null;
  bid_qty: number;
  ask: number | null;
  ask_qty: number;
}

/** Total quantity per price on one side, with the best price cached (levels are few; a rescan is cheap). */
class Side {
  readonly levels = new Map<number, number>();
  best: number | null = null;

  constructor(private readonly isBetter: (a: number, b: number) => boolean) {}

  add(price: number, qty: number): void {
    this.levels.set(price, (this.levels.get(price) ?? 0) + qty);
    if (this.best === null || this.isBetter(price, this.best)) this.best = price;
  }

  remove(price: number, qty: number): void {
    const left = (this.levels.get(price) ?? 0) - qty;
    if (left > 0) {
      this.levels.set(price, left);
      return;
    }
    this.levels.delete(price);
    if (price === this.best) {
      this.best = null;
      for (const p of this.levels.keys()) if (this.best === null || this.isBetter(p, this.best)) this.best = p;
    }
  }

  get bestQty(): number {
    return this.best === null ? 0 : (this.levels.get(this.best) ?? 0);
  }
}

export class SymbolBook {
  readonly orders = new Map<bigint, Order>();
  readonly bids = new Side((a, b) => a > b);
  readonly asks = new Side((a, b) => a < b);

  side(side: number): Side {
    return side === BOOK_BID ? this.bids : this.asks;
  }

  top(): Top {
    return { bid: this.bids.best, bid_qty: this.bids.bestQty, ask: this.asks.best, ask_qty: this.asks.bestQty };
  }
}

const validSide = (s: number) => s === BOOK_BID || s === BOOK_ASK;

export class Books {
  readonly bySymbol = new Map<number, SymbolBook>();
  /** order_id → symbol of every resting order. */
  readonly index = new Map<bigint, number>();
  /** Messages that named an order we do not hold, or carried a side that is neither 1 nor 2. */
  rejected = 0;

  book(symbol: number): SymbolBook {
    let b = this.bySymbol.get(symbol);
    if (!b) {
      b = new SymbolBook();
      this.bySymbol.set(symbol, b);
    }
    return b;
  }

  symbolOf(orderId: bigint): number | undefined {
    return this.index.get(orderId);
  }

  /** Returns the symbol whose book changed, or undefined when the message was refused. */
  add(orderId: bigint, symbol: number, side: number, quantity: number, price: number): number | undefined {
    if (!validSide(side)) return this.reject();
    if (this.index.has(orderId)) this.remove(orderId); // a re-used id replaces the old order
    if (quantity <= 0) return symbol;
    const b = this.book(symbol);
    b.orders.set(orderId, { side, quantity, price });
    b.side(side).add(price, quantity);
    this.index.set(orderId, symbol);
    return symbol;
  }

  modify(orderId: bigint, side: number, quantity: number, price: number): number | undefined {
    const symbol = this.index.get(orderId);
    if (symbol === undefined || !validSide(side)) return this.reject();
    const b = this.book(symbol);
    const o = b.orders.get(orderId)!;
    b.side(o.side).remove(o.price, o.quantity);
    if (quantity <= 0) {
      b.orders.delete(orderId);
      this.index.delete(orderId);
      return symbol;
    }
    o.side = side;
    o.quantity = quantity;
    o.price = price;
    b.side(side).add(price, quantity);
    return symbol;
  }

  remove(orderId: bigint): number | undefined {
    const symbol = this.index.get(orderId);
    if (symbol === undefined) return this.reject();
    const b = this.book(symbol);
    const o = b.orders.get(orderId)!;
    b.side(o.side).remove(o.price, o.quantity);
    b.orders.delete(orderId);
    this.index.delete(orderId);
    return symbol;
  }

  /** A trade against a resting order: its quantity shrinks, and it leaves the book at 0. */
  trade(orderId: bigint, quantity: number): number | undefined {
    const symbol = this.index.get(orderId);
    if (symbol === undefined) return this.reject();
    const b = this.book(symbol);
    const o = b.orders.get(orderId)!;
    const q = Math.min(quantity, o.quantity);
    b.side(o.side).remove(o.price, q);
    o.quantity -= q;
    if (o.quantity === 0) {
      b.orders.delete(orderId);
      this.index.delete(orderId);
    }
    return symbol;
  }

  clearSymbol(symbol: number): void {
    const b = this.bySymbol.get(symbol);
    if (!b) return;
    for (const id of b.orders.keys()) this.index.delete(id);
    this.bySymbol.delete(symbol);
  }

  clearAll(): void {
    this.bySymbol.clear();
    this.index.clear();
  }

  top(symbol: number): Top {
    return this.bySymbol.get(symbol)?.top() ?? { bid: null, bid_qty: 0, ask: null, ask_qty: 0 };
  }

  private reject(): undefined {
    this.rejected++;
    return undefined;
  }
}
