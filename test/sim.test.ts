import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeClearingDatagram, decodeMdDatagram, mdMessageBytes, type ClearingMessage, type MdFeed, type MdMessage } from '../proto/ndfex.js';
import { NDFEX_SYMBOLS, UNDY_SYMBOL_ID } from '../proto/symbols.js';
import { SimMarket, UNDY_COMPONENTS, MAKER_IDS } from '../src/sim/market.js';
import { packClearing, packMd, MAX_DATAGRAM_BYTES } from '../src/sim/datagrams.js';
import { startSimulator, type SimulatorHandle } from '../src/sim/service.js';
import { parseEndpoint, simSettingsFromEnv } from '../src/config/sim.js';
import { quietLog } from './helpers/system.js';

const tick = new Map(NDFEX_SYMBOLS.map((s) => [s.id, s.tickSize]));
const ROSTER = [1, 2];

interface BookOrder {
  symbol: number;
  side: number;
  quantity: number;
  price: number;
}

/** Rebuilds books from market-data messages as a feed consumer would; throws on anything inconsistent. */
class FeedBooks {
  readonly orders = new Map<bigint, BookOrder>();
  apply(m: MdMessage): void {
    switch (m.type) {
      case 'new_order':
        if (this.orders.has(m.order_id)) throw new Error(`order ${m.order_id} added twice`);
        this.orders.set(m.order_id, { symbol: m.symbol, side: m.side, quantity: m.quantity, price: m.price });
        break;
      case 'modify_order': {
        const o = this.orders.get(m.order_id);
        if (!o) throw new Error(`modify of unknown order ${m.order_id}`);
        Object.assign(o, { side: m.side, quantity: m.quantity, price: m.price });
        break;
      }
      case 'delete_order':
        if (!this.orders.delete(m.order_id)) throw new Error(`delete of unknown order ${m.order_id}`);
        break;
      case 'trade': {
        const o = this.orders.get(m.order_id);
        if (!o) throw new Error(`trade on unknown order ${m.order_id}`);
        if (m.quantity > o.quantity || m.price !== o.price) throw new Error(`trade ${m.seq} does not fit order ${m.order_id}`);
        o.quantity -= m.quantity;
        if (o.quantity === 0) this.orders.delete(m.order_id);
        break;
      }
      default:
        break;
    }
  }
  /** symbol → sorted "side price qty" lines, comparable with the market's own books. */
  view(): Map<number, string[]> {
    const v = new Map<number, string[]>();
    for (const o of this.orders.values()) {
      const lines = v.get(o.symbol) ?? [];
      lines.push(`${o.side} ${o.price} ${o.quantity}`);
      v.set(o.symbol, lines);
    }
    for (const l of v.values()) l.sort();
    return v;
  }
}

function marketView(market: SimMarket): Map<number, string[]> {
  const v = new Map<number, string[]>();
  for (const [symbol, book] of market.books) {
    const lines = [...book.bids, ...book.asks].map((o) => `${o.side} ${o.price} ${o.quantity}`).sort();
    if (lines.length > 0) v.set(symbol, lines);
  }
  return v;
}

const priceOf = (m: MdMessage): number | undefined =>
  m.type === 'new_order' || m.type === 'modify_order' || m.type === 'trade' ? m.price : m.type === 'trade_summary' ? m.last_price : undefined;

