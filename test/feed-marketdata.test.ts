import { Kvm } from '@nats-io/kv';
import { FEED_BUCKET, FEED_CLEARING_KEY } from '../proto/feed.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { openBucket } from '../src/shared/streams.js';
import { decode } from '../proto/codec.js';
import { BBO_BUCKET, BBO_SUBJECT_WILDCARD, FEED_ALERT_SUBJECT, type Bbo, type FeedAlert } from '../proto/marketdata.js';
import { encodeMdDatagram, type MdMessage } from '../proto/ndfex.js';
import { startBridge, type BridgeHandle, type BridgeOptions } from '../src/feed/service.js';
import { multicastSender } from '../src/feed/multicast.js';
import { natsClient, quietLog, startTestNats } from './helpers/system.js';
import { bridgeOpts, collect, type Sender } from './helpers/feed.js';

type Nats = Awaited<ReturnType<typeof startTestNats>>;

let nats: Nats;
let nc: NatsConnection;
let sender: Sender;

beforeAll(async () => {
  nats = await startTestNats();
  nc = await natsClient(nats.url);
  sender = await multicastSender('127.0.0.1');
});

afterAll(async () => {
  await sender.close();
  await nc.close();
  await nats.stop();
  nats.remove();
});

let ts = 1_700_000_000_000_000_000n;
const t = () => (ts += 1000n);
const nw = (seq: number, id: number, symbol: number, side: number, quantity: number, price: number): MdMessage => ({
  type: 'new_order', seq, timestamp: t(), order_id: BigInt(id), symbol, side, quantity, price, flags: 0,
});
const strip = ({ ts: _ts, ...b }: Bbo) => b;

async function withBridge(fn: (b: BridgeHandle, o: BridgeOptions) => Promise<void>): Promise<void> {
  const o = await bridgeOpts(nats.url);
  // Each test plays an exchange of its own: a bridge that found the previous test's saved progress would take
  // this one's market data (seq back to 1) for an exchange restart while no bridge listened, and hold it.
  await (await openBucket(nc, FEED_BUCKET)).purge(FEED_CLEARING_KEY);
  const b = await startBridge(o, quietLog);
  try {
    await fn(b, o);
  } finally {
    await b.close();
  }
}

