import { describe, expect, it } from 'vitest';
import type { MdMessage } from '../proto/ndfex.js';
import { Books } from '../src/feed/book.js';
import { MarketData } from '../src/feed/marketdata.js';
import { SeqTracker } from '../src/feed/integrity.js';
import { AlertThrottle } from '../src/feed/alerts.js';

const T = 1_000n;
let ts = T;
const at = () => (ts += 1n);
const nw = (seq: number, id: number, symbol: number, side: number, quantity: number, price: number): MdMessage => ({
  type: 'new_order', seq, timestamp: at(), order_id: BigInt(id), symbol, side, quantity, price, flags: 0,
});
const del = (seq: number, id: number): MdMessage => ({ type: 'delete_order', seq, timestamp: at(), order_id: BigInt(id) });
const mod = (seq: number, id: number, side: number, quantity: number, price: number): MdMessage => ({
  type: 'modify_order', seq, timestamp: at(), order_id: BigInt(id), side, quantity, price,
});
const trade = (seq: number, id: number, quantity: number, price: number): MdMessage => ({ type: 'trade', seq, timestamp: at(), order_id: BigInt(id), quantity, price });
const info = (symbol: number, bids: number, asks: number, last: number): MdMessage => ({
  type: 'snapshot_info', seq: 0, timestamp: at(), symbol, bid_count: bids, ask_count: asks, last_md_seq_num: last,
});
const top = (md: MarketData, s: number) => md.books.top(s);

describe('SeqTracker', () => {
  it('tells next, gap, late and restart apart and counts them', () => {
    const t = new SeqTracker();
    expect(t.observe(5).kind).toBe('first');
    expect(t.observe(6).kind).toBe('next');
    expect(t.observe(9)).toEqual({ kind: 'gap', expected: 7, received: 9, missed: 2 });
    expect(t.observe(8).kind).toBe('late'); // reordered or re-sent
    expect(t.observe(9).kind).toBe('late');
    expect(t.observe(1)).toEqual({ kind: 'restart', previous: 9 });
    expect(t.observe(2).kind).toBe('next');
    expect(t.counters).toMatchObject({ messages: 7, gaps: 1, missed_messages: 2, restarts: 1, last_seq: 2 });
  });

  it('takes a jump back beyond the reorder window as a restart, and resumes from a saved position', () => {
    const t = new SeqTracker(1000, 64);
    expect(t.observe(1001).kind).toBe('next');
    expect(t.observe(950).kind).toBe('late');
    expect(t.observe(900).kind).toBe('restart');
  });
});

describe('Books', () => {
  it('keeps best bid/ask and quantity through new, modify, trade and delete', () => {
    const b = new Books();
    b.add(1n, 3, 1, 10, 100);
    b.add(2n, 3, 1, 5, 100);
    b.add(3n, 3, 1, 7, 95);
    b.add(4n, 3, 2, 4, 110);
    b.add(5n, 3, 2, 6, 105);
    expect(b.top(3)).toEqual({ bid: 100, bid_qty: 15, ask: 105, ask_qty: 6 });
    b.trade(5n, 6); // best ask filled away
    expect(b.top(3)).toEqual({ bid: 100, bid_qty: 15, ask: 110, ask_qty: 4 });
    b.trade(1n, 4);
    expect(b.top(3)).toEqual({ bid: 100, bid_qty: 11, ask: 110, ask_qty: 4 });
    b.modify(2n, 1, 5, 90); // leaves the best level
    expect(b.top(3)).toEqual({ bid: 100, bid_qty: 6, ask: 110, ask_qty: 4 });
    b.remove(1n);
    expect(b.top(3)).toEqual({ bid: 95, bid_qty: 7, ask: 110, ask_qty: 4 });
    b.modify(3n, 2, 2, 108); // a modify may change side
    expect(b.top(3)).toEqual({ bid: 90, bid_qty: 5, ask: 108, ask_qty: 2 });
    expect(b.remove(99n)).toBeUndefined();
    expect(b.rejected).toBe(1);
    expect(b.top(4)).toEqual({ bid: null, bid_qty: 0, ask: null, ask_qty: 0 });
  });
});

