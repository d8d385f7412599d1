import { describe, expect, it } from 'vitest';
import { encode } from '../proto/codec.js';
import { BBO_BUCKET, priceSubject } from '../proto/marketdata.js';
import type { ChartsBody } from '../proto/http.js';
import { openBucket } from '../src/shared/streams.js';
import { SeriesGrid } from '../src/gateway/charts.js';
import { startGateway } from '../src/gateway/server.js';
import { DeskRecorder } from '../src/pricing/desk.js';
import { DeskHistory } from '../src/shared/desk-history.js';
import { readStream } from '../src/shared/stream-reader.js';
import { loadBaskets } from '../src/config/baskets.js';
import { DESK_STREAM } from '../proto/subjects.js';
import { api, buy, quietLog, testConfig, undyBasket, until, useSystem } from './helpers/system.js';
import { UNDY, bbo, price } from './helpers/prices.js';

describe('SeriesGrid: bounded points, the whole session kept', () => {
  it('halves its points and doubles its step when full, keeping the first and one within a step of the newest', () => {
    const g = new SeriesGrid(8, 10);
    for (let t = 0; t < 200; t += 10) {
      const i = g.begin(t);
      if (i >= 0) g.col('a')[i] = t;
    }
    expect(g.n).toBeLessThanOrEqual(8);
    expect(g.t[0]).toBe(0);
    expect(g.step).toBeGreaterThan(10);
    expect(190 - g.t[g.n - 1]!).toBeLessThan(g.step);
    expect(g.slice('a', 0)).toEqual(Array.from(g.t.subarray(0, g.n)));
    // A point closer than a step to the last is not taken.
    expect(g.begin(191)).toBe(-1);
    expect(g.from(150)).toBe(Array.from(g.t.subarray(0, g.n)).findIndex((t) => t > 150));
  });
});

