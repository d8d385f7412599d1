import type { ClearingMessage, MdMessage } from '../../proto/ndfex.js';
import { NDFEX_SYMBOLS, UNDY_SYMBOL_ID, MAX_LOT, type ExchangeSymbol } from '../../proto/symbols.js';
import { BUY, SELL, OrderBook, opposite, type RestingOrder, type Side } from './book.js';
import { Rng } from './rng.js';

/** Simulated market makers and takers: ids far from any roster's, so the engine ignores their fills. */
export const MAKER_IDS: readonly number[] = [9001, 9002, 9003];
export const TAKER_IDS: readonly number[] = [9101, 9102];

/** UNDY's basket on the exchange: one unit each of symbols 3..12. */
export const UNDY_COMPONENTS: readonly number[] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

/**
 * Most resting orders one incoming order may take: its trades and trade
 * summary must fit one datagram (30 × 39 + 36 bytes < 1400).
 */
export const MAX_FILLS_PER_ORDER = 30;

/** Price levels each maker quotes per side and symbol. */
const LEVELS = 2;

export interface MarketOptions {
  seed: number;
  /** client_ids of the roster's exchange accounts: they trade too, so demo teams see holdings move. */
  rosterIds?: readonly number[];
  /** Exchange timestamp in ns; a counter by default, so a seeded run is fully deterministic. */
  clock?: () => bigint;
}

/**
 * What one step put on the wire. Each `md` entry is a group of messages that
 * must travel in one datagram (trades with their trade summary); `clearing`
 * is the fills, in order.
 */
export interface SimOutput {
  md: MdMessage[][];
  clearing: ClearingMessage[];
}

/**
 * Everything a simulator needs to continue where it stopped (src/sim/state.ts
 * keeps it in DATA_DIR): the same seq numbers, later timestamps, the same
 * books, so a demo restart is not an exchange restart.
 */
export interface SimMarketState {
  v: 1;
  rng: number;
  mdSeq: number;
  clearingSeq: number;
  nextOrderId: string;
  lastTimestamp: string;
  undyPremium: number;
  fair: [number, number][];
  /** Every resting order, each book's bids then asks, best first. */
  orders: { id: string; owner: number; symbol: number; side: Side; quantity: number; price: number; slot?: string }[];
  positions: [number, [number, number][]][];
}

interface Quote extends RestingOrder {
  /** The maker slot this order fills, freed when it trades away. */
  slot?: string;
}

/**
 * The simulated exchange: random-walk fair values, makers quoting around
 * them, takers and roster teams trading against the quotes, and a matching
 * engine producing the NDFEX market-data and clearing messages. Pure and
 * synchronous: the caller decides when a step happens and what to do with
 * its messages.
 */
export class SimMarket {
  readonly symbols: readonly ExchangeSymbol[] = NDFEX_SYMBOLS;
  readonly books = new Map<number, OrderBook>();
  /** client_id → symbol → signed position, from every fill sent. */
  readonly positions = new Map<number, Map<number, number>>();
  private readonly slots = new Map<string, Quote>();
  private readonly fair = new Map<number, number>();
  /** UNDY's deviation from its basket's value: mean-reverting, so arbitrage opens and closes. */
  private undyPremium = 0;
  private rng: Rng;
  private readonly roster: readonly number[];
  private readonly clock: () => bigint;
  /** Timestamps never step back, not even across a restart (restoreState raises this floor). */
  private lastTimestamp = 0n;
  private mdSeq = 0;
  private clearingSeq = 0;
  private nextOrderId = 1n;
  private out: SimOutput = { md: [], clearing: [] };
  private now = 0n;

  constructor(opts: MarketOptions) {
    this.rng = new Rng(opts.seed);
    this.roster = [...(opts.rosterIds ?? [])];
    let fakeNs = 1_700_000_000_000_000_000n;
    const source = opts.clock ?? (() => (fakeNs += 1_000_000n));
    this.clock = () => {
      const t = source();
      this.lastTimestamp = t > this.lastTimestamp ? t : this.lastTimestamp + 1n;
      return this.lastTimestamp;
    };
    for (const s of this.symbols) {
      this.books.set(s.id, new OrderBook(s.id));
      if (s.id !== UNDY_SYMBOL_ID) this.fair.set(s.id, s.tickSize * this.rng.int(100, 400));
    }
    this.fair.set(UNDY_SYMBOL_ID, this.basketValue());
  }