describe('simulated market core', () => {
  it('keeps every invariant over thousands of seeded events', () => {
    const market = new SimMarket({ seed: 42, rosterIds: ROSTER });
    const md: MdMessage[] = [];
    const clearing: ClearingMessage[] = [];
    const feed = new FeedBooks();
    const symbolOfOrder = new Map<bigint, number>();
    let trades = 0;
    const crossed: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const out = market.step();
      if (i % 500 === 0) {
        out.md.push([market.mdHeartbeat()]);
        out.clearing.push(market.clearingHeartbeat());
      }
      // Fills come in pairs, one per side of each trade, in trade order.
      const fills = out.clearing.filter((m) => m.type === 'fill');
      const tradeMsgs = out.md.flat().filter((m) => m.type === 'trade');
      expect(fills.length).toBe(2 * tradeMsgs.length);
      tradeMsgs.forEach((t, k) => {
        const [a, b] = [fills[2 * k]!, fills[2 * k + 1]!];
        expect([a.quantity, b.quantity, a.price, b.price]).toEqual([t.quantity, t.quantity, t.price, t.price]);
        expect(a.symbol).toBe(b.symbol);
        expect(a.side + b.side).toBe(3);
      });
      for (const group of out.md) {
        // A trade group is trades then their summary, whose total and symbol match.
        const ts = group.filter((m) => m.type === 'trade');
        if (ts.length > 0) {
          const summary = group[group.length - 1]!;
          expect(summary.type).toBe('trade_summary');
          if (summary.type !== 'trade_summary') continue;
          expect(summary.total_quantity).toBe(ts.reduce((n, t) => n + t.quantity, 0));
          for (const t of ts) expect(symbolOfOrder.get(t.order_id)).toBe(summary.symbol);
          trades += ts.length;
        }
        for (const m of group) {
          if (m.type === 'new_order') symbolOfOrder.set(m.order_id, m.symbol);
          feed.apply(m);
          md.push(m);
        }
      }
      clearing.push(...out.clearing);
      for (const book of market.books.values()) {
        const [bid, ask] = [book.bids[0], book.asks[0]];
        if (bid && ask && bid.price >= ask.price) crossed.push(`step ${i}: symbol ${book.symbol} ${bid.price} >= ${ask.price}`);
      }
    }
    expect(crossed).toEqual([]);

    expect(trades).toBeGreaterThan(1000);
    expect(md.map((m) => m.seq)).toEqual(md.map((_, i) => i + 1));
    expect(clearing.map((m) => m.seq)).toEqual(clearing.map((_, i) => i + 1));

    for (const m of md) {
      const p = priceOf(m);
      const sym = m.type === 'new_order' || m.type === 'trade_summary' ? m.symbol : symbolOfOrder.get((m as { order_id: bigint }).order_id);
      if (p === undefined || sym === undefined) continue;
      expect(p).toBeGreaterThan(0);
      expect(p % tick.get(sym)!).toBe(0);
    }
    for (const f of clearing) if (f.type === 'fill') expect(f.price % tick.get(f.symbol)!).toBe(0);

    // Positions net to zero per symbol across everyone who traded.
    for (const s of NDFEX_SYMBOLS) {
      let sum = 0;
      for (const pos of market.positions.values()) sum += pos.get(s.id) ?? 0;
      expect(sum).toBe(0);
    }

    // Demo teams traded, and bought whole baskets of UNDY's components.
    for (const team of ROSTER) {
      const buys = clearing.filter((f) => f.type === 'fill' && f.client_id === team && f.side === 1);
      for (const s of UNDY_COMPONENTS) expect(buys.some((f) => f.type === 'fill' && f.symbol === s)).toBe(true);
    }
    // Simulated traders never use a roster id.
    for (const id of MAKER_IDS) expect(ROSTER).not.toContain(id);

    // The feed alone rebuilds the market's books exactly.
    expect(feed.view()).toEqual(marketView(market));

    // UNDY trades near its basket: within 5% of the sum of the components' mids.
    const mid = (s: number) => {
      const b = market.books.get(s)!;
      return (b.bids[0]!.price + b.asks[0]!.price) / 2;
    };
    const basket = UNDY_COMPONENTS.reduce((n, s) => n + mid(s), 0);
    expect(Math.abs(mid(UNDY_SYMBOL_ID) - basket) / basket).toBeLessThan(0.05);
  });

  it('is deterministic for a seed', () => {
    const run = (seed: number) => {
      const m = new SimMarket({ seed, rosterIds: ROSTER });
      const out: unknown[] = [];
      for (let i = 0; i < 2000; i++) out.push(m.step());
      return out;
    };
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
  });

  it('snapshots every resting order, pointing at the live seq_num', () => {
    const market = new SimMarket({ seed: 3, rosterIds: ROSTER });
    for (let i = 0; i < 3000; i++) market.step();
    const snap = market.snapshot();
    expect(snap.every((m) => m.seq === 0)).toBe(true);
    const infos = snap.filter((m) => m.type === 'snapshot_info');
    expect(infos.map((m) => m.symbol)).toEqual(NDFEX_SYMBOLS.map((s) => s.id));
    for (const info of infos) if (info.type === 'snapshot_info') expect(info.last_md_seq_num).toBe(market.lastMdSeq);
    const feed = new FeedBooks();
    snap.forEach((m) => feed.apply(m));
    expect(feed.view()).toEqual(marketView(market));
    // Counts in each snapshot_info match the orders that follow it.
    let i = 0;
    while (i < snap.length) {
      const info = snap[i]!;
      if (info.type !== 'snapshot_info') throw new Error('snapshot_info expected');
      const orders = snap.slice(i + 1, i + 1 + info.bid_count + info.ask_count);
      expect(orders.every((o) => o.type === 'new_order' && o.symbol === info.symbol)).toBe(true);
      expect(orders.filter((o) => o.type === 'new_order' && o.side === 1).length).toBe(info.bid_count);
      i += 1 + info.bid_count + info.ask_count;
    }
  });

  it('packs datagrams under the size limit, trades with their summary, losslessly', () => {
    const market = new SimMarket({ seed: 5, rosterIds: ROSTER });
    const groups: MdMessage[][] = [];
    const fills: ClearingMessage[] = [];
    for (let i = 0; i < 2000; i++) {
      const out = market.step();
      groups.push(...out.md);
      fills.push(...out.clearing);
    }
    const mdBufs = packMd(groups);
    expect(mdBufs.length).toBeGreaterThan(1);
    expect(Math.max(...mdBufs.map((b) => b.length))).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES);
    const decoded = mdBufs.flatMap((b) => {
      const d = decodeMdDatagram(b);
      expect(d.error).toBeUndefined();
      // A datagram never ends on a trade: its summary is in the same datagram.
      expect(d.messages[d.messages.length - 1]!.type).not.toBe('trade');
      return d.messages;
    });
    expect(decoded).toEqual(groups.flat());
    const cBufs = packClearing(fills);
    expect(Math.max(...cBufs.map((b) => b.length))).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES);
    expect(cBufs.flatMap((b) => decodeClearingDatagram(b).messages)).toEqual(fills);
    const snapBufs = packMd(market.snapshot().map((m) => [m]), 'snapshot');
    expect(Math.max(...snapBufs.map((b) => b.length))).toBeLessThanOrEqual(MAX_DATAGRAM_BYTES);
    expect(snapBufs.flatMap((b) => decodeMdDatagram(b, 'snapshot').messages)).toEqual(market.snapshot().map((m) => ({ ...m, timestamp: expect.any(BigInt) })));
    expect(groups.flat().every((m) => mdMessageBytes(m) > 0)).toBe(true);
  });
});