describe('MarketData', () => {
  it('publishes one Bbo per changed symbol per datagram, matching a hand computation', () => {
    const md = new MarketData();
    // Datagram 1: three orders on symbol 5, one on 6.
    let out = md.onLive([nw(1, 1, 5, 1, 10, 100), nw(2, 2, 5, 2, 20, 110), nw(3, 3, 5, 1, 5, 101), nw(4, 4, 6, 2, 1, 50)], 0);
    expect(out.notices).toEqual([]);
    expect(out.bbos.map(({ ts: _t, ...b }) => b)).toEqual([
      { symbol: 5, bid: 101, bid_qty: 5, ask: 110, ask_qty: 20, md_seq: 3 },
      { symbol: 6, bid: null, bid_qty: 0, ask: 50, ask_qty: 1, md_seq: 4 },
    ]);
    // Datagram 2: a trade takes the whole best bid (101x5), its summary, then a deeper bid.
    out = md.onLive([trade(5, 3, 5, 101), { type: 'trade_summary', seq: 6, timestamp: at(), symbol: 5, aggressor_side: 2, total_quantity: 5, last_price: 101 }, nw(7, 5, 5, 1, 3, 90)], 0);
    expect(out.bbos.map(({ ts: _t, ...b }) => b)).toEqual([{ symbol: 5, bid: 100, bid_qty: 10, ask: 110, ask_qty: 20, md_seq: 7 }]);
    // Datagram 3: a change below the top publishes nothing.
    out = md.onLive([mod(8, 5, 1, 4, 91)], 0);
    expect(out.bbos).toEqual([]);
    // Datagram 4: modify the best ask's quantity, delete the best bid.
    out = md.onLive([mod(9, 2, 2, 15, 110), del(10, 1)], 0);
    expect(out.bbos.map(({ ts: _t, ...b }) => b)).toEqual([{ symbol: 5, bid: 91, bid_qty: 4, ask: 110, ask_qty: 15, md_seq: 10 }]);
  });

  it('reports a gap and an exchange restart (books cleared, empty Bbos published)', () => {
    const md = new MarketData();
    md.onLive([nw(1, 1, 5, 1, 10, 100)], 0);
    const gap = md.onLive([nw(4, 2, 5, 2, 10, 120)], 0);
    expect(gap.notices).toEqual([{ seq: 4, event: { kind: 'gap', expected: 2, received: 4, missed: 2 } }]);
    expect(gap.bbos).toEqual([]); // books untrusted until a snapshot: not applied
    const restart = md.onLive([nw(1, 10, 7, 1, 1, 10)], 0);
    expect(restart.notices[0]?.event.kind).toBe('restart');
    expect(restart.bbos.map(({ ts: _t, ...b }) => b)).toEqual([
      { symbol: 5, bid: null, bid_qty: 0, ask: null, ask_qty: 0, md_seq: 1 },
      { symbol: 7, bid: 10, bid_qty: 1, ask: null, ask_qty: 0, md_seq: 1 },
    ]);
  });

  it('a late joiner rebuilds a book from the snapshot plus the live messages after it', () => {
    const md = new MarketData();
    // Live feed already at seq 40 when we join: buffered, nothing trusted yet.
    const live1 = md.onLive([nw(41, 100, 3, 1, 5, 99), mod(42, 7, 1, 8, 100), trade(43, 8, 2, 105)], 0);
    expect(live1.bbos).toEqual([]);
    // Snapshot of symbol 3 as of seq 41: orders 7 (bid 100x4), 100 (bid 99x5, already included), 8 (ask 105x3).
    const snap = md.onSnapshot([info(3, 2, 1, 41), nw(0, 7, 3, 1, 4, 100), nw(0, 100, 3, 1, 5, 99), nw(0, 8, 3, 2, 3, 105)]);
    // Then seq 42 (order 7 to 8 lots) and 43 (trade of 2 against order 8) are applied on top.
    expect(snap.map(({ ts: _t, ...b }) => b)).toEqual([{ symbol: 3, bid: 100, bid_qty: 8, ask: 105, ask_qty: 1, md_seq: 43 }]);
    expect(md.isSynced(3)).toBe(true);
    expect(md.isSynced(4)).toBe(false);
    // Live continues; symbol 4's orders wait for their own snapshot, symbol 3 updates live.
    const live2 = md.onLive([nw(44, 200, 4, 2, 1, 500), del(45, 8)], 0);
    expect(live2.bbos.map(({ ts: _t, ...b }) => b)).toEqual([{ symbol: 3, bid: 100, bid_qty: 8, ask: null, ask_qty: 0, md_seq: 45 }]);
    // A snapshot older than the buffer's start (live seen from 41) cannot be caught up: ignored.
    expect(md.onSnapshot([info(4, 0, 0, 30)])).toEqual([]);
    expect(md.isSynced(4)).toBe(false);
    // An empty snapshot at 43, then buffered seq 44 adds the ask.
    expect(md.onSnapshot([info(4, 0, 1, 43), nw(0, 9, 4, 2, 2, 510)]).map((b) => [b.symbol, b.ask, b.ask_qty])).toEqual([[4, 500, 1]]);
    expect(top(md, 4)).toEqual({ bid: null, bid_qty: 0, ask: 500, ask_qty: 1 });
    // Later snapshots of a synced symbol change nothing.
    expect(md.onSnapshot([info(4, 0, 0, 45)])).toEqual([]);
  });

  it('a snapshot ahead of the live feed skips the live messages it already contains', () => {
    const md = new MarketData();
    expect(md.onSnapshot([info(9, 1, 0, 60), nw(0, 1, 9, 1, 10, 100)]).map((b) => b.bid)).toEqual([100]);
    // seq 59..60 are in the snapshot already; 61 is new.
    const out = md.onLive([nw(59, 1, 9, 1, 10, 100), mod(60, 1, 1, 10, 100), mod(61, 1, 1, 12, 100)], 0);
    expect(out.bbos.map((b) => [b.bid, b.bid_qty, b.md_seq])).toEqual([[100, 12, 61]]);
  });

  it('a snapshot taken before the first live message heard is not trusted (messages in between were missed)', () => {
    const md = new MarketData();
    md.onSnapshot([info(9, 1, 0, 50), nw(0, 1, 9, 1, 10, 100)]);
    expect(md.isSynced(9)).toBe(true);
    md.onLive([mod(53, 1, 1, 12, 100)], 0); // 51 and 52 never heard
    expect(md.isSynced(9)).toBe(false);
    // The next snapshot (as of 53) brings it back.
    expect(md.onSnapshot([info(9, 1, 0, 53), nw(0, 1, 9, 1, 12, 100)]).map((b) => [b.bid, b.bid_qty])).toEqual([[100, 12]]);
    expect(md.isSynced(9)).toBe(true);
  });

  it('distrusts a crossed snapshot book, or one the live feed contradicts, and serves the live orders instead', () => {
    const md = new MarketData();
    md.onLive([nw(41, 500, 3, 1, 5, 100), nw(42, 501, 3, 2, 5, 105), nw(43, 600, 4, 1, 1, 50)], 0);
    // Crossed: the snapshot's bid 110 is above the live ask 105.
    const crossed = md.onSnapshot([info(3, 1, 1, 43), nw(0, 7, 3, 1, 9, 110), nw(0, 501, 3, 2, 5, 105)]);
    expect(crossed.map((b) => [b.symbol, b.bid, b.ask])).toEqual([[3, 100, 105]]);
    expect(md.drainDistrust()[0]).toMatch(/symbol 3's book is crossed/);
    // Contradicted: symbol 4's snapshot lacks order 600, which the live feed then modifies.
    md.onSnapshot([info(4, 1, 0, 43), nw(0, 8, 4, 1, 1, 40)]);
    const out = md.onLive([mod(44, 600, 1, 3, 50)], 0);
    expect(md.drainDistrust()[0]).toMatch(/snapshot of symbol 4 disagrees with the live feed/);
    expect(out.bbos.map((b) => [b.symbol, b.bid, b.bid_qty])).toEqual([[4, 50, 3]]);
    expect(md.stats.books_distrusted).toBe(2);
  });

  it('serves a symbol no snapshot came for from its live orders once the buffer time has passed', () => {
    const md = new MarketData(5000);
    expect(md.onLive([nw(41, 500, 6, 1, 5, 100)], 0).bbos).toEqual([]);
    const later = md.onLive([nw(42, 501, 6, 2, 5, 105)], 6000);
    expect(later.bbos.map((b) => [b.symbol, b.bid, b.ask])).toEqual([[6, 100, 105]]);
    expect(md.drainDistrust()[0]).toMatch(/no trustworthy snapshot of symbol 6/);
  });

  it('a snapshot split across datagrams is assembled; an interrupted one is dropped', () => {
    const md = new MarketData();
    md.onLive([nw(10, 1, 2, 1, 1, 1)], 0);
    expect(md.onSnapshot([info(2, 2, 0, 10), nw(0, 1, 2, 1, 1, 1)])).toEqual([]);
    expect(md.onSnapshot([info(8, 0, 0, 10)])).toEqual([]); // interrupts symbol 2's snapshot
    expect(md.isSynced(2)).toBe(false);
    expect(md.onSnapshot([info(2, 2, 0, 10), nw(0, 1, 2, 1, 1, 1)])).toEqual([]);
    expect(md.onSnapshot([nw(0, 2, 2, 1, 3, 2)]).map((b) => [b.bid, b.bid_qty])).toEqual([[2, 3]]);
  });
});

describe('AlertThrottle', () => {
  it('lets perSecond alerts of a key through per second and reports the held-back count with the next one', () => {
    const t = new AlertThrottle(2);
    expect([t.admit('a', 0), t.admit('a', 10), t.admit('a', 20), t.admit('a', 30)].map((r) => r.send)).toEqual([true, true, false, false]);
    expect(t.admit('b', 40)).toEqual({ send: true, suppressed: 0 }); // keys are independent
    expect(t.admit('a', 1000)).toEqual({ send: true, suppressed: 2 });
    expect(t.admit('a', 1001)).toEqual({ send: true, suppressed: 0 });
  });
});