  /** Last market-data seq_num sent (0 before the first message). */
  get lastMdSeq(): number {
    return this.mdSeq;
  }

  get lastClearingSeq(): number {
    return this.clearingSeq;
  }

  exportState(): SimMarketState {
    const orders: SimMarketState['orders'] = [];
    for (const book of this.books.values()) {
      for (const o of [...book.bids, ...book.asks] as Quote[]) {
        orders.push({ id: String(o.id), owner: o.owner, symbol: o.symbol, side: o.side, quantity: o.quantity, price: o.price, ...(o.slot ? { slot: o.slot } : {}) });
      }
    }
    return {
      v: 1,
      rng: this.rng.position,
      mdSeq: this.mdSeq,
      clearingSeq: this.clearingSeq,
      nextOrderId: String(this.nextOrderId),
      lastTimestamp: String(this.lastTimestamp),
      undyPremium: this.undyPremium,
      fair: [...this.fair],
      orders,
      positions: [...this.positions].map(([id, p]) => [id, [...p]]),
    };
  }

  /** Continues from `s`: the next messages follow its seq numbers and timestamps. */
  restoreState(s: SimMarketState): void {
    if (s.v !== 1) throw new Error(`simulator state version ${String(s.v)} is not 1`);
    this.rng = new Rng(s.rng);
    this.mdSeq = s.mdSeq;
    this.clearingSeq = s.clearingSeq;
    this.nextOrderId = BigInt(s.nextOrderId);
    this.lastTimestamp = BigInt(s.lastTimestamp);
    this.undyPremium = s.undyPremium;
    for (const [id, v] of s.fair) this.fair.set(id, v);
    this.slots.clear();
    for (const book of this.books.values()) book.bids.length = book.asks.length = 0;
    for (const o of s.orders) {
      const q: Quote = { id: BigInt(o.id), owner: o.owner, symbol: o.symbol, side: o.side, quantity: o.quantity, price: o.price, ...(o.slot ? { slot: o.slot } : {}) };
      // Saved best first: appending keeps price-time priority exactly.
      this.books.get(q.symbol)?.side(q.side).push(q);
      if (q.slot) this.slots.set(q.slot, q);
    }
    this.positions.clear();
    for (const [id, p] of s.positions) this.positions.set(id, new Map(p));
  }

  /**
   * After a crash some messages may have gone out after the last saved state:
   * skipping `n` seq numbers on both feeds guarantees none is sent twice with
   * other content (receivers see a gap, which is the truth).
   */
  skipSeqs(n: number): void {
    this.mdSeq += n;
    this.clearingSeq += n;
  }

  /** Runs one market event and returns the messages it produced. */
  step(): SimOutput {
    this.now = this.clock();
    const r = this.rng.next();
    if (r < 0.55) this.requote(this.rng.pick(MAKER_IDS), this.rng.pick(this.symbols));
    else if (r < 0.62) this.cancelSome();
    else if (r < 0.9 || this.roster.length === 0) this.takerTrade(this.rng.pick(TAKER_IDS));
    else this.rosterAction(this.rng.pick(this.roster));
    return this.drain();
  }

  /** Heartbeat for a feed that has been silent: it takes the next seq_num like any message. */
  mdHeartbeat(): MdMessage {
    return { type: 'heartbeat', seq: ++this.mdSeq, timestamp: this.clock() };
  }

  clearingHeartbeat(): ClearingMessage {
    return { type: 'heartbeat', seq: ++this.clearingSeq };
  }

  /**
   * The snapshot feed's content: per symbol a snapshot_info then a new_order
   * per resting order, all seq 0, pointing at the live seq_num they reflect.
   */
  snapshot(): MdMessage[] {
    const timestamp = this.clock();
    const msgs: MdMessage[] = [];
    for (const s of this.symbols) {
      const book = this.books.get(s.id)!;
      msgs.push({
        type: 'snapshot_info',
        seq: 0,
        timestamp,
        symbol: s.id,
        bid_count: book.bids.length,
        ask_count: book.asks.length,
        last_md_seq_num: this.mdSeq,
      });
      for (const o of [...book.bids, ...book.asks]) msgs.push(this.newOrderMsg(o, 0, timestamp));
    }
    return msgs;
  }

