import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { encode } from '../proto/codec.js';
import { BBO_BUCKET, priceSubject } from '../proto/marketdata.js';
import type { ChartsBody } from '../proto/http.js';
import type { PnlSplitEntry } from '../proto/audit.js';
import { PROJECT_ROOT } from '../src/config/config.js';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { DESK_STREAM, SESSION_SUBJECT } from '../proto/subjects.js';
import { sessionMarkerMsgId } from '../proto/feed.js';
import type { SessionMarker } from '../proto/fill.js';
import { DeskHistory } from '../src/shared/desk-history.js';
import { readStream } from '../src/shared/stream-reader.js';
import { ensureDeskStream, openBucket } from '../src/shared/streams.js';
import { buy, testConfig, undyBasket, until, useSystem, writeConfigFile, type SystemFixture } from './helpers/system.js';
import { awaitHoldings } from './helpers/events.js';
import { UNDY, bbo, price } from './helpers/prices.js';

const run = promisify(execFile);
const RULES = { fees: { create: { fixed: 5, per_unit: 2 }, redeem: { fixed: 0, per_unit: 1 } } };

/** `npm run export-audit` against the fixture's system: its lines, parsed. */
async function exportLines(f: SystemFixture): Promise<any[]> {
  const cfg = testConfig(f.dir.path, { chartSampleMs: 100, rules: RULES });
  const out = join(f.dir.path, 'audit.ndjson');
  const { stderr } = await run(process.execPath, [join(PROJECT_ROOT, 'dist/src/tools/export-audit.js'), '--out', out], {
    env: { ...process.env, CONFIG_FILE: writeConfigFile(cfg), NATS_URL: f.nats.url, LOG_LEVEL: 'silent' },
    timeout: 30_000,
  });
  expect(stderr).toMatch(/exported \d+ audit entries/);
  return readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

/** The desk's marks: components 103..112 (a basket at 1075), UNDY 1100. */
async function marks(f: SystemFixture): Promise<void> {
  const bbos = await openBucket(f.nc, BBO_BUCKET);
  for (let s = 3; s <= 12; s++) await bbos.put(String(s), encode(bbo(s, 100 + s)));
  await bbos.put(String(UNDY), encode(bbo(UNDY, 1100)));
}

/** `npm run export-audit` against a running system: every accepted conversion with its scorecard, then each team's P&L split. */
describe('the grading export carries the scorecards and the P&L split', () => {
  const f = useSystem({ chartSampleMs: 100, rules: RULES }, 1, { desk: true });
  const team1 = { basic: ['team1', 'team1pass'] as [string, string] };

  it('adds scorecard to accepted conversions (the old fields unchanged) and one pnl_split line per team', async () => {
    await marks(f);
    await buy(f.nc, 1, undyBasket(2));
    await buy(f.nc, 2, { 3: 5 });
    f.nc.publish(priceSubject('UNDY'), encode(price(1075, 1100)));
    // The desk marks at these mids: team1 paid 2000 for 2 baskets worth 2150.
    await until(async () => {
      const b = (await f.http.send('GET', '/charts')).body as ChartsBody;
      return b.etfs.UNDY?.etf.at(-1) === 1100 && b.teams.find((t) => t.username === 'team1')?.pnl.at(-1) === 150;
    }, 'the price charted and team1 marked');

    const created = await f.http.create('team1', 'team1pass', 2);
    expect(created.status).toBe(200);
    // One of the two UNDY sold: half the legs.
    await buy(f.nc, 1, { [UNDY]: -1 });
    const entry = await until(async () => {
      const e = (await f.http.send('GET', `/requests/${created.body.request_id}`, team1)).body;
      return e.scorecard?.legs_sold === 0.5 ? e : undefined;
    }, 'the scorecard with half its legs sold');
    const refused = await f.http.redeem('team1', 'team1pass', 50);
    expect(refused.status).toBe(400);
    // A sample after the sale: the P&L the export marks is the one now.
    const now = Date.now();
    const pnl = await until(async () => {
      const b = (await f.http.send('GET', '/charts', { query: { since: String(now), team: 'team1' } })).body as ChartsBody;
      return b.teams[0]?.pnl.at(-1) ?? undefined;
    }, 'a sample of team1 after the sale');

    const lines = await exportLines(f);

    // The conversion: every field it had before, and its scorecard as /requests shows it.
    const line = lines.find((l) => l.request_id === created.body.request_id && l.client_id === 1);
    const { scorecard, deltas_by_ticker: _d, holdings_by_ticker: _h, ...old } = entry;
    expect(line).toEqual({ ...old, scorecard });
    const fee = 5 + 2 * 2;
    expect(scorecard).toMatchObject({ op: 'create', amount: 2, fee, edge: 2 * 1100 - 2 * 1075 - fee, legs_sold: 0.5 });
    // A refusal has none.
    expect(lines.find((l) => l.kind === 'redeem' && l.status === 'rejected').scorecard).toBeUndefined();

    // After every entry, one line per team: its P&L at the desk's newest sample, split.
    const splits = lines.filter((l): l is PnlSplitEntry => l.kind === 'pnl_split');
    expect(lines.slice(-splits.length)).toEqual(splits);
    const t1 = splits.find((s) => s.client_id === 1)!;
    expect(t1).toMatchObject({ username: 'team1', pnl, conversion_edge: scorecard.edge, conversions: 1, unscored: 0, fees: fee, legs_sold: 0.5 });
    expect(t1.other).toBeCloseTo(pnl - scorecard.edge);
    expect(t1.ts).toBeGreaterThanOrEqual(now);
    // team2 only traded: all of its P&L is "other".
    const t2 = splits.find((s) => s.client_id === 2)!;
    expect(t2).toMatchObject({ username: 'team2', conversion_edge: 0, conversions: 0, legs_sold: null });
    expect(t2.other).toBe(t2.pnl);
  });

  it('a scorecard the stream did not store (JetStream not answering for it) is written again once it is back', async () => {
    const jsm = await jetstreamManager(f.nc);
    await jsm.streams.delete(DESK_STREAM);
    const errors = f.sys.desk!.stats.writeErrors;
    // team1 still holds the one UNDY it did not sell.
    const redeemed = await f.http.redeem('team1', 'team1pass', 1);
    expect(redeemed.status).toBe(200);
    await until(() => f.sys.desk!.stats.writeErrors > errors, 'a write refused');
    await ensureDeskStream(f.nc);
    const card = await until(async () => {
      const held = new DeskHistory();
      await (await readStream(f.nc, DESK_STREAM, 1, (m) => held.apply(m.subject, m.data), { follow: false })).caughtUp;
      return held.scorecard(1, redeemed.body.request_id);
    }, 'the card in the stream again');
    expect(card).toMatchObject({ op: 'redeem', amount: 1, fee: 1 });
  });
});

/** An exchange reset starts every team from nothing, its P&L too: the split starts again with it. */
describe('the P&L split after an exchange reset', () => {
  const f = useSystem({ chartSampleMs: 100, rules: RULES }, 1, { desk: true });
  const team1 = { basic: ['team1', 'team1pass'] as [string, string] };
  const card = async (requestId: string) => (await f.http.send('GET', `/requests/${requestId}`, team1)).body.scorecard;

  it("counts the new session's conversions only, against the new session's P&L, and says since when", async () => {
    await marks(f);
    // The old session: a create at edge 2 × 1100 − 2 × 1075 − 9 = 41, its 2 UNDY kept (legs unsold).
    await buy(f.nc, 1, undyBasket(2));
    await until(async () => {
      const b = (await f.http.send('GET', '/charts', { query: { team: 'team1' } })).body as ChartsBody;
      return b.teams[0]?.pnl.at(-1) === 150 || undefined;
    }, 'team1 marked at the desk');
    const before = await f.http.create('team1', 'team1pass', 2);
    expect(before.status).toBe(200);
    await until(async () => (await card(before.body.request_id))?.edge === 41 || undefined, 'the old session\'s scorecard');

    const reset = awaitHoldings(f.nc, 1, (c) => c.cause === 'session_reset', 'the reset');
    const resetAt = Date.now();
    const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session: 2, detail: 'test: new exchange session', ts: resetAt };
    await jetstream(f.nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(2) });
    await reset;

    // The new session: cash and positions from 0; a basket bought, a create of 1 at edge 1100 − 1075 − 7 = 18, its UNDY sold.
    await buy(f.nc, 1, undyBasket(1));
    const after = await f.http.create('team1', 'team1pass', 1);
    expect(after.status).toBe(200);
    await buy(f.nc, 1, { [UNDY]: -1 });
    // Cash −1,000 − 7 + 100, nothing held.
    const pnl = -907;
    await until(async () => {
      const b = (await f.http.send('GET', '/charts', { query: { team: 'team1' } })).body as ChartsBody;
      return b.teams[0]?.pnl.at(-1) === pnl || undefined;
    }, 'a sample of team1 after the sale');
    // The sale is the new create's leg: the old one's UNDY went with the reset.
    const cards = await until(async () => {
      const [old, now] = [await card(before.body.request_id), await card(after.body.request_id)];
      return old?.legs_sold > 0 || now?.legs_sold > 0 ? { old, now } : undefined;
    }, 'the sale counted against a conversion');
    expect(cards.now).toMatchObject({ edge: 18, legs_sold: 1 });
    expect(cards.old).toMatchObject({ edge: 41, legs_sold: 0 });

    const lines = await exportLines(f);
    // Both conversions are in the trail with their scorecards, as ever.
    expect(lines.filter((l) => l.scorecard).map((l) => l.scorecard.edge)).toEqual([41, 18]);
    const t1 = lines.find((l): l is PnlSplitEntry => l.kind === 'pnl_split' && l.client_id === 1)!;
    expect(t1).toMatchObject({ username: 'team1', pnl, conversion_edge: 18, other: pnl - 18, conversions: 1, unscored: 0, fees: 7, legs_sold: 1 });
    expect(t1.since).toBeGreaterThanOrEqual(resetAt);
    expect(t1.since).toBeLessThanOrEqual(t1.ts!);
  });

  it('has no P&L for a team when the desk has no sample since the last reset (its newest marks the session before)', async () => {
    await f.sys.desk!.close();
    const reset = awaitHoldings(f.nc, 1, (c) => c.cause === 'session_reset', 'the reset');
    const resetAt = Date.now();
    const marker: SessionMarker = { v: 1, kind: 'exchange_restart', reset: true, session: 3, detail: 'test: another exchange session', ts: resetAt };
    await jetstream(f.nc).publish(SESSION_SUBJECT, encode(marker), { msgID: sessionMarkerMsgId(3) });
    await reset;
    const t1 = (await exportLines(f)).find((l): l is PnlSplitEntry => l.kind === 'pnl_split' && l.client_id === 1)!;
    expect(t1).toMatchObject({ username: 'team1', pnl: null, other: null, ts: null, conversion_edge: 0, conversions: 0, fees: 0, legs_sold: null });
    expect(t1.since).toBeGreaterThanOrEqual(resetAt);
  });
});
