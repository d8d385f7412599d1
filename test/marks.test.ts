import { describe, expect, it } from 'vitest';
import { encode } from '../proto/codec.js';
import { BBO_BUCKET, type Bbo } from '../proto/marketdata.js';
import { openBucket } from '../src/shared/streams.js';
import { EtfClient, type LiveHoldings } from '../src/client/index.js';
import { buy, until, useSystem } from './helpers/system.js';

/**
 * Marks keep the last two-sided mid when a book goes one-sided (issue 21: a
 * team's P&L moved from −45,848 to −352,858 and back in seconds because the
 * mark was dropped). /holdings and the stream say which marks are stale and
 * how old they are.
 */
describe('marks when a book goes one-sided', () => {
  const sys = useSystem();
  const bbo = (symbol: number, bid: number | null, ask: number | null, md_seq: number): Bbo => ({ symbol, bid, bid_qty: bid === null ? 0 : 1, ask, ask_qty: ask === null ? 0 : 1, ts: 0, md_seq });

  it('a one-sided book keeps its last two-sided mid, marked stale with its age; two-sided again, it is live', async () => {
    const kv = await openBucket(sys.nc, BBO_BUCKET);
    await kv.put('3', encode(bbo(3, 110, 120, 1))); // KNAN mid 115
    await buy(sys.nc, 1, { 3: 10 }); // 10 KNAN at 100: cash -1000, worth 1150
    const holdings = () => sys.http.holdings('team1', 'team1pass').then((r) => r.body);
    await until(async () => ((await holdings()).pnl.unmarked.length === 0 ? true : undefined), 'the mark to be followed');
    expect((await holdings()).pnl).toEqual({ cash: -1000, marked: 1150, total: 150, unmarked: [] });

    // The asks are pulled: the P&L stays where it was, and says its KNAN mark is stale.
    await kv.put('3', encode(bbo(3, 110, null, 2)));
    const stale = await until(async () => {
      const h = await holdings();
      return h.pnl.stale ? h : undefined;
    }, 'the one-sided book to be heard');
    expect(stale.pnl).toMatchObject({ cash: -1000, marked: 1150, total: 150, unmarked: [], stale: [{ ticker: 'KNAN', mid: 115 }] });
    expect(stale.pnl.stale[0].age_ms).toBeGreaterThanOrEqual(0);

    // The stream carries the same P&L.
    const live = await new Promise<LiveHoldings>((resolve) => {
      const stream = new EtfClient({ url: sys.sys.url, username: 'team1', password: 'team1pass' }).stream({
        onHoldings: (h) => {
          stream.close();
          resolve({ ...h });
        },
      });
    });
    expect(live.pnl).toMatchObject({ total: 150, stale: [{ ticker: 'KNAN', mid: 115 }] });

    // Both sides again, at a new mid: marked live there.
    await kv.put('3', encode(bbo(3, 100, 110, 3)));
    const back = await until(async () => {
      const h = await holdings();
      return h.pnl.stale ? undefined : h;
    }, 'the two-sided book to be heard');
    expect(back.pnl).toEqual({ cash: -1000, marked: 1050, total: 50, unmarked: [] });
  });
});