  // ------------------------------------------------------------ traders

  /** A maker moves its quotes on one symbol to the latest fair value. */
  private requote(maker: number, sym: ExchangeSymbol): void {
    const fair = this.walk(sym);
    const tick = sym.tickSize;
    const half = tick * this.rng.int(1, 3);
    const level = this.rng.int(0, LEVELS - 1);
    for (const side of [BUY, SELL] as const) {
      const raw = side === BUY ? fair - half - level * tick : fair + half + level * tick;
      const price = Math.max(tick, side === BUY ? Math.floor(raw / tick) * tick : Math.ceil(raw / tick) * tick);
      const quantity = this.rng.int(1, 20) * (level + 1);
      const slot = `${maker}:${sym.id}:${side}:${level}`;
      const current = this.slots.get(slot);
      if (current) this.modify(current, price, quantity);
      else this.place(maker, sym.id, side, quantity, price, { rest: true, slot });
    }
  }

  /** A maker pulls one quote, so the feed carries deletes and books thin out now and then. */
  private cancelSome(): void {
    const book = this.books.get(this.rng.pick(this.symbols).id)!;
    const side = this.rng.chance(0.5) ? book.bids : book.asks;
    if (side.length === 0) return;
    const o = this.rng.pick(side) as Quote;
    this.cancel(o);
  }

  private takerTrade(trader: number): void {
    const sym = this.rng.pick(this.symbols);
    this.take(trader, sym.id, this.rng.chance(0.5) ? BUY : SELL, this.rng.int(1, 10));
  }

  /**
   * A demo team trades. Baskets of UNDY's components are bought whole so the
   * team can create UNDY, and UNDY bought or sold so it can redeem or unwind.
   */
  private rosterAction(team: number): void {
    const r = this.rng.next();
    if (r < 0.35) {
      const units = this.rng.int(1, 3);
      for (const s of UNDY_COMPONENTS) this.take(team, s, BUY, units);
    } else if (r < 0.5) {
      this.take(team, UNDY_SYMBOL_ID, BUY, this.rng.int(1, 2));
    } else if (r < 0.65) {
      const held = this.position(team, UNDY_SYMBOL_ID);
      if (held > 0) this.take(team, UNDY_SYMBOL_ID, SELL, Math.min(held, this.rng.int(1, 2)));
    } else {
      this.take(team, this.rng.pick(this.symbols).id, this.rng.chance(0.6) ? BUY : SELL, this.rng.int(1, 5));
    }
  }

  // ------------------------------------------------------------ fair values

  /** Moves a symbol's fair value one random step and returns it. UNDY follows its basket plus a premium. */
  private walk(sym: ExchangeSymbol): number {
    if (sym.id === UNDY_SYMBOL_ID) {
      // Mean-reverting premium, a few dozen ticks wide: enough to beat the spreads now and then.
      this.undyPremium = this.undyPremium * 0.97 + this.rng.gaussian() * sym.tickSize * 3;
      const v = Math.max(sym.tickSize * 10, this.basketValue() + this.undyPremium);
      this.fair.set(sym.id, v);
      return v;
    }
    const prev = this.fair.get(sym.id)!;
    const v = Math.max(sym.tickSize * 20, prev + this.rng.gaussian() * sym.tickSize * 0.7);
    this.fair.set(sym.id, v);
    return v;
  }

  private basketValue(): number {
    return UNDY_COMPONENTS.reduce((sum, s) => sum + this.fair.get(s)!, 0);
  }

  // ------------------------------------------------------------ orders

  /** An immediate-or-cancel order sweeping a few ticks through the other side; what does not trade is dropped. */
  private take(trader: number, symbol: number, side: Side, quantity: number): void {
    const book = this.books.get(symbol)!;
    const top = book.best(opposite(side));
    if (!top) return;
    const tick = this.tickOf(symbol);
    const price = side === BUY ? top.price + 2 * tick : Math.max(tick, top.price - 2 * tick);
    this.place(trader, symbol, side, quantity, price, { rest: false });
  }