describe('simulator settings', () => {
  it('reads the feed addresses, rate and seed from the environment', () => {
    const s = simSettingsFromEnv({ NDFEX_MD_ADDR: '239.1.2.3:5000', NDFEX_SIM_RATE: '500', NDFEX_SIM_SEED: '9' });
    expect(s.md).toEqual({ group: '239.1.2.3', port: 5000 });
    expect(s.clearing).toEqual({ group: '239.0.0.2', port: 12346 });
    expect(s.snapshot).toEqual({ group: '239.0.0.3', port: 12345 });
    expect([s.iface, s.rate, s.seed]).toEqual(['127.0.0.1', 500, 9]);
  });

  it('refuses bad values with the variable named', () => {
    expect(() => parseEndpoint('NDFEX_MD_ADDR', '10.0.0.1:5000')).toThrow(/NDFEX_MD_ADDR.*not a multicast group/);
    expect(() => parseEndpoint('NDFEX_MD_ADDR', '239.0.0.1')).toThrow(/NDFEX_MD_ADDR.*group:port/);
    expect(() => simSettingsFromEnv({ NDFEX_SIM_RATE: 'fast' })).toThrow(/NDFEX_SIM_RATE/);
    expect(() => simSettingsFromEnv({ NDFEX_SIM_SEED: '-1' })).toThrow(/NDFEX_SIM_SEED/);
  });
});

// ------------------------------------------------------------------ over real multicast