describe('GET /charts and the conversion scorecard', () => {
  const f = useSystem({ chartSampleMs: 100, rules: { fees: { create: { fixed: 5, per_unit: 2 }, redeem: { fixed: 0, per_unit: 1 } } } }, 1, { desk: true });
  const charts = async (query: Record<string, string> = {}) => (await f.http.send('GET', '/charts', { query })).body as ChartsBody;

  it('samples prices and every active team P&L at the marks, from published state', async () => {
    const bbos = await openBucket(f.nc, BBO_BUCKET);
    // Component mids 100 + symbol (103..112), UNDY's 1100: NAV 1075, a premium.
    for (let s = 3; s <= 12; s++) await bbos.put(String(s), encode(bbo(s, 100 + s)));
    await bbos.put(String(UNDY), encode(bbo(UNDY, 1100)));
    await buy(f.nc, 1, undyBasket(2));
    f.nc.publish(priceSubject('UNDY'), encode(price(1075, 1100)));
    // team1: bought 20 units at 100 (cash -2000), holds 2 of each component at 103..112 = 2150.
    const body = await until(async () => {
      const b = await charts();
      const t1 = b.teams.find((t) => t.username === 'team1');
      return t1?.pnl.at(-1) === 150 && b.etfs.UNDY?.etf.at(-1) === 1100 ? b : undefined;
    }, 'a point with the price and team1 marked');
    expect(body.etfs.UNDY!.nav.at(-1)).toBe(1075);
    expect(body.etfs.UNDY!.premium.at(-1)).toBeCloseTo(25 / 1075);
    for (const s of [...Object.values(body.etfs.UNDY!), ...body.teams.map((t) => t.pnl)]) expect(s).toHaveLength(body.t.length);
    // team2 never traded: no series.
    expect(body.teams.map((t) => t.username)).toEqual(['team1']);
    expect(body.step_ms).toBe(100);
    expect(body.halts).toEqual([]);

    // `since`: only later points; `team`: that team alone.
    const last = body.t.at(-1)!;
    const later = await until(async () => {
      const b = await charts({ since: String(last), team: 'team1' });
      return b.t.length ? b : undefined;
    }, 'a later point');
    expect(later.t.every((t) => t > last)).toBe(true);
    expect((await charts({ team: 'team2' })).teams).toEqual([]);
  });

  it('refuses a bad since with a JSON 400', async () => {
    const r = await f.http.send('GET', '/charts', { query: { since: 'yesterday' } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'invalid_parameter', field: 'since' });
  });

  it('scores each accepted conversion at the mids of its moment, fee included; /history and /requests carry it and the maps', async () => {
    const created = await f.http.create('team1', 'team1pass', 2);
    expect(created.status).toBe(200);
    const fee = 5 + 2 * 2;
    expect(created.body.fee).toBe(fee);
    // Gave 2 of each component (mids 103..112: 1075 a basket), got 2 UNDY at 1100.
    const edge = 2 * 1100 - 2 * 1075 - fee;
    const entry = await until(async () => {
      const h = await f.http.send('GET', '/history', { basic: ['team1', 'team1pass'] });
      const e = h.body.entries.find((x: any) => x.request_id === created.body.request_id);
      return e?.scorecard ? e : undefined;
    }, 'the scorecard in /history');
    expect(entry.scorecard).toMatchObject({ op: 'create', etf: 'UNDY', amount: 2, fee, edge, edge_per_unit: edge / 2, etf_mid: 1100, quoted_edge: 2 * (1099 - 1085) - fee, legs_sold: 0 });
    // The map form beside the lists: the shape a conversion's answer has.
    expect(entry.deltas_by_ticker).toEqual(created.body.deltas);
    expect(entry.holdings_by_ticker).toEqual(created.body.holdings);
    expect(entry.deltas).toEqual(expect.arrayContaining([{ symbol: UNDY, ticker: 'UNDY', quantity: 2 }]));
    const one = await f.http.send('GET', `/requests/${created.body.request_id}`, { basic: ['team1', 'team1pass'] });
    expect(one.body.scorecard.edge).toBe(edge);
    expect(one.body.deltas_by_ticker.UNDY).toBe(2);

    // The leg after it: one of the two UNDY sold on the exchange, then the other.
    const legs = async () => (await f.http.send('GET', `/requests/${created.body.request_id}`, { basic: ['team1', 'team1pass'] })).body.scorecard.legs_sold;
    await buy(f.nc, 1, { [UNDY]: -1 });
    await until(async () => (await legs()) === 0.5, 'half the legs sold');
    await buy(f.nc, 1, { [UNDY]: -1 });
    await until(async () => (await legs()) === 1, 'every leg sold');

    // A refusal has no scorecard.
    const refused = await f.http.redeem('team1', 'team1pass', 50);
    expect(refused.status).toBe(400);
    const h = await f.http.send('GET', '/history', { basic: ['team1', 'team1pass'], query: { limit: '1' } });
    expect(h.body.entries[0].status).toBe('rejected');
    expect(h.body.entries[0].scorecard).toBeUndefined();
  });

  it('scores only at two-sided mids: a leg whose book is one-sided is unmarked and the edge null, however recent its last mid', async () => {
    const team1 = { basic: ['team1', 'team1pass'] as [string, string] };
    const bbos = await openBucket(f.nc, BBO_BUCKET);
    const card = (requestId: string) =>
      until(async () => (await f.http.send('GET', `/requests/${requestId}`, team1)).body.scorecard, 'the scorecard');
    await buy(f.nc, 1, undyBasket(2));
    const pnl = async () => (await charts({ team: 'team1' })).teams[0]?.pnl.at(-1);
    const base = (await f.http.holdings('team1', 'team1pass')).body.pnl.total as number;
    await until(async () => ((await pnl()) === base ? true : undefined), 'a sample with the bought basket');

    // KNAN's asks pulled a moment ago (its last mid 103 is recent), then BDIN up 10 on the 2 held: the desk follows the
    // bucket in order, so a sample showing BDIN's new mid means it heard KNAN one-sided.
    await bbos.put('3', encode({ ...bbo(3, 103), ask: null, ask_qty: 0 }));
    await bbos.put('12', encode(bbo(12, 122)));
    await until(async () => ((await pnl()) === base + 20 ? true : undefined), 'the desk to hear KNAN one-sided');
    const stale = await f.http.create('team1', 'team1pass', 1);
    expect(stale.status).toBe(200);
    expect(await card(stale.body.request_id)).toMatchObject({ edge: null, edge_per_unit: null, unmarked: ['KNAN'], etf_mid: 1100 });

    // Two-sided again: scored as before.
    await bbos.put('3', encode(bbo(3, 103)));
    await bbos.put('12', encode(bbo(12, 112)));
    // The create gave 1 of each component (1085 at these marks) for 1 UNDY (1100), fee 7; BDIN back down 10 on the one left.
    await until(async () => ((await pnl()) === base + 20 + (1100 - 1085 - 7) - 10 ? true : undefined), 'the desk to hear KNAN two-sided');
    const live = await f.http.create('team1', 'team1pass', 1);
    expect(live.status).toBe(200);
    const scored = await card(live.body.request_id);
    expect(scored).toMatchObject({ edge: 1100 - 1075 - (5 + 2), etf_mid: 1100 });
    expect(scored.unmarked).toBeUndefined();
  });

  it('a gateway started again mid-session, and one started late, serve the session so far and the same scorecards (the desk stream, not gateway memory)', async () => {
    const team1 = { basic: ['team1', 'team1pass'] as [string, string] };
    const before = await charts();
    const cards = (await f.http.send('GET', '/history', team1)).body.entries.filter((e: any) => e.scorecard).map((e: any) => e.scorecard);
    expect(before.t.length).toBeGreaterThan(3);
    expect(cards.length).toBeGreaterThan(0);
    const cfg = testConfig(f.dir.path, { chartSampleMs: 100 });
    // The first gateway stops and a new one takes its place; another starts beside it.
    await f.sys.gateways[0]!.close();
    f.sys.gateways[0] = await startGateway(cfg, f.nats.url, quietLog);
    f.sys.gateways.push(await startGateway(cfg, f.nats.url, quietLog));
    const last = before.t.at(-1)!;
    for (const g of f.sys.gateways) {
      const http = api(`http://127.0.0.1:${g.port}`);
      // Every point the old gateway served, as it served them: the same times and values.
      const again = await until(async () => {
        const b = (await http.send('GET', '/charts')).body as ChartsBody;
        return b.t.includes(last) ? b : undefined;
      }, 'the earlier points on the new gateway');
      const n = before.t.length;
      const at = again.t.indexOf(before.t[0]!);
      expect(again.t.slice(at, at + n)).toEqual(before.t);
      expect(again.etfs.UNDY!.etf.slice(at, at + n)).toEqual(before.etfs.UNDY!.etf);
      expect(again.teams.find((t) => t.username === 'team1')!.pnl.slice(at, at + n)).toEqual(before.teams.find((t) => t.username === 'team1')!.pnl);
      expect(again.step_ms).toBe(before.step_ms);
      const h = await until(async () => {
        const b = (await http.send('GET', '/history', team1)).body;
        const got = b.entries.filter((e: any) => e.scorecard).map((e: any) => e.scorecard);
        return got.length === cards.length ? got : undefined;
      }, 'the scorecards on the new gateway');
      expect(h).toEqual(cards);
    }
    // From here on, the gateways now running.
    f.http = api(f.sys.gateways.map((g) => `http://127.0.0.1:${g.port}`));
  });

  it('a restarted desk writer takes up its grid from the stream: its next point is a step after the last one written, not sooner', async () => {
    await f.sys.desk!.close();
    // What the stream holds once the writer stopped: what the next one reads at its start.
    const held = new DeskHistory();
    await (await readStream(f.nc, DESK_STREAM, 1, (m) => held.apply(m.subject, m.data), { follow: false })).caughtUp;
    const last = held.grid.t[held.grid.n - 1]!;
    const again = await DeskRecorder.start(f.nc, loadBaskets(undefined), quietLog, { sampleMs: 100, auto: false });
    try {
      // The accounts read: it has teams to chart, so only the grid can hold a point back.
      await again.refreshAccounts();
      again.sample(last + held.step / 2);
      expect(again.stats.samples).toBe(0);
      again.sample(last + held.step);
      expect(again.stats.samples).toBe(1);
      await until(async () => (await charts({ since: String(last) })).t.includes(last + held.step), 'the new writer\'s point on the chart');
    } finally {
      await again.close();
    }
  });
});