  /**
   * Matches an incoming limit order, then rests what is left when asked to,
   * unless it still crosses (only when it hit MAX_FILLS_PER_ORDER): a crossed
   * book is never published.
   */
  private place(owner: number, symbol: number, side: Side, quantity: number, price: number, opts: { rest: boolean; slot?: string }): void {
    const book = this.books.get(symbol)!;
    const qty = Math.min(quantity, MAX_LOT);
    const { executions, left } = book.match(side, price, qty, MAX_FILLS_PER_ORDER);
    if (executions.length > 0) {
      const group: MdMessage[] = [];
      let total = 0;
      for (const e of executions) {
        group.push({ type: 'trade', seq: ++this.mdSeq, timestamp: this.now, order_id: e.resting.id, quantity: e.quantity, price: e.price });
        total += e.quantity;
        this.fill(e.resting.owner, symbol, e.quantity, e.price, e.resting.side);
        this.fill(owner, symbol, e.quantity, e.price, side);
        if (e.resting.quantity === 0) this.forget(e.resting as Quote);
      }
      const last = executions[executions.length - 1]!;
      group.push({
        type: 'trade_summary',
        seq: ++this.mdSeq,
        timestamp: this.now,
        symbol,
        aggressor_side: side,
        total_quantity: total,
        last_price: last.price,
      });
      this.out.md.push(group);
    }
    if (!opts.rest || left === 0 || book.crosses(side, price)) return;
    const o: Quote = { id: this.nextOrderId++, owner, symbol, side, quantity: left, price, slot: opts.slot };
    book.add(o);
    if (o.slot) this.slots.set(o.slot, o);
    this.out.md.push([this.newOrderMsg(o, ++this.mdSeq, this.now)]);
  }

  /** Re-prices a resting order in place, or, when the new price would trade, pulls it and sends a fresh order. */
  private modify(o: Quote, price: number, quantity: number): void {
    if (o.price === price && o.quantity === quantity) return;
    const book = this.books.get(o.symbol)!;
    book.remove(o);
    if (book.crosses(o.side, price)) {
      this.forget(o);
      this.out.md.push([{ type: 'delete_order', seq: ++this.mdSeq, timestamp: this.now, order_id: o.id }]);
      this.place(o.owner, o.symbol, o.side, quantity, price, { rest: true, slot: o.slot });
      return;
    }
    o.price = price;
    o.quantity = quantity;
    book.add(o); // a modify loses time priority
    this.out.md.push([{ type: 'modify_order', seq: ++this.mdSeq, timestamp: this.now, order_id: o.id, side: o.side, quantity, price }]);
  }

  private cancel(o: Quote): void {
    this.books.get(o.symbol)!.remove(o);
    this.forget(o);
    this.out.md.push([{ type: 'delete_order', seq: ++this.mdSeq, timestamp: this.now, order_id: o.id }]);
  }

  /** Drops an order that left the book from the indexes. */
  private forget(o: Quote): void {
    if (o.slot && this.slots.get(o.slot) === o) this.slots.delete(o.slot);
  }

  private fill(clientId: number, symbol: number, quantity: number, price: number, side: Side): void {
    this.out.clearing.push({ type: 'fill', seq: ++this.clearingSeq, client_id: clientId, symbol, quantity, price, side });
    let pos = this.positions.get(clientId);
    if (!pos) this.positions.set(clientId, (pos = new Map()));
    pos.set(symbol, (pos.get(symbol) ?? 0) + (side === BUY ? quantity : -quantity));
  }

  position(clientId: number, symbol: number): number {
    return this.positions.get(clientId)?.get(symbol) ?? 0;
  }

  private newOrderMsg(o: RestingOrder, seq: number, timestamp: bigint): MdMessage {
    return { type: 'new_order', seq, timestamp, order_id: o.id, symbol: o.symbol, side: o.side, quantity: o.quantity, price: o.price, flags: 0 };
  }

  private tickOf(symbol: number): number {
    return this.symbols.find((s) => s.id === symbol)!.tickSize;
  }

  private drain(): SimOutput {
    const out = this.out;
    this.out = { md: [], clearing: [] };
    return out;
  }
}