interface Receiver {
  port: number;
  messages: MdMessage[] | ClearingMessage[];
  errors: string[];
  datagrams: number;
  /** Resolves once `pred` holds for the messages received so far. */
  waitFor(pred: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** A socket joined to `group` on the loopback interface, on a port the kernel picks (unique per test). */
async function receiver(group: string, kind: 'clearing' | MdFeed): Promise<Receiver> {
  const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 4 << 20 });
  await new Promise<void>((resolve) => sock.bind(0, resolve));
  sock.addMembership(group, '127.0.0.1');
  const r = { messages: [] as (MdMessage | ClearingMessage)[], errors: [] as string[], datagrams: 0 };
  const waiters = new Set<() => void>();
  sock.on('message', (buf) => {
    const d = kind === 'clearing' ? decodeClearingDatagram(buf) : decodeMdDatagram(buf, kind);
    r.datagrams++;
    if (d.error) r.errors.push(d.error);
    r.messages.push(...d.messages);
    for (const w of waiters) w();
  });
  return Object.assign(r, {
    port: sock.address().port,
    messages: r.messages as MdMessage[] | ClearingMessage[],
    waitFor: (pred: () => boolean, what: string, timeoutMs = 10_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!pred()) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what} (have ${r.messages.length} messages)`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    close: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  });
}

describe('simulator over loopback multicast', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function setup(manual: boolean, rate = 20) {
    const [md, clearing, snap] = await Promise.all([receiver('239.77.0.1', 'live'), receiver('239.77.0.2', 'clearing'), receiver('239.77.0.3', 'snapshot')]);
    cleanup.push(md.close, clearing.close, snap.close);
    const sim: SimulatorHandle = await startSimulator({
      md: { group: '239.77.0.1', port: md.port },
      clearing: { group: '239.77.0.2', port: clearing.port },
      snapshot: { group: '239.77.0.3', port: snap.port },
      iface: '127.0.0.1',
      rate,
      seed: 11,
      rosterIds: ROSTER,
      log: quietLog,
      manual,
    });
    cleanup.push(sim.close);
    return { sim, md, clearing, snap };
  }

  it('sends what a receiver decodes into the market the simulator holds', async () => {
    const { sim, md, clearing, snap } = await setup(true);
    await sim.step(300);
    await sim.heartbeat();
    await sim.snapshot();
    const stats = sim.stats();
    await md.waitFor(() => md.messages.length >= stats.mdMessages, 'market data');
    await clearing.waitFor(() => clearing.messages.length >= stats.fills + 1, 'fills');
    await snap.waitFor(() => snap.messages.filter((m) => m.type === 'snapshot_info').length === NDFEX_SYMBOLS.length, 'snapshot');

    expect([md.errors, clearing.errors, snap.errors]).toEqual([[], [], []]);
    const live = md.messages as MdMessage[];
    expect(live.map((m) => m.seq)).toEqual(live.map((_, i) => i + 1));
    expect(live[live.length - 1]!.type).toBe('heartbeat');
    const fills = clearing.messages as ClearingMessage[];
    expect(fills.map((m) => m.seq)).toEqual(fills.map((_, i) => i + 1));
    expect(fills.filter((m) => m.type === 'fill').length).toBe(stats.fills);

    const books = new FeedBooks();
    live.forEach((m) => books.apply(m));
    expect(books.view()).toEqual(marketView(sim.market));
    const fromSnapshot = new FeedBooks();
    (snap.messages as MdMessage[]).forEach((m) => fromSnapshot.apply(m));
    expect(fromSnapshot.view()).toEqual(marketView(sim.market));
    const info = (snap.messages as MdMessage[]).find((m) => m.type === 'snapshot_info');
    expect(info && info.type === 'snapshot_info' && info.last_md_seq_num).toBe(sim.market.lastMdSeq);
  });

  it('runs on its own timers: paced events, snapshots and heartbeats', async () => {
    // Slow enough that both feeds fall silent for 500 ms now and then.
    const { md, clearing, snap } = await setup(false, 4);
    await md.waitFor(() => md.messages.filter((m) => m.type !== 'heartbeat').length >= 5, 'paced market data');
    await md.waitFor(() => md.messages.some((m) => m.type === 'heartbeat'), 'a market-data heartbeat');
    await clearing.waitFor(() => clearing.messages.some((m) => m.type === 'heartbeat'), 'a clearing heartbeat');
    await snap.waitFor(() => snap.messages.some((m) => m.type === 'snapshot_info'), 'a snapshot');
    const live = md.messages as MdMessage[];
    expect(live.map((m) => m.seq)).toEqual(live.map((_, i) => i + 1));
    expect([md.errors, clearing.errors, snap.errors]).toEqual([[], [], []]);
  });
});