describe('market data over multicast', () => {
  it('publishes the Bbo after new/modify/trade/delete, once per symbol per datagram, and keeps the last in KV', async () => {
    await withBridge(async (_b, o) => {
      const bbos = collect<Bbo>(nc, BBO_SUBJECT_WILDCARD);
      await bbos.flushed();
      const live = (msgs: MdMessage[]) => sender.send(o.marketData, encodeMdDatagram(msgs));
      // Datagram 1: symbol 3 bids 100x10, 101x5; ask 110x20. One Bbo for the three orders.
      await live([nw(1, 1, 3, 1, 10, 100), nw(2, 2, 3, 1, 5, 101), nw(3, 3, 3, 2, 20, 110)]);
      expect(strip(await bbos.next((b) => b.md_seq === 3))).toEqual({ symbol: 3, bid: 101, bid_qty: 5, ask: 110, ask_qty: 20, md_seq: 3 });
      // Datagram 2: an aggressive sell trades 5 against order 2 (all of it) then 4 against order 1; summary.
      await live([
        { type: 'trade', seq: 4, timestamp: t(), order_id: 2n, quantity: 5, price: 101 },
        { type: 'trade', seq: 5, timestamp: t(), order_id: 1n, quantity: 4, price: 100 },
        { type: 'trade_summary', seq: 6, timestamp: t(), symbol: 3, aggressor_side: 2, total_quantity: 9, last_price: 100 },
      ]);
      expect(strip(await bbos.next((b) => b.md_seq === 5))).toEqual({ symbol: 3, bid: 100, bid_qty: 6, ask: 110, ask_qty: 20, md_seq: 5 });
      // Datagram 3: the ask is modified down, then the bid deleted.
      await live([
        { type: 'modify_order', seq: 7, timestamp: t(), order_id: 3n, side: 2, quantity: 8, price: 108 },
        { type: 'delete_order', seq: 8, timestamp: t(), order_id: 1n },
      ]);
      const last = await bbos.next((b) => b.md_seq === 8);
      expect(strip(last)).toEqual({ symbol: 3, bid: null, bid_qty: 0, ask: 108, ask_qty: 8, md_seq: 8 });
      expect(bbos.seen.map((b) => b.md_seq)).toEqual([3, 5, 8]);
      expect(typeof last.ts).toBe('number');
      const kv = await new Kvm(nc).open(BBO_BUCKET);
      const e = await kv.get('3');
      expect(e && strip(decode<Bbo>(e.value))).toEqual(strip(last));
      bbos.stop();
    });
  });

  it('a late joiner rebuilds books from the snapshot feed, then follows the live feed', async () => {
    await withBridge(async (b, o) => {
      const bbos = collect<Bbo>(nc, BBO_SUBJECT_WILDCARD);
      await bbos.flushed();
      // The exchange has been running: the live feed is at seq 500 when the bridge hears its first message.
      await sender.send(o.marketData, encodeMdDatagram([nw(501, 77, 5, 2, 3, 204)]));
      // Snapshot of symbol 5 as of seq 500 (order 77 not in it yet), seq 0 on the snapshot feed.
      await sender.send(
        o.snapshot,
        encodeMdDatagram(
          [
            { type: 'snapshot_info', seq: 0, timestamp: t(), symbol: 5, bid_count: 2, ask_count: 1, last_md_seq_num: 500 },
            nw(0, 10, 5, 1, 7, 195),
            nw(0, 11, 5, 1, 2, 196),
            nw(0, 12, 5, 2, 9, 205),
          ],
          'snapshot',
        ),
      );
      expect(strip(await bbos.next((x) => x.symbol === 5))).toEqual({ symbol: 5, bid: 196, bid_qty: 2, ask: 204, ask_qty: 3, md_seq: 501 });
      // Live continues on top of the rebuilt book.
      await sender.send(o.marketData, encodeMdDatagram([{ type: 'delete_order', seq: 502, timestamp: t(), order_id: 11n }]));
      expect(strip(await bbos.next((x) => x.md_seq === 502))).toEqual({ symbol: 5, bid: 195, bid_qty: 7, ask: 204, ask_qty: 3, md_seq: 502 });
      expect(b.stats().md.snapshots_applied).toBe(1);
      bbos.stop();
    });
  });

  it('a late join onto a wrong snapshot ends with the live book and an alert', async () => {
    await withBridge(async (b, o) => {
      const bbos = collect<Bbo>(nc, BBO_SUBJECT_WILDCARD);
      const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
      await bbos.flushed();
      // Joined at seq 900: the live feed places a bid at 100 and an ask at 105 on symbol 1.
      await sender.send(o.marketData, encodeMdDatagram([nw(901, 300, 1, 1, 4, 100), nw(902, 301, 1, 2, 6, 105)]));
      // The snapshot service's book of symbol 1 as of seq 902 is wrong: a bid at 110, above the live ask.
      await sender.send(
        o.snapshot,
        encodeMdDatagram([{ type: 'snapshot_info', seq: 0, timestamp: t(), symbol: 1, bid_count: 1, ask_count: 1, last_md_seq_num: 902 }, nw(0, 20, 1, 1, 9, 110), nw(0, 301, 1, 2, 6, 105)], 'snapshot'),
      );
      expect(await alerts.next((a) => a.kind === 'book_distrusted')).toMatchObject({ feed: 'market_data' });
      expect(strip(await bbos.next((x) => x.symbol === 1 && x.bid === 100))).toMatchObject({ symbol: 1, bid: 100, bid_qty: 4, ask: 105, ask_qty: 6 });
      // It follows the live feed from there, and the wrong snapshot is not taken again.
      await sender.send(o.marketData, encodeMdDatagram([nw(903, 302, 1, 1, 2, 101)]));
      expect(strip(await bbos.next((x) => x.symbol === 1 && x.bid === 101))).toMatchObject({ bid: 101, bid_qty: 2, ask: 105 });
      expect(b.stats().md.books_distrusted).toBe(1);
      bbos.stop();
      alerts.stop();
    });
  });

  it('a market-data gap raises an alert and the books wait for the next snapshot', async () => {
    await withBridge(async (b, o) => {
      const alerts = collect<FeedAlert>(nc, FEED_ALERT_SUBJECT);
      const bbos = collect<Bbo>(nc, BBO_SUBJECT_WILDCARD);
      await alerts.flushed();
      await sender.send(o.marketData, encodeMdDatagram([nw(1, 1, 7, 1, 1, 50)]));
      await bbos.next((x) => x.md_seq === 1);
      await sender.send(o.marketData, encodeMdDatagram([nw(3, 2, 7, 1, 1, 51)]));
      expect(await alerts.next((a) => a.kind === 'gap')).toMatchObject({ feed: 'market_data', expected: 2, received: 3 });
      expect(b.stats().status.market_data).toMatchObject({ gaps: 1, missed_messages: 1 });
      // The snapshot as of seq 3 brings the book back.
      await sender.send(
        o.snapshot,
        encodeMdDatagram([{ type: 'snapshot_info', seq: 0, timestamp: t(), symbol: 7, bid_count: 2, ask_count: 0, last_md_seq_num: 3 }, nw(0, 1, 7, 1, 1, 50), nw(0, 2, 7, 1, 1, 52)], 'snapshot'),
      );
      expect(strip(await bbos.next((x) => x.bid === 52))).toMatchObject({ symbol: 7, bid: 52, bid_qty: 1 });
      alerts.stop();
      bbos.stop();
    });
  });
});
